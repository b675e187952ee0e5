"""Frame selection: top-K, uniform, random and the ground-truth oracle; always K distinct indices.

All functions return int64 indices ``[N, K]`` into the T observation frames, each row K distinct
valid indices for any 1 <= K <= T.
"""
from __future__ import annotations

import math

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


# ---------------------------------------------------------------------------------------------
# Two-branch fusion (NSNet FSM + VGM, TSQNet VQM + TQM)
#
# Conventions shared by every function below: ``a`` / ``b`` are [N,T] float arrays of per-frame
# saliency (higher = more salient); ``a`` is the *first* branch (NSNet FSM s^f, TSQNet VQM S^v),
# ``b`` the second (NSNet VGM s^v, TSQNet TQM S^t). A branch's ranking pi is its frames sorted by
# descending score with ties going to the earlier frame, exactly as in :func:`topk_select`. Every
# selector returns int64 [N,K], each row K distinct indices in [0, T), for any 1 <= K <= T; bad K
# raises via :func:`check_k`, NaN / inf scores and mismatched shapes raise ValueError.
# ---------------------------------------------------------------------------------------------

#: Values of the ``nsnet.fusion`` param, in the order of NSNet supp. Table 2.
FUSION_STRATEGIES = ("index_union", "index_intersection", "index_join", "score_add", "score_mul", "score_max")
#: NSNet strategies that read the ratio (the others ignore it).
RATIO_STRATEGIES = ("index_union", "score_add")
SCORE_FUSIONS = ("add", "mul", "max")


def _fusion_inputs(a, b, K: int | None = None, names: tuple[str, str] = ("a", "b")) -> tuple[np.ndarray, np.ndarray]:
    """float64 copies of two [N,T] score arrays after shape, K and finiteness checks."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"fusion scores {names[0]} and {names[1]} must be [N,T] arrays of the same shape, "
                         f"got {a.shape} and {b.shape}")
    if K is not None:
        check_k(K, a.shape[1])
    for name, x in zip(names, (a, b)):
        if not np.isfinite(x).all():
            bad = "NaN" if np.isnan(x).any() else "inf"
            raise ValueError(f"fusion scores {name} contain {bad} (saliency scores must be finite)")
    return a, b


def _is_tensor(x) -> bool:
    """A torch tensor, told apart without importing torch (this module is numpy-only)."""
    return type(x).__module__.startswith("torch")


def check_ratio(ratio: float, name: str = "ratio") -> float:
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0:  # also rejects NaN
        raise ValueError(f"fusion {name}={ratio} must lie in [0, 1]")
    return ratio


def _ranks(scores: np.ndarray) -> np.ndarray:
    """rank[n, t] = position of frame t in row n's descending order (0 = most salient; ties -> earlier frame)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(scores.shape[1]), scores.shape), axis=1)
    return ranks


def normalize_scores(s: np.ndarray) -> np.ndarray:
    """Rows of ``s`` as distributions over the T frames, the scale NSNet's branches live on.

    NSNet §3.2 applies a softmax over time to the FSM confidences to get s^f, and §3.3 L1-normalises
    the VGM attention weights used as s^v, so both fused scores are already per-video distributions.
    Hence: a non-negative array is divided by its row sums (the identity, up to rounding, on such
    distributions; an all-zero row becomes uniform); an array with any negative entry (e.g. raw
    logits) gets the softmax over time, as the FSM does. The rule is decided per array, not per row,
    so all videos of a batch are treated alike. Both maps are strictly increasing within a row, so
    a single branch's ranking (and every index fusion) is unchanged.
    """
    s = np.asarray(s, dtype=np.float64)
    if (s >= 0).all():
        tot = s.sum(axis=1, keepdims=True)
        safe = np.where(tot > 0, tot, 1.0)
        return np.where(tot > 0, s / safe, 1.0 / s.shape[1])
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fuse_scores(a, b, strategy: str, ratio: float = 0.6, *, normalize: bool = True) -> np.ndarray:
    """Score combination of two branches (NSNet supp. §A.3 "Score Combination", Table 2 row "Score").

    * ``"add"``: convex combination ``ratio * a + (1 - ratio) * b`` (the paper's
      ``alpha s^f + (1 - alpha) s^v``; ``ratio`` = alpha = the first branch's share, 0.6 in the paper),
    * ``"mul"``: element-wise product ``a * b``,
    * ``"max"``: element-wise maximum ``max(a, b)``.

    ``ratio`` is only used by ``"add"``. Normalisation: the paper fuses its s^f (softmax over time,
    §3.2) and s^v (L1-normalised attention, §3.3), i.e. two per-video distributions over the T
    frames, and adds no further normalisation. With ``normalize=True`` (default) each input goes
    through :func:`normalize_scores` first, which leaves such distributions unchanged and puts
    other inputs (unnormalised confidences, logits) on that same scale so that neither branch
    dominates by its units; ``normalize=False`` applies the formulas to the raw inputs.

    Returns the fused [N,T] float64 scores; select with :func:`topk_select` (ties -> earlier frame).

    The one implementation for both worlds: given two torch tensors (NSNet's forward pass fusing
    s^f and s^v, already distributions, with ``normalize=False``) the same formulas run on the
    tensors in their dtype and device and a tensor comes back; the numpy checks and
    normalisation apply to arrays only.
    """
    if strategy not in SCORE_FUSIONS:
        raise ValueError(f"unknown score fusion {strategy!r}; valid: {', '.join(SCORE_FUSIONS)}")
    if _is_tensor(a) or _is_tensor(b):
        if normalize:
            raise ValueError("fuse_scores on torch tensors takes normalize=False (normalise them first)")
        if strategy == "add":
            ratio = check_ratio(ratio)
            return ratio * a + (1.0 - ratio) * b
        return a * b if strategy == "mul" else a.maximum(b)
    a, b = _fusion_inputs(a, b)
    if normalize:
        a, b = normalize_scores(a), normalize_scores(b)
    if strategy == "add":
        ratio = check_ratio(ratio)
        return ratio * a + (1.0 - ratio) * b
    if strategy == "mul":
        return a * b
    return np.maximum(a, b)


