"""Two-branch fusion (NSNet supp. §A.3, TSQNet supp. §A): hand examples, brute force, properties."""
import dataclasses
import math

import numpy as np
import pytest

from components.core.params import FusionParams
from components.core.selection import (FUSION_STRATEGIES, fuse_scores, fuse_select, intersection_select, join_select,
                                  normalize_scores, topk_select, tsqnet_union_select, union_select)

# Both rows sum to 3, so the default normalisation divides both by 3 and changes no comparison.
#          frame: 0    1    2    3    4    5
A = np.array([[0.9, 0.1, 0.8, 0.3, 0.7, 0.2]])  # a ranking: 0, 2, 4, 3, 5, 1
B = np.array([[0.2, 0.9, 0.1, 0.8, 0.7, 0.3]])  # b ranking: 1, 3, 4, 5, 0, 2


# ----------------------------------------------------------------------------- hand examples
def test_score_fusions_by_hand():
    # add, ratio .6 (x 1/3): 0: .54+.08=.62  1: .06+.36=.42  2: .48+.04=.52  3: .18+.32=.50
    #                         4: .42+.28=.70  5: .12+.12=.24  -> order 4, 0, 2, 3, 1, 5
    assert fuse_select(A, B, 3, "score_add", 0.6).tolist() == [[4, 0, 2]]
    assert np.allclose(fuse_scores(A, B, "add", 0.6) * 3, [[.62, .42, .52, .50, .70, .24]])
    # mul (x 1/9): 0: .18  1: .09  2: .08  3: .24  4: .49  5: .06 -> 4, 3, 0, 1, 2, 5
    assert fuse_select(A, B, 3, "score_mul").tolist() == [[4, 3, 0]]
    assert fuse_select(A, B, 5, "score_mul").tolist() == [[4, 3, 0, 1, 2]]
    # max (x 1/3): .9 .9 .8 .8 .7 .3 -> ties go to the earlier frame: 0, 1, 2, 3, 4, 5
    assert fuse_select(A, B, 3, "score_max").tolist() == [[0, 1, 2]]
    # ratio 1 / 0 reduce "add" to one branch
    assert fuse_select(A, B, 2, "score_add", 1.0).tolist() == [[0, 2]]
    assert fuse_select(A, B, 2, "score_add", 0.0).tolist() == [[1, 3]]


def test_normalisation_by_hand():
    a = np.array([[30.0, 10.0, 60.0]])  # sum 100 -> .3 .1 .6
    b = np.array([[0.05, 0.9, 0.05]])  # already a distribution (unchanged)
    # normalised max: .3 .9 .6 -> frame 1; raw max: 30 10 60 -> frame 2 (a's units dominate)
    assert topk_select(fuse_scores(a, b, "max"), 1).tolist() == [[1]]
    assert topk_select(fuse_scores(a, b, "max", normalize=False), 1).tolist() == [[2]]
    assert join_select(a, b, 1).tolist() == [[1]] and join_select(a, b, 1, normalize=False).tolist() == [[2]]
    assert np.allclose(normalize_scores(b), b) and np.allclose(normalize_scores(a), [[.3, .1, .6]])
    # negative entries -> softmax over time; an all-zero non-negative row -> uniform
    logits = np.array([[0.0, -1.0, 1.0]])
    assert np.allclose(normalize_scores(logits), np.exp(logits) / np.exp(logits).sum())
    assert np.allclose(normalize_scores(np.zeros((1, 4))), 0.25)
    # scale invariance of the fused ranking
    assert (fuse_select(10 * A, B, 4, "score_add") == fuse_select(A, B, 4, "score_add")).all()


def test_intersection_by_hand():
    # K=3: top3 a {0,2,4} ∩ top3 b {1,3,4} = {4}                       (step 0)
    # step 1: a's list += 3 -> {0,2,4,3} ∩ {1,3,4} = {4,3}             (3 enters at step 1)
    # step 2: b's list += 5 -> {0,2,4,3} ∩ {1,3,4,5} = {4,3}
    # step 3: a's list += 5 -> {0,2,4,3,5} ∩ {1,3,4,5} = {4,3,5} -> |I| = 3, stop
    assert intersection_select(A, B, 3).tolist() == [[4, 3, 5]]
    assert fuse_select(A, B, 3, "index_intersection").tolist() == [[4, 3, 5]]
    # K=1: {0} ∩ {1} = {}; step 1: a {0,2}; step 2: b {1,3}; step 3: a {0,2,4}; step 4: b {1,3,4} -> {4}
    assert intersection_select(A, B, 1).tolist() == [[4]]
    # step-0 members come in a's rank order: identical rankings -> top-K of a
    assert intersection_select(A, A, 4).tolist() == [[0, 2, 4, 3]]


