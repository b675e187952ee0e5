"""Video-level metrics: top-1 / top-k, mean class accuracy, mAP in two declared definitions, saliency
recall@K against ground truth, spatial patch coverage of ground-truth object boxes (hit rate, IoU;
centre-crop and random-patch reference policies), and percentile bootstrap CIs over videos.

**mAP** comes in two definitions (docs/design.md §3: always say which one a number uses; every result
records ``MAP_DEFINITIONS[variant]``):

* ``"sklearn"`` (the default, docs/design.md): non-interpolated AP per class exactly as
  ``sklearn.metrics.average_precision_score`` - AP = sum_n (R_n - R_{n-1}) P_n over the *distinct*
  score thresholds, so videos with tied scores enter together (one threshold, the precision of the
  whole tie group) - averaged over the classes that have at least one positive video.
* ``"cumulative"``: ``cal_map`` of the efficient-video code bases the sampler papers compare with
  (AR-Net's ``ops/utils.py``, copied into AdaFocus, blackfeather-wang/AdaFocus): per class, sort the videos
  by score, descending; at every positive, precision = (positives up to and including it) / rank;
  AP = sum of those precisions / number of positives (``max(#pos, 1)``, so a class without positives
  has AP 0) and the mean runs over **all** C classes. ``cal_map`` sorts with a non-stable
  ``torch.sort``; here ties keep the order of appearance (stable sort), so results are reproducible.
  ``cal_map`` also applies a softmax over classes to its logits before ranking; this function ranks
  the ``scores`` it is given (ours are already averaged softmax probabilities).

The two agree when no two videos tie on a class and every class has a positive.

Everything is numpy and vectorised over classes (and over a leading batch of evaluations, see
:func:`mean_average_precision_batch`); ``sklearn`` is only used by the tests, as the reference.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

MAP_DEFINITIONS: dict[str, str] = {
    "sklearn": "non-interpolated AP per class as sklearn.metrics.average_precision_score (tied scores form one "
               "threshold: AP = sum over distinct thresholds of (R_n - R_n-1) * P_n), mean over the classes "
               "with >= 1 positive video",
    "cumulative": "AR-Net/AdaFocus cal_map: per class, videos sorted by score descending (stable: ties in order of "
                  "appearance), AP = sum over positives of (TP up to its rank / rank) / max(#positives, 1); mean "
                  "over all C classes (a class without positives scores 0)",
}


# ---------------------------------------------------------------------------------- top-k / accuracy
def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of videos whose arg-max class is one of their labels (labels multi-hot [N,C])."""
    return float(top1_hits(scores, labels).mean())


