"""The ``synthetic`` adapter: the synthetic benchmark's videos, generated (or resumed) under ``p.root``.
"""
from __future__ import annotations

from pathlib import Path

from components.core.params import DataParams
from components.data.adapters import AdapterResult, Candidate, register_adapter
from components.data.synthetic import generate as generate_synthetic


@register_adapter("synthetic")
def synthetic(p: DataParams) -> AdapterResult:
    """The synthetic benchmark: generate (or resume generating) the videos under ``p.root``."""
    cands, classes = generate_synthetic(p.synthetic, Path(p.root), workers=p.workers)
    return AdapterResult([Candidate(c.video_id, c.path, tuple(c.labels), c.split, c.gt) for c in cands], classes, [])
