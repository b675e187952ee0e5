"""A tiny trainer for tests/test_distributed.py: the real engine (components.training.engine.fit) on a small
deterministic regression problem, run as ``python tests/ddp_tiny.py OUT`` or under ``torchrun``.

Writes ``OUT/history.json`` (rank 0, through components.core.atomic) and ``OUT/rank<r>.pid``. Env knobs
(test-only): TINY_EPOCHS, TINY_N (samples), TINY_BATCH (global batch), TINY_STOP_AFTER (exit with
status 3 after that epoch's checkpoint, to resume later), TINY_SLEEP (seconds per step, to kill a
rank mid-epoch), TINY_TIMEOUT (collective timeout, s).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from components.core import distributed
from components.core.atomic import atomic_write_json
from components.training.engine import FitConfig, fit


def main(out: Path) -> int:
    epochs, n, bs = int(os.environ.get("TINY_EPOCHS", 4)), int(os.environ.get("TINY_N", 25)), int(os.environ.get("TINY_BATCH", 8))
    stop_after, nap = int(os.environ.get("TINY_STOP_AFTER", -1)), float(os.environ.get("TINY_SLEEP", 0))
    state = distributed.init("auto", "cpu", int(os.environ.get("TINY_TIMEOUT", 60)))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{state.rank}.pid").write_text(str(os.getpid()))
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    x, y = x.double(), y.double()

    def train_batches(epoch):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(100 + epoch))
        for i in range(0, n, bs):
            j = order[i:i + bs]
            yield x[j], y[j]

    def val_batches():
        for i in range(0, n, 5):
            yield x[i:i + 5], y[i:i + 5]

    def step(m, batch, train):
        if nap:
            time.sleep(nap)
        xb, yb = batch
        loss = ((m(xb) - yb) ** 2).mean()
        return loss, {"n": len(xb)}

    def on_epoch(epoch, row):
        if epoch == stop_after:
            sys.exit(3)

    cfg = FitConfig(epochs=epochs, lr=0.05, patience=100, seed=0, grad_clip=1.0, desc="tiny")
    res = fit(model, step, train_batches, val_batches, cfg, out / "ckpt", "tiny", on_epoch=on_epoch)
    weights = [float(v) for v in torch.cat([q.detach().reshape(-1) for q in model.parameters()])]
    atomic_write_json(out / "history.json", {"history": res.history, "resumed_from": res.resumed_from,
                                             "weights": weights, "world": state.world})
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
