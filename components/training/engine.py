"""The one training engine: a single ``step`` serves train and eval; checkpoints, resume, early stopping.

Every trainer in the project (light encoder, frame recognizer, audio encoder, and the samplers)
calls :func:`fit` with a model, a step function and two batch sources. The engine owns the loop,
the optimiser (AdamW + cosine decay), seeding, the progress bar, the loss history, and the
checkpoint protocol:

* after every epoch ``<ckpt_dir>/last.pt`` is replaced atomically (temp file + ``os.replace``) with
  model, optimiser, scheduler, RNG state, history and early-stopping state; a SIGKILL therefore
  loses at most the epoch in flight, and calling :func:`fit` again with the same ``fingerprint``
  resumes from the next epoch;
* a checkpoint whose fingerprint differs (another config) is refused with a clear error;
* early stopping watches one validation metric (``monitor``, default ``val_loss``; ``mode`` min or
  max) for ``patience`` epochs, and the best weights are restored into the model before returning.
  Per-frame classifiers trained on untrimmed videos monitor accuracy: every generic frame carries
  the video's label, so val loss rises with confidence while accuracy still improves.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from components.core import distributed
from components.core.atomic import atomic_torch_save
from components.core.runtime import host_to_device

log = logging.getLogger(__name__)
RANK_SEED_STRIDE = 1_000_003  # rank r > 0 of a DDP run seeds its own RNG stream with seed + r * this
CKPT_VERSION = 2  # bump when the checkpoint layout changes; older checkpoints are refused, not misread

# step(model, batch, train) -> (loss tensor, {metric: float}); batch sizes weight the epoch means.
StepFn = Callable[[nn.Module, Any, bool], tuple[torch.Tensor, dict[str, float]]]
# log_metrics({name: value}, step): where each epoch's row goes (e.g. ``components.tracking.mlflow_tracking.log_metrics``).
MetricLogger = Callable[[Mapping[str, float], int], None]


class CheckpointMismatch(RuntimeError):
    """A checkpoint written by another configuration."""


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    lr: float
    weight_decay: float = 0.0
    patience: int = 10
    seed: int = 0
    grad_clip: float = 0.0
    desc: str = "train"
    # MLflow names of the epoch rows: "<log_prefix>/<key>"; None: desc ("train nsnet seed 0/val_map"); "":
    # the bare key, for a run that holds one training only (a sampler's (variant, seed) run: "val_map")
    log_prefix: str | None = None
    monitor: str = "val_loss"  # a key of the epoch row; falls back to train_<x> without val batches
    mode: str = "min"  # min | max

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"FitConfig.mode must be 'min' or 'max', not {self.mode!r}")


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = math.inf  # the monitored value, sign-flipped for mode=max (lower is better)
    resumed_from: int = 0
    stopped_early: bool = False


@dataclass(frozen=True)
class Compute:
    """Where :func:`fit` runs the model (the ``compute`` params section; CPU defaults change nothing).

    ``device`` cpu / cuda / auto (under DDP each rank takes GPU ``LOCAL_RANK``); ``amp``: autocast the
    step in ``amp_dtype`` (float16 adds a gradient scaler) - trainers pass it only for the frame
    encoders and recognizers, never for the samplers; ``channels_last``: the model and every 4-D
    batch tensor in channels_last; ``pin_memory``: page-locked batches copied without blocking."""
    device: str = "cpu"
    amp: bool = False
    amp_dtype: str = "bfloat16"
    channels_last: bool = False
    pin_memory: bool = False

    @classmethod
    def of(cls, section: Any, amp: bool = True) -> "Compute":
        """From the ``compute`` params section; ``amp=False`` for the numerically sensitive trainers."""
        return cls(device=distributed.resolve_device(section.device), amp=bool(section.amp and amp),
                   amp_dtype=section.amp_dtype, channels_last=section.channels_last, pin_memory=section.pin_memory)

    def torch_device(self) -> torch.device:
        if self.device == "cuda" and distributed.state().enabled:
            return torch.device("cuda", distributed.state().local_rank)
        return torch.device(self.device)

    @property
    def is_default(self) -> bool:
        return self == Compute(device="cpu")


def to_device(batch: Any, compute: Compute) -> Any:
    """Every tensor of a batch (nested tuples, lists, dicts) on ``compute``'s device and layout."""
    def move(t):
        if not isinstance(t, torch.Tensor):
            return t
        if compute.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return host_to_device(t, compute.torch_device(), compute.pin_memory)

    return distributed.map_batch(batch, move)


