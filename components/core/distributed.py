"""Data-parallel training under ``torchrun``: the process group, batch sharding, gradient all-reduce.

A trainer stage (``train_encoders``, ``train_recognizer``, ``train_sampler``, ``ablate``) started with
``distributed.launcher: torchrun`` re-launches itself as ``torchrun --nproc-per-node N -m
components.stages.<stage> ...`` (:func:`torchrun_command`, called by
:func:`components.ops.stage_runner.stage_main`); each of the N processes then calls :func:`init` and runs
the whole stage. The one engine (:func:`components.training.engine.fit`) does the data parallelism:

* **the same global batch** as one process: every batch source is already seeded by epoch (the role
  ``DistributedSampler.set_epoch`` plays for a DataLoader), and every rank keeps a disjoint
  contiguous part of each global batch (:func:`shard_batch`, like ``DistributedSampler`` over the
  batch but without padding or duplicated samples);
* **gradients all-reduced**: each rank's loss is weighted by its share of the global batch
  (``n_local / n_global``) and the gradients are summed over ranks (:func:`allreduce_grads`), so a
  loss that is a mean over samples gets exactly the one-process gradient; floating buffers
  (BatchNorm statistics) are broadcast from rank 0 after every step, as
  ``DistributedDataParallel(broadcast_buffers=True)`` does. Losses that couple the samples of a batch
  (contrastive terms, BatchNorm batch statistics) see only the local part, as under DDP;
* **one writer**: checkpoints, reports, MLflow and every atomic write (:mod:`components.core.atomic`)
  happen on rank 0 only; the other ranks compute the same results and discard their writes;
* **epoch rows** are batch-weighted means over all ranks, broadcast from rank 0, so early stopping
  decides the same on every rank;
* **resume under another world size**: the checkpoint holds only global state (weights, optimiser,
  scheduler, history), and the global batches depend on (seed, epoch) alone.

Backend: gloo on CPU, NCCL on CUDA (``distributed.backend: auto``). Every collective times out after
``distributed.timeout`` seconds, so a rank that dies ends the others with an error instead of a hang
(torchrun's agent also stops the surviving ranks as soon as one fails).

Gradients are all-reduced after ``backward`` instead of wrapping the model in
``DistributedDataParallel``, because the project's steps call model methods other than ``forward``
(AVGN's head, the samplers' losses), which DDP's reducer does not see; the price is no overlap of
communication with the backward pass.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from components.core.runtime import resolve_device

log = logging.getLogger(__name__)

#: Set by torchrun in every worker it starts; our marker that the stage is already launched.
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"


@dataclass
class State:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    slow_group: Any = None  # a gloo group with a long timeout for "rank 0 first" waits (bank builds)
    cpu_group: Any = None  # a gloo group with the normal timeout for CPU-side values (epoch sums, rows)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_STATE = State()


def state() -> State:
    return _STATE


def is_main() -> bool:
    """True in a single process and on rank 0 of a DDP run: the one process that writes outputs."""
    return _STATE.rank == 0


def launched_by_torchrun(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get(TORCHRUN_ENV)) and "LOCAL_RANK" in env


def backend_for(backend: str, device: str) -> str:
    return backend if backend != "auto" else ("nccl" if resolve_device(device) == "cuda" else "gloo")


def init(backend: str = "auto", device: str = "cpu", timeout: int = 300) -> State:
    """Join the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``). A no-op in a plain process (world 1).
    On CUDA each process takes GPU ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not launched_by_torchrun():
        return _STATE
    import torch
    import torch.distributed as dist

    be = backend_for(backend, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if be == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(be, timeout=_dt.timedelta(seconds=timeout))
    _STATE.rank, _STATE.world, _STATE.local_rank, _STATE.backend = rank, world, local, be
    _STATE.slow_group = dist.new_group(backend="gloo", timeout=_dt.timedelta(days=1))
    # epoch sums and rows live on the CPU, which NCCL cannot reduce: they go through gloo
    _STATE.cpu_group = dist.new_group(backend="gloo", timeout=_dt.timedelta(seconds=timeout))
    log.info("rank %d of %d joined (%s, timeout %d s)", rank, world, be, timeout)
    return _STATE


def shutdown() -> None:
    if _STATE.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _STATE.rank, _STATE.world, _STATE.local_rank, _STATE.backend = 0, 1, 0, ""
    _STATE.slow_group = _STATE.cpu_group = None


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it builds a shared cache), the others wait and then run it
    (finding the cache built). The wait has no short timeout: building a bank can take hours."""
    if not _STATE.enabled:
        yield
        return
    import torch.distributed as dist

    if not _STATE.is_main:
        dist.barrier(group=_STATE.slow_group)
    yield
    if _STATE.is_main:
        dist.barrier(group=_STATE.slow_group)


# ------------------------------------------------------------------------- the engine's parts
def _batch_len(batch: Any) -> int | None:
    import numpy as np
    import torch

    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return int(batch.shape[0]) if batch.ndim else None
    if isinstance(batch, dict):
        vals = batch.values()
    elif isinstance(batch, (list, tuple)):
        vals = batch
    else:
        return None
    for v in vals:
        n = _batch_len(v)
        if n is not None:
            return n
    return None


def map_batch(batch: Any, fn: Any) -> Any:
    """``fn`` applied to every tensor / array of a batch nested in tuples, lists, NamedTuples or dicts;
    other leaves (scalars, strings) as they are. The walk :func:`shard_batch` and
    :func:`components.training.engine.to_device` share."""
    import numpy as np
    import torch

    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_batch(v, fn) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(map_batch(v, fn) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_batch(v, fn) for v in batch)
    return batch


def _slice(batch: Any, lo: int, hi: int, n: int) -> Any:
    def part(a):
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(f"cannot shard a batch whose parts differ in length ({tuple(a.shape)} vs {n} "
                             f"samples): every tensor of a batch must have the samples on dim 0")
        return a[lo:hi]

    return map_batch(batch, part)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank`` among ``world`` contiguous parts of ``n`` samples (sizes differ by
    at most one; the first ``n % world`` ranks take one more; a rank may get none)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def shard_batch(batch: Any, rank: int | None = None, world: int | None = None) -> tuple[Any, int, int]:
    """``(local part, n_local, n_global)`` of a global batch (tensors / arrays with samples on dim 0,
    nested in tuples, lists, NamedTuples or dicts)."""
    rank = _STATE.rank if rank is None else rank
    world = _STATE.world if world is None else world
    n = _batch_len(batch)
    if n is None:
        raise ValueError(f"cannot shard a batch of type {type(batch).__name__}: no tensor with samples on dim 0")
    lo, hi = shard_bounds(n, rank, world)
    return _slice(batch, lo, hi, n), hi - lo, n


def allreduce_grads(params: Sequence[Any]) -> None:
    """Sum every parameter's gradient over ranks (a missing gradient counts as zero), in one flat
    buffer per dtype and device."""
    import torch
    import torch.distributed as dist

    groups: dict[tuple, list] = {}
    for prm in params:
        if not prm.requires_grad:
            continue
        if prm.grad is None:
            prm.grad = torch.zeros_like(prm)
        groups.setdefault((prm.grad.dtype, prm.grad.device), []).append(prm.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        off = 0
        for g in grads:
            g.copy_(flat[off:off + g.numel()].view_as(g))
            off += g.numel()


def broadcast_module(module: Any, buffers_only: bool = False) -> None:
    """Rank 0's parameters (unless ``buffers_only``) and floating buffers to every rank."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        tensors = [] if buffers_only else [p.data for p in module.parameters()]
        tensors += [b for b in module.buffers() if b.is_floating_point() or not buffers_only]
        for t in tensors:
            dist.broadcast(t, src=0)


