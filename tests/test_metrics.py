"""components.evaluation.metrics: AP / mAP in both definitions (against sklearn and a per-class brute force),
top-k, mean class accuracy and the bootstrap CI."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from components.evaluation.metrics import (MAP_DEFINITIONS, average_precision, average_precision_per_class, bootstrap_ci,
                                mean_average_precision, mean_average_precision_batch, mean_class_accuracy,
                                top1, topk_accuracy, topk_hits)


def sk_ap(y, s):
    with warnings.catch_warnings():  # sklearn warns (and returns 0) when a class has no positive
        warnings.simplefilter("ignore")
        return average_precision_score(y, s)


def cal_map_ap(s, y):
    """The peers' cal_map for one class, literally: stable sort descending, precision = cumsum(TP) / rank
    at the positives, summed and divided by max(#positives, 1)."""
    truth = np.asarray(y)[np.argsort(-np.asarray(s), kind="stable")] > 0
    precision = np.cumsum(truth) / np.arange(1, len(truth) + 1)
    return precision[truth].sum() / max(truth.sum(), 1)


def test_definitions_are_recorded_and_unknown_variant_refused():
    assert set(MAP_DEFINITIONS) == {"sklearn", "cumulative"}
    with pytest.raises(ValueError, match="unknown mAP variant"):
        mean_average_precision(np.zeros((2, 2)), np.eye(2), variant="voc")
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([0.1, np.nan]), np.array([1, 0]))


def test_ap_equals_sklearn_on_50_random_cases_with_heavy_ties():
    rng = np.random.default_rng(0)
    for case in range(50):
        n = int(rng.integers(2, 200))
        s = np.round(rng.random(n), 1)  # 11 distinct values: many ties
        y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
        y[rng.integers(n)] = 1
        assert average_precision(s, y) == pytest.approx(sk_ap(y, s), abs=1e-9), case


def test_ap_without_positives_is_zero_like_sklearn():
    s = np.array([0.3, 0.2, 0.2])
    assert average_precision(s, np.zeros(3)) == 0.0 == sk_ap(np.zeros(3), s)


def test_ap_by_hand_ties_split_the_two_definitions():
    s = np.array([0.9, 0.8, 0.8, 0.1])
    # sklearn: thresholds 0.9 (TP 0 / 1), 0.8 (TP 1 / 3 videos, R 1/2), 0.1 (TP 2 / 4, R 1):
    #   AP = (1/2 - 0) * 1/3 + (1 - 1/2) * 2/4 = 1/6 + 1/4 = 5/12 whichever tied video is the positive
    # cumulative, stable order 0,1,2,3: positive at rank 2 -> 1/2, at rank 4 -> 2/4: AP = (1/2 + 1/2) / 2 = 1/2
    y = np.array([0, 1, 0, 1])
    assert average_precision(s, y) == pytest.approx(5 / 12)
    assert average_precision_per_class(s[:, None], y[:, None], "cumulative")[0] == pytest.approx(1 / 2)
    # the positive now comes second in the tie: rank 3 -> 1/3, rank 4 -> 2/4: AP = (1/3 + 1/2) / 2 = 5/12
    y = np.array([0, 0, 1, 1])
    assert average_precision(s, y) == pytest.approx(5 / 12)
    assert average_precision_per_class(s[:, None], y[:, None], "cumulative")[0] == pytest.approx(5 / 12)


def test_map_by_hand_both_variants_and_the_empty_class():
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.3, 0.2], [0.8, 0.6, 0.7], [0.1, 0.2, 0.4]])
    labels = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])  # class 2 has no video
    # class 0 = the tie example above: sklearn 5/12, cumulative 1/2
    # class 1: order v2 (0.6, +) v1 v3 v0 (0.1, +): (1/1 + 2/4) / 2 = 3/4 in both (no ties)
    # sklearn: mean over the classes with a positive = (5/12 + 3/4) / 2 = 7/12
    # cumulative: mean over all 3 classes, the empty one 0 = (1/2 + 3/4 + 0) / 3 = 5/12
    assert mean_average_precision(scores, labels) == pytest.approx(7 / 12)
    assert mean_average_precision(scores, labels, variant="cumulative") == pytest.approx(5 / 12)
    assert np.allclose(average_precision_per_class(scores, labels, "cumulative"), [1 / 2, 3 / 4, 0])
    none = np.zeros_like(labels)
    assert np.isnan(mean_average_precision(scores, none))
    assert mean_average_precision(scores, none, variant="cumulative") == 0.0