def top1_hits(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-video 0/1: the arg-max class is one of the video's labels."""
    pred = np.asarray(scores).argmax(1)
    return np.asarray(labels)[np.arange(len(pred)), pred].astype(np.float64)


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-video 0/1: one of the ``k`` highest-scoring classes is one of the video's labels.

    ``scores`` and ``labels`` (multi-hot) are [N,C]; tied scores go to the lower class index (as
    ``argmax``, so ``k=1`` equals :func:`top1_hits`).
    """
    scores, labels = np.asarray(scores), np.asarray(labels) > 0
    C = scores.shape[1]
    if not 1 <= k <= C:
        raise ValueError(f"top-k accuracy needs 1 <= k <= C={C}, got k={k}")
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [N,k]
    return np.take_along_axis(labels, best, axis=1).any(1).astype(np.float64)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of videos with a label among their ``k`` best classes (top-5 etc.); labels multi-hot [N,C]."""
    return float(topk_hits(scores, labels, k).mean())


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 recall per class, averaged over the classes that have at least one video.

    The recall of class c is the share of the videos labelled c whose arg-max class is one of *their*
    labels (:func:`top1_hits`); a multi-label video counts once in each of its classes. With one label
    per video this is the usual mean per-class accuracy. NaN when no class has a video.
    """
    hits = top1_hits(scores, labels)  # [N]
    y = np.asarray(labels) > 0  # [N,C]
    count = y.sum(0)  # [C]
    ok = count > 0
    if not ok.any():
        return float("nan")
    return float(((hits @ y)[ok] / count[ok]).mean())


# ------------------------------------------------------------------------------------ average precision
def _as_inputs(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.shape != scores.shape[-labels.ndim:] or labels.ndim > scores.ndim:
        raise ValueError(f"labels {labels.shape} do not match scores {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, np.broadcast_to(labels > 0, scores.shape)


def _search(a: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted`` with a range per key, vectorised over keys: the first index ``j`` in
    ``[lo, hi)`` of the ascending run ``a[lo:hi]`` with ``a[j] >= v`` (``side="left"``) or ``a[j] > v``
    (``"right"``); ``hi`` when there is none. Bisection, ``log2(max(hi - lo))`` numpy steps."""
    lo, hi = lo.copy(), hi.copy()
    steps = int((hi - lo).max(initial=0)).bit_length()
    for _ in range(steps):
        mid = (lo + hi) // 2
        val = a[np.minimum(mid, len(a) - 1)]  # mid == len(a) only where lo == hi (settled)
        right = (val <= v) if side == "right" else (val < v)  # the answer lies right of mid
        active = lo < hi
        lo = np.where(active & right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    return lo


def _ties_before(s: np.ndarray, rows: np.ndarray, cols: np.ndarray, block: int = 1 << 22) -> np.ndarray:
    """For each (row, col): how many earlier entries of ``s[row]`` equal ``s[row, col]`` (blocked)."""
    out = np.zeros(len(rows), dtype=np.int64)
    N = s.shape[1]
    step = max(1, block // N)
    for a in range(0, len(rows), step):
        r, c = rows[a:a + step], cols[a:a + step]
        eq = (s[r] == s[r, c][:, None]) & (np.arange(N) < c[:, None])  # [b,N]
        out[a:a + step] = eq.sum(1)
    return out


def average_precision_per_class(scores: np.ndarray, labels: np.ndarray, variant: str = "sklearn") -> np.ndarray:
    """AP of every class: scores / multi-hot labels ``[..., N, C]`` -> ``[..., C]`` (0 where no positive).

    Leading dimensions are independent evaluations (a grid of samplers, K and seeds); ``labels``
    may be ``[N,C]`` shared by all of them. ``variant`` as in :data:`MAP_DEFINITIONS`.

    Only the positives' ranks matter, so instead of arg-sorting every class and running cumulative
    sums over all N videos, each (evaluation, class) row is sorted by value once and every positive
    ``k`` with score ``v`` is located in it by bisection:

    * ``sklearn``: precision of v's tie group = #{positives >= v} / #{videos >= v};
    * ``cumulative`` (stable order): rank = #{videos > v} + #{earlier videos == v} + 1 and
      TP = #{positives > v} + #{earlier positives == v} + 1, precision = TP / rank.

    AP = sum of the positives' precisions / max(#positives, 1).
    """
    if variant not in MAP_DEFINITIONS:
        raise ValueError(f"unknown mAP variant {variant!r}; one of {sorted(MAP_DEFINITIONS)}")
    scores, labels = _as_inputs(scores, labels)
    lead, (N, C) = scores.shape[:-2], scores.shape[-2:]
    # [R,N]: one row per (evaluation, class); + 0.0 turns -0.0 into 0.0 (they tie, as in sklearn)
    s = np.add(np.swapaxes(scores, -1, -2), 0.0, order="C").reshape(-1, N)
    y = np.ascontiguousarray(np.swapaxes(labels, -1, -2)).reshape(-1, N)  # [R,N] bool
    R = s.shape[0]
    r, i = np.nonzero(y)  # positives, grouped by row, ascending video index within a row
    v = s[r, i]  # [P] their scores
    srt = s.copy() if variant == "cumulative" else s  # the tie count below reads s in video order
    srt.sort(axis=-1)  # every row ascending (in place: np.sort would copy)
    srt = srt.ravel()  # rows end to end
    n_ge = (r + 1) * N - _search(srt, v, r * N, (r + 1) * N, "left")  # videos with score >= v
    # the positives of each row sorted by (score, video): segments of ``pv`` per row
    npos = np.bincount(r, minlength=R)  # [R]
    start = np.concatenate([[0], np.cumsum(npos)])  # row segment bounds in pv
    order = np.lexsort((i, v, r))
    pv = v[order]
    lo_p, hi_p = start[r], start[r + 1]
    p_ge = hi_p - _search(pv, v, lo_p, hi_p, "left")  # positives with score >= v
    if variant == "sklearn":
        precision = p_ge / n_ge
    else:
        n_gt = (r + 1) * N - _search(srt, v, r * N, (r + 1) * N, "right")  # videos with score > v
        p_lower = _search(pv, v, lo_p, hi_p, "left")
        p_gt = hi_p - _search(pv, v, lo_p, hi_p, "right")  # positives with score > v
        where = np.empty_like(order)
        where[order] = np.arange(len(order))  # position of each positive in pv
        p_tie_before = where - p_lower  # earlier positives with the same score
        n_tie_before = np.zeros_like(p_tie_before)
        tied = np.flatnonzero(n_ge - n_gt > 1)  # positives sharing their score with another video
        if len(tied):
            n_tie_before[tied] = _ties_before(s, r[tied], i[tied])
        precision = (p_gt + p_tie_before + 1) / (n_gt + n_tie_before + 1)
    ap = np.bincount(r, weights=precision, minlength=R) / np.maximum(npos, 1)  # [R]
    return ap.reshape(*lead, C)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP of one class, ``scores [N]`` and 0/1 ``labels [N]``; equals
    ``sklearn.metrics.average_precision_score`` (ties as one threshold) and, like it, 0 without positives."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"average_precision takes 1-d scores and labels of one length, got {scores.shape}, "
                         f"{labels.shape}")
    return float(average_precision_per_class(scores[:, None], labels[:, None])[0])


def _mean_ap(ap: np.ndarray, has_pos: np.ndarray, variant: str) -> np.ndarray:
    if variant == "cumulative":
        return ap.mean(-1)
    n = has_pos.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (ap * has_pos).sum(-1) / n, np.nan)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, variant: str = "sklearn") -> float:
    """mAP of ``scores [N,C]`` against multi-hot ``labels [N,C]`` in the named definition
    (:data:`MAP_DEFINITIONS`). ``"sklearn"``: mean over classes with a positive (NaN when none has);
    ``"cumulative"``: mean over all C classes."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"mean_average_precision takes scores [N,C], got {scores.shape}")
    ap = average_precision_per_class(scores, labels, variant)  # [C]
    return float(_mean_ap(ap, (np.asarray(labels) > 0).any(0), variant))


def mean_average_precision_batch(scores: np.ndarray, labels: np.ndarray, variant: str = "sklearn") -> np.ndarray:
    """mAP of many evaluations at once: ``scores [B, N, C]`` (any leading shape) with ``labels [N,C]``
    or ``[B, N, C]`` -> ``[B]``; element b equals ``mean_average_precision(scores[b], labels[b])``."""
    scores = np.asarray(scores)
    if scores.ndim < 2:
        raise ValueError(f"mean_average_precision_batch takes scores [..., N, C], got {scores.shape}")
    ap = average_precision_per_class(scores, labels, variant)  # [..., C]
    has_pos = np.broadcast_to(np.asarray(labels) > 0, scores.shape).any(-2)  # [..., C]
    return _mean_ap(ap, has_pos, variant)


# ------------------------------------------------------------------------------------------ saliency
def salient_mask(gt: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N,T] ground-truth codes + [N,C] multi-hot -> [N,T] bool: the frame shows one of the video's
    own classes (codes < 0 - generic, low quality, unknown - are never salient)."""
    gt = np.asarray(gt)
    codes = np.clip(gt, 0, None).astype(np.int64)
    return (gt >= 0) & np.take_along_axis(np.asarray(labels).astype(bool), codes, axis=1)


