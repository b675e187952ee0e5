"""Measured multiply-accumulates (docs/design.md §3: "GFLOPs" in these papers means GMACs).

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on the real modules at the real input
shapes; it reports 2 FLOPs per MAC, so :func:`count_macs` halves it. Total cost of a prediction =
light encoder × T + object recognizer × T (TQM) + sampler + recognizer × K (+ audio × T).

    rows = flops_table_for_params(p, num_classes=12, sampler_name="tsqnet", k=5)   # our config
    rows = paper_setting_rows("tsqnet")                                          # ActivityNet setting
    write_flops_table(rows, "reports/flops.csv", "reports/flops.md")                # components.evaluation.cost_table

:func:`prediction_flops` builds the table of one prediction from instantiated modules
(:class:`FrameModel` = a per-frame model + its input resolution), so the same code measures the
demo config and the papers' setting. Which per-frame models a sampler needs, and how often, is
:func:`frame_calls`; :func:`video_gmacs` turns it into the cost of one prediction (used by
``sampler_report``, ``tune_fusion`` and ``evaluate``). The counter sees matrix
products and convolutions only (no BatchNorm, activations or softmax), which is how the papers'
numbers are usually counted too; ResNet-50 at 224² is 4.089 GMACs here against the papers' 4.109.
"""
from __future__ import annotations

import logging
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from components.store.features import load_frame_model
from components.models.encoders import create_encoder
from components.models.samplers import (create_sampler, list_samplers, sampler_class, sampler_trainable,
                                        untrained_sampler)
from components.core.params import NSNetParams, Params

log = logging.getLogger(__name__)

ROLES = ("light", "object", "audio", "recognizer")  # per-frame models, in table order (sampler after audio)
COMPONENT = {"light": "light encoder", "object": "object recognizer", "audio": "audio encoder",
             "recognizer": "recognizer", "sampler": "sampler"}


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


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block, its training flag restored after."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def sampler_gmacs(sampler: nn.Module, batch: Mapping[str, torch.Tensor]) -> float:
    """GMACs of one sampler forward on ``batch`` (stored features of one video, ``[1,T,...]``), in eval mode."""
    with _eval_mode(sampler):
        return count_macs(lambda: sampler(batch)) / 1e9


# --------------------------------------------------------------------------------- the table rows
@dataclass(frozen=True)
class FlopsRow:
    """One line of a cost table: ``calls`` forward passes of ``model`` at ``resolution``.

    ``paper_gmacs`` is the paper's number for the whole row (per call × calls), None where the paper
    gives none; ``source`` says where it comes from (markdown notes only, not in the CSV).
    """
    component: str  # "light encoder", "object recognizer", "sampler", "recognizer", "audio encoder"
    model: str  # timm arch or sampler name
    resolution: str  # "188x188", "96x64" (audio window) or the sampler's inputs "light_feats[1,16,1280]"
    gmacs_per_call: float
    calls: int
    paper_gmacs: float | None = None
    source: str = ""

    @property
    def gmacs(self) -> float:
        return self.gmacs_per_call * self.calls


def total_gmacs(rows: Sequence[FlopsRow]) -> float:
    """Cost of one prediction: the sum of the rows."""
    return float(sum(r.gmacs for r in rows))


@dataclass
class FrameModel:
    """A per-frame model and its input: RGB frames ``[1,3,s,s]`` for ``resolution = s``, or one log-mel
    window ``[1,F,M]`` (the audio encoder) for ``resolution = (F, M)``."""
    module: nn.Module
    resolution: int | tuple[int, int]
    name: str = ""

    def example(self) -> torch.Tensor:
        if isinstance(self.resolution, int):
            return torch.zeros(1, 3, self.resolution, self.resolution)  # [1,3,s,s]
        return torch.zeros(1, *self.resolution)  # [1,F,M]

    @property
    def label(self) -> str:
        r = self.resolution
        return f"{r}x{r}" if isinstance(r, int) else "x".join(map(str, r))

    def gmacs(self) -> float:
        """GMACs of one call (one frame / one window), in eval mode."""
        x = self.example()
        with _eval_mode(self.module):
            return count_macs(lambda: self.module(x)) / 1e9


