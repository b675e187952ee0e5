"""Clip recognizers: one registry, one interface (timm style).

    from components.models.recognizers import create_recognizer, list_recognizers
    r = create_recognizer("tsi", arch="resnet50", num_classes=C, num_frames=8)

Every recognizer is a :class:`Recognizer`: frames ``[B,K,3,H,W]`` in [0, 1] -> logits ``[B,C]``.
It folds the K frames of a clip into the batch, runs a timm frame recognizer on them (the
:class:`~components.models.encoders.FrameClassifier` of ``create_encoder("recognizer")``, which
normalises its input itself) and averages the class scores over the K frames (TSN's consensus,
temporal average pooling of scores). K may change from call to call; ``num_frames`` is the nominal
clip length the recognizer is built for (what a caller should sample), not a shape baked into the
weights. ``pretrained_state`` initialises the backbone from a trained frame recognizer of the same
timm arch (see :func:`load_frame_state`).

* ``tsn`` - the plain frame recognizer on every frame, scores averaged (TSN, Wang et al. 2016):
  order-invariant, the comparison point.
* ``tsi`` - TSI (Su et al. 2021): the same backbone with a TSI block (SME + CTI) in every residual
  block, see :mod:`components.models.recognizers.tsi`.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
import torch.nn as nn

from components.integrity import load_checkpoint
from components.models.encoders import FrameClassifier, create_encoder
from components.registry import Registry

RECOGNIZERS = Registry("recognizer")


def load_frame_state(model: FrameClassifier, state: Mapping[str, torch.Tensor]) -> None:
    """Load a frame recognizer's weights, strictly: a ``FrameClassifier`` state dict (keys
    ``backbone.*``, as ``train_encoders`` saves it) or a plain timm state dict of the same arch."""
    if all(k.startswith("backbone.") for k in state):
        model.load_state_dict(state)
    else:
        model.backbone.load_state_dict(state)


class Recognizer(nn.Module):
    """Frame recognizer per frame + average of the class scores over the clip (TSN consensus)."""

    def __init__(self, arch: str, num_classes: int, num_frames: int,
                 pretrained_state: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        self.frames = create_encoder("recognizer", arch=arch, num_classes=num_classes, pretrained=False)
        if pretrained_state is not None:
            load_frame_state(self.frames, pretrained_state)
        self.arch = arch
        self.num_classes = num_classes
        self.num_frames = num_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,K,3,H,W] in [0,1] -> [B,C]
        B, K = x.shape[:2]
        logits = self.frames(x.flatten(0, 1))[1]  # [B*K, C]
        return logits.view(B, K, -1).mean(1)


@RECOGNIZERS.register("tsn")
def tsn(arch: str, num_classes: int, num_frames: int,
        pretrained_state: Mapping[str, torch.Tensor] | None = None) -> Recognizer:
    """TSN: the plain frame recognizer on each of the K frames, class scores averaged."""
    return Recognizer(arch, num_classes, num_frames, pretrained_state)


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
