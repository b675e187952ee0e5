"""AVGN's early-exit confidence, calibrated on val, and the val probes of its inputs (what ``avgn_report``
reads beside the test tables).

* **Temperature scaling** (our choice; AVGN⁺ exits on the raw max probability, FrameExit learns its
  gates): the head's prediction after t frames, ``p_t`` (eq. 8), gets one temperature ``τ_t`` per step,
  fitted on the **val** split by minimising the mean cross-entropy of ``softmax(log p_t / τ_t)`` against
  the normalised multi-hot labels (:func:`fit_temperature`; a golden-section search over ``log τ``).
  Per step, because one temperature for every step only renames the thresholds; per step it changes
  which step a video exits at (a step whose predictions are over-confident gets a larger ``τ_t``).
* **The gate** (:func:`choose_gate`): of the candidate thresholds, the cheapest on val (mean GMACs per
  video) whose val mAP reaches ``avgn.exit_target`` × the best fixed-K val mAP; test only applies it.
* **Linear probes** (:func:`probe_accuracy`): a multinomial logistic regression on a video's mean
  feature (train split) scored on val: how much class information the audio embedding carries, beside
  the light encoder's features and both together.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

GOLDEN = (math.sqrt(5) - 1) / 2


def soft_nll(logp: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of ``softmax(logp / temperature)`` (``logp [N,C]``: log-probabilities or logits)
    against ``labels [N,C]`` (multi-hot, normalised to sum 1 per row)."""
    z = np.asarray(logp, dtype=np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    logq = z - np.log(np.exp(z).sum(1, keepdims=True))
    y = np.asarray(labels, dtype=np.float64)
    y = y / np.clip(y.sum(1, keepdims=True), 1e-12, None)
    return float(-(y * logq).sum(1).mean())


def fit_temperature(logp: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 50.0,
                    iters: int = 80) -> float:
    """The temperature in ``[lo, hi]`` minimising :func:`soft_nll` (golden-section search over its log;
    the NLL of a temperature-scaled softmax is unimodal in practice). No videos: 1."""
    if len(logp) == 0:
        return 1.0
    a, b = math.log(lo), math.log(hi)
    f = lambda u: soft_nll(logp, labels, math.exp(u))  # noqa: E731
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


def step_temperatures(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One temperature per step: ``probs [N,K,C]`` (``p_t`` after t frames) -> ``τ [K]``."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))
    return np.array([fit_temperature(logp[:, k], labels) for k in range(logp.shape[1])])


def calibrate(probs: np.ndarray, temperatures: Sequence[float]) -> np.ndarray:
    """``softmax(log p_t / τ_t)`` per step: ``probs [N,K,C]``, ``τ [K]`` -> ``[N,K,C]``."""
    t = np.asarray(temperatures, dtype=np.float64)
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)) / t[None, :, None]
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def gate_candidates(thresholds: Sequence[float], n: int = 60) -> list[float]:
    """The thresholds the gate is chosen from: ``thresholds`` and ``n`` evenly spaced in [0.05, 0.995]."""
    return sorted({round(float(x), 4) for x in [*thresholds, *np.linspace(0.05, 0.995, n)]})


def choose_gate(curve: Callable[[float], tuple[float, float]], candidates: Sequence[float], best_fixed: float,
                target: float) -> dict:
    """The cheapest threshold whose val mAP is at least ``target * best_fixed``; ``curve(thr)`` -> (val mAP,
    val GMACs per video). None reaching it: the one of the highest mAP (then the cheapest).
    Returns ``{"threshold", "map", "gmacs", "target_map", "reached"}``."""
    rows = [(float(t), *curve(float(t))) for t in candidates]
    need = target * best_fixed
    ok = [r for r in rows if r[1] >= need - 1e-12]
    t, m, g = (min(ok, key=lambda r: (r[2], r[0])) if ok else max(rows, key=lambda r: (r[1], -r[2])))
    return {"threshold": t, "map": float(m), "gmacs": float(g), "target_map": float(need), "reached": bool(ok)}


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                   seed: int = 0) -> float:
    """Val top-1 accuracy of a multinomial logistic regression (standardised inputs, L2, sklearn's lbfgs)
    trained on ``train_x [N,D]`` with class ids ``train_y [N]``; ``nan`` with no val or one train class."""
    from sklearn.linear_model import LogisticRegression  # deferred: only the report's probes
    from sklearn.preprocessing import StandardScaler

    if len(val_x) == 0 or len(np.unique(train_y)) < 2:
        return float("nan")
    sc = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(sc.transform(train_x), train_y)
    return float((clf.predict(sc.transform(val_x)) == np.asarray(val_y)).mean())


__all__ = ["soft_nll", "fit_temperature", "step_temperatures", "calibrate", "gate_candidates", "choose_gate",
           "probe_accuracy"]