# ------------------------------------------------------------------------- which models run how often
#: Store arrays (``components.store.features.store_specs``) whose per-frame producer :func:`frame_calls` knows: a per-frame
#: model's output, or bookkeeping / pixels that cost no model call before the sampler (whatever a sampler does with
#: ``frames_full`` runs inside its own forward and is counted there).
COUNTED_INPUTS = frozenset({"light_feats", "light_logits", "light_maps", "object_scores", "rec_feats", "rec_logits",
                            "audio_emb", "has_audio", "frames_full", "frame_indices", "timestamps", "gt", "labels",
                            "valid"})


#: Store arrays the frame recognizer produces: a sampler reading them runs it on all T frames.
RECOGNIZER_OUTPUTS = frozenset({"rec_feats", "rec_logits"})


class UncountedSamplerError(ValueError):
    """A sampler whose cost the counter cannot tell (it would otherwise be counted as free)."""


def frame_calls(name: str, sampler: nn.Module | None, T: int, K: int) -> dict[str, int]:
    """Per-frame model calls of one prediction with sampler ``name``: ``{"light", "object", "audio",
    "recognizer"} -> calls``, judged by the store arrays it reads (:meth:`Sampler.cost_inputs`): light
    features / logits -> the light encoder on all T frames (light maps: on its ``glance_frames``, AVGN's
    T_G, eq. 14), object scores -> the object recognizer on T, audio -> the audio encoder on T, the
    recognizer's cached features / logits -> the recognizer on T; else the recognizer on its K frames
    (on T for a sampler that ``uses_all_frames``). ``sampler`` None: the registry's untrained ``name``.
    Raises :class:`UncountedSamplerError`, naming the sampler, when it declares no inputs or reads an
    array whose producer this function does not know: counting it as free would be wrong."""
    if sampler is None:  # a registered name: its class's declared inputs (a baseline's: an instance, no arguments)
        if name not in list_samplers():
            raise UncountedSamplerError(f"cannot count the per-frame cost of sampler {name!r}: not registered and "
                                        "no instance given")
        sampler = sampler_class(name) if sampler_trainable(name) else create_sampler(name)
    inputs = tuple(sampler.cost_inputs() if isinstance(sampler, nn.Module) and hasattr(sampler, "cost_inputs")
                   else getattr(sampler, "inputs", ()))
    unknown = sorted(set(inputs) - COUNTED_INPUTS)
    if not getattr(sampler, "inputs", ()) or unknown:
        what = f"reads {unknown}, which no per-frame model of the cost table produces" if unknown else \
            "declares no store inputs (its `inputs`)"
        raise UncountedSamplerError(f"cannot count the per-frame cost of sampler {name!r} "
                                    f"({type(sampler).__name__}): it {what}")
    calls = dict.fromkeys(ROLES, 0)
    calls["light"] = T * any(k in inputs for k in ("light_feats", "light_logits"))
    if "light_maps" in inputs:  # AVGN: the glance encodes only its first T_G frames (eq. 14)
        calls["light"] = min(T, int(getattr(sampler, "glance_frames", T)))
    calls["object"] = T * ("object_scores" in inputs)
    calls["audio"] = T * ("audio_emb" in inputs)
    on_all = getattr(sampler, "uses_all_frames", False) or bool(RECOGNIZER_OUTPUTS & set(inputs))
    calls["recognizer"] = T if on_all else K
    return calls


