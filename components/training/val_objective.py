"""The val objective every tuner and the sampler trainer share: the frame recognizer's val mAP over
a sampler's K selected frames.

:class:`ValSet` holds the val split's cached frame-recognizer softmax and labels (:func:`load_val`)
and scores a selection with a memo; :func:`branch_val_score` scores each branch's top-K (the
``train_sampler`` early-stopping metric, fusion-free) and :func:`sampler_val_score` the fused
selection at given fusion settings (the loss-weight sweep's objective, the number ``tune_fusion``
optimises for one seed).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

import torch

from components.evaluation.sampler_eval import softmax
from components.evaluation.fusion import select
from components.evaluation.metrics import MAP_DEFINITIONS, mean_average_precision
from components.models.samplers import SamplerOutput
from components.core.params import Params
from components.core.paths import Paths
from components.store.sampler_data import check_store, predict_split
from components.core.selection import topk_select
from components.store.feature_store import FeatureStore


@dataclass
class ValSet:
    """The val split's valid videos, ready for the objective: frame-recognizer softmax ``probs
    [N,T,C]`` (computed once), multi-hot ``labels [N,C]``, and a memo of mAP by selection."""
    ids: list[str]
    probs: np.ndarray  # [N,T,C] float64
    labels: np.ndarray  # [N,C]
    map_variant: str = "sklearn"
    budgets: tuple[int, ...] = (3, 5)
    _memo: dict = field(default_factory=dict, repr=False)

    def map_at(self, idx: np.ndarray) -> float:
        """mAP of the mean softmax over the selected frames ``idx [N,K]`` (memoised by the selection)."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        key = (idx.shape, hashlib.sha1(idx.tobytes()).digest())
        if key not in self._memo:
            scores = np.take_along_axis(self.probs, idx[:, :, None], axis=1).mean(1)  # [N,K,C] -> [N,C]
            self._memo[key] = mean_average_precision(scores, self.labels, variant=self.map_variant)
        return self._memo[key]

    def score(self, select: Callable[[int], np.ndarray], budgets: Iterable[int] | None = None) -> float:
        """Mean over ``budgets`` (default: ``self.budgets``) of :meth:`map_at` of ``select(K)``."""
        ks = tuple(budgets) if budgets is not None else self.budgets
        return float(np.mean([self.map_at(select(K)) for K in ks]))

    def clear_memo(self) -> None:
        self._memo.clear()

    def describe(self) -> str:
        return (f"val mAP ({self.map_variant}: {MAP_DEFINITIONS[self.map_variant]}) of the frame recognizer's "
                f"mean softmax over the K selected frames, mean over seeds and K in {list(self.budgets)}")


def load_val(p: Params, paths: Paths, store: FeatureStore | None = None) -> ValSet:
    """Val labels and the cached frame-recognizer logits (valid videos, store order) -> :class:`ValSet`."""
    store = store if store is not None else FeatureStore(paths.features)
    check_store(store, p.frames.T)
    valid = np.asarray(store.array("val", "valid"), dtype=bool)
    ids = [i for i, v in zip(store.ids("val"), valid) if v]
    if not ids:
        raise ValueError("the val split has no usable video: nothing to tune on")
    labels = np.asarray(store.array("val", "labels"))[valid]
    probs = softmax(np.asarray(store.array("val", "rec_logits"))[valid])  # [N,T,C]
    return ValSet(ids, probs, labels, p.evaluate.map_variant, tuple(p.fusion.budgets))


def sampler_val_score(model: Any, val_data: Mapping, val: ValSet, fusion: Mapping[str, Any] | None) -> float:
    """Val objective of a sampler being trained: predict its val saliency now, select with ``fusion``
    settings, and score like :meth:`ValSet.score` (the same number tune_fusion optimises for one seed)."""
    pred = predict_split(model, val_data)  # switches to eval mode; fit switches back each epoch
    out = SamplerOutput(saliency=torch.from_numpy(pred.pop("saliency")),
                        branches={k: torch.from_numpy(v) for k, v in pred.items()})
    return val.score(lambda K: select(model, out, K, fusion))


def branch_val_score(model: Any, val_data: Mapping, val: ValSet, budgets: Iterable[int]) -> float:
    """Val mAP of the top-K frames of each of the sampler's branch scores (its saliency if it has no
    branches), mean over branches and ``budgets``: the early-stopping metric of ``train_sampler``.
    Reads no fusion setting, so tuning fusion after training never changes which epoch was kept."""
    pred = predict_split(model, val_data)  # switches to eval mode; fit switches back each epoch
    scores = [v for k, v in pred.items() if k != "saliency"] or [pred["saliency"]]
    return float(np.mean([val.score(lambda K, s=s: topk_select(s, K), budgets) for s in scores]))