def test_union_by_hand():
    # K=5, ratio .6: ceil(3)=3 from a -> 0,2,4; ceil(2)=2 from b -> 1,3; no duplicates
    assert union_select(A, B, 5, 0.6).tolist() == [[0, 2, 4, 1, 3]]
    # K=3, ratio .6: ceil(1.8)=2 from a -> 0,2; ceil(1.2)=2 from b -> 1,3: 4 > K, so b's last (3) is dropped
    assert union_select(A, B, 3, 0.6).tolist() == [[0, 2, 1]]
    assert fuse_select(A, B, 3, "index_union", 0.6).tolist() == [[0, 2, 1]]
    # duplicates: b2 ranking 1, 0, 4, 3, 2, 5; K=4, ratio .5: a -> 0,2; b2 -> 1,(0 dup);
    # |U| = 3 < 4, expand from a's order 0,2,4,...: 4 -> [0, 2, 1, 4]
    b2 = np.array([[0.8, 0.9, 0.1, 0.2, 0.3, 0.0]])
    assert union_select(A, b2, 4, 0.5).tolist() == [[0, 2, 1, 4]]
    # K=1, ratio .6: ceil(.6)=1 from a, ceil(.4)=1 from b -> [0, 1] trimmed to a's [0]
    assert union_select(A, B, 1, 0.6).tolist() == [[0]]
    # float guard: 0.3 * 10 = 3.0000000000000004 still counts as 3 from a (0.7 * 10 -> 7 from b)
    T = 12
    a = np.arange(T, 0, -1)[None].astype(float)  # ranking 0, 1, 2, ...
    b = np.arange(T)[None].astype(float)  # ranking 11, 10, 9, ...
    assert union_select(a, b, 10, 0.3).tolist() == [[0, 1, 2, 11, 10, 9, 8, 7, 6, 5]]


def test_join_by_hand():
    # 2T list (x 1/3): a0 .9, b1 .9 | a2 .8, b3 .8 | a4 .7, b4 .7 | b5 .3, a3 .3 | a5 .2, b0 .2 | ...
    # ties go to the earlier frame; skip repeats -> 0, 1, 2, 3, 4, 5
    assert join_select(A, B, 4).tolist() == [[0, 1, 2, 3]]
    assert fuse_select(A, B, 6, "index_join").tolist() == [[0, 1, 2, 3, 4, 5]]
    # both rows sum to 1 (unchanged): 2T list b2 .55, a0 .5, b1 .45, a1 .4, a2 .1, ... -> 2, 0, 1
    a = np.array([[0.5, 0.4, 0.1, 0.0]])
    b = np.array([[0.0, 0.45, 0.55, 0.0]])
    assert join_select(a, b, 3).tolist() == [[2, 0, 1]]


def test_tsqnet_supplement_example():
    # supp. §A: select 5 of 16 frames with lambda_v = 0.6 -> top 5*0.6 = 3 from VQM, 5 - 3 = 2 from TQM
    T = 16
    s_v = np.linspace(1, 0, T)[None]  # VQM ranking 0, 1, 2, 3, ...
    s_t = np.zeros((1, T))
    s_t[0, [10, 11, 12]] = [0.9, 0.8, 0.7]  # TQM ranking 10, 11, 12, 0, 1, ...
    assert tsqnet_union_select(s_v, s_t, 5, 0.6).tolist() == [[0, 1, 2, 10, 11]]
    # duplication: TQM top-2 = 1, 10; 1 is already chosen -> defer to VQM's order: 3
    s_t2 = np.zeros((1, T))
    s_t2[0, [1, 10]] = [0.9, 0.8]
    assert tsqnet_union_select(s_v, s_t2, 5, 0.6).tolist() == [[0, 1, 2, 10, 3]]
    # rounding half up: K=1, 0.6 -> 1 from VQM; K=4, 2.4 -> 2 + 2; lambda .5, K=3: 1.5 -> 2 + 1
    assert tsqnet_union_select(s_v, s_t, 1, 0.6).tolist() == [[0]]
    assert tsqnet_union_select(s_v, s_t, 4, 0.6).tolist() == [[0, 1, 10, 11]]
    assert tsqnet_union_select(s_v, s_t, 3, 0.5).tolist() == [[0, 1, 10]]
    assert tsqnet_union_select(s_v, s_t, 3, 0.0).tolist() == [[10, 11, 12]]