def distractor_mask(gt: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N,T] ground-truth codes + [N,C] multi-hot -> [N,T] bool: the frame shows the scene of a class the
    video does not have (a distractor segment; generic and low-quality frames are not distractors)."""
    return (np.asarray(gt) >= 0) & ~salient_mask(gt, labels)


def distractor_share(idx: np.ndarray, distractor: np.ndarray) -> float:
    """Share of the selected frames ``idx [N,K]`` that are distractors: |selected ∩ distractor| / K,
    averaged over all videos (a video without distractor frames counts 0)."""
    hits = np.take_along_axis(np.asarray(distractor, dtype=bool), idx, axis=1)
    return float(hits.mean()) if hits.size else float("nan")


def salient_recall(idx: np.ndarray, salient: np.ndarray) -> float:
    """Recall@K of salient frames: |selected ∩ salient| / min(K, |salient|), averaged over videos that
    have at least one salient observation frame (NaN when none has)."""
    salient = np.asarray(salient, dtype=bool)
    hits = np.take_along_axis(salient, idx, axis=1).sum(1)
    denom = np.minimum(idx.shape[1], salient.sum(1))
    ok = denom > 0
    return float((hits[ok] / denom[ok]).mean()) if ok.any() else float("nan")


# ------------------------------------------------------------------------------------ spatial coverage
PATCH_HIT_RULES: dict[str, str] = {
    "coverage": "the patch covers >= 50% of the ground-truth object box's area",
    "centre": "the patch contains the centre of the ground-truth object box",
}


def patch_boxes(centres: np.ndarray, size: float) -> np.ndarray:
    """Square ``size x size`` patches centred at ``centres [..., 2]`` (x, y) -> boxes ``[..., 4]``
    ``(x0, y0, x1, y1)``, in the coordinates of the centres: continuous pixel coordinates where pixel
    ``j`` spans ``[j, j + 1)`` (the ground truth's half-open boxes), so a frame's centre is ``(W/2, H/2)``."""
    c = np.asarray(centres, dtype=np.float64)
    h = size / 2.0
    return np.concatenate([c - h, c + h], axis=-1)


def centre_patches(shape: tuple[int, ...], frame_size: tuple[float, float], size: float) -> np.ndarray:
    """The centre-crop policy: every frame's patch at the frame centre, ``[*shape, 4]``
    (``frame_size = (width, height)``)."""
    w, h = frame_size
    return patch_boxes(np.broadcast_to(np.array([w / 2.0, h / 2.0]), (*shape, 2)), size)


def random_patches(shape: tuple[int, ...], frame_size: tuple[float, float], size: float, seed: int = 0) -> np.ndarray:
    """The random-patch policy: centres uniform over the positions where the patch lies inside the
    frame (the frame centre on an axis where ``size`` exceeds the frame), ``[*shape, 4]``, seeded."""
    lo = np.minimum(size / 2.0, np.asarray(frame_size, dtype=np.float64) / 2.0)  # [2]
    hi = np.asarray(frame_size, dtype=np.float64) - lo
    u = np.random.default_rng(seed).random((*shape, 2))
    return patch_boxes(lo + u * (hi - lo), size)


def _box_area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    return np.prod(np.clip(hi - lo, 0, None), axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``[..., 4]`` (x0, y0, x1, y1), element-wise (broadcast); NaN
    where either box is NaN (no ground truth)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    inter = _intersection(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (_box_area(a) + _box_area(b) - inter)


def patch_hits(patches: np.ndarray, objects: np.ndarray, rule: str = "coverage") -> np.ndarray:
    """Per frame 1.0 / 0.0: does the patch hit the object (:data:`PATCH_HIT_RULES`), NaN where the
    object box is NaN. ``patches`` and ``objects`` are boxes ``[..., 4]`` in the same coordinates;
    ``objects`` should hold only the video's own class (``FrameBoxes.target``: distractor and
    object-free frames NaN), so they count neither as hits nor in the denominator."""
    if rule not in PATCH_HIT_RULES:
        raise ValueError(f"unknown patch hit rule {rule!r}; one of {sorted(PATCH_HIT_RULES)}")
    p, o = np.asarray(patches, dtype=np.float64), np.asarray(objects, dtype=np.float64)
    if rule == "coverage":
        with np.errstate(invalid="ignore", divide="ignore"):
            hit = _intersection(p, o) >= 0.5 * _box_area(o)
    else:
        c = (o[..., :2] + o[..., 2:]) / 2.0
        hit = ((p[..., :2] <= c) & (c < p[..., 2:])).all(-1)
    return np.where(np.isnan(o).any(-1), np.nan, hit.astype(np.float64))


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def patch_hit_rate(patches: np.ndarray, objects: np.ndarray, rule: str = "coverage") -> float:
    """Share of the frames with an object box (non-NaN ``objects``) whose patch hits it
    (:func:`patch_hits`), pooled over all frames of all videos; NaN when no frame has a box. Per-video
    values (e.g. for :func:`bootstrap_ci`): ``np.nanmean(patch_hits(...), axis=-1)``."""
    return _nanmean(patch_hits(patches, objects, rule))


def patch_iou(patches: np.ndarray, objects: np.ndarray) -> float:
    """Mean IoU of patch and object box over the frames with an object box (pooled, as
    :func:`patch_hit_rate`); NaN when no frame has one."""
    return _nanmean(box_iou(patches, objects))


# ----------------------------------------------------------------------------------------- bootstrap
def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile CI of mean(a) - mean(b) for per-video scores of two methods on the same videos,
    resampling videos with replacement (the pairing is kept)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def bootstrap_ci(metric: Callable[[np.ndarray], float] | np.ndarray, n: int | None = None, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0, vectorized: bool = False,
                 chunk: int = 64) -> tuple[float, float]:
    """Percentile bootstrap CI over videos, for any metric, decomposable or not (mAP).

    ``metric(idx)`` gets an int array ``[n]`` of videos drawn with replacement and returns the metric
    on them, e.g. ``lambda i: mean_average_precision(scores[i], labels[i])``. With
    ``vectorized=True`` it gets ``[b, n]`` (b <= ``chunk`` resamples at once) and returns ``[b]``,
    e.g. ``lambda I: mean_average_precision_batch(scores[I], labels[I])``. ``metric`` may also be an
    array of per-video values (then the metric is their mean and ``n`` defaults to its length).
    Resamples whose metric is NaN (e.g. no positive at all) are left out; ``(nan, nan)`` if all are.
    The same ``seed`` draws the same resamples, so two methods bootstrapped with one seed are paired.
    """
    return percentile_ci(bootstrap_stats(metric, n, n_boot, seed, vectorized, chunk), alpha)


def map_metric(runs: Sequence[np.ndarray], labels: np.ndarray, variant: str = "sklearn",
               minus: Sequence[np.ndarray] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``metric(I [b,n]) -> [b]`` for :func:`bootstrap_ci` (``vectorized``): the mean over ``runs`` (each
    ``[N,C]`` scores of one run on the same videos) of mAP on the resampled videos, or, with ``minus``
    (one run paired with each run), of the paired difference mAP(run) - mAP(minus run)."""
    labels = np.asarray(labels)
    if minus is None:
        return lambda I: np.mean([mean_average_precision_batch(r[I], labels[I], variant) for r in runs], axis=0)
    return lambda I: np.mean([mean_average_precision_batch(a[I], labels[I], variant)
                              - mean_average_precision_batch(b[I], labels[I], variant)
                              for a, b in zip(runs, minus)], axis=0)


