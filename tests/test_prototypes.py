"""Prototypes (NSNet A.1 / TSQNet supp. A), guiding scores (NSNet eq. 1) and NS labels, by hand."""
import numpy as np
import pytest

from components.store.prototype_math import class_prototypes, guiding_scores, ns_labels


def _logits(preds_conf):
    """[(class, confidence-ish logit)] per frame -> logits [T, 2] with that arg-max."""
    out = []
    for c, v in preds_conf:
        row = [0.0, 0.0]
        row[c] = v
        out.append(row)
    return np.array(out)


def test_prototypes_by_hand():
    # video 0 (class 0): frames 0,1,2 predicted class 0 with rising confidence, frame 3 predicted class 1
    # video 1 (class 0): only frame 2 correct
    # video 2 (class 1): no frame predicted class 1 -> class 1 falls back to confidence ranking
    feats = np.arange(3 * 4 * 2, dtype=float).reshape(3, 4, 2)
    logits = np.stack([_logits([(0, 1), (0, 2), (0, 3), (1, 5)]),
                       _logits([(1, 1), (1, 1), (0, 4), (1, 1)]),
                       _logits([(0, 1), (0, 2), (0, 3), (0, 4)])])
    labels = np.array([[1, 0], [1, 0], [0, 1]])
    pr = class_prototypes(feats, logits, labels, top_percent=50)
    # video 0: 3 correct frames, ceil(3*0.5)=2 most confident -> frames 2,1 -> mean of feats[0,[1,2]]
    v0 = feats[0, [1, 2]].mean(0)
    v1 = feats[1, 2]  # one correct frame
    assert np.allclose(pr.features[0], (v0 + v1) / 2)
    assert pr.videos.tolist() == [2, 0] and pr.fallback.tolist() == [False, True]
    # class 1 fallback: top ceil(4*0.5)=2 frames by softmax confidence on class 1 (lowest class-0 logits: frames 0,1)
    assert np.allclose(pr.features[1], feats[2, [0, 1]].mean(0))


def test_prototypes_refuse_a_class_without_videos():
    with pytest.raises(ValueError, match="classes without any training video: \\['b'\\]"):
        class_prototypes(np.zeros((1, 2, 3)), np.zeros((1, 2, 2)), np.array([[1, 0]]), 30, ["a", "b"])


def test_guiding_score_eq1_by_hand():
    P = np.array([[0.0, 0.0], [3.0, 4.0]])  # prototypes
    x = np.array([[[0.0, 0.0], [3.0, 4.0]]])  # frame 0 at p0, frame 1 at p1; distance 5 between them
    g = guiding_scores(x, np.array([[1, 0]]), P)
    e = np.exp(-5.0)
    assert np.allclose(g[0], [1 / (1 + e), e / (1 + e)])
    # response-based variant: the recognizer's softmax at the true class
    lg = np.array([[[2.0, 0.0], [0.0, 0.0]]])
    assert np.allclose(guiding_scores(None, np.array([[1, 0]]), logits=lg, mode="response")[0],
                       [np.exp(2) / (np.exp(2) + 1), 0.5])
    with pytest.raises(ValueError, match="unknown guiding mode"):
        guiding_scores(x, np.array([[1, 0]]), P, mode="both")


def test_ns_labels_by_hand():
    g = np.array([[0.8, 0.1]])
    y = ns_labels(g, np.array([[0, 1, 0]]))
    assert np.allclose(y, [[[0, 0.8, 0, 0.2], [0, 0.1, 0, 0.9]]])
    y2 = ns_labels(np.array([[0.5]]), np.array([[1, 1, 0]]))  # multi-label: g spread over the labels
    assert np.allclose(y2, [[[0.25, 0.25, 0, 0.5]]]) and np.allclose(y2.sum(-1), 1)