def feature_batch(T: int, num_classes: int, light_dim: int = 1280, rec_dim: int = 512, audio_dim: int = 128,
                  n_objects: int = 1000) -> dict[str, torch.Tensor]:
    """Stored features of one video (every array a sampler may read), for counting its cost."""
    return {"light_feats": torch.zeros(1, T, light_dim), "light_logits": torch.zeros(1, T, num_classes),
            "object_scores": torch.full((1, T, n_objects), 1.0 / n_objects),
            "rec_feats": torch.zeros(1, T, rec_dim), "rec_logits": torch.zeros(1, T, num_classes),
            "audio_emb": torch.zeros(1, T, audio_dim), "has_audio": torch.ones(1, dtype=torch.bool),
            "gt": torch.zeros(1, T, dtype=torch.long), "labels": torch.eye(num_classes)[:1],
            "frame_indices": torch.arange(T)[None]}


def _inputs_label(sampler: nn.Module, batch: Mapping[str, torch.Tensor]) -> str:
    keys = [k for k in getattr(sampler, "inputs", ()) if k in batch]
    return ", ".join(f"{k}[{','.join(map(str, batch[k].shape))}]" for k in keys) or "-"


def prediction_flops(sampler_name: str, T: int, K: int, recognizer: FrameModel, light: FrameModel | None = None,
                     object_recognizer: FrameModel | None = None, audio: FrameModel | None = None,
                     sampler: nn.Module | None = None,
                     batch: Mapping[str, torch.Tensor] | None = None) -> list[FlopsRow]:
    """The cost table of one prediction, measured on the given modules.

    Rows, in order: light encoder × T, object recognizer × T, audio encoder × T (each only when
    :func:`frame_calls` says the sampler needs it), the sampler once on ``batch`` (default: zeros
    shaped like the store's arrays, :func:`feature_batch`), the recognizer × K (× T for dense /
    MaxConf). ``sampler`` defaults to the registry's untrained ``sampler_name`` (baselines only).
    """
    if sampler is None:
        if sampler_trainable(sampler_name):
            raise ValueError(f"prediction_flops: pass the instantiated {sampler_name} sampler "
                             "(see flops_table_for_params)")
        sampler = create_sampler(sampler_name)
    calls = frame_calls(sampler_name, sampler, T, K)
    models = {"light": light, "object": object_recognizer, "audio": audio, "recognizer": recognizer}
    if batch is None:
        num_classes = int(getattr(recognizer.module, "num_classes", 2))
        dims = {"light_dim": getattr(light.module, "num_features", 1280) if light else 1280,
                "rec_dim": getattr(recognizer.module, "num_features", 512),
                "audio_dim": getattr(audio.module, "num_features", 128) if audio else 128}
        batch = feature_batch(T, num_classes, **dims)
    rows = []
    for role in ("light", "object", "audio"):
        if calls[role]:
            fm = models[role]
            if fm is None:
                raise ValueError(f"sampler {sampler_name!r} runs the {COMPONENT[role]} on every frame: pass it")
            rows.append(FlopsRow(COMPONENT[role], fm.name, fm.label, fm.gmacs(), calls[role]))
    rows.append(FlopsRow("sampler", sampler_name, _inputs_label(sampler, batch),
                         counted_sampler_gmacs(sampler_name, sampler, batch), 1))
    rows.append(FlopsRow("recognizer", recognizer.name, recognizer.label, recognizer.gmacs(), calls["recognizer"]))
    return rows


def counted_sampler_gmacs(name: str, sampler: nn.Module, batch: Mapping[str, torch.Tensor]) -> float:
    """:func:`sampler_gmacs`, refusing what cannot be counted, naming the sampler: a forward that needs an
    array ``batch`` lacks, or a learned sampler in which the counter saw no matrix product or convolution
    (its work would be counted as free)."""
    try:
        g = sampler_gmacs(sampler, batch)
    except KeyError as e:
        raise UncountedSamplerError(f"cannot count sampler {name!r} ({type(sampler).__name__}): its forward reads "
                                    f"{e}, which the cost batch does not hold") from None
    if g <= 0 and getattr(sampler, "trainable", False):
        raise UncountedSamplerError(f"cannot count sampler {name!r} ({type(sampler).__name__}): it is learned but "
                                    "FlopCounterMode saw no matrix product or convolution in its forward")
    return g