# ----------------------------------------------------------------------------- brute force
def _ranking(row):
    return sorted(range(len(row)), key=lambda t: (-row[t], t))


def _brute_union(a, b, K, ka, kb):
    ra, rb = _ranking(a), _ranking(b)
    out = []
    for t in ra[:ka] + rb[:kb] + ra:
        if t not in out:
            out.append(t)
    return out[:K]


def _brute_intersection(a, b, K):
    ra, rb = _ranking(a), _ranking(b)
    pa, pb, out, step = K, K, [], 0
    while True:
        for t in ra:  # new members, in a's rank order (only step 0 can add several)
            if ra.index(t) < pa and rb.index(t) < pb and t not in out:
                out.append(t)
        if len(out) >= K:
            assert len(out) == K
            return out
        step += 1
        if step % 2:
            pa += 1
        else:
            pb += 1


def _brute_join(a, b, K):
    T = len(a)
    items = [(a[t], t, 0) for t in range(T)] + [(b[t], t, 1) for t in range(T)]
    out = []
    for s, t, _ in sorted(items, key=lambda x: (-x[0], x[1], x[2])):
        if t not in out:
            out.append(t)
    return out[:K]


def _random_cases(seed=0, n_cases=60):
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        T = int(rng.integers(1, 10))
        N = int(rng.integers(1, 5))
        if i % 3 == 0:  # heavy ties
            a, b = (rng.integers(0, 3, (N, T)).astype(float) for _ in range(2))
        elif i % 3 == 1:  # logits (negative -> softmax normalisation)
            a, b = rng.normal(size=(N, T)), rng.normal(size=(N, T))
        else:
            a, b = rng.random((N, T)), rng.random((N, T))
        for K in sorted({1, T, int(rng.integers(1, T + 1))}):
            yield a, b, K, float(rng.choice([0.0, 0.3, 0.5, 0.6, 1.0, rng.random()]))


def test_brute_force_union_intersection_join_tsqnet():
    for a, b, K, r in _random_cases():
        ka, kb = math.ceil(round(K * r, 9)), math.ceil(round(K * (1 - r), 9))
        assert ka + kb in (K, K + 1)
        kv = math.floor(round(r * K, 9) + 0.5)
        na, nb = normalize_scores(a), normalize_scores(b)
        for n in range(a.shape[0]):
            assert union_select(a, b, K, r)[n].tolist() == _brute_union(a[n], b[n], K, ka, kb)
            assert set(union_select(a, b, K, r)[n]) >= set(_ranking(a[n])[:min(ka, K)])
            assert intersection_select(a, b, K)[n].tolist() == _brute_intersection(a[n], b[n], K)
            assert join_select(a, b, K)[n].tolist() == _brute_join(na[n], nb[n], K)
            assert join_select(a, b, K, normalize=False)[n].tolist() == _brute_join(a[n], b[n], K)
            assert tsqnet_union_select(a, b, K, r)[n].tolist() == _brute_union(a[n], b[n], K, kv, K - kv)


def test_every_fusion_gives_k_distinct_valid_indices():
    for a, b, K, r in _random_cases(seed=1):
        N, T = a.shape
        outs = [fuse_select(a, b, K, s, r) for s in FUSION_STRATEGIES]
        outs += [union_select(a, b, K, r), intersection_select(a, b, K), join_select(a, b, K),
                 tsqnet_union_select(a, b, K, r)]
        for idx in outs:
            assert idx.shape == (N, K) and idx.dtype == np.int64
            assert idx.min() >= 0 and idx.max() < T
            assert all(len(set(row)) == K for row in idx.tolist())
        assert (outs[FUSION_STRATEGIES.index("score_max")] == outs[FUSION_STRATEGIES.index("index_join")]).all()


def test_t1_and_k_equals_t():
    one = np.array([[0.3], [0.0]])
    for s in FUSION_STRATEGIES:
        assert fuse_select(one, one, 1, s).tolist() == [[0], [0]]
    assert tsqnet_union_select(one, one, 1).tolist() == [[0], [0]]
    for s in FUSION_STRATEGIES:  # K = T: a permutation of all frames
        assert sorted(fuse_select(A, B, 6, s)[0].tolist()) == list(range(6))


