"""Measured multiply-accumulates (DESIGN.md §3: "GFLOPs" in these papers means GMACs).

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on the real modules at the real input
shapes; it reports 2 FLOPs per MAC, so :func:`count_macs` halves it. Total cost of a prediction =
light encoder × T + object recognizer × T (TQM) + sampler + recognizer × K (+ audio × T).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(fn: Callable[[], Any]) -> int:
    """MACs of one forward call of ``fn`` (e.g. ``lambda: model(x)``); nothing is back-propagated.

    Runs with autograd on: under ``no_grad`` a view of a parameter fed to a submodule (TSQNet's
    query projection) requires grad without a ``grad_fn``, which FlopCounterMode's module tracker
    rejects.
    """
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def frame_model_gmacs(model: torch.nn.Module, size: int) -> float:
    """GMACs of one frame [1,3,size,size] through ``model``."""
    model.eval()
    return count_macs(lambda: model(torch.zeros(1, 3, size, size))) / 1e9
