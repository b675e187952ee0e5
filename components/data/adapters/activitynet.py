"""The ``activitynet`` dataset adapter (:mod:`components.data.adapters`).

ActivityNet v1.3 JSON. ``training`` -> train (+ carved val), ``validation`` -> **test**
(the official test labels are withheld, so papers report on the validation set), ``testing`` is
skipped (no labels). Labels: all distinct annotation labels of the video (multi-label); classes:
the sorted union of annotation labels of the kept videos (the taxonomy's inner nodes are not
classes). Files: ``v_{id}.*`` or ``{id}.*`` or any ``*{id}.*`` anywhere under ``root``.
"""
from __future__ import annotations

import json
import logging

from components.core.params import DataParams
from components.data.adapters import (
    AdapterResult, Candidate, register_adapter, carve_val, missing_row, annotations_path, FileIndex,
    finish)

log = logging.getLogger(__name__)


@register_adapter("activitynet")
def activitynet(p: DataParams) -> AdapterResult:
    """ActivityNet v1.3 JSON (see module docstring for the split mapping)."""
    ann = annotations_path(p, "activitynet", want_dir=False)
    data = json.loads(ann.read_text())
    db = data.get("database")
    if not isinstance(db, dict):
        raise ValueError(f"activitynet: {ann} has no 'database' mapping")
    split_map = {"training": "train", "validation": "test"}
    rows = []
    skipped = {"testing": 0, "unlabeled": 0}
    for vid, entry in db.items():
        subset = entry.get("subset", "")
        if subset not in split_map:
            skipped["testing" if subset == "testing" else "unlabeled"] += 1
            continue
        labels = sorted({a["label"] for a in entry.get("annotations", []) if a.get("label")})
        if not labels:
            skipped["unlabeled"] += 1
            continue
        split = split_map[subset]
        if split == "train":
            split = carve_val(vid, p.val_fraction)
        rows.append((vid, labels, split))
    if skipped["testing"] or skipped["unlabeled"]:
        log.info("activitynet: skipped %d 'testing' videos (no labels) and %d unlabeled videos",
                 skipped["testing"], skipped["unlabeled"])
    classes = sorted({lab for _, labels, _ in rows for lab in labels})
    cidx = {c: i for i, c in enumerate(classes)}
    index = FileIndex(p.root)
    cands, missing = [], []
    for vid, labels, split in rows:
        path = index.stem(f"v_{vid}", vid) or index.suffix(vid)
        if path is None:
            missing.append(missing_row(index.root / f"v_{vid}.mp4", vid, split,
                                        f"no v_{vid}.* / {vid}.* / *{vid}.* under {index.root}"))
            continue
        cands.append(Candidate(vid, str(path), tuple(cidx[lab] for lab in labels), split))
    return finish("activitynet", cands, classes, missing)


# ----------------------------------------------------------------------------------- kinetics
