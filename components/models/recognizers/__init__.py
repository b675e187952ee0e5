"""Clip recognizers: one registry, one interface (timm style).

    from components.models.recognizers import create_recognizer, list_recognizers
    r = create_recognizer("tsi", arch="resnet50", num_classes=C, num_frames=8)

Every recognizer is a :class:`Recognizer`: frames ``[B,K,3,H,W]`` in [0, 1] -> logits ``[B,C]``.
It folds the K frames of a clip into the batch, runs a timm frame recognizer on them (the
:class:`~components.models.encoders.FrameClassifier` of ``create_encoder("recognizer")``, which
normalises its input itself) and averages over the K frames (TSN's average consensus), by
``consensus`` (:data:`CONSENSUS`): ``"probs"`` (the default) averages the frames' softmax and returns
its log, so ``softmax(output)`` is the mean of the frames' probabilities, exactly how the frame
recognizer is scored on selected frames (``components.evaluation.sampler_eval``); ``"logits"`` averages the raw
class scores (TSN's and the TSI paper's temporal average pooling of scores). On the demo's untrimmed
videos the two differ a lot for the same frame recognizer: val mAP 65.6 vs 51.6 on 5 uniform frames,
75.6 vs 60.0 on all 16 (a few confident background frames dominate a mean of logits), so a clip
recognizer built on ``"logits"`` starts 14 points below the frame recognizer it was initialised from.
K may change from call to call; ``num_frames`` is the nominal
clip length the recognizer is built for (what a caller should sample), not a shape baked into the
weights. ``pretrained_state`` initialises the backbone from a trained frame recognizer of the same
timm arch (see :func:`load_frame_state`).

* ``tsn`` - the plain frame recognizer on every frame, scores averaged (TSN, Wang et al. 2016):
  order-invariant, the comparison point.
* ``tsi`` - TSI (Su et al. 2021): the same backbone with a TSI block (SME + CTI) in every residual
  block, see :mod:`components.models.recognizers.tsi`.
"""
from __future__ import annotations

import math
import os
from typing import Mapping

import torch
import torch.nn as nn

from components.core.integrity import load_checkpoint
from components.models.encoders import FrameClassifier, create_encoder
from components.core.registry import Registry

RECOGNIZERS = Registry("recognizer")
#: How a clip's per-frame class scores are averaged (see the module docstring).
CONSENSUS = ("probs", "logits")


def average_consensus(logits: torch.Tensor, consensus: str = "probs") -> torch.Tensor:
    """Per-frame logits ``[B,K,C]`` -> clip logits ``[B,C]``: ``"probs"``: ``log mean_k softmax(z_k)``
    (its softmax is the mean of the frames' probabilities); ``"logits"``: ``mean_k z_k``."""
    if consensus == "probs":
        return logits.log_softmax(-1).logsumexp(1) - math.log(logits.shape[1])
    if consensus == "logits":
        return logits.mean(1)
    raise ValueError(f"unknown consensus {consensus!r}; expected one of {CONSENSUS}")


def load_frame_state(model: FrameClassifier, state: Mapping[str, torch.Tensor]) -> None:
    """Load a frame recognizer's weights, strictly: a ``FrameClassifier`` state dict (keys
    ``backbone.*``, as ``train_encoders`` saves it) or a plain timm state dict of the same arch."""
    if all(k.startswith("backbone.") for k in state):
        model.load_state_dict(state)
    else:
        model.backbone.load_state_dict(state)


class Recognizer(nn.Module):
    """Frame recognizer per frame + average over the clip (TSN consensus, :func:`average_consensus`)."""

    def __init__(self, arch: str, num_classes: int, num_frames: int,
                 pretrained_state: Mapping[str, torch.Tensor] | None = None, consensus: str = "probs"):
        super().__init__()
        if consensus not in CONSENSUS:
            raise ValueError(f"unknown consensus {consensus!r}; expected one of {CONSENSUS}")
        self.frames = create_encoder("recognizer", arch=arch, num_classes=num_classes, pretrained=False)
        if pretrained_state is not None:
            load_frame_state(self.frames, pretrained_state)
        self.arch = arch
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.consensus = consensus

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,K,3,H,W] in [0,1] -> [B,C]
        B, K = x.shape[:2]
        logits = self.frames(x.flatten(0, 1))[1]  # [B*K, C]
        return average_consensus(logits.view(B, K, -1), self.consensus)


@RECOGNIZERS.register("tsn")
def tsn(arch: str, num_classes: int, num_frames: int,
        pretrained_state: Mapping[str, torch.Tensor] | None = None, consensus: str = "probs") -> Recognizer:
    """TSN: the plain frame recognizer on each of the K frames, averaged by ``consensus``."""
    return Recognizer(arch, num_classes, num_frames, pretrained_state, consensus)


def create_recognizer(name: str, **cfg) -> Recognizer:
    _import_members()
    return RECOGNIZERS.create(name, **cfg)


def list_recognizers() -> list[str]:
    _import_members()
    return RECOGNIZERS.list()


def _import_members() -> None:
    """Import the member modules so their ``@RECOGNIZERS.register`` decorators run."""
    import importlib

    for mod in ("tsi",):
        importlib.import_module(f"components.models.recognizers.{mod}")


def load_recognizer(path: str | os.PathLike) -> Recognizer:
    """Rebuild a clip recognizer saved by ``train_recognizer`` (``{"name", "cfg", "state_dict", "classes"}``)."""
    ck = load_checkpoint(path, "recognizer checkpoint", "retrain it (`dvc repro -f train_recognizer@<seed>`)")
    model = create_recognizer(ck["name"], **ck["cfg"])
    model.load_state_dict(ck["state_dict"])
    return model.eval()