def test_per_class_and_batched_forms_equal_the_brute_force_loops():
    rng = np.random.default_rng(1)
    for case in range(30):
        N, C = int(rng.integers(1, 60)), int(rng.integers(1, 7))
        S = np.round(rng.normal(size=(3, N, C)), int(rng.integers(0, 3)))  # [B,N,C], ties at 0-2 decimals
        S[rng.random(S.shape) < 0.1] = -0.0  # -0.0 ties with 0.0
        Y = rng.random((3, N, C)) < rng.uniform(0.05, 0.5)
        for variant, ref in (("sklearn", lambda s, y: sk_ap(y, s)), ("cumulative", cal_map_ap)):
            ap = average_precision_per_class(S, Y, variant)  # [B,C]
            want = np.array([[ref(S[b, :, c], Y[b, :, c]) for c in range(C)] for b in range(3)])
            assert np.allclose(ap, want, atol=1e-12), (case, variant)
            got = mean_average_precision_batch(S, Y, variant)
            loop = [mean_average_precision(S[b], Y[b], variant) for b in range(3)]
            assert np.allclose(got, loop, atol=1e-12, equal_nan=True)
        shared = mean_average_precision_batch(S, Y[0])  # one label matrix for the whole grid
        assert np.allclose(shared, [mean_average_precision(S[b], Y[0]) for b in range(3)], equal_nan=True)


def test_default_map_unchanged_against_sklearn_on_one_hot_labels():
    rng = np.random.default_rng(2)
    s, y = rng.random((300, 20)), np.eye(20, dtype=int)[rng.integers(0, 20, 300)]
    want = np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(20) if y[:, c].any()])
    assert mean_average_precision(s, y) == pytest.approx(want, abs=1e-12)


def test_topk_by_hand():
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2]])
    labels = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0]])
    # top-1: 0, 2, 0 (tie -> lower class) all miss; top-2: {0,1} hit, {2,1} miss, {0,1} hit; top-3: all hit
    assert topk_accuracy(scores, labels, 1) == 0.0 == top1(scores, labels)
    assert topk_hits(scores, labels, 2).tolist() == [1.0, 0.0, 1.0]
    assert topk_accuracy(scores, labels, 3) == 1.0
    with pytest.raises(ValueError, match="1 <= k <= C=3"):
        topk_accuracy(scores, labels, 4)


def test_mean_class_accuracy_by_hand():
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0]])
    labels = np.eye(3, dtype=int)[[0, 0, 1, 1, 0]]  # class 2 has no video: left out
    # class 0: v0 v1 v4 all right = 1; class 1: v2 right, v3 wrong = 1/2 -> (1 + 1/2) / 2 = 3/4 (top-1 is 4/5)
    assert mean_class_accuracy(scores, labels) == pytest.approx(0.75)
    assert top1(scores, labels) == pytest.approx(0.8)
    # multi-label: v0 has {0, 1} and predicts 1 -> a hit for class 0 and class 1; v1 {1} predicts 0 -> miss
    ml = np.array([[1, 1, 0], [0, 1, 0]])
    s = np.array([[0.2, 0.8, 0.0], [0.9, 0.1, 0.0]])
    assert mean_class_accuracy(s, ml) == pytest.approx((1 + 1 / 2) / 2)


def test_bootstrap_ci_contains_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(3)
    hits = (rng.random(400) < 0.7).astype(float)
    lo, hi = bootstrap_ci(hits, n_boot=500)
    assert lo < hits.mean() < hi and hi - lo < 0.15
    assert bootstrap_ci(hits, n_boot=500) == (lo, hi)
    assert bootstrap_ci(hits, n_boot=500, seed=1) != (lo, hi)
    assert bootstrap_ci(lambda i: hits[i].mean(), n=len(hits), n_boot=500) == pytest.approx((lo, hi))


def test_bootstrap_ci_of_map_loop_and_vectorized_agree():
    rng = np.random.default_rng(4)
    y = np.eye(5, dtype=int)[rng.integers(0, 5, 120)]
    s = y * 0.3 + rng.random((120, 5))  # informative scores
    point = mean_average_precision(s, y)
    lo, hi = bootstrap_ci(lambda i: mean_average_precision(s[i], y[i]), n=120, n_boot=200)
    assert lo < point < hi
    vec = bootstrap_ci(lambda I: mean_average_precision_batch(s[I], y[I]), n=120, n_boot=200, vectorized=True, chunk=64)
    assert vec == pytest.approx((lo, hi), abs=1e-12)
    with pytest.raises(ValueError, match="n >= 1"):
        bootstrap_ci(lambda i: 0.0)
