"""Stage ``pseudo_labels``: NSNet's guiding scores g (eq. 1) and soft (C+1)-way labels per frame.

For the train and val splits (val for validation losses only; nothing is tuned on test):
``data/pseudo_labels/{split}.npz`` with ``g [N,T]`` and ``ns [N,T,C+1]``, rows aligned with the
feature store. ``reports/pseudo_labels.json`` compares g with the ground truth where it is known.
"""
from __future__ import annotations

import logging

import numpy as np

from components.core.params import Params
from components.evaluation.metrics import salient_mask
from components.store.prototype_math import guiding_scores, ns_labels
from components.store.sampler_data import check_store
from components.core.paths import Paths, write_report
from components.ops.stage_runner import stage_main
from components.core.atomic import atomic_savez
from components.store.feature_store import FeatureStore

log = logging.getLogger(__name__)


def run(p: Params, paths: Paths) -> dict:
    store = FeatureStore(paths.features)
    check_store(store, p.frames.T)
    protos = np.load(paths.features.parent / "prototypes.npz")["rec"]
    out_dir = paths.features.parent / "pseudo_labels"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for split in ("train", "val"):
        labels = np.asarray(store.array(split, "labels"))
        g = guiding_scores(np.asarray(store.array(split, "rec_feats")), labels, protos,
                           np.asarray(store.array(split, "rec_logits")), p.pseudo_labels.guiding, p.pseudo_labels.distance)
        valid = np.asarray(store.array(split, "valid"), dtype=bool)
        g[~valid] = 0.0
        atomic_savez(out_dir / f"{split}.npz", g=g, ns=ns_labels(g, labels))
        gt = np.asarray(store.array(split, "gt"))
        if (gt[valid] >= -2).any():
            sal = salient_mask(gt, labels)[valid]
            gv = g[valid]
            summary[split] = {"g_mean_salient": float(gv[sal].mean()), "g_mean_other": float(gv[~sal].mean())}
    write_report(paths, "pseudo_labels.json", summary)
    log.info("guiding scores vs ground truth: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main("pseudo_labels", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
