"""Frame selection: top-K, uniform, random and the ground-truth oracle; always K distinct indices.

All functions return int64 indices ``[N, K]`` into the T observation frames, each row K distinct
valid indices for any 1 <= K <= T.
"""
from __future__ import annotations

import numpy as np


def check_k(K: int, T: int) -> None:
    if not 1 <= K <= T:
        raise ValueError(f"budget K={K} must satisfy 1 <= K <= T={T}")


def uniform_positions(T: int, K: int) -> np.ndarray:
    """Segment centres ``floor((i + 0.5) * T / K)``: K distinct, evenly spread indices in [0, T)."""
    check_k(K, T)
    return np.floor((np.arange(K) + 0.5) * T / K).astype(np.int64)


def uniform_select(N: int, T: int, K: int) -> np.ndarray:
    return np.broadcast_to(uniform_positions(T, K), (N, K)).copy()


def random_select(N: int, T: int, K: int, rng: np.random.Generator) -> np.ndarray:
    check_k(K, T)
    return np.argsort(rng.random((N, T)), axis=1)[:, :K].astype(np.int64)


def topk_select(scores: np.ndarray, K: int) -> np.ndarray:
    """Indices of the K highest scores per row ([N,T] -> [N,K]); ties go to the earlier frame."""
    scores = np.asarray(scores)
    check_k(K, scores.shape[1])
    if not np.isfinite(scores).all():
        raise ValueError("saliency scores contain NaN or inf")
    return np.argsort(-scores, axis=1, kind="stable")[:, :K].astype(np.int64)


def oracle_select(salient: np.ndarray, K: int) -> np.ndarray:
    """Upper bound from ground truth: K salient frames spread evenly over the salient ones; when a
    video has fewer than K salient frames, all of them plus evenly spread non-salient frames."""
    salient = np.asarray(salient, dtype=bool)
    N, T = salient.shape
    check_k(K, T)
    out = np.empty((N, K), dtype=np.int64)
    for n in range(N):
        pos, neg = np.flatnonzero(salient[n]), np.flatnonzero(~salient[n])
        if len(pos) >= K:
            out[n] = pos[uniform_positions(len(pos), K)]
        else:
            out[n] = np.concatenate([pos, neg[uniform_positions(len(neg), K - len(pos))]])
    return out


def average_predictions(logits: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Video scores from K selected frames of a per-frame recognizer: mean softmax ([N,T,C],[N,K] -> [N,C])."""
    logits = np.asarray(logits, dtype=np.float64)
    sel = np.take_along_axis(logits, idx[:, :, None], axis=1)  # [N,K,C]
    sel = sel - sel.max(-1, keepdims=True)
    p = np.exp(sel)
    p /= p.sum(-1, keepdims=True)
    return p.mean(1)