def remove_checkpoints(dirs: Iterable[Path]) -> None:
    """Delete resume checkpoints once the outputs they led to are written. They exist to resume an
    *interrupted* run; a later run of the same stage (``dvc repro -f``, or a dependency change)
    must train again, not pick up the finished state and call it a new result. Under DDP rank 0
    removes them."""
    if not distributed.is_main():
        return
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def run_epoch(model: nn.Module, step: StepFn, batches: Iterable, train: bool,
              optimizer: torch.optim.Optimizer | None = None, grad_clip: float = 0.0,
              desc: str = "", compute: Compute | None = None,
              scaler: "torch.amp.GradScaler | None" = None) -> dict[str, float]:
    """One pass; returns batch-weighted means of ``loss`` and every metric the step reports.

    Under DDP (:mod:`components.core.distributed`) each rank trains on its part of every global batch, its
    loss weighted by that part's share, the gradients summed over ranks before clipping and the
    optimiser step; val batches are dealt out whole (batch ``i`` to rank ``i % world``); the means
    returned are over every rank's samples."""
    model.train(train)
    ddp = distributed.state()
    compute = compute or Compute()
    autocast = (lambda: torch.autocast(compute.torch_device().type, dtype=getattr(torch, compute.amp_dtype))) \
        if compute.amp else contextlib.nullcontext
    sums: dict[str, float] = {}
    count = steps = 0
    with torch.set_grad_enabled(train):
        for i, batch in enumerate(tqdm(batches, desc=desc, leave=False, disable=None if ddp.is_main else True)):
            weight = 1.0
            if ddp.enabled and not train and i % ddp.world != ddp.rank:
                continue
            if ddp.enabled and train:
                batch, n_local, n_global = distributed.shard_batch(batch)
                weight = n_local / max(n_global, 1)
                if n_local == 0:  # a global batch smaller than the world: this rank adds a zero gradient
                    assert optimizer is not None
                    optimizer.zero_grad(set_to_none=True)
                    _optimizer_step(model, optimizer, grad_clip, ddp.enabled, scaler)
                    steps += 1
                    continue
            if not compute.is_default:
                batch = to_device(batch, compute)
            with autocast():
                loss, metrics = step(model, batch, train)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: non-finite loss {loss.item()} (check inputs / lr)")
            if train:
                assert optimizer is not None
                optimizer.zero_grad(set_to_none=True)
                scaled = loss * weight if ddp.enabled else loss
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                _optimizer_step(model, optimizer, grad_clip, ddp.enabled, scaler)
                steps += 1
            n = int(metrics.pop("n", 1))
            count += n
            for k, v in {"loss": float(loss.detach()), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
    if ddp.enabled:
        sums, count = distributed.allreduce_sums(sums, count)
    out = {k: v / max(count, 1) for k, v in sums.items()}
    if train:
        out["steps"] = float(steps)  # optimizer steps of this epoch (a count, not a mean)
    return out


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, ddp: bool,
                    scaler: "torch.amp.GradScaler | None" = None) -> None:
    if ddp:  # the weighted local gradients summed over ranks: the global batch's gradient
        distributed.allreduce_grads([q for g in optimizer.param_groups for q in g["params"]])
    if scaler is not None:  # float16 autocast: unscale before clipping; a step with inf / nan is skipped
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if ddp:  # BatchNorm running statistics: rank 0's, as DistributedDataParallel(broadcast_buffers=True)
        distributed.broadcast_module(model, buffers_only=True)


def fit(model: nn.Module, step: StepFn, train_batches: Callable[[int], Iterable],
        val_batches: Callable[[], Iterable] | None, cfg: FitConfig, ckpt_dir: Path,
        fingerprint: str, params: Iterable[nn.Parameter] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        val_metrics: Callable[[], dict[str, float]] | None = None,
        log_metrics: MetricLogger | None = None, compute: Compute | None = None) -> FitResult:
    """Train ``model`` in place; ``train_batches(epoch)`` must be deterministic given the epoch.

    ``val_metrics()`` (optional) adds task metrics that are not batch means (e.g. a sampler's val mAP
    of its selections) to each epoch's row as ``val_<name>``, before the monitored value is read.
    ``log_metrics`` (the tracker, handed in by the caller; the engine imports none) receives each
    epoch's row as ``{"<log_prefix or desc>/<key>": value}`` (``{"<key>": value}`` for
    ``log_prefix=""``) with ``step=epoch``. ``compute`` (default: CPU, float32) moves the model and
    batches to a device and turns on autocast / channels_last (:class:`Compute`); the model is back
    on the CPU when ``fit`` returns, so callers save and evaluate it as before."""
    compute = compute or Compute()
    if not compute.is_default:
        model.to(compute.torch_device())
        if compute.channels_last:
            model.to(memory_format=torch.channels_last)
    try:
        return _fit(model, step, train_batches, val_batches, cfg, ckpt_dir, fingerprint, params, on_epoch,
                    val_metrics, log_metrics, compute)
    finally:
        if not compute.is_default:
            model.to("cpu", memory_format=torch.contiguous_format)