def intersection_select(a, b, K: int) -> np.ndarray:
    """Index intersection of two rankings (NSNet supp. §A.3 "Index Combination", *intersection*).

    Start from I(K) = {pi^a_1..pi^a_K} ∩ {pi^b_1..pi^b_K}. While |I| < K, expand the two top lists
    *by turns, one element per step*, starting with the first branch: step 1 appends pi^a_{K+1} to
    a's list, step 2 appends pi^b_{K+1} to b's, step 3 pi^a_{K+2}, ... . Each step adds at most one
    frame to the intersection, so it reaches exactly K (the paper's stopping rule
    ``|I(K + i')| = K``) no later than when both lists hold all T frames.

    Output order (deterministic): by the step at which a frame entered the intersection; the frames
    already in I(K) (step 0) in a's rank order. Later steps add one frame each, so there are no
    further ties. Rankings break score ties towards the earlier frame, as :func:`topk_select`.
    Scores are only ranked, so no normalisation is needed (any per-row increasing map is a no-op).
    """
    a, b = _fusion_inputs(a, b, K)
    ra, rb = _ranks(a), _ranks(b)
    # a's list holds K + ceil(s/2) frames after step s, b's K + floor(s/2): frame t is in a's list
    # from step 2(ra-K)+1 (ra >= K) and in b's from step 2(rb-K)+2 (rb >= K); in both from the max.
    enter_a = np.where(ra >= K, 2 * (ra - K) + 1, 0)
    enter_b = np.where(rb >= K, 2 * (rb - K) + 2, 0)
    key = np.maximum(enter_a, enter_b) * a.shape[1] + ra  # distinct per row
    return np.argsort(key, axis=1, kind="stable")[:, :K].astype(np.int64)


def _union_keys(ra: np.ndarray, rb: np.ndarray, ka: int, kb: int) -> np.ndarray:
    """Priority of each frame: a's top ka (a-rank order), then b's top kb not yet taken (b-rank
    order), then the rest in a's descending order. Keys are distinct within a row."""
    return np.where(ra < ka, ra, np.where(rb < kb, ka + rb, ka + kb + ra))


def union_counts(K: int, ratio: float) -> tuple[int, int]:
    """(ka, kb) of :func:`union_select`: ``ceil(K * ratio)`` and ``ceil(K * (1 - ratio))`` (products
    rounded to 9 decimals first)."""
    ratio = check_ratio(ratio)
    return math.ceil(round(K * ratio, 9)), math.ceil(round(K * (1.0 - ratio), 9))


def tsqnet_vqm_count(K: int, lambda_v: float) -> int:
    """k_v of :func:`tsqnet_union_select`: ``round_half_up(lambda_v * K)`` frames from VQM."""
    return math.floor(round(check_ratio(lambda_v, "lambda_v") * K, 9) + 0.5)


def single_branch(strategy: str, ratio: float, K: int) -> int | None:
    """0 or 1 when fusing two branches with ``strategy`` / ``ratio`` at budget ``K`` selects exactly the
    top-K of the first (0) or second (1) branch whatever the scores, else None: ``tsqnet_union`` (TSQNet's,
    ``ratio`` = lambda_v) when k_v is K or 0, ``index_union`` when ceil(K ratio) >= K or ratio is 0,
    ``score_add`` at ratio 1 or 0. A tuned weight in that range means the "fused" sampler is one branch."""
    if strategy == "tsqnet_union":
        k_v = tsqnet_vqm_count(K, ratio)
        return 0 if k_v >= K else 1 if k_v == 0 else None
    if strategy == "index_union":
        ka, _ = union_counts(K, ratio)
        return 0 if ka >= K else 1 if ka == 0 else None
    if strategy == "score_add":
        return 0 if ratio >= 1.0 else 1 if ratio <= 0.0 else None
    return None