def allreduce_sums(sums: dict[str, float], count: float) -> tuple[dict[str, float], float]:
    """``(sums, count)`` summed over ranks (keys: the union, in sorted order on every rank)."""
    import torch
    import torch.distributed as dist

    keys = sorted(set().union(*gather_objects(sorted(sums))))
    t = torch.tensor([sums.get(k, 0.0) for k in keys] + [count], dtype=torch.float64)
    dist.all_reduce(t, group=_STATE.cpu_group)
    vals = t.tolist()
    return dict(zip(keys, vals[:-1])), vals[-1]


def gather_objects(obj: Any) -> list:
    import torch.distributed as dist

    out: list = [None] * _STATE.world
    dist.all_gather_object(out, obj, group=_STATE.cpu_group)
    return out


def broadcast_object(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_STATE.cpu_group)
    return box[0]


# ------------------------------------------------------------------------------ the launcher
def torchrun_command(module: str, argv: Sequence[str], nproc: int, nnodes: int = 1, rdzv_endpoint: str = "",
                     python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m <module> <argv>``: ``--standalone`` on one node, a c10d
    rendezvous at ``rdzv_endpoint`` across nodes; no restarts (a failed rank fails the stage, and
    the engine's checkpoint resumes it on the next ``dvc repro``)."""
    cmd = [python or sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--nnodes", str(nnodes), "--max-restarts", "0"]
    if nnodes > 1:
        if not rdzv_endpoint:
            raise ValueError("distributed.nnodes > 1 needs distributed.rdzv_endpoint (host:port of node 0)")
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id",
                os.environ.get("SALIENT_RDZV_ID", "salient")]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", module, *argv]
