"""Stage ``prototypes``: class prototypes from the training split of the feature store.

Two spaces: the light encoder's (TSQNet's VQM initialisation, frames ranked by the light
classifier) and the recognizer's (NSNet's guiding scores, frames ranked by the recognizer). Writes
``data/prototypes.npz`` and ``reports/prototypes.json`` (fallback classes, contributing videos).
"""
from __future__ import annotations

import logging

import numpy as np

from components.core.params import Params
from components.store.prototype_math import class_prototypes
from components.store.sampler_data import check_store
from components.core.paths import Paths, write_report
from components.ops.stage_runner import stage_main
from components.core.atomic import atomic_savez
from components.store.feature_store import FeatureStore

log = logging.getLogger(__name__)


def run(p: Params, paths: Paths) -> dict:
    store = FeatureStore(paths.features)
    check_store(store, p.frames.T)
    valid = np.asarray(store.array("train", "valid"), dtype=bool)
    labels = np.asarray(store.array("train", "labels"))[valid]
    out, summary = {}, {}
    for space, (fk, lk) in {"light": ("light_feats", "light_logits"), "rec": ("rec_feats", "rec_logits")}.items():
        pr = class_prototypes(np.asarray(store.array("train", fk))[valid], np.asarray(store.array("train", lk))[valid],
                              labels, p.prototypes.top_percent, store.classes)
        out[space], out[f"{space}_fallback"], out[f"{space}_videos"] = pr.features, pr.fallback, pr.videos
        summary[space] = {"fallback_classes": [store.classes[c] for c in np.flatnonzero(pr.fallback)],
                          "videos_per_class_min": int(pr.videos.min()), "dim": int(pr.features.shape[1])}
    atomic_savez(paths.features.parent / "prototypes.npz", **out)
    write_report(paths, "prototypes.json", summary)
    log.info("prototypes: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main("prototypes", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