# ----------------------------------------------------------------------------- errors / params
def test_strategy_names_match_nsnet_param_choices():
    (field,) = [f for f in dataclasses.fields(FusionParams) if f.name == "nsnet_strategy"]
    assert tuple(field.metadata["choices"]) == FUSION_STRATEGIES


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad):
    x = A.copy()
    x[0, 2] = bad
    word = "NaN" if np.isnan(bad) else "inf"
    for s in FUSION_STRATEGIES:
        with pytest.raises(ValueError, match=word):
            fuse_select(A, x, 2, s)
        with pytest.raises(ValueError, match=word):
            fuse_select(x, B, 2, s)
    for f in (lambda: union_select(x, B, 2), lambda: intersection_select(A, x, 2), lambda: join_select(x, B, 2),
              lambda: tsqnet_union_select(x, B, 2), lambda: fuse_scores(A, x, "add")):
        with pytest.raises(ValueError, match=word):
            f()


def test_bad_k_strategy_ratio_and_shapes_raise():
    for s in FUSION_STRATEGIES:
        with pytest.raises(ValueError, match="1 <= K <= T=6"):
            fuse_select(A, B, 7, s)
        with pytest.raises(ValueError, match="K=0"):
            fuse_select(A, B, 0, s)
    with pytest.raises(ValueError, match="1 <= K <= T=6"):
        tsqnet_union_select(A, B, 7)
    with pytest.raises(ValueError, match="index_union, index_intersection, index_join, score_add"):
        fuse_select(A, B, 2, "union")
    with pytest.raises(ValueError, match="add, mul, max"):
        fuse_scores(A, B, "sum")
    with pytest.raises(ValueError, match=r"ratio=1.5 must lie in \[0, 1\]"):
        union_select(A, B, 2, 1.5)
    with pytest.raises(ValueError, match="lambda_v=-0.1"):
        tsqnet_union_select(A, B, 2, -0.1)
    with pytest.raises(ValueError, match="same shape"):
        fuse_select(A, B[:, :5], 2, "index_union")


def test_single_branch_is_exactly_when_the_fusion_selects_one_branch():
    """Issue 26: in the benchmark, tsqnet equals tsqnet[vqm] and nsnet equals nsnet[fsm] in every seed. The
    tuned weights (lambda_v 0.93-0.96, NSNet index_union ratio 0.95) make the fusion take all K frames from
    one branch. Brute force over random scores: the selection equals a branch's top-K at every K exactly
    when selection.single_branch says so, and the note names the branch."""
    from components.evaluation.fusion import single_branch_note
    from components.core.selection import fuse_select, single_branch, topk_select, tsqnet_union_select

    rng = np.random.default_rng(0)
    a, b = rng.random((200, 16)), rng.random((200, 16))
    for ratio in (0.0, 0.1, 0.19, 0.5, 0.6, 0.8, 0.81, 0.9, 0.95, 1.0):
        for K in (1, 2, 3, 5, 8, 10):
            picks = {"tsqnet_union": tsqnet_union_select(a, b, K, ratio),
                     **{s: fuse_select(a, b, K, s, ratio) for s in ("index_union", "score_add", "index_intersection")}}
            for strategy, got in picks.items():
                same = [np.array_equal(np.sort(got, 1), np.sort(topk_select(x, K), 1)) for x in (a, b)]
                want = 0 if same[0] else 1 if same[1] else None
                assert single_branch(strategy, ratio, K) == want, (strategy, ratio, K, same)
    note = single_branch_note("tsqnet", {"lambda_v": 0.9637}, range(1, 11))
    assert note.startswith("tsqnet with lambda_v=0.964 selects exactly its VQM branch's top-K at every K")
    assert "every K" in single_branch_note("nsnet", {"nsnet_strategy": "index_union", "nsnet_ratio": 0.9528}, [3, 5, 8])
    assert "K=3" in single_branch_note("nsnet", {"nsnet_strategy": "index_union", "nsnet_ratio": 0.6942}, [3, 5])
    assert single_branch_note("tsqnet", {"lambda_v": 0.189}, [3, 5]) is None  # a real mix (the demo's)
    assert single_branch_note("nsnet", {"nsnet_strategy": "index_intersection", "nsnet_ratio": 0.6}, [3, 5]) is None
