"""AVGN's own report (the ``avgn_report`` stage's library): what the papers' tables of AVGN measure, on
the **test** split, for every AVGN seed and the AVGN ablations where they apply.

1. **Spatial ground truth** (eqs. 5-6; no peer reports it): at K = ``evaluate.headroom_k`` the P×P
   patches π chose on each processed frame against a centre crop and a seeded random patch of the
   same P on the *same* frames, scored against the key-object box of the video's own class
   (``boxes.npz``, :meth:`FrameBoxes.target`; frames without it - distractor, generic, low quality -
   count nowhere): hit rate (:func:`components.evaluation.metrics.patch_hits`, rule ``coverage``), mean IoU, and
   the paired difference π − centre. Rows for π without AESPA and for the trained centre-crop model
   (Table 6) when those ablations are configured.
2. **Early exit (AVGN⁺)**: the head's predictions after t = 1..K_max frames in saliency order
   (K_max = ``max(evaluate.budgets)``); for each gate of ``avgn.exit_thresholds`` a video stops at
   the first step whose top class probability passes it (:func:`components.evaluation.avgn_eval.exit_predictions`)
   and costs what a prediction with that many frames costs (:func:`components.evaluation.avgn_eval.avgn_gmacs`
   at k = 1..K_max, counted once). Beside it the fixed-K curve ``p_K`` for K in ``evaluate.budgets``;
   per gate, the cheapest fixed K with at least the same mAP and the paired CI of the mAP difference.
3. **Glance budget T_G** (Table 3): per T_G of ``avgn.t_g_eval`` and K of ``evaluate.sampler_budgets``,
   the head's mAP and GMACs, and the frame recognizer's mAP over the top-K frames of that glance's
   saliency (mean softmax of the stored ``rec_logits``).
4. **Audio-less videos**: the videos with and without audio separately (head at K = headroom_k for
   AVGN and the audio-free ablation; the frame recognizer over uniform frames for reference).

Statistics. Numbers are mean ± std over the sampler seeds of each variant (one test-split value per
seed). The 95% CIs are percentile bootstraps over test videos (``evaluate.bootstrap`` resamples, the
same resamples for every method, so differences are paired) of the *seed-mean* statistic: for a
decomposable metric (hit rate, IoU) the per-video value averaged over seeds, for mAP the mean over
seeds of the mAP of the resampled videos. A difference whose CI contains 0 is "not resolved".
Per-video spatial values are the mean over the video's processed frames that show its own key object;
a video none of whose processed frames shows it is left out (for every policy alike: they share frames).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from components.core.atomic import atomic_savefig  # noqa: E402
from components.evaluation.avgn_calibration import (calibrate, choose_gate, gate_candidates, probe_accuracy,  # noqa: E402
                                         step_temperatures)
from components.evaluation.avgn_eval import avgn_gmacs, exit_predictions, frames_beyond_glance, head_predictions  # noqa: E402
from components.data.manifest import FrameBoxes, read_boxes  # noqa: E402
from components.evaluation.sampler_eval import mean_selected, seed_checkpoints, softmax  # noqa: E402
from components.evaluation.cost import encoder_gmacs  # noqa: E402
from components.evaluation.metrics import (MAP_DEFINITIONS, PATCH_HIT_RULES, bootstrap_ci, box_iou, map_ci as mean_map_ci,  # noqa: E402
                                mean_average_precision, mean_average_precision_batch, patch_hits, random_patches,
                                top1)
from components.core.params import Params, variant_params  # noqa: E402
from components.core.paths import Paths  # noqa: E402
from components.store.sampler_data import check_store, load_split, sampler_keys  # noqa: E402
from components.training.sampler_training import load_sampler, sampler_seeds  # noqa: E402
from components.core.selection import topk_select, uniform_select  # noqa: E402
from components.store.feature_store import FeatureStore  # noqa: E402

log = logging.getLogger(__name__)
#: The registered sampler this report is about (its own recognizer path); every other variant is an ablation of it.
AVGN = "avgn"

HIT_RULE = "coverage"
FEW_VIDEOS = 30  # below this many videos in a subset the report says that its CI is wide


# ------------------------------------------------------------------------------------- geometry
def patch_pixel_boxes(centre: np.ndarray, patch: int, full_size: int, video_size) -> np.ndarray:
    """Boxes ``[..., 4]`` (x0, y0, x1, y1) in pixels of the video of the P×P patches centred at
    ``centre [..., 2]`` (x_c, y_c) in [0,1] of the ``full_size``² frame cache (``frames_full``).

    The frame cache is the whole video frame resized to S×S, so the centre maps to ``(x_c W, y_c H)``
    and the patch spans ``P W / S`` by ``P H / S`` video pixels; the centre is first clamped so the
    patch lies inside the frame, as :func:`components.models.avgn_net.extract_patches` crops it.
    ``video_size``: ``(W, H)``, or ``[..., 2]`` broadcast against ``centre``.
    """
    half = patch / (2.0 * full_size)  # half the patch side, in [0,1] frame units
    if half > 0.5:
        raise ValueError(f"patch size P={patch} exceeds the {full_size}x{full_size} frame cache")
    c = np.clip(np.asarray(centre, dtype=np.float64), half, 1.0 - half)
    wh = np.broadcast_to(np.asarray(video_size, dtype=np.float64), c.shape)
    return np.concatenate([(c - half) * wh, (c + half) * wh], axis=-1)


def random_centres(shape: tuple[int, ...], patch: int, full_size: int, seed: int) -> np.ndarray:
    """The random-patch policy's centres ``[*shape, 2]`` in [0,1]: uniform over the centres whose patch
    lies inside the frame (:func:`components.evaluation.metrics.random_patches` on the S×S frame cache), seeded."""
    b = random_patches(shape, (full_size, full_size), patch, seed=seed)
    return (b[..., :2] + b[..., 2:]) / (2.0 * full_size)


def frame_targets(boxes: Mapping[str, FrameBoxes], ids: Sequence[str], labels: np.ndarray,
                  frame_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of the stored frames: (boxes ``[N,T,4]`` of each video's own-class key object in
    video pixels, NaN where absent, ``sizes [N,2]`` (W, H); NaN / 0 for a video without boxes).
    ``frame_idx [N,T]``: the video frame number of each stored frame (the store's ``frame_indices``)."""
    N, T = frame_idx.shape
    out = np.full((N, T, 4), np.nan)
    sizes = np.zeros((N, 2))
    for n, vid in enumerate(ids):
        fb = boxes.get(vid)
        if fb is None:
            continue
        tgt = fb.target(np.flatnonzero(labels[n]))  # [L,4]
        f = np.asarray(frame_idx[n], dtype=np.int64)
        ok = (f >= 0) & (f < len(tgt))
        out[n, ok] = tgt[f[ok]]
        sizes[n] = fb.size
    return out, sizes


def per_video_mean(values: np.ndarray) -> np.ndarray:
    """``[..., N, K]`` per-frame values (NaN: not counted) -> ``[..., N]`` their mean, NaN where none counts."""
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    cnt = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(ok, v, 0.0).sum(-1) / np.maximum(cnt, 1), np.nan)


def seed_mean(values: np.ndarray) -> np.ndarray:
    """``[S, N]`` per-seed per-video values -> ``[N]`` their mean over the seeds where defined (NaN if none)."""
    return per_video_mean(np.swapaxes(np.asarray(values, dtype=np.float64), 0, 1))


