"""``salient bench ddp`` -> ``reports/bench_ddp.json``: one training epoch of the frame recognizer
(the params' ``encoders.recognizer_arch`` at ``frames.recognizer_size``, random frames, the real
engine) in one process and under ``torchrun`` with 2 gloo ranks, the same global batch.

Each configuration runs in a fresh process (one after the other, same machine), twice, and the
benchmark reports the median epoch seconds, frames/s, the ratio of 1 process to 2 ranks, and the
first epoch's train loss of each (BatchNorm sees each rank's half of the batch, so the curves agree
only approximately; the exact equality of the engine's DDP is tested in tests/test_distributed.py on
a model without BatchNorm). Threads: the single process uses every core; each rank gets
cores / ranks, so the two configurations use the same cores and the ratio is the cost (or gain) of
data parallelism on this machine, not of extra hardware.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from components.core import distributed
from components.core.atomic import atomic_write_json
from components.training.engine import FitConfig, fit
from components.models.encoders import create_encoder


def _worker(out: Path, arch: str, size: int, frames: int, batch: int, threads: int) -> None:
    state = distributed.init("gloo", "cpu", 300)
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (frames, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 12, (frames,), generator=g)
    torch.manual_seed(0)
    model = create_encoder("recognizer", arch=arch, num_classes=12, pretrained=False, weights="none")

    def train_batches(epoch):
        order = torch.randperm(frames, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, frames, batch):
            j = order[i:i + batch]
            yield x[j], y[j]

    def step(m, b, train):
        xb, yb = b
        _, logits = m(xb.float().div_(255.0))
        return torch.nn.functional.cross_entropy(logits, yb), {"n": len(yb)}

    t0 = time.perf_counter()
    res = fit(model, step, train_batches, None, FitConfig(epochs=1, lr=1e-3, seed=0, desc="bench ddp"),
              out / "ckpt", "bench")
    seconds = time.perf_counter() - t0
    atomic_write_json(out / "result.json", {"seconds": seconds, "world": state.world,
                                            "train_loss": res.history[0]["train_loss"]})
    distributed.shutdown()


def _run(world: int, args: list[str], cores: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="salient-bench-ddp-") as tmp:
        worker = ["-m", "components.app.bench_ddp", "--worker", tmp, *args, "--threads", str(max(cores // world, 1))]
        if world == 1:
            cmd = [sys.executable, *worker]
        else:
            cmd = distributed.torchrun_command("components.app.bench_ddp", worker[2:], world)
        env = {**os.environ, "OMP_NUM_THREADS": str(max(cores // world, 1))}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"bench ddp ({world} ranks) failed: {r.stderr[-3000:]}")
        res = json.loads((Path(tmp) / "result.json").read_text())
    return {**res, "process_wall_s": wall}


def bench_ddp(arch: str = "resnet18", size: int = 112, frames: int = 512, batch: int = 32, repeats: int = 2) -> dict:
    cores = os.cpu_count() or 1
    args = ["--arch", arch, "--size", str(size), "--frames", str(frames), "--batch", str(batch)]
    runs = {w: [_run(w, args, cores) for _ in range(repeats)] for w in (1, 2)}
    out: dict = {"setting": {"arch": arch, "size": size, "frames_per_epoch": frames, "global_batch": batch,
                             "cores": cores, "threads_per_rank": {w: max(cores // w, 1) for w in (1, 2)},
                             "repeats": repeats, "backend": "gloo"}}
    for w, rs in runs.items():
        sec = statistics.median(r["seconds"] for r in rs)
        out[f"{w}_rank" + ("s" if w > 1 else "")] = {
            "epoch_s": round(sec, 2), "frames_per_s": round(frames / sec, 1),
            "epoch_s_each": [round(r["seconds"], 2) for r in rs],
            "process_wall_s_each": [round(r["process_wall_s"], 2) for r in rs],
            "first_epoch_train_loss": rs[0]["train_loss"]}
    out["speedup_2_ranks_over_1"] = round(out["1_rank"]["epoch_s"] / out["2_ranks"]["epoch_s"], 3)
    out["train_loss_rel_diff"] = abs(out["2_ranks"]["first_epoch_train_loss"] - out["1_rank"]["first_epoch_train_loss"]) \
        / abs(out["1_rank"]["first_epoch_train_loss"])
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m components.app.bench_ddp")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="reports/bench_ddp.json")
    a = ap.parse_args(argv)
    if a.worker:
        _worker(Path(a.worker), a.arch, a.size, a.frames, a.batch, a.threads or (os.cpu_count() or 1))
        return 0
    res = bench_ddp(a.arch, a.size, a.frames, a.batch, a.repeats)
    atomic_write_json(Path(a.out), res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