def encoder_models(p: Params, num_classes: int) -> tuple[FrameModel, FrameModel]:
    """The configured light encoder and audio encoder (random weights: same cost) at their inputs."""
    e, f = p.encoders, p.frames
    return (FrameModel(create_encoder("light", arch=e.light_arch, num_classes=num_classes), f.light_size, e.light_arch),
            audio_model(p, num_classes))


def audio_model(p: Params, num_classes: int) -> FrameModel:
    """The configured audio encoder (random weights: same cost) on one log-mel window."""
    e = p.encoders
    return FrameModel(create_encoder("audio", num_classes=num_classes, dim=e.audio_dim, width=e.audio_width),
                      (p.audio.window_frames, p.audio.n_mels),
                      "audio_cnn" if e.audio_width == 32 else f"audio_cnn_w{e.audio_width}")


def flops_table_for_params(p: Params, num_classes: int, sampler_name: str, k: int, *,
                           sampler: nn.Module | None = None, text_dim: int = 384,
                           batch: Mapping[str, torch.Tensor] | None = None) -> list[FlopsRow]:
    """:func:`prediction_flops` for a params file: the configured encoders (random weights: same cost)
    at ``p.frames`` resolutions, T = ``p.frames.T``, K = ``k``; ``sampler`` defaults to an untrained one
    built from ``p`` (:meth:`Sampler.untrained`; ``text_dim``: the text encoder's width, MiniLM 384)."""
    e, f, T = p.encoders, p.frames, p.frames.T
    light = FrameModel(create_encoder("light", arch=e.light_arch, num_classes=num_classes), f.light_size, e.light_arch)
    if sampler is None:
        sampler = untrained_sampler(sampler_name, p, num_classes, light.module, text_dim)
    if batch is None and hasattr(sampler, "cost_batch"):
        batch = sampler.cost_batch(f.full_size)  # AVGN reads the light maps, not light_feats
    calls = frame_calls(sampler_name, sampler, T, k)
    obj = audio = None
    if calls["object"]:
        obj = FrameModel(create_encoder("object", arch=e.object_arch, weights="none"), f.object_size, e.object_arch)
    if calls["audio"]:
        audio = audio_model(p, num_classes)
    rec = FrameModel(create_encoder("recognizer", arch=e.recognizer_arch, num_classes=num_classes),
                     f.recognizer_size, e.recognizer_arch)
    return prediction_flops(sampler_name, T, k, rec, light, obj, audio, sampler, batch)


def avgn_glance_head_gmacs(model: nn.Module, batch: Mapping[str, torch.Tensor], K: int,
                           t_g: int | None = None, head: bool = True) -> tuple[float, float]:
    """The one AVGN counter that the FLOPs table (:func:`avgn_flops_rows`) and evaluate
    (:func:`components.evaluation.avgn_eval.avgn_gmacs`) share, counted on the real modules in eval mode with
    glance budget ``t_g`` (default the model's): (GMACs of the temporal glance — AV-TeST, eqs. 2-3 — on
    one video's store arrays ``batch`` without the frame cache; GMACs the head adds on K frames — AESPA
    + π, f_L on the P×P patches, ψ + f_C, eqs. 4-8 — i.e. ``head(batch, K)`` minus the glance; 0 and
    not counted when ``head`` is false)."""
    t_g = model.glance_frames if t_g is None else t_g
    with _eval_mode(model):
        saved = model.glance_frames
        model.glance_frames = t_g
        try:
            glance = count_macs(lambda: model({k: v for k, v in batch.items() if k != "frames_full"})) / 1e9
            on_k = count_macs(lambda: model.head(batch, K, t_g)) / 1e9 - glance if head else 0.0
        finally:
            model.glance_frames = saved
    return glance, on_k


