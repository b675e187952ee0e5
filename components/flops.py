"""Measured multiply-accumulates (DESIGN.md §3: "GFLOPs" in these papers means GMACs).

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on the real modules at the real input
shapes; it reports 2 FLOPs per MAC, so :func:`count_macs` halves it. Total cost of a prediction =
light encoder × T + object recognizer × T (TQM) + sampler + recognizer × K (+ audio × T).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_macs(fn: Callable[[], Any]) -> int:
    """MACs of one call of ``fn`` (e.g. ``lambda: model(x)``)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def frame_model_gmacs(model: torch.nn.Module, size: int) -> float:
    """GMACs of one frame [1,3,size,size] through ``model``."""
    model.eval()
    return count_macs(lambda: model(torch.zeros(1, 3, size, size))) / 1e9
