"""Video-level metrics: top-1, mAP (non-interpolated AP per class, mean over classes with a positive),
and saliency recall@K against ground truth."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of videos whose arg-max class is one of their labels (labels multi-hot [N,C])."""
    return float(top1_hits(scores, labels).mean())


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """mAP as ``sklearn.metrics.average_precision_score`` per class, averaged over classes with a positive."""
    labels = np.asarray(labels)
    aps = [average_precision_score(labels[:, c], scores[:, c]) for c in range(labels.shape[1]) if labels[:, c].any()]
    return float(np.mean(aps)) if aps else float("nan")


def salient_mask(gt: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N,T] ground-truth codes + [N,C] multi-hot -> [N,T] bool: the frame shows one of the video's
    own classes (codes < 0 - generic, low quality, unknown - are never salient)."""
    gt = np.asarray(gt)
    codes = np.clip(gt, 0, None).astype(np.int64)
    return (gt >= 0) & np.take_along_axis(np.asarray(labels).astype(bool), codes, axis=1)


def salient_recall(idx: np.ndarray, salient: np.ndarray) -> float:
    """Recall@K of salient frames: |selected ∩ salient| / min(K, |salient|), averaged over videos that
    have at least one salient observation frame (NaN when none has)."""
    salient = np.asarray(salient, dtype=bool)
    hits = np.take_along_axis(salient, idx, axis=1).sum(1)
    denom = np.minimum(idx.shape[1], salient.sum(1))
    ok = denom > 0
    return float((hits[ok] / denom[ok]).mean()) if ok.any() else float("nan")


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile CI of mean(a) - mean(b) for per-video scores of two methods on the same videos,
    resampling videos with replacement (the pairing is kept)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def top1_hits(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-video 0/1: the arg-max class is one of the video's labels."""
    pred = np.asarray(scores).argmax(1)
    return np.asarray(labels)[np.arange(len(pred)), pred].astype(np.float64)