def map_ci(runs: Sequence[np.ndarray], labels: np.ndarray, variant: str, n_boot: int,
           minus: Sequence[np.ndarray] | None = None, chunk: int = 64) -> tuple[float, float]:
    """The one mAP bootstrap CI: percentile bootstrap 95% CI over test videos of :func:`map_metric` (the
    mean over runs of mAP, or of the paired difference to ``minus``); the same resamples for every
    call, so CIs of two methods are paired."""
    return bootstrap_ci(map_metric(runs, labels, variant, minus), len(labels), n_boot=n_boot, vectorized=True,
                        chunk=chunk)


def bootstrap_stats(metric: Callable[[np.ndarray], float] | np.ndarray, n: int | None = None, n_boot: int = 1000,
                    seed: int = 0, vectorized: bool = False, chunk: int = 64) -> np.ndarray:
    """The metric on each of :func:`bootstrap_ci`'s resamples, ``[n_boot]`` in draw order (NaN kept): the
    same ``seed`` draws the same resamples, so statistics combined resample by resample stay paired."""
    if not callable(metric):
        values = np.asarray(metric, dtype=np.float64)
        n = len(values) if n is None else n
        if n != len(values):
            raise ValueError(f"n={n} but {len(values)} per-video values")
        metric, vectorized = (lambda I: values[I].mean(-1)), True
    if n is None or n < 1:
        raise ValueError("bootstrap_ci needs the number of videos n >= 1")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))  # [n_boot, n]
    if vectorized:
        return np.concatenate([np.asarray(metric(idx[i:i + chunk]), dtype=np.float64).reshape(-1)
                               for i in range(0, n_boot, chunk)])
    return np.array([metric(i) for i in idx], dtype=np.float64)


def percentile_ci(stats: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The ``alpha/2`` and ``1 - alpha/2`` quantiles (numpy's linear rule) of the resampled statistics,
    NaN left out (``(nan, nan)`` if all are). A statistic may be ``+inf`` / ``-inf`` (a budget never
    reached on that resample): a quantile that falls on or beside an infinite value is that infinity."""
    stats = np.asarray(stats, dtype=np.float64)
    stats = stats[~np.isnan(stats)]
    if not len(stats):
        return float("nan"), float("nan")
    if np.isfinite(stats).all():
        return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))
    s = np.sort(stats)

    def q(p: float) -> float:
        pos = p * (len(s) - 1)
        lo, hi = int(np.floor(pos)), int(np.ceil(pos))
        t = pos - lo
        if lo == hi or s[lo] == s[hi]:
            return float(s[lo])
        if not np.isfinite(s[lo]) or not np.isfinite(s[hi]):
            return float(s[hi] if np.isinf(s[hi]) and s[hi] > 0 else s[lo])
        return float(s[lo] + (s[hi] - s[lo]) * t)

    return q(alpha / 2), q(1 - alpha / 2)