def avgn_flops_rows(sampler: nn.Module, K: int, full_size: int, light: FrameModel, audio: FrameModel,
                    t_g: int | None = None) -> list[FlopsRow]:
    """AVGN's own prediction with K frames, per component, measured on the modules: light encoder × T_G
    (eq. 14: only the glanced frames are encoded), audio encoder × T, the temporal glance (AV-TeST, eqs.
    2-3) once, then per processed frame: AESPA + π (eqs. 4-5), f_L on the P×P patch (eq. 7, not the full
    frame), ψ + f_C (eq. 8)."""
    t_g = sampler.glance_frames if t_g is None else t_g
    T, P, net = sampler.T, sampler.config.patch_size, sampler.net
    batch = sampler.cost_batch(full_size, frames=True)
    glance, head = avgn_glance_head_gmacs(sampler, batch, K, t_g)
    with _eval_mode(sampler):
        f_l = count_macs(lambda: net.f_l(torch.zeros(1, 3, P, P))) / 1e9
        c = sampler.config
        e_g = torch.zeros(1, K, c.d_pi or c.d_g, *c.grid)  # the map AESPA / π read (e^G or the finer stage map)
        a = torch.zeros(1, T, c.d_a)
        if c.patch == "centre":
            spatial = 0.0
        else:
            spatial = count_macs(lambda: net.pi(net.aespa(e_g, a if c.use_aespa else None))) / 1e9
            if net._pi_encoder:  # avgn.pi_map: fine - the light encoder's stage map of each processed frame
                spatial += K * count_macs(lambda: net._pi_encoder[0](batch["frames_full"][:1, 0].float())) / 1e9
    rest = head - spatial - f_l * K
    rows = [FlopsRow(COMPONENT["light"], light.name, light.label, light.gmacs(), min(t_g, T))]
    if sampler.params.audio:
        rows.append(FlopsRow(COMPONENT["audio"], audio.name, audio.label, audio.gmacs(), T))
    rows += [FlopsRow("sampler", "AV-TeST (temporal glance)", _inputs_label(sampler, batch), glance, 1),
             FlopsRow("spatial glance", ("stage map + " if net._pi_encoder else "") + "AESPA + pi"
                      if c.patch != "centre" else "centre crop", f"{'map' if net._pi_encoder else 'e^G'}[{K}x{c.d_pi or c.d_g}x"
                      f"{'x'.join(map(str, c.grid))}]", spatial / K, K),
             FlopsRow("local encoder", type(getattr(net.f_l, "net", net.f_l)).__name__, f"{P}x{P}", f_l, K),
             FlopsRow("classifier", "psi + f_C" if c.use_psi else "f_C", "-", rest / K, K)]
    return rows


