"""Saliency samplers: one registry, one interface (timm style).

    from components.models.samplers import create_sampler, list_samplers
    s = create_sampler("tsqnet", num_classes=C, ...)

Every sampler is an ``nn.Module`` mapping a :data:`Batch` of stored features (see
:mod:`components.features`: ``light_feats [B,T,d]``, ``light_logits [B,T,C]``, ``object_scores
[B,T,1000]``, ``rec_feats [B,T,D]``, ``rec_logits [B,T,C]``, ``audio_emb [B,T,a]``, ``has_audio
[B]``, ``gt [B,T]``, ``labels [B,C]`` multi-hot float, and in training ``ns_labels [B,T,C+1]``) to a
:class:`SamplerOutput` whose ``saliency`` is ``[B,T]`` (higher = more salient). Samplers with two
branches (TSQNet: VQM / TQM, NSNet: FSM / VGM) also expose them in ``branches`` for fusion, and
override :meth:`Sampler.select` to fuse. Trainable samplers implement :meth:`Sampler.loss`; the
shared engine (:mod:`components.engine`) trains them all with one step function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from components import selection
from components.registry import Registry

SAMPLERS = Registry("sampler")
Batch = Mapping[str, torch.Tensor]


@dataclass
class SamplerOutput:
    saliency: torch.Tensor  # [B,T]
    branches: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B,T]
    logits: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B,C] (coarse predictions)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # anything a loss needs


class Sampler(nn.Module):
    """Base class. ``trainable`` samplers implement :meth:`loss`; ``inputs`` names the store arrays used."""

    trainable: bool = False
    inputs: tuple[str, ...] = ()

    def forward(self, batch: Batch) -> SamplerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, batch: Batch, out: SamplerOutput) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{type(self).__name__} is not trainable")

    def select(self, out: SamplerOutput, K: int) -> np.ndarray:
        """K distinct frame indices per video, [B,K] int64 (default: top-K of ``saliency``)."""
        return selection.topk_select(out.saliency.detach().cpu().numpy(), K)


class FeatureNorm(nn.Module):
    """Per-dimension standardisation with statistics of the training split, kept as buffers.

    Pooled CNN features (e.g. MobileNetV2's 1280-d light features) share a large common component
    across frames: on the demo set the per-dimension std is ~0.07 around a mean of ~0.43, so raw
    dot-product attention sees near-identical keys and the VQM never leaves a uniform attention.
    Standardising removes the common component; stored in the checkpoint, the same transform
    applies in evaluation and in ``salient predict``. Identity when no statistics are given.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None, eps: float = 1e-4):
        super().__init__()
        self.enabled = mean is not None
        if self.enabled:
            self.register_buffer("mean", torch.as_tensor(mean).float().clone())
            self.register_buffer("std", torch.as_tensor(std).float().clamp(min=eps).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., d] -> [..., d]
        return (x - self.mean) / self.std if self.enabled else x


def create_sampler(name: str, **cfg) -> Sampler:
    _import_members()
    return SAMPLERS.create(name, **cfg)


def sampler_trainable(name: str) -> bool:
    """Whether registered sampler ``name`` learns (has a loss) or is a training-free baseline: the
    ``trainable`` flag of the class its factory is annotated to return (nothing is built)."""
    import typing

    _import_members()
    cls = typing.get_type_hints(SAMPLERS.get(name)).get("return")
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TypeError(f"sampler factory {name!r} must be annotated to return its Sampler class")
    return bool(cls.trainable)


def list_samplers() -> list[str]:
    _import_members()
    return SAMPLERS.list()


def _import_members() -> None:
    """Import the member modules so their ``@SAMPLERS.register`` decorators run."""
    import importlib

    for mod in ("baselines", "tsqnet", "nsnet", "avgn"):
        try:
            importlib.import_module(f"components.models.samplers.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"components.models.samplers.{mod}":
                raise
