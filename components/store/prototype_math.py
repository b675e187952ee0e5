"""Class prototypes and NSNet's non-saliency-suppression pseudo labels, from the feature store.

* :func:`class_prototypes` - NSNet appendix A.1 / TSQNet supplementary A: for each training video
  and each of its classes c, the frames a per-frame classifier predicts correctly (arg-max = c) are
  ranked by their confidence on c; the features of the top ε% (at least one) are averaged into a
  guiding video feature; a class prototype is the mean of its videos' guiding features. A class
  with no correctly predicted frame in any training video falls back to the top-ε% frames by
  confidence on c regardless of correctness, and is reported.
* :func:`guiding_scores` - NSNet eq. 1: g_i = exp φ(x_i, p_c) / Σ_j exp φ(x_i, p_j) with φ the negative
  Euclidean (or cosine) distance, at the ground-truth class c (multi-label: the max over the
  video's classes); or the recognizer's response softmax(logits)_c (supp. Table 1).
* :func:`ns_labels` - y_ns = [g · y, 1 − g] ∈ R^{C+1}; for a multi-label video y is normalised to sum 1
  so each row stays a distribution.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Prototypes:
    features: np.ndarray  # [C, D]
    videos: np.ndarray  # [C] videos that contributed correctly predicted frames
    fallback: np.ndarray  # [C] bool: no correct frame anywhere, fell back to confidence only


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def class_prototypes(feats: np.ndarray, logits: np.ndarray, labels: np.ndarray, top_percent: float,
                     class_names: list[str] | None = None) -> Prototypes:
    """feats [N,T,D], logits [N,T,C], labels [N,C] multi-hot -> prototypes [C,D]."""
    N, T, D = feats.shape
    C = labels.shape[1]
    probs = _softmax(logits.astype(np.float64))  # [N,T,C]
    pred = probs.argmax(-1)  # [N,T]
    sums, counts = np.zeros((C, D)), np.zeros(C, dtype=np.int64)
    fb_sums, fb_counts = np.zeros((C, D)), np.zeros(C, dtype=np.int64)
    for n in range(N):
        for c in np.flatnonzero(labels[n]):
            conf = probs[n, :, c]  # [T]
            k_all = max(1, int(np.ceil(T * top_percent / 100.0)))
            fb_sums[c] += feats[n, np.argsort(-conf, kind="stable")[:k_all]].mean(0)
            fb_counts[c] += 1
            correct = np.flatnonzero(pred[n] == c)
            if correct.size == 0:
                continue
            k = max(1, int(np.ceil(correct.size * top_percent / 100.0)))
            top = correct[np.argsort(-conf[correct], kind="stable")[:k]]
            sums[c] += feats[n, top].mean(0)
            counts[c] += 1
    fallback = counts == 0
    if (fb_counts == 0).any():
        missing = [class_names[c] if class_names else c for c in np.flatnonzero(fb_counts == 0)]
        raise ValueError(f"classes without any training video: {missing[:10]}; prototypes undefined")
    out = np.where(fallback[:, None], fb_sums / np.maximum(fb_counts, 1)[:, None], sums / np.maximum(counts, 1)[:, None])
    if fallback.any():
        names = [class_names[c] if class_names else int(c) for c in np.flatnonzero(fallback)]
        log.warning("%d classes have no correctly predicted training frame; prototype from the most "
                    "confident frames instead: %s", int(fallback.sum()), names[:10])
    return Prototypes(out.astype(np.float32), counts, fallback)


def guiding_scores(feats: np.ndarray, labels: np.ndarray, prototypes: np.ndarray | None = None,
                   logits: np.ndarray | None = None, mode: str = "prototype",
                   distance: str = "euclidean") -> np.ndarray:
    """NSNet eq. 1 (or the response-based variant) -> g [N,T] in [0,1]."""
    lab = labels.astype(bool)  # [N,C]
    if mode == "response":
        if logits is None:
            raise ValueError("response-based guiding scores need the recognizer's logits")
        p = _softmax(logits.astype(np.float64))  # [N,T,C]
    elif mode == "prototype":
        if prototypes is None:
            raise ValueError("prototype-based guiding scores need prototypes")
        x = feats.astype(np.float64)  # [N,T,D]
        P = prototypes.astype(np.float64)  # [C,D]
        if distance == "euclidean":
            d2 = (x ** 2).sum(-1, keepdims=True) - 2 * x @ P.T + (P ** 2).sum(-1)  # [N,T,C]
            phi = -np.sqrt(np.maximum(d2, 0.0))
        elif distance == "cosine":
            xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
            Pn = P / np.maximum(np.linalg.norm(P, axis=-1, keepdims=True), 1e-12)
            phi = -(1.0 - xn @ Pn.T)
        else:
            raise ValueError(f"unknown distance {distance!r}; use euclidean or cosine")
        p = _softmax(phi)  # [N,T,C]
    else:
        raise ValueError(f"unknown guiding mode {mode!r}; use prototype or response")
    return np.where(lab[:, None, :], p, -np.inf).max(-1).astype(np.float32)  # [N,T]


def ns_labels(g: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """y_ns = [g · y / |y|, 1 − g]: [N,T] and [N,C] -> [N,T,C+1], rows summing to 1."""
    y = labels.astype(np.float32)
    y = y / np.maximum(y.sum(-1, keepdims=True), 1.0)  # [N,C]
    return np.concatenate([g[..., None] * y[:, None, :], (1.0 - g)[..., None]], axis=-1).astype(np.float32)