# ------------------------------------------------------------------------------- the papers' setting
# ActivityNet headline settings (C = 200, T = 16 observation frames, K = 5 frames to a ResNet-50 at 224²).
PAPER_SETTINGS = {
    # TSQNet (ECCV 2022) Sec. 4.1 "Implementation details" + Table 1 "Example of FLOPs computation":
    #   MBv2 188 0.220G/F x16 = 3.52G; EN-B0 112 0.098G/F x16 = 1.56G; RN50 224 4.109G/F x5 = 20.55G;
    #   two more rows of 0.36G and 0.10G whose labels are lost in our copy of the table (presumably VQM
    #   and TQM; what is certain is that the 0.46G they sum to is the sampler) -> total 26.09G (Table 3:
    #   "Ours ... 26.1G"; the supplementary's Table 2 also gives 26.1).
    "tsqnet": {"light": ("mobilenetv2_100", 188, 3.52), "object": ("efficientnet_b0", 112, 1.56),
               "recognizer": ("resnet50", 224, 20.55), "sampler": 0.46, "total": 26.09,
               "source": "TSQNet Table 1 (Sec. 4.1): MBv2 188 0.220G x16, EN-B0 112 0.098G x16, RN50 224 "
                         "4.109G x5, sampler rows 0.36G + 0.10G, total 26.09G"},
    # NSNet Sec. 4.1: "P_total = P_rec x K + P_fem + P_vgm + P_fsm ... 4.109 x 5 (ResNet-50 with 5 frames)
    #   + (0.320 x 16 + 0.315) (MobileNetv2 with 16 frames + transformer) + 0.004 + 0.002 = 25.99 (G)";
    #   FEM input 224² (App. A.1 "Pre-processing"); transformer: 2 layers, 8 heads, FFN width = input
    #   width (App. A.1), so the sampler is measured with nsnet.dim = 1280.
    "nsnet": {"light": ("mobilenetv2_100", 224, 0.320 * 16), "recognizer": ("resnet50", 224, 4.109 * 5),
              "sampler": 0.315 + 0.004 + 0.002, "total": 25.99,
              "source": "NSNet Sec. 4.1: 4.109 x 5 + (0.320 x 16 + 0.315) + 0.004 + 0.002 = 25.99G"},
}
PAPER_T, PAPER_K, PAPER_CLASSES, PAPER_TEXT_DIM = 16, 5, 200, 768  # TQM object names: BERT-base (Table 9)


def paper_setting_rows(method: str = "tsqnet") -> list[FlopsRow]:
    """The paper's headline cost table re-measured by our counter on randomly initialised timm models,
    each row next to the paper's number (``paper_gmacs``). ``method``: ``"tsqnet"`` or ``"nsnet"``.

    TSQNet: MobileNetV2 at 188² × 16 + EfficientNet-B0 at 112² × 16 (TQM) + our TSQNet sampler
    (``TSQNetParams`` defaults; the paper does not give d') on [1,16,1280] light features and
    [1,16,1000] object scores with 768-d (BERT) object-name embeddings + ResNet-50 at 224² × 5.
    NSNet: MobileNetV2 at 224² × 16 + our NSNet sampler with ``dim = 1280`` + ResNet-50 at 224² × 5.
    """
    if method not in PAPER_SETTINGS:
        raise ValueError(f"unknown paper setting {method!r}; one of {sorted(PAPER_SETTINGS)}")
    cfg, C, T, K = PAPER_SETTINGS[method], PAPER_CLASSES, PAPER_T, PAPER_K
    arch, size, _ = cfg["light"]
    light = FrameModel(create_encoder("light", arch=arch, num_classes=C), size, arch)
    arch, size, _ = cfg["recognizer"]
    rec = FrameModel(create_encoder("recognizer", arch=arch, num_classes=C), size, arch)
    obj = None
    if "object" in cfg:
        arch, size, _ = cfg["object"]
        obj = FrameModel(create_encoder("object", arch=arch, weights="none"), size, arch)
    base = Params()
    setting = dataclasses.replace(base, frames=dataclasses.replace(base.frames, T=T),
                                  nsnet=NSNetParams(dim=light.module.num_features, heads=8, layers=2))
    sampler = untrained_sampler(method, setting, C, light.module, PAPER_TEXT_DIM)
    rows = prediction_flops(method, T, K, rec, light, obj, None, sampler)
    roles = {v: k for k, v in COMPONENT.items()}
    out = []
    for r in rows:
        role = roles[r.component]
        paper = cfg[role] if role == "sampler" else cfg[role][2] if role in cfg else None
        out.append(dataclasses.replace(r, paper_gmacs=paper, source=cfg["source"]))
    return out