def _fit(model, step, train_batches, val_batches, cfg, ckpt_dir, fingerprint, params, on_epoch, val_metrics,
         log_metrics, compute: Compute) -> FitResult:
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.pt"
    fingerprint = f"{fingerprint}|{cfg!r}|v{CKPT_VERSION}"  # another FitConfig or layout never resumes
    opt = torch.optim.AdamW(list(params) if params is not None else model.parameters(),
                            lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    scaler = torch.amp.GradScaler(compute.torch_device().type) if compute.amp and compute.amp_dtype == "float16" else None
    result = FitResult()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bad_epochs = 0
    start = 0
    ddp = distributed.state()
    if last.exists():
        ck = torch.load(last, map_location=compute.torch_device(), weights_only=False)
        if not isinstance(ck, dict) or ck.get("fingerprint") != fingerprint:
            raise CheckpointMismatch(
                f"{last} was written by another configuration (fingerprint {ck.get('fingerprint')!r}, "
                f"expected {fingerprint!r}); delete it or point ckpt_dir elsewhere")
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointMismatch(f"{last} does not fit this model ({str(e)[:300]}); delete it") from e
        sched.load_state_dict(ck["scheduler"])
        best_state, bad_epochs = ck["best_state"], ck["bad_epochs"]
        result.history, result.best_epoch, result.best_score = ck["history"], ck["best_epoch"], ck["best_score"]
        torch.set_rng_state(ck["torch_rng"].cpu())
        start = result.resumed_from = ck["epoch"] + 1
        if ddp.rank:  # rank 0 continues the saved stream; the others draw their own (dropout masks)
            torch.manual_seed(cfg.seed + RANK_SEED_STRIDE * ddp.rank + start)
        log.info("%s: resuming from %s at epoch %d", cfg.desc, last, start)
    else:
        seed_everything(cfg.seed + RANK_SEED_STRIDE * ddp.rank)
    if ddp.enabled:  # every rank starts from rank 0's weights
        distributed.broadcast_module(model)
    if start >= cfg.epochs or ck_stopped(result, bad_epochs, cfg):
        model.load_state_dict(best_state)
        return result

    bar = tqdm(range(start, cfg.epochs), desc=cfg.desc, initial=start, total=cfg.epochs,
               disable=None if ddp.is_main else True)
    for epoch in bar:
        row = {"epoch": float(epoch), "lr": opt.param_groups[0]["lr"]}
        trained = run_epoch(model, step, train_batches(epoch), True, opt, cfg.grad_clip, f"{cfg.desc} e{epoch}",
                            compute, scaler)
        # optimizer steps so far, this epoch included (steps to the best epoch = its row's value)
        row["steps"] = trained.pop("steps") + (result.history[-1].get("steps", 0.0) if result.history else 0.0)
        row.update({f"train_{k}": v for k, v in trained.items()})
        sched.step()
        if val_batches is not None:
            row.update({f"val_{k}": v for k, v in run_epoch(model, step, val_batches(), False, desc="val",
                                                                    compute=compute).items()})
        if val_metrics is not None:
            row.update({f"val_{k}": float(v) for k, v in val_metrics().items()})
        if ddp.enabled:  # rank 0's row everywhere: the same early-stopping decision on every rank
            row = distributed.broadcast_object(row)
        key = cfg.monitor if cfg.monitor in row else cfg.monitor.replace("val_", "train_", 1)
        if key not in row:
            raise KeyError(f"{cfg.desc}: monitored metric {cfg.monitor!r} not in {sorted(row)}")
        score = row[key] if cfg.mode == "min" else -row[key]
        if score < result.best_score - 1e-6:
            result.best_score, result.best_epoch, bad_epochs = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        result.history.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith(("loss", "acc"))})
        log.info("%s epoch %d: %s", cfg.desc, epoch, {k: round(v, 4) for k, v in row.items()})
        if log_metrics is not None and ddp.is_main:
            prefix = cfg.desc if cfg.log_prefix is None else cfg.log_prefix
            log_metrics({f"{prefix}/{k}" if prefix else k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        if on_epoch is not None:
            on_epoch(epoch, row)
        atomic_torch_save({"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),  # rank 0 only
                           "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "best_state": best_state, "bad_epochs": bad_epochs, "history": result.history,
                           "best_epoch": result.best_epoch, "best_score": result.best_score,
                           "torch_rng": torch.get_rng_state()}, last)
        if ck_stopped(result, bad_epochs, cfg):
            result.stopped_early = True
            log.info("%s: early stop at epoch %d (best %d, %s %.4f)", cfg.desc, epoch,
                     result.best_epoch, cfg.monitor, abs(result.best_score))
            break
    model.load_state_dict(best_state)
    return result


def ck_stopped(result: FitResult, bad_epochs: int, cfg: FitConfig) -> bool:
    return bad_epochs >= cfg.patience