def union_select(a, b, K: int, ratio: float = 0.6) -> np.ndarray:
    """Index union of two rankings (NSNet supp. §A.3 "Index Combination", *union*, after [20]).

    U(K) = {pi^a_1..pi^a_ka} ∪ {pi^b_1..pi^b_kb} with ka = ceil(K * ratio), kb = ceil(K * (1 - ratio))
    (exactly the paper's ceilings; ``ratio`` = alpha, 0.6 in the paper; products are rounded to 9
    decimals before the ceiling so that e.g. 0.3 * 10 counts as 3, not 4). Then U is expanded with one
    element from pi^a at a time (a's descending order, skipping frames already in U) until |U| = K.

    Output order and trimming: a's top ka in rank order, then b's top kb in b-rank order skipping
    duplicates, then the pi^a fill. As ka + kb can be K + 1 (e.g. K=3, ratio=0.6: 2 + 2), the list
    is cut at K: the dropped frame is the lowest-ranked new frame of b's top kb, so a keeps its
    ceil(K * ratio). Rankings break ties towards the earlier frame (as :func:`topk_select`); rank
    based, so no normalisation is needed.
    """
    a, b = _fusion_inputs(a, b, K)
    ka, kb = union_counts(K, ratio)
    key = _union_keys(_ranks(a), _ranks(b), ka, kb)
    return np.argsort(key, axis=1, kind="stable")[:, :K].astype(np.int64)


def join_select(a, b, K: int, *, normalize: bool = True) -> np.ndarray:
    """Index join (NSNet supp. §A.3 "Index Combination", *join*).

    Concatenate the two score lists into one of length 2T, rank it by descending score and take
    frame indices in that order, skipping repeats, until K distinct frames. Ties in the 2T list go
    to the earlier *frame* (then to ``a``), consistent with :func:`topk_select`. A frame's first
    appearance in that ranking is at ``max(a_t, b_t)``, so this equals top-K of the element-wise
    maximum (which is how it is computed; NSNet Table 2 indeed reports the same 75.1 for Max and
    Join). Because scores of the two branches are compared directly, ``normalize`` applies
    :func:`normalize_scores` to each input first, exactly as :func:`fuse_scores` does (identity on
    the paper's s^f / s^v, which are already distributions over time).
    """
    a, b = _fusion_inputs(a, b, K)
    if normalize:
        a, b = normalize_scores(a), normalize_scores(b)
    return topk_select(np.maximum(a, b), K)


def tsqnet_union_select(s_v, s_t, K: int, lambda_v: float = 0.6) -> np.ndarray:
    """TSQNet fusion of VQM and TQM scores (TSQNet supplementary §A, last paragraph; ``fusion.lambda_v``).

    Take the top k_v = round_half_up(lambda_v * K) frames of S^v (VQM) and the top K - k_v frames of
    S^t (TQM); frames chosen by both are replaced by deferring to VQM's descending order until K
    distinct frames. Rounding: the supplement only writes "lambda_v K"; its example (K=5,
    lambda_v=0.6 -> 3 from VQM, 5 - 3 = 2 from TQM) holds for floor and for rounding alike, and we
    round half up (floor(lambda_v * K + 0.5), the product first rounded to 9 decimals against float
    error) so that k_v is the integer nearest lambda_v * K: e.g. K=1, lambda_v=0.6 takes the one
    frame from VQM rather than from TQM as floor would.

    Output order: VQM's top k_v (rank order), TQM's new frames (rank order), then the VQM fill.
    Rankings break ties towards the earlier frame (as :func:`topk_select`); rank based, so no
    normalisation is needed.
    """
    s_v, s_t = _fusion_inputs(s_v, s_t, K, names=("s_v", "s_t"))
    k_v = tsqnet_vqm_count(K, lambda_v)
    key = _union_keys(_ranks(s_v), _ranks(s_t), k_v, K - k_v)
    return np.argsort(key, axis=1, kind="stable")[:, :K].astype(np.int64)


def fuse_select(a, b, K: int, strategy: str = "index_union", ratio: float = 0.6) -> np.ndarray:
    """K frames from two branches by the NSNet fusion ``strategy`` (the ``nsnet.fusion`` param).

    ``index_union`` -> :func:`union_select` (with ``ratio``), ``index_intersection`` ->
    :func:`intersection_select`, ``index_join`` -> :func:`join_select`, ``score_add`` /
    ``score_mul`` / ``score_max`` -> :func:`topk_select` of :func:`fuse_scores` (``ratio`` used by
    add only). NSNet supp. §A.3 / Table 2; ties -> earlier frame throughout.
    """
    if strategy not in FUSION_STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; valid: {', '.join(FUSION_STRATEGIES)}")
    if strategy == "index_union":
        return union_select(a, b, K, ratio)
    if strategy == "index_intersection":
        return intersection_select(a, b, K)
    if strategy == "index_join":
        return join_select(a, b, K)
    a, b = _fusion_inputs(a, b, K)
    return topk_select(fuse_scores(a, b, strategy[len("score_"):], ratio), K)