def encoder_gmacs(p: Params, encoders_dir: Path) -> dict[str, float]:
    """Per-frame GMACs of the trained encoders (``<encoders_dir>/{light,recognizer,audio}.pt``) at their
    configured resolutions (audio: one log-mel window), plus the ImageNet object recognizer."""
    return {"light": frame_model_gmacs(load_frame_model(encoders_dir / "light.pt"), p.frames.light_size),
            "object": frame_model_gmacs(create_encoder("object", arch=p.encoders.object_arch, weights="none"),
                                        p.frames.object_size),
            "recognizer": frame_model_gmacs(load_frame_model(encoders_dir / "recognizer.pt"), p.frames.recognizer_size),
            "audio": FrameModel(load_frame_model(encoders_dir / "audio.pt"),
                                (p.audio.window_frames, p.audio.n_mels)).gmacs()}


def video_gmacs(name: str, model, enc: dict[str, float], sampler_gmacs: float, T: int, K: int) -> float:
    """Cost of one prediction: what the sampler has to look at + the sampler + the recognizer on its frames
    (which per-frame models run how often: :func:`frame_calls`)."""
    total = sampler_gmacs
    for role, n in frame_calls(name, model, T, K).items():
        if n and role not in enc:
            raise UncountedSamplerError(f"cannot count sampler {name!r}: it runs the {COMPONENT[role]} on {n} "
                                        f"frames, whose cost per frame is not given (measured: {sorted(enc)})")
        total += enc.get(role, 0.0) * n
    return total


# ------------------------------------------------------------------------------------ the cost regime
#: The papers' regime, as thresholds on per-frame costs: the recognizer at least this many times the light
#: encoder (TSQNet: ResNet-50 224² 4.109G / MobileNetV2 188² 0.220G = 18.7; NSNet at 224²: 12.8) ...
REGIME_MIN_LIGHT_RATIO = 15.0
#: ... and everything a sampler runs per candidate frame (its per-frame models, the sampler amortised over T)
#: at most this fraction of one recognizer call (TSQNet (3.52 + 1.56 + 0.46) / 16 = 0.346G, 4.109 / 0.346 = 11.9;
#: NSNet (5.12 + 0.32) / 16 = 0.340G, 12.1).
REGIME_MIN_CANDIDATE_RATIO = 12.0


@dataclass(frozen=True)
class RegimeRow:
    """What sampler ``sampler`` pays per candidate frame, against one recognizer call (GMACs).

    ``per_frame``: role -> GMACs of one call of each per-frame model it runs (light encoder, object
    recognizer, audio encoder per window), counted in full even where it runs on fewer than T frames
    (AVGN glances at T_G); ``sampler_gmacs``: one sampler call on the T frames, amortised over ``T``."""
    sampler: str
    per_frame: dict[str, float]
    sampler_gmacs: float
    T: int
    recognizer: float
    light: float

    @property
    def per_candidate(self) -> float:
        return float(sum(self.per_frame.values())) + self.sampler_gmacs / self.T

    @property
    def candidate_ratio(self) -> float:
        """Recognizer calls' worth of one candidate frame, inverted: recognizer / per-candidate cost."""
        return self.recognizer / self.per_candidate if self.per_candidate else float("inf")

    @property
    def light_ratio(self) -> float:
        return self.recognizer / self.light if self.light else float("inf")

    @property
    def in_regime(self) -> bool:
        return self.light_ratio >= REGIME_MIN_LIGHT_RATIO and self.candidate_ratio >= REGIME_MIN_CANDIDATE_RATIO

    def as_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "per_frame": dict(self.per_frame), "sampler_gmacs": self.sampler_gmacs,
                "T": self.T, "recognizer": self.recognizer, "light": self.light,
                "per_candidate": self.per_candidate, "candidate_ratio": self.candidate_ratio,
                "light_ratio": self.light_ratio, "in_regime": self.in_regime}