# ------------------------------------------------------------------------------------ statistics
def stat(per_seed: Sequence[float]) -> dict:
    """``{"mean", "std", "seeds"}`` of one number per seed (NaN seeds left out)."""
    v = np.asarray([x for x in per_seed if x is not None and np.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"mean": float("nan"), "std": float("nan"), "seeds": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "seeds": int(v.size)}


def mean_ci(values: np.ndarray, n_boot: int) -> list[float] | None:
    """Bootstrap 95% CI over videos of the mean of per-video ``values [N]`` (NaN videos left out)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not n_boot or len(v) < 2:
        return None
    return [float(x) for x in bootstrap_ci(v, n_boot=n_boot)]


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int) -> dict:
    """Paired difference mean(a − b) of per-video values ``[N]`` of two methods on the same videos
    (NaN in either: the video is left out): ``{"mean", "ci", "videos", "resolved"}``; resolved when the
    CI excludes 0."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    ci = mean_ci(d, n_boot)
    return {"mean": float(d.mean()) if d.size else float("nan"), "ci": ci, "videos": int(d.size),
            "resolved": resolved(ci)}


def resolved(ci: Sequence[float] | None) -> bool:
    """A CI that excludes 0 (and exists)."""
    return ci is not None and np.all(np.isfinite(ci)) and (ci[0] > 0 or ci[1] < 0)


def map_ci(scores: np.ndarray, labels: np.ndarray, variant: str, n_boot: int,
           minus: np.ndarray | None = None) -> list[float] | None:
    """Bootstrap 95% CI over videos of the seed-mean mAP of ``scores [S,N,C]`` (one prediction per seed),
    or, with ``minus [S,N,C]``, of the seed-mean paired difference mAP(scores) − mAP(minus) (the same
    resampled videos on both sides, seed s against seed s)."""
    A = np.asarray(scores, dtype=np.float64)
    B = None if minus is None else np.asarray(minus, dtype=np.float64)
    S, N, C = A.shape
    if not n_boot or N < 2:
        return None
    chunk = int(max(1, min(64, 2e7 // max(1, S * N * C * (2 if B is not None else 1)))))
    return [float(x) for x in mean_map_ci(list(A), labels, variant, n_boot, None if B is None else list(B), chunk)]


# ------------------------------------------------------------------------------- early exit
def exit_costs(used: np.ndarray, gmacs_by_k: Sequence[float]) -> np.ndarray:
    """GMACs of each video ``[N]`` that stopped after ``used [N]`` frames (1-based): ``gmacs_by_k[used-1]``;
    ``gmacs_by_k`` is ``[K]`` (every video alike) or ``[N,K]`` (per video: frames outside the glance re-run f_G)."""
    g = np.asarray(gmacs_by_k, dtype=np.float64)
    u = np.asarray(used, dtype=np.int64)
    if (u < 1).any() or (u > g.shape[-1]).any():
        raise ValueError(f"frames used must lie in 1..{g.shape[-1]}, got {u.min()}..{u.max()}")
    return g[u - 1] if g.ndim == 1 else g[np.arange(len(u)), u - 1]  # [N,K]: each video its own costs


def fixed_k_curve(probs: np.ndarray, labels: np.ndarray, gmacs_by_k: Sequence[float], budgets: Sequence[int],
                  variant: str, n_boot: int = 0) -> list[dict]:
    """The head after exactly K frames, ``probs [S,N,K_max,C]`` (per seed) -> per K of ``budgets``:
    ``{"k", "gmacs", "map", "top1"}`` (mean ± std over seeds; mAP with its bootstrap CI)."""
    rows = []
    for K in sorted(budgets):
        sc = probs[:, :, K - 1]  # [S,N,C]
        g = np.asarray(gmacs_by_k, dtype=np.float64)
        rows.append({"k": int(K), "gmacs": float(g[..., K - 1].mean()),  # [K] or [S,N,K]: the mean per video
                     "map": {**stat([mean_average_precision(s, labels, variant) for s in sc]),
                             "ci": map_ci(sc, labels, variant, n_boot)},
                     "top1": stat([top1(s, labels) for s in sc])})
    return rows


def exit_table(probs: np.ndarray, labels: np.ndarray, gmacs_by_k: Sequence[float], thresholds: Sequence[float],
               variant: str, n_boot: int = 0) -> tuple[list[dict], dict[float, np.ndarray]]:
    """AVGN⁺ on ``probs [S,N,K_max,C]`` (per seed, step t = after t frames): per threshold the mean
    frames used, the mean GMACs per video (each video at its own frame count), mAP and top-1 of the
    predictions at exit (mean ± std over seeds; mAP CI). Also returns each threshold's exit scores
    ``[S,N,C]`` for paired comparisons."""
    rows, scores = [], {}
    for thr in thresholds:
        used, pred = zip(*(exit_predictions(p, float(thr)) for p in probs))
        pred = np.stack(pred).astype(np.float64)  # [S,N,C]
        scores[float(thr)] = pred
        rows.append({"threshold": float(thr),
                     "frames": stat([u.mean() for u in used]),
                     "gmacs": stat([exit_costs(u, g_s).mean() for u, g_s in zip(used, _per_seed(gmacs_by_k, len(used)))]),
                     "map": {**stat([mean_average_precision(s, labels, variant) for s in pred]),
                             "ci": map_ci(pred, labels, variant, n_boot)},
                     "top1": stat([top1(s, labels) for s in pred])})
    return rows, scores


def _per_seed(gmacs_by_k, seeds: int) -> list[np.ndarray]:
    """``[K]`` -> the same costs for every seed; ``[S,N,K]`` -> seed s's ``[N,K]``."""
    g = np.asarray(gmacs_by_k, dtype=np.float64)
    return [g] * seeds if g.ndim == 1 else list(g)


def video_costs(base: Sequence[float], idx: np.ndarray, t_g: int, light: float) -> np.ndarray:
    """Per-video GMACs after k = 1..K processed frames ``[N,K]``: ``base[k-1]`` (the cost counted on the
    modules) + the light encoder once for each of the first k processed frames outside the glance
    (position >= T_G): the head needs their e^G (:func:`components.evaluation.avgn_eval.frames_beyond_glance`)."""
    idx = np.asarray(idx)
    K = len(base)
    return np.asarray(base, dtype=np.float64)[None] + light * np.cumsum(idx[:, :K] >= t_g, axis=1)


def match_fixed(exit_row: dict, fixed: list[dict]) -> dict:
    """The cheapest fixed K whose mean mAP is at least the exit's: ``{"k", "gmacs", "fixed_needs_more"}``
    (``fixed_needs_more``: that K costs more GMACs per video than the exit's mean), or, when no K of the
    curve reaches the exit's mAP, the best K with ``"reached": False``."""
    m, g = exit_row["map"]["mean"], exit_row["gmacs"]["mean"]
    ok = [r for r in fixed if r["map"]["mean"] >= m - 1e-12]
    if ok:
        r = min(ok, key=lambda r: (r["gmacs"], r["k"]))
        return {"k": r["k"], "gmacs": r["gmacs"], "reached": True, "fixed_needs_more": bool(r["gmacs"] > g)}
    r = max(fixed, key=lambda r: (r["map"]["mean"], -r["gmacs"]))
    return {"k": r["k"], "gmacs": r["gmacs"], "reached": False, "fixed_needs_more": True}


def exit_verdict(row: dict) -> str:
    """One sentence per threshold: does fixed K need more GMACs for at least the same mAP?"""
    m = row["match"]
    ci = m.get("map_diff_ci")
    diff = (f"ΔmAP exit − K={m['k']}: {100 * m['map_diff']:+.1f} " + (
        f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" + ("" if resolved(ci) else ", not resolved") if ci else "(no CI)"))
    g = row["gmacs"]["mean"]
    if not m["reached"]:
        return f"yes: no fixed K reaches this mAP (best: K={m['k']} at {m['gmacs']:.3f} GMACs vs {g:.3f}); {diff}"
    if m["fixed_needs_more"]:
        return (f"yes: fixed K={m['k']} needs {m['gmacs']:.3f} GMACs vs {g:.3f} for at least this mAP; {diff}")
    return f"no: fixed K={m['k']} reaches this mAP at {m['gmacs']:.3f} GMACs vs {g:.3f}; {diff}"


# ------------------------------------------------------------------------------------ runs
@dataclass
class Variant:
    """One AVGN variant (``avgn`` or an ablation of it) and its trained seeds."""
    name: str
    params: Params  # the effective params (the ablation's overrides applied)
    seeds: list[int]
    models: list  # AVGNSampler per seed, in eval mode

    @property
    def avgn(self):
        return self.params.avgn


@dataclass
class Inputs:
    """What every section reads: the test split's tensors and the loaded AVGN variants."""
    ids: list[str]
    data: dict[str, torch.Tensor]
    labels: np.ndarray  # [N,C] multi-hot
    frame_probs: np.ndarray  # [N,T,C] softmax of the frame recognizer's cached logits
    has_audio: np.ndarray  # [N] bool
    frame_idx: np.ndarray  # [N,T] video frame number of each stored frame
    variants: dict[str, Variant]
    boxes: dict[str, FrameBoxes]
    enc: dict[str, float]
    T: int
    classes: list[str]


def patch_size(v: Variant) -> int:
    """P of the variant's trained models (their config, not today's params)."""
    return int(v.models[0].config.patch_size)


def frame_cache_size(inp: Inputs) -> int:
    """S: the side of the stored frame cache ``frames_full [N,T,3,S,S]``."""
    return int(inp.data["frames_full"].shape[-1])


def avgn_variants(p: Params) -> list[str]:
    """``avgn`` and the AVGN ablations some section reads, in params order: π without AESPA and the
    trained centre crop (spatial, Table 6), the audio-free model (audio-less videos). The other ablations
    (Tables 4 and 7) are ``evaluate``'s rows."""
    out = [AVGN]
    for n in p.ablations:
        base, q = variant_params(p, n)
        if base == AVGN and (q.avgn.patch == "centre" or not q.avgn.aespa or not q.avgn.audio):
            out.append(n)
    return out


def load_variants(p: Params, paths: Paths) -> dict[str, Variant]:
    """Every AVGN variant's configured seeds. A missing folder or seed is a clear error naming it."""
    root = paths.data / "samplers"
    out = {}
    for name in avgn_variants(p):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no trained {name!r}: {folder} is missing; run "
                                    f"`dvc repro train_sampler@{paths.pipeline_seed or 0}-{name}`"
                                    + (" (or `ablate`)" if name != AVGN else ""))
        cks = seed_checkpoints(root, name, sampler_seeds(p, name))
        out[name] = Variant(name, variant_params(p, name)[1], [s for s, _ in cks], [load_sampler(c) for _, c in cks])
    return out


def load_inputs(p: Params, paths: Paths, split: str = "test", variants: dict[str, Variant] | None = None) -> Inputs:
    """The ``split``'s tensors and the AVGN variants (loaded unless given)."""
    store = FeatureStore(paths.features)
    check_store(store, p.frames.T)
    variants = variants if variants is not None else load_variants(p, paths)  # first: no AVGN, no frame cache
    data, ids = load_split(store, split, keys=sampler_keys(AVGN, training=True))
    labels = data["labels"].numpy() > 0
    return Inputs(ids=ids, data=data, labels=labels.astype(np.int64),
                  frame_probs=softmax(data["rec_logits"].numpy()), has_audio=data["has_audio"].numpy().astype(bool),
                  frame_idx=data["frame_indices"].numpy().astype(np.int64), variants=variants,
                  boxes=read_boxes(paths.prepared), enc=encoder_gmacs(p, paths.encoders), T=store.T,
                  classes=list(store.classes))


# --------------------------------------------------------------------------------- sections
def spatial_section(inp: Inputs, heads: dict[str, list[dict]], K: int, n_boot: int, variant: str) -> dict:
    """Section 1 (see the module docstring). Rows: AVGN's π, a centre crop and a seeded random patch on
    AVGN's frames; π without AESPA and the model trained with a centre crop on their own frames (the
    ablations of Table 6 that are configured). A π row carries the paired differences to the centre
    crop (and, for AVGN, to the random patch) on the same frames. P is each model's own patch size
    (``config.patch_size``), S the frame cache's side."""
    out = {"k": K, "rule": HIT_RULE, "rule_text": PATCH_HIT_RULES[HIT_RULE], "available": False, "rows": []}
    targets, sizes = frame_targets(inp.boxes, inp.ids, inp.labels, inp.frame_idx)  # [N,T,4], [N,2]
    if not inp.boxes or not np.isfinite(targets).all(-1).any():
        out["note"] = "no spatial ground truth (no boxes.npz with the test videos' key-object boxes)"
        return out
    full_size = frame_cache_size(inp)
    out.update(available=True, patch_size=patch_size(inp.variants[AVGN]), full_size=full_size)
    N = len(inp.ids)
    for name, v in inp.variants.items():
        trained_centre, patch = v.avgn.patch == "centre", patch_size(v)
        if name != AVGN and not (trained_centre or not v.avgn.aespa):
            continue  # the Table 6 ablations only
        policies = (["model", "centre", "random"] if name == AVGN else
                    ["model"] if trained_centre else ["model", "centre"])
        vals = {pol: {"hit": [], "iou": []} for pol in policies}  # [S] of [N] per-video means
        with_target = []
        for seed, h in zip(v.seeds, heads[name]):
            idx = h["idx"][:, :K]  # [N,K] the frames this seed processed, most salient first
            gt = np.take_along_axis(targets, idx[:, :, None], axis=1)  # [N,K,4] video px, NaN: no own object
            with_target.append(int(np.isfinite(gt).all(-1).sum()))
            centres = {"model": h["centre"][:, :K], "centre": np.full((N, K, 2), 0.5),
                       "random": random_centres((N, K), patch, full_size, seed)}
            for pol in policies:
                b = patch_pixel_boxes(centres[pol], patch, full_size, sizes[:, None, :])  # [N,K,4]
                vals[pol]["hit"].append(per_video_mean(patch_hits(b, gt, HIT_RULE)))
                vals[pol]["iou"].append(per_video_mean(np.where(np.isnan(gt).any(-1), np.nan, box_iou(b, gt))))
        vals = {pol: {m: np.stack(x) for m, x in d.items()} for pol, d in vals.items()}  # [S,N]
        probs = np.stack([h["probs"][:, K - 1] for h in heads[name]])
        model_label = ("centre crop (trained with it)" if trained_centre else
                       "π (AESPA + π)" if v.avgn.aespa else "π without AESPA")
        for pol in policies:
            kind = ("centre" if trained_centre else "policy") if pol == "model" else pol
            row = {"variant": name, "patch_size": patch, "policy": kind,
                   "label": model_label if pol == "model" else
                   {"centre": "centre crop", "random": "random patch (seeded)"}[pol] + f" on {name}'s frames",
                   "seeds": len(v.seeds), "frames_with_target": stat(with_target),
                   "videos": int((~np.isnan(seed_mean(vals[pol]["hit"]))).sum())}
            for m in ("hit", "iou"):
                row[m] = {**stat([_nanmean(x) for x in vals[pol][m]]), "ci": mean_ci(seed_mean(vals[pol][m]), n_boot)}
            if pol == "model":
                row["head_map"] = stat([mean_average_precision(s, inp.labels, variant) for s in probs])
                for ref in ("centre", "random"):
                    if ref in policies:
                        row[f"minus_{ref}"] = {m: paired_difference(seed_mean(vals["model"][m]),
                                                                    seed_mean(vals[ref][m]), n_boot)
                                               for m in ("hit", "iou")}
            out["rows"].append(row)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def exit_inputs(inp: Inputs, v: Variant, heads: list[dict], p: Params,
                gmacs_by_k: list[float]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(``probs [S,N,K_max,C]`` of the head per seed, per-video GMACs ``[S,N,K_max]``, the fixed-K budgets)."""
    K_max = min(max(p.evaluate.budgets), inp.T)
    probs = np.stack([h["probs"][:, :K_max] for h in heads]).astype(np.float64)  # [S,N,K_max,C]
    per_video = np.stack([video_costs(gmacs_by_k, h["idx"], m.glance_frames, inp.enc["light"])
                          for h, m in zip(heads, v.models)])  # [S,N,K_max]
    return probs, per_video, [k for k in p.evaluate.budgets if k <= K_max]


def matched_exit_rows(probs: np.ndarray, labels: np.ndarray, costs: np.ndarray, thresholds: Sequence[float],
                      fixed: list[dict], e) -> list[dict]:
    """:func:`exit_table` rows, each with the cheapest fixed K of at least its mAP and the paired ΔmAP CI."""
    rows, scores = exit_table(probs, labels, costs, thresholds, e.map_variant, e.bootstrap)
    for r in rows:
        m = match_fixed(r, fixed)
        ref = probs[:, :, m["k"] - 1]
        m["map_diff"] = r["map"]["mean"] - next(f["map"]["mean"] for f in fixed if f["k"] == m["k"])
        m["map_diff_ci"] = map_ci(scores[r["threshold"]], labels, e.map_variant, e.bootstrap, minus=ref)
        r["match"] = m
        r["verdict"] = exit_verdict(r)
    return rows


def exit_section(inp: Inputs, v: Variant, heads: list[dict], p: Params, gmacs_by_k: list[float],
                 val: dict | None = None) -> dict:
    """Section 2: the fixed-K curve and the early-exit rows of AVGN (``probs`` of each seed); with ``val``
    (:func:`val_exit`) also the calibrated exit (each seed's val temperatures) over the same thresholds and
    the two gates chosen on val (raw and calibrated confidence)."""
    e = p.evaluate
    probs, per_video, budgets = exit_inputs(inp, v, heads, p, gmacs_by_k)
    fixed = fixed_k_curve(probs, inp.labels, per_video, budgets, e.map_variant, e.bootstrap)
    rows = matched_exit_rows(probs, inp.labels, per_video, p.avgn.exit_thresholds, fixed, e)
    out = {"k_max": probs.shape[2], "gmacs_by_k": [float(x) for x in per_video.mean((0, 1))], "fixed": fixed,
           "exit": rows, "seeds": v.seeds}
    if val is not None:
        cal = np.stack([calibrate(pr, t) for pr, t in zip(probs, val["temperatures"])])  # [S,N,K_max,C]
        out["calibrated"] = matched_exit_rows(cal, inp.labels, per_video, p.avgn.exit_thresholds, fixed, e)
        out["chosen"] = {
            kind: {**val["gates"][kind], "test": matched_exit_rows(
                cal if kind == "calibrated" else probs, inp.labels, per_video, [val["gates"][kind]["threshold"]],
                fixed, e)[0]} for kind in ("raw", "calibrated")}
    return out


def val_exit(probs: np.ndarray, labels: np.ndarray, costs: np.ndarray, budgets: Sequence[int], p: Params) -> dict:
    """Early exit on val: per seed the step temperatures (:func:`components.evaluation.avgn_calibration.step_temperatures`),
    the fixed-K val mAPs, and the gate chosen for ``avgn.exit_target`` with the raw and the calibrated
    confidence (:func:`components.evaluation.avgn_calibration.choose_gate`; mAP and GMACs are means over seeds)."""
    e, a = p.evaluate, p.avgn
    temps = [step_temperatures(pr, labels) for pr in probs]  # [S][K_max]
    cal = np.stack([calibrate(pr, t) for pr, t in zip(probs, temps)])
    fixed = {int(K): float(np.mean([mean_average_precision(s[:, K - 1], labels, e.map_variant) for s in probs]))
             for K in budgets}
    best = max(fixed.values())

    def curve(pr: np.ndarray) -> Callable[[float], tuple[float, float]]:
        def at(thr: float) -> tuple[float, float]:
            used, pred = zip(*(exit_predictions(x, thr) for x in pr))
            return (float(np.mean([mean_average_precision(q, labels, e.map_variant) for q in pred])),
                    float(np.mean([exit_costs(u, c).mean() for u, c in zip(used, costs)])))
        return at

    cands = gate_candidates(a.exit_thresholds)
    gates = {kind: choose_gate(curve(pr), cands, best, a.exit_target) for kind, pr in (("raw", probs), ("calibrated", cal))}
    return {"temperatures": [[float(x) for x in t] for t in temps], "fixed_map": fixed, "best_fixed_map": best,
            "target": a.exit_target, "gates": gates,
            "curve": {kind: [dict(zip(("threshold", "map", "gmacs"), (t, *curve(pr)(t)))) for t in a.exit_thresholds]
                      for kind, pr in (("raw", probs), ("calibrated", cal))}}


def gmacs_counter(model, inp: Inputs) -> Callable[..., float]:
    """``cost(K, t_g=None, head=True)``: :func:`components.evaluation.avgn_eval.avgn_gmacs` of ``model`` (counted on one
    test video), each (K, T_G, head) counted once (FlopCounterMode takes about a second a count on a CPU)."""
    memo: dict[tuple[int, int, bool], float] = {}

    def cost(K: int, t_g: int | None = None, head: bool = True) -> float:
        key = (int(K), int(model.glance_frames if t_g is None else t_g), bool(head))
        if key not in memo:
            memo[key] = avgn_gmacs(model, inp.enc, inp.data, key[0], t_g=key[1], head=head)
        return memo[key]

    return cost


def glance_section(inp: Inputs, v: Variant, p: Params, heads: list[dict] | None = None,
                   cost: Callable[..., float] | None = None) -> dict:
    """Section 3: head and frame-recognizer mAP / GMACs per T_G of ``avgn.t_g_eval`` and K. ``heads``:
    the variant's head predictions at its trained T_G (reused for that T_G) with at least max(K) frames;
    ``cost``: :func:`gmacs_counter` of the variant's first seed (the seeds share one architecture)."""
    cost = cost or gmacs_counter(v.models[0], inp)
    e = p.evaluate
    Ks = [k for k in e.sampler_budgets if k <= inp.T]
    rows = []
    for t_req in dict.fromkeys(p.avgn.t_g_eval):
        t_g = min(int(t_req), inp.T)
        if any(r["t_g"] == t_g for r in rows):
            continue  # two values past T glance at the same T frames
        at = heads if heads is not None and t_g == v.models[0].glance_frames else \
            [head_predictions(m, inp.data, max(Ks), t_g=t_g) for m in v.models]
        for K in Ks:
            head = np.stack([h["probs"][:, K - 1] for h in at]).astype(np.float64)
            frame = np.stack([mean_selected(inp.frame_probs, topk_select(h["saliency"], K)) for h in at])
            rows.append({"t_g": t_g, "t_g_requested": int(t_req), "k": K,
                         "head_map": {**stat([mean_average_precision(s, inp.labels, e.map_variant) for s in head]),
                                      "ci": map_ci(head, inp.labels, e.map_variant, e.bootstrap)},
                         "head_gmacs": cost(K, t_g) + inp.enc["light"] * float(np.mean(
                             [frames_beyond_glance(h["idx"][:, :K], t_g) for h in at])),
                         "frame_map": {**stat([mean_average_precision(s, inp.labels, e.map_variant) for s in frame]),
                                       "ci": map_ci(frame, inp.labels, e.map_variant, e.bootstrap)},
                         "frame_gmacs": cost(K, t_g, head=False)})
    return {"trained_t_g": min(v.avgn.t_g, inp.T), "T": inp.T, "rows": rows}


def audio_section(inp: Inputs, heads: dict[str, list[dict]], K: int, p: Params) -> dict:
    """Section 4: videos with and without audio, separately."""
    e = p.evaluate
    uniform = mean_selected(inp.frame_probs, uniform_select(len(inp.ids), inp.T, K))[None]  # [1,N,C]
    models = {n: v for n, v in inp.variants.items() if n == AVGN or not v.avgn.audio}
    out = {"k": K, "subsets": {}}
    for subset, mask in (("with_audio", inp.has_audio), ("without_audio", ~inp.has_audio)):
        n = int(mask.sum())
        rows = []
        if n:
            y = inp.labels[mask]
            cands = {f"{name} (head)": np.stack([h["probs"][:, K - 1] for h in heads[name]])[:, mask]
                     for name in models}
            cands["uniform (frame recognizer)"] = uniform[:, mask]
            for label, sc in cands.items():
                sc = sc.astype(np.float64)
                rows.append({"method": label, "seeds": int(sc.shape[0]),
                             "map": {**stat([mean_average_precision(s, y, e.map_variant) for s in sc]),
                                     "ci": map_ci(sc, y, e.map_variant, e.bootstrap)},
                             "top1": stat([top1(s, y) for s in sc])})
        out["subsets"][subset] = {"n": n, "few": n < FEW_VIDEOS, "rows": rows}
    return out


def head_vs_frame(inp: Inputs, heads: list[dict], Ks: Sequence[int], e) -> list[dict]:
    """AVGN's head after K frames against the frame recognizer's mean softmax over the *same* K frames
    (the head's picks), per K: mAP (mean ± std over seeds, CI) and the paired difference head − frame."""
    rows = []
    for K in Ks:
        head = np.stack([h["probs"][:, K - 1] for h in heads]).astype(np.float64)  # [S,N,C]
        frame = np.stack([mean_selected(inp.frame_probs, h["idx"][:, :K]) for h in heads])
        rows.append({"k": int(K),
                     "head_map": {**stat([mean_average_precision(s, inp.labels, e.map_variant) for s in head]),
                                  "ci": map_ci(head, inp.labels, e.map_variant, e.bootstrap)},
                     "frame_map": {**stat([mean_average_precision(s, inp.labels, e.map_variant) for s in frame]),
                                   "ci": map_ci(frame, inp.labels, e.map_variant, e.bootstrap)},
                     "head_minus_frame_ci": map_ci(head, inp.labels, e.map_variant, e.bootstrap, minus=frame)})
    return rows


def probes(store: FeatureStore) -> dict:
    """Val top-1 of linear probes (:func:`components.evaluation.avgn_calibration.probe_accuracy`) on each video's mean
    audio embedding, mean light feature, and both, trained on the train split's videos with audio."""
    def split(name: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        ok = np.asarray(store.array(name, "valid"), bool) & np.asarray(store.array(name, "has_audio"), bool)
        x = {k: np.asarray(store.array(name, k))[ok].astype(np.float64).mean(1) for k in ("audio_emb", "light_feats")}
        return x, np.asarray(store.array(name, "labels"))[ok].argmax(1)

    (tr, ytr), (va, yva) = split("train"), split("val")
    both = lambda x: np.concatenate([x["audio_emb"], x["light_feats"]], 1)  # noqa: E731
    return {"train_videos": int(len(ytr)), "val_videos": int(len(yva)), "chance": 1.0 / len(store.classes),
            "audio": probe_accuracy(tr["audio_emb"], ytr, va["audio_emb"], yva),
            "visual": probe_accuracy(tr["light_feats"], ytr, va["light_feats"], yva),
            "audio_visual": probe_accuracy(both(tr), ytr, both(va), yva)}


def val_section(p: Params, val: Inputs, store: FeatureStore | None) -> dict:
    """Section 5, on the **val** split (what the defaults were chosen on; nothing here reads test): the
    spatial glance against the key object, head vs frame recognizer on the same picks, early exit
    (temperatures, gates: :func:`val_exit`) and the linear probes (:func:`probes`)."""
    e = p.evaluate
    K = min(e.headroom_k, val.T)
    K_all = min(max([*e.budgets, K, *e.sampler_budgets]), val.T)
    heads = {n: [head_predictions(m, val.data, K_all) for m in v.models] for n, v in val.variants.items()}
    v = val.variants[AVGN]
    cost = gmacs_counter(v.models[0], val)
    gmacs_by_k = [cost(k) for k in range(1, min(max(e.budgets), val.T) + 1)]
    probs, per_video, budgets = exit_inputs(val, v, heads[AVGN], p, gmacs_by_k)
    return {"videos": len(val.ids), "spatial": spatial_section(val, heads, K, e.bootstrap, e.map_variant),
            "head_vs_frame": head_vs_frame(val, heads[AVGN], [k for k in e.sampler_budgets if k <= val.T], e),
            "exit": val_exit(probs, val.labels, per_video, budgets, p),
            "probes": probes(store) if store is not None else None}


def compute(p: Params, inp: Inputs, val: Inputs | None = None,
            store: FeatureStore | None = None) -> tuple[dict, dict[str, list[dict]]]:
    """Every section; returns (the result for ``avgn.json``, each variant's head predictions per seed).
    ``val`` (the val split's inputs) adds section 5 and the calibrated early exit; ``store`` the probes."""
    e = p.evaluate
    K = min(e.headroom_k, inp.T)
    K_all = min(max([*e.budgets, K, *e.sampler_budgets]), inp.T)
    heads = {n: [head_predictions(m, inp.data, K_all) for m in v.models] for n, v in inp.variants.items()}
    v = inp.variants[AVGN]
    K_max = min(max(e.budgets), inp.T)
    cost = gmacs_counter(v.models[0], inp)  # the seeds share one architecture: the first seed's count
    gmacs_by_k = [cost(k) for k in range(1, K_max + 1)]
    vs = val_section(p, val, store) if val is not None else None
    result = {
        "videos": len(inp.ids), "T": inp.T, "map_variant": e.map_variant,
        "map_definition": MAP_DEFINITIONS[e.map_variant], "bootstrap": e.bootstrap,
        "seeds": {n: v.seeds for n, v in inp.variants.items()},
        "audio_less_videos": int((~inp.has_audio).sum()),
        "spatial": spatial_section(inp, heads, K, e.bootstrap, e.map_variant),
        "early_exit": exit_section(inp, v, heads[AVGN], p, gmacs_by_k, vs["exit"] if vs else None),
        "glance": glance_section(inp, v, p, heads[AVGN], cost),
        "audio": audio_section(inp, heads, K, p),
        "head_vs_frame": head_vs_frame(inp, heads[AVGN], [k for k in e.sampler_budgets if k <= inp.T], e),
    }
    if vs is not None:
        result["val"] = vs
    return result, heads


def headline(result: dict) -> dict[str, float]:
    """Flat numbers for MLflow (``tracking.log_metrics``): spatial hit rates / IoU and π − centre,
    early-exit frames / GMACs / mAP per threshold (``exit_gmacs_t0.9``)."""
    out: dict[str, float] = {}
    sp = result["spatial"]
    for r in sp["rows"] if sp["available"] else []:
        pre = {"policy": "patch", "centre": "centre", "random": "random"}[r["policy"]]
        pre = pre if r["variant"] == AVGN else f"{r['variant']}_{pre}"
        out[f"{pre}_hit_rate"], out[f"{pre}_iou"] = r["hit"]["mean"], r["iou"]["mean"]
        if "minus_centre" in r:
            out[f"{pre}_minus_centre_hit_rate"] = r["minus_centre"]["hit"]["mean"]
    for r in result["early_exit"]["exit"]:
        t = f"t{r['threshold']:g}"
        out[f"exit_frames_{t}"], out[f"exit_gmacs_{t}"] = r["frames"]["mean"], r["gmacs"]["mean"]
        out[f"exit_map_{t}"], out[f"exit_top1_{t}"] = r["map"]["mean"], r["top1"]["mean"]
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}


# ------------------------------------------------------------------------------------ markdown
def _pct(s: dict, ci: bool = True) -> str:
    if not s or not np.isfinite(s.get("mean", np.nan)):
        return "–"
    txt = f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
    if ci and s.get("ci"):
        txt += f" [{100 * s['ci'][0]:.1f}, {100 * s['ci'][1]:.1f}]"
    return txt


def _diff(d: dict) -> str:
    if not np.isfinite(d["mean"]):
        return "–"
    if not d["ci"]:
        return f"{100 * d['mean']:+.1f} (no CI)"
    return (f"{100 * d['mean']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]"
            + ("" if d["resolved"] else " not resolved"))


def markdown(result: dict) -> str:
    """``avgn.md``: the four tables with a short reading."""
    ex, sp, gl, au = result["early_exit"], result["spatial"], result["glance"], result["audio"]
    seeds = result["seeds"]
    L = [f"# AVGN on the test split ({result['videos']} videos, T={result['T']})", "",
         f"Seeds: " + "; ".join(f"{n} {len(s)} ({', '.join(map(str, s))})" for n, s in seeds.items()) + ". "
         "Cells: mean ± std over the variant's sampler seeds [bootstrap 95% CI over test videos of the seed mean, "
         f"{result['bootstrap']} resamples]; percentages. mAP (`{result['map_variant']}`): "
         f"{result['map_definition']}.", ""]
    # 1 spatial
    L += [f"## 1. Spatial glance against the ground-truth key object (K = {sp['k']}"
          + (f", P = {sp['patch_size']} px of the {sp['full_size']}² frame cache)" if sp["available"] else ")"), ""]
    if not sp["available"]:
        L += [f"{sp['note'].capitalize()}: the spatial section is empty.", ""]
    else:
        L += [f"Hit: {sp['rule_text']} (rule `{sp['rule']}`); per-video mean over the processed frames that show the "
              "video's own key object, then the mean over videos. Every policy is scored on the frames the model "
              "itself processed (its K most salient).", "",
              "| variant | patch policy | videos scored | processed frames with the object "
              f"(of {result['videos'] * sp['k']}) | "
              "hit rate (%) | IoU (%) | head mAP at K (%) | "
              "π − centre: hit (points) | π − centre: IoU (points) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sp["rows"]:
            mc = r.get("minus_centre")
            L.append(f"| {r['variant']} | {r['label']} | {r['videos']} | {r['frames_with_target']['mean']:.1f} | "
                     f"{_pct(r['hit'])} | {_pct(r['iou'])} | {_pct(r.get('head_map', {}), ci=False)} | "
                     f"{_diff(mc['hit']) if mc else ''} | {_diff(mc['iou']) if mc else ''} |")
        pi = next((r for r in sp["rows"] if r["variant"] == AVGN and "minus_centre" in r), None)
        if pi:
            d = pi["minus_centre"]["hit"]
            reading = ("π hits the key object more often than a centre crop" if d["resolved"] and d["mean"] > 0 else
                       "π hits the key object less often than a centre crop" if d["resolved"] else
                       "π's hit rate against a centre crop's is not resolved (the CI contains 0)")
            ci = (f"[{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]" if d["ci"] else "no CI")
            rnd = pi.get("minus_random", {}).get("hit")
            L += ["", f"Reading: {reading}: {100 * d['mean']:+.1f} points {ci} over {d['videos']} videos"
                  + (f"; against a random patch {_diff(rnd)}" if rnd else "") + "."]
        L.append("")
    # 2 early exit
    L += [f"## 2. Early exit (AVGN⁺) against fixed K (K_max = {ex['k_max']})", "",
          "GMACs per video: light encoder × T_G + audio × T + glance + per processed frame (AESPA + π + f_L at "
          "P×P + ψ + f_C), counted with FlopCounterMode on the real modules; an early-exit video costs the "
          "prediction with the frames it used.", "",
          "| fixed K | GMACs | mAP (%) | top-1 (%) |", "|---|---|---|---|"]
    L += [f"| {r['k']} | {r['gmacs']:.3f} | {_pct(r['map'])} | {_pct(r['top1'])} |" for r in ex["fixed"]]
    L += ["", "| threshold | frames used | GMACs per video | mAP (%) | top-1 (%) | "
          "fixed K needs more GMACs for ≥ this mAP? |",
          "|---|---|---|---|---|---|"]
    for r in ex["exit"]:
        L.append(f"| {r['threshold']:g} | {r['frames']['mean']:.2f} ± {r['frames']['std']:.2f} | "
                 f"{r['gmacs']['mean']:.3f} ± {r['gmacs']['std']:.3f} | {_pct(r['map'])} | {_pct(r['top1'])} | "
                 f"{r['verdict']} |")
    wins = [f"{r['threshold']:g}" for r in ex["exit"] if r["match"]["fixed_needs_more"]]
    L += ["", "Reading: " + (
        f"at {len(wins)} of {len(ex['exit'])} thresholds ({', '.join(wins)}) early exit costs fewer GMACs than "
        "the cheapest fixed K of at least its mean mAP" if wins else
        "at no threshold does early exit cost fewer GMACs than the cheapest fixed K of at least its mean mAP") +
        "; the ΔmAP CIs (paired: same videos, seed s against seed s) say whether the two mAPs differ at all. "
        "Figure: `figures/avgn_exit.png`.", ""]
    L += exit_calibrated_md(ex, result.get("val"))
    # 3 glance
    Ks = sorted({r["k"] for r in gl["rows"]})
    L += [f"## 3. Glance budget T_G (Table 3; trained with T_G = {gl['trained_t_g']}, T = {gl['T']})", "",
          "Head: AVGN's own prediction with the K most salient frames of that glance. Frame recognizer: mean "
          "softmax of the per-frame recognizer's cached logits over the same K frames. Cells: mAP (%) / GMACs.", "",
          "| T_G | " + " | ".join(f"head K={k}" for k in Ks) + " | "
          + " | ".join(f"frame rec. K={k}" for k in Ks) + " |",
          "|---|" + "---|" * (2 * len(Ks))]
    for t_g in dict.fromkeys(r["t_g"] for r in gl["rows"]):
        by_k = {r["k"]: r for r in gl["rows"] if r["t_g"] == t_g}
        req = by_k[Ks[0]]["t_g_requested"]
        cells = [f"{_pct(by_k[k][f'{w}_map'], ci=False)} / {by_k[k][f'{w}_gmacs']:.3f}"
                 for w in ("head", "frame") for k in Ks]
        L.append(f"| {t_g}{'' if req == t_g else f' (asked {req})'} | " + " | ".join(cells) + " |")
    L += ["", "mAP CIs of every cell are in `avgn.json`.", ""]
    # 4 audio
    L += [f"## 4. Videos without audio (K = {au['k']})", ""]
    for subset, s in au["subsets"].items():
        name = subset.replace("_", " ")
        if not s["n"]:
            L += [f"No test video {name}.", ""]
            continue
        L += [f"**{name}** (n = {s['n']}" + ("; few videos: the CIs are wide" if s["few"] else "") + ")", "",
              "| method | mAP (%) | top-1 (%) |", "|---|---|---|"]
        L += [f"| {r['method']} | {_pct(r['map'])} | {_pct(r['top1'])} |" for r in s["rows"]]
        L.append("")
    L += ["Audio-less videos get AVGN's learned missing-audio token (never fake audio); mAP on a subset averages "
          "over the classes that have a positive in it" + (" (the `cumulative` variant counts every class, so "
          "subset values are biased low)" if result["map_variant"] == "cumulative" else "") + ".", "",
          "Figures: `figures/avgn_exit.png` (mAP vs GMACs), `figures/avgn_patches.png` (π's patches on a few test "
          "videos).", ""]
    L += head_md(result.get("head_vs_frame", []), "test") + val_md(result.get("val"))
    return "\n".join(L)


def exit_calibrated_md(ex: dict, val: dict | None) -> list[str]:
    """Section 2's calibrated rows: the exit with per-step temperatures fitted on val, and the gates chosen on val."""
    if "calibrated" not in ex or val is None:
        return []
    v = val["exit"]
    L = ["**Calibrated exit** (per-step temperature τ_t fitted on val by NLL; seed 1's τ_1..τ_K: "
         + ", ".join(f"{t:.2f}" for t in v["temperatures"][0]) + ")", "",
         "| threshold | frames used | GMACs per video | mAP (%) | top-1 (%) | fixed K needs more GMACs for ≥ this mAP? |",
         "|---|---|---|---|---|---|"]
    L += [f"| {r['threshold']:g} | {r['frames']['mean']:.2f} ± {r['frames']['std']:.2f} | {r['gmacs']['mean']:.3f} ± "
          f"{r['gmacs']['std']:.3f} | {_pct(r['map'])} | {_pct(r['top1'])} | {r['verdict']} |" for r in ex["calibrated"]]
    L += ["", f"**Gates chosen on val** (the cheapest on val whose val mAP ≥ {v['target']:g} × the best fixed-K val mAP "
          f"{100 * v['best_fixed_map']:.1f}%), applied to test:", "",
          "| confidence | threshold | val mAP (%) | val GMACs | reached target | test frames | test GMACs | test mAP (%) | "
          "fixed K needs more GMACs for ≥ this mAP? |", "|---|---|---|---|---|---|---|---|---|"]
    for kind, g in ex["chosen"].items():
        t = g["test"]
        L.append(f"| {kind} | {g['threshold']:g} | {100 * g['map']:.1f} | {g['gmacs']:.3f} | {'yes' if g['reached'] else 'no'} | "
                 f"{t['frames']['mean']:.2f} | {t['gmacs']['mean']:.3f} | {_pct(t['map'])} | {t['verdict']} |")
    return L + [""]


def head_md(rows: list[dict], split: str) -> list[str]:
    """Head vs frame recognizer on the same picks."""
    if not rows:
        return []
    L = [f"**AVGN's head vs the frame recognizer on the same K frames ({split})**: head − frame mAP, paired CI.", "",
         "| K | head mAP (%) | frame recognizer mAP (%) | head − frame (points) |", "|---|---|---|---|"]
    for r in rows:
        ci = r["head_minus_frame_ci"]
        d = 100 * (r["head_map"]["mean"] - r["frame_map"]["mean"])
        L.append(f"| {r['k']} | {_pct(r['head_map'])} | {_pct(r['frame_map'])} | {d:+.1f}"
                 + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" + ("" if resolved(ci) else " not resolved") if ci else "")
                 + " |")
    return L + [""]


def val_md(val: dict | None) -> list[str]:
    """Section 5: what the defaults were chosen on (val only)."""
    if val is None:
        return []
    L = [f"## 5. Val split ({val['videos']} videos): what the defaults were chosen on", ""]
    sp = val["spatial"]
    pi = next((r for r in sp["rows"] if r["variant"] == AVGN and "minus_centre" in r), None) if sp["available"] else None
    if pi:
        c = next(r for r in sp["rows"] if r["variant"] == AVGN and r["policy"] == "centre")
        L += [f"Spatial glance (K = {sp['k']}, rule `{sp['rule']}`): π hit {_pct(pi['hit'])}, centre crop "
              f"{_pct(c['hit'])}; π − centre {_diff(pi['minus_centre']['hit'])} points.", ""]
    L += head_md(val["head_vs_frame"], "val")
    ex = val["exit"]
    L += ["Early exit on val (mean over seeds; mAP % / GMACs): " + "; ".join(
        f"{kind}: " + ", ".join(f"{r['threshold']:g} → {100 * r['map']:.1f} / {r['gmacs']:.3f}" for r in rows)
        for kind, rows in ex["curve"].items()) + ". Fixed K: " + ", ".join(
        f"K={k} {100 * m:.1f}" for k, m in ex["fixed_map"].items()) + ".", ""]
    pr = val.get("probes")
    if pr:
        L += [f"Linear probes (logistic regression on a video's mean feature, {pr['train_videos']} train → "
              f"{pr['val_videos']} val videos with audio; chance {100 * pr['chance']:.1f}%): audio embedding "
              f"**{100 * pr['audio']:.1f}%**, light features {100 * pr['visual']:.1f}%, both "
              f"{100 * pr['audio_visual']:.1f}% val top-1. The synthetic audio carries the class by construction "
              "(a class tone during the salient frames, the distractor's tone during distractor frames).", ""]
    return L


# ------------------------------------------------------------------------------------ figures
def draw_exit(result: dict):
    """mAP vs GMACs per video: the fixed-K head curve (mean over seeds, ± std band) and the early-exit
    points (mean, ± std over seeds on both axes), thresholds annotated; the legend outside the axes."""
    ex = result["early_exit"]
    n = len(result["seeds"][AVGN])
    spread = "± std over seeds" if n > 1 else "one seed: no spread shown"
    fig, ax = plt.subplots(figsize=(8.6, 5.0))
    f = ex["fixed"]
    x = np.array([r["gmacs"] for r in f])
    m = np.array([100 * r["map"]["mean"] for r in f])
    s = np.array([100 * r["map"]["std"] for r in f])
    ax.plot(x, m, "-o", color="#1f77b4", lw=2, ms=5, label="fixed K (head after K frames)")
    if n > 1:
        ax.fill_between(x, m - s, m + s, color="#1f77b4", alpha=0.18, lw=0, label=spread)
    for r, xi, mi in zip(f, x, m):
        ax.annotate(f"K={r['k']}", (xi, mi), textcoords="offset points", xytext=(4, -12), fontsize=8.5, color="#1f77b4")
    e = ex["exit"]
    ex_x = np.array([r["gmacs"]["mean"] for r in e])
    ex_m = np.array([100 * r["map"]["mean"] for r in e])
    order = np.argsort(ex_x, kind="stable")
    ax.plot(ex_x[order], ex_m[order], "--", color="#d62728", lw=1.6)
    ax.errorbar(ex_x, ex_m, xerr=[r["gmacs"]["std"] for r in e], yerr=[100 * r["map"]["std"] for r in e],
                fmt="s", color="#d62728", ms=6, capsize=3, label=f"early exit (AVGN⁺), {spread}")
    for r, xi, mi in zip(e, ex_x, ex_m):
        ax.annotate(f"{r['threshold']:g}", (xi, mi), textcoords="offset points", xytext=(4, 5), fontsize=8.5,
                    color="#d62728")
    if ex.get("calibrated"):  # temperatures fitted on val; the gates chosen on val
        c = ex["calibrated"]
        cx = np.array([r["gmacs"]["mean"] for r in c])
        cm = np.array([100 * r["map"]["mean"] for r in c])
        o = np.argsort(cx, kind="stable")
        ax.plot(cx[o], cm[o], ":^", color="#2ca02c", lw=1.6, ms=6, label="early exit, calibrated on val (τ_t)")
        for kind, mk in (("raw", "D"), ("calibrated", "*")):
            t = ex["chosen"][kind]["test"]
            ax.plot([t["gmacs"]["mean"]], [100 * t["map"]["mean"]], mk, color="black", ms=10, mfc="none",
                    label=f"gate chosen on val ({kind}): {ex['chosen'][kind]['threshold']:g}")
    ax.set_xlabel("GMACs per video (mean over test videos)", fontsize=11)
    ax.set_ylabel("mAP (%)", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.set_title(f"AVGN: early exit vs fixed K on the test split ({result['videos']} videos, {n} seed"
                 f"{'' if n == 1 else 's'})", fontsize=12)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="none"))
    labels.append("numbers at red points: exit threshold")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9.5, frameon=False)
    fig.tight_layout()
    return fig


@dataclass
class PatchVideo:
    """One row of :func:`draw_patches`: K frames ``[K,S,S,3]`` uint8 and, per frame, boxes in frame-cache
    pixels (NaN: none): π's patch, the centre crop, the ground-truth key object."""
    title: str
    frames: np.ndarray
    frame_titles: list[str]
    model: np.ndarray  # [K,4]
    centre: np.ndarray  # [K,4]
    truth: np.ndarray  # [K,4]


def patch_videos(inp: Inputs, head: dict, K: int, patch: int, full_size: int, videos: int = 3) -> list[PatchVideo]:
    """The rows of ``avgn_patches.png`` from one seed's head predictions: the first test video of each class
    (store order) with the key object on at least one of its K processed frames, else the first of the class;
    up to ``videos``."""
    targets, sizes = frame_targets(inp.boxes, inp.ids, inp.labels, inp.frame_idx)
    idx = head["idx"][:, :K]
    gt = np.take_along_axis(targets, idx[:, :, None], axis=1)  # [N,K,4] video px
    has = np.isfinite(gt).all(-1).any(1)
    picks = []
    for c in range(inp.labels.shape[1]):
        of_c = [n for n in range(len(inp.ids)) if inp.labels[n, c]]
        best = next((n for n in of_c if has[n]), of_c[0] if of_c else None)
        if best is not None and best not in picks:
            picks.append(best)
    picks = picks[:videos]
    S = full_size
    out = []
    for n in picks:
        scale = np.where(sizes[n] > 0, S / np.maximum(sizes[n], 1), np.nan)  # video px -> cache px
        sq = (S, S)
        hits = patch_hits(patch_pixel_boxes(head["centre"][n, :K], patch, S, sizes[n]), gt[n], HIT_RULE)
        frames = inp.data["frames_full"][n, idx[n]].numpy().transpose(0, 2, 3, 1)  # [K,S,S,3]
        status = ["" if not inp.boxes else "\nno own key object" if np.isnan(h) else "\nπ hits" if h else "\nπ misses"
                  for h in hits]
        titles = [f"#{k + 1}: frame {int(inp.frame_idx[n, t])}{st}" for k, (t, st) in enumerate(zip(idx[n], status))]
        cls = ", ".join(inp.classes[c] for c in np.flatnonzero(inp.labels[n]))
        out.append(PatchVideo(f"{inp.ids[n]}\n({cls})", frames, titles,
                              patch_pixel_boxes(head["centre"][n, :K], patch, S, sq),
                              patch_pixel_boxes(np.full((K, 2), 0.5), patch, S, sq),
                              gt[n] * np.tile(scale, 2)))
    return out


def draw_patches(videos: list[PatchVideo], K: int, seed: int, truth: bool = True):
    """One row per video, its K processed frames (most salient first) with π's patch (solid orange), the
    centre crop (dashed white) and the ground-truth key object (solid green; ``truth=False``: the data
    has no spatial ground truth, said in the title)."""
    cell = 2.3
    fig, axes = plt.subplots(len(videos), K, figsize=(cell * K + 0.8, (cell + 0.45) * len(videos) + 1.1),
                             squeeze=False)
    styles = {"model": dict(ec="#ff7f0e", lw=2.4, ls="-"), "centre": dict(ec="white", lw=1.6, ls="--"),
              "truth": dict(ec="#00c853", lw=1.6, ls="-")}
    for r, v in enumerate(videos):
        for k in range(K):
            ax = axes[r, k]
            if k >= len(v.frames):
                ax.axis("off")
                continue
            ax.imshow(v.frames[k], interpolation="nearest")
            for key in ("truth", "centre", "model"):
                b = getattr(v, key)[k]
                if np.isfinite(b).all():
                    # continuous pixel coordinates ([j, j+1) is pixel j) -> imshow's (pixel j centred at j)
                    ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False,
                                           **styles[key]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(v.frame_titles[k], fontsize=9, linespacing=1.1)
        axes[r, 0].set_ylabel(v.title, fontsize=9.5, rotation=90, linespacing=1.1)
    keys = ["model", "centre", "truth"][:3 if truth else 2]
    handles = [Line2D([], [], color=styles[k]["ec"] if k != "centre" else "0.35", lw=styles[k]["lw"],
                      ls=styles[k]["ls"]) for k in keys]
    names = {"model": "π's patch (AVGN)", "centre": "centre crop (same P)", "truth": "ground-truth key object"}
    fig.legend(handles, [names[k] for k in keys], loc="lower center", ncol=3, fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"AVGN's spatial glance: the K={K} most salient frames of a few test videos (seed {seed})"
                 + ("" if truth else "\nno spatial ground truth in this dataset"), fontsize=11.5)
    h = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.75 / h, bottom=0.55 / h, hspace=0.32, wspace=0.06)
    return fig


def save_figure(draw: Callable[[], object], out: Path) -> Path:
    fig = draw()
    atomic_savefig(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def write_figures(result: dict, inp: Inputs, heads: dict[str, list[dict]], p: Params, figures: Path) -> list[Path]:
    """``avgn_exit.png`` and ``avgn_patches.png`` (the first AVGN seed's picks) under ``figures``."""
    K = min(p.evaluate.headroom_k, inp.T)
    v = inp.variants[AVGN]
    out = [save_figure(lambda: draw_exit(result), figures / "avgn_exit.png")]
    vids = patch_videos(inp, heads[AVGN][0], K, patch_size(v), frame_cache_size(inp))
    out.append(save_figure(lambda: draw_patches(vids, K, v.seeds[0], truth=bool(inp.boxes)),
                           figures / "avgn_patches.png"))
    return out


__all__ = ["patch_pixel_boxes", "random_centres", "frame_targets", "per_video_mean", "seed_mean", "stat", "mean_ci",
           "paired_difference", "resolved", "map_ci", "exit_costs", "fixed_k_curve", "exit_table", "match_fixed",
           "exit_verdict", "Variant", "Inputs", "patch_size", "frame_cache_size", "avgn_variants", "load_variants",
           "load_inputs", "spatial_section", "exit_section", "gmacs_counter", "glance_section", "audio_section",
           "compute", "headline", "markdown", "exit_inputs", "matched_exit_rows", "val_exit", "head_vs_frame",
           "probes", "val_section", "exit_calibrated_md", "head_md", "val_md", "draw_exit", "PatchVideo", "patch_videos", "draw_patches",
           "save_figure", "write_figures"]
