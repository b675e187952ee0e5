import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from components.evaluation.metrics import distractor_mask, distractor_share, mean_average_precision, salient_recall, top1
from components.core.selection import (average_predictions, oracle_select, random_select, topk_select, uniform_positions,
                                  uniform_select)


def test_uniform_positions_by_hand():
    assert uniform_positions(16, 3).tolist() == [2, 8, 13]
    assert uniform_positions(16, 1).tolist() == [8]
    assert uniform_positions(5, 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("K", [1, 2, 7, 8])
def test_every_selector_gives_k_distinct_valid_indices(K):
    T, N = 8, 20
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (N, T)).astype(float)  # many ties
    for idx in (uniform_select(N, T, K), random_select(N, T, K, rng), topk_select(scores, K),
                oracle_select(rng.random((N, T)) < 0.3, K)):
        assert idx.shape == (N, K)
        assert all(len(set(r)) == K for r in idx.tolist()) and idx.min() >= 0 and idx.max() < T


def test_bad_k_and_nan_scores():
    with pytest.raises(ValueError, match="1 <= K <= T=4"):
        uniform_select(2, 4, 5)
    with pytest.raises(ValueError, match="K=0"):
        topk_select(np.zeros((1, 4)), 0)
    with pytest.raises(ValueError, match="NaN"):
        topk_select(np.array([[0.0, np.nan]]), 1)


def test_topk_ties_go_to_earlier_frame_and_oracle_by_hand():
    assert topk_select(np.array([[1.0, 3.0, 3.0, 0.0]]), 2).tolist() == [[1, 2]]
    sal = np.array([[0, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]], bool)
    # 4 salient frames at 1..4, K=2 -> positions uniform_positions(4,2)=[1,3] -> frames [2,4]
    assert oracle_select(sal, 2).tolist() == [[2, 4], [7, 3]]


def test_average_predictions_and_metrics_by_hand():
    logits = np.log(np.array([[[0.7, 0.3], [0.1, 0.9], [0.5, 0.5]]]))
    assert np.allclose(average_predictions(logits, np.array([[0, 1]])), [[0.4, 0.6]])
    labels = np.array([[1, 0], [0, 1], [0, 1]])
    assert top1(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), labels) == pytest.approx(2 / 3)
    rng = np.random.default_rng(1)
    s, y = rng.random((50, 4)), np.eye(4, dtype=int)[rng.integers(0, 3, 50)]  # class 3 never positive
    want = np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(3)])
    assert mean_average_precision(s, y) == pytest.approx(want, abs=1e-12)
    sal = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    # video 0: picks {0,2}: 1 hit / min(2,2) = .5; video 1: picks {1,3}: 1 / min(2,1) = 1; video 2 excluded
    assert salient_recall(np.array([[0, 2], [1, 3], [0, 1]]), sal) == pytest.approx(0.75)


def test_distractor_mask_and_share_by_hand():
    # codes: >= 0 the class shown, -1 generic, -2 low quality; video 0 has class 1, video 1 classes 0 and 2
    gt = np.array([[1, 0, 2, -1], [0, 2, 1, -2]])
    labels = np.array([[0, 1, 0], [1, 0, 1]])
    assert distractor_mask(gt, labels).tolist() == [[False, True, True, False], [False, False, True, False]]
    # picks {1,3} of video 0: 1 distractor of 2; {2,0} of video 1: 1 of 2; {0,3}: 0 of 2 -> (0.5 + 0.5) / 2, (0 + 0.5) / 2
    assert distractor_share(np.array([[1, 3], [2, 0]]), distractor_mask(gt, labels)) == pytest.approx(0.5)
    assert distractor_share(np.array([[0, 3], [2, 3]]), distractor_mask(gt, labels)) == pytest.approx(0.25)


def test_paired_bootstrap_ci_brackets_the_difference():
    from components.evaluation.metrics import paired_bootstrap_ci

    a = np.array([1, 1, 1, 0] * 25, float)
    b = np.array([1, 0, 0, 0] * 25, float)  # true difference 0.5
    lo, hi = paired_bootstrap_ci(a, b, n_boot=4000)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)


def test_salient_mask_by_hand():
    from components.evaluation.metrics import salient_mask

    gt = np.array([[2, -1, 0, 2, -2], [-3, 1, 1, 0, -1]])  # codes: class shown, generic -1, low-q -2, unknown -3
    labels = np.array([[0, 0, 1], [1, 1, 0]])  # video 0: class 2; video 1: classes 0 and 1 (multi-label)
    assert salient_mask(gt, labels).tolist() == [[True, False, False, True, False], [False, True, True, True, False]]