def regime_table(p: Params, num_classes: int, samplers: Mapping[str, nn.Module] | None = None,
                 names: Sequence[str] | None = None, text_dim: int = 384) -> list[RegimeRow]:
    """Per-frame costs of ``p``'s configuration against the papers' regime, one :class:`RegimeRow` per sampler
    of ``names`` (default: the learned samplers of ``evaluate.samplers``): the configured models at ``p.frames`` resolutions (random weights: same cost), the sampler
    from ``samplers`` (trained ones) or an untrained one of the same shapes (:meth:`Sampler.untrained`). Which models a sampler runs is :func:`frame_calls`'; a sampler it cannot count
    raises :class:`UncountedSamplerError` naming it."""
    e, f, T = p.encoders, p.frames, p.frames.T
    names = regime_samplers(p) if names is None else names
    samplers = dict(samplers or {})
    light = FrameModel(create_encoder("light", arch=e.light_arch, num_classes=num_classes), f.light_size, e.light_arch)
    rec = FrameModel(create_encoder("recognizer", arch=e.recognizer_arch, num_classes=num_classes),
                     f.recognizer_size, e.recognizer_arch)
    models = {"light": light, "recognizer": rec}
    cost: dict[str, float] = {"light": light.gmacs(), "recognizer": rec.gmacs()}

    def model_cost(role: str) -> float:
        if role not in cost:
            models[role] = (audio_model(p, num_classes) if role == "audio" else
                            FrameModel(create_encoder("object", arch=e.object_arch, weights="none"), f.object_size,
                                       e.object_arch))
            cost[role] = models[role].gmacs()
        return cost[role]

    rows = []
    for name in names:
        sampler = samplers.get(name)
        if sampler is None:
            sampler = untrained_sampler(name, p, num_classes, light.module, text_dim)
        calls = frame_calls(name, sampler, T, 1)
        per_frame = {role: model_cost(role) for role in ("light", "object", "audio") if calls[role]}
        batch = sampler.cost_batch(f.full_size) if hasattr(sampler, "cost_batch") else None
        if batch is None:
            batch = feature_batch(T, num_classes, light_dim=light.module.num_features,
                                  rec_dim=rec.module.num_features, audio_dim=e.audio_dim)
        rows.append(RegimeRow(name, per_frame, counted_sampler_gmacs(name, sampler, batch), T, cost["recognizer"],
                              cost["light"]))
    return rows


def regime_samplers(p: Params) -> list[str]:
    """The samplers of the "Cost regime" table: the learned ones of ``evaluate.samplers``, in its order."""
    return [n for n in p.evaluate.samplers if sampler_trainable(n)]


def regime_markdown(rows: Sequence[RegimeRow], recognizer: str = "", light: str = "") -> list[str]:
    """The "Cost regime" section of ``reports/flops.md``: per candidate frame against one recognizer call."""
    if not rows:
        return []
    r0 = rows[0]
    head = (f"recognizer{' ' + recognizer if recognizer else ''}: {r0.recognizer:.4f} GMACs per frame; light encoder"
            f"{' ' + light if light else ''}: {r0.light:.4f}; recognizer / light = **{r0.light_ratio:.1f}** "
            f"(papers' regime: >= {REGIME_MIN_LIGHT_RATIO:g}; TSQNet 18.7, NSNet 12.8).")
    lines = ["## Cost regime (per frame)", "", head, "",
             f"Per candidate frame: every per-frame model the sampler runs (one call each) + the sampler / T. The "
             f"papers' regime: recognizer / candidate >= {REGIME_MIN_CANDIDATE_RATIO:g} (TSQNet 11.9, NSNet 12.1).",
             "", "| sampler | per-frame models (GMACs / call) | sampler / T | per candidate | recognizer / candidate "
             "| papers' regime |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        models = ", ".join(f"{COMPONENT[k]} {v:.4f}" for k, v in r.per_frame.items()) or "-"
        lines.append(f"| {r.sampler} | {models} | {r.sampler_gmacs / r.T:.4f} | {r.per_candidate:.4f} | "
                     f"{r.candidate_ratio:.1f} | {'yes' if r.in_regime else 'no'} |")
    return lines + [""]
