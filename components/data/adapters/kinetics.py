"""The ``kinetics`` dataset adapter (:mod:`components.data.adapters`).

Kinetics / Mini-Kinetics CSV ``label,youtube_id,time_start,time_end,split`` (extra columns are
ignored). ``train`` -> train (+ carved val, keyed by YouTube id), ``val`` / ``validate`` ->
**test** (as papers report), ``test`` rows are skipped (the official test labels were not
public for most versions; mixing them with val would double-count). Files:
``{split}/{label}/{id}_{start:06d}_{end:06d}.*``, ``{id}_{start:06d}_{end:06d}.*`` or ``{id}.*``
anywhere under ``root``. video_id = ``{id}_{start:06d}_{end:06d}``.
"""
from __future__ import annotations

import csv
import logging

from components.core.params import DataParams
from components.data.adapters import (
    AdapterResult, Candidate, register_adapter, carve_val, missing_row, annotations_path, FileIndex,
    finish)

log = logging.getLogger(__name__)


def _time_field(value: str) -> int:
    return int(round(float(value)))


@register_adapter("kinetics")
def kinetics(p: DataParams) -> AdapterResult:
    """Kinetics / Mini-Kinetics CSV (see module docstring for the split mapping)."""
    ann = annotations_path(p, "kinetics", want_dir=False)
    with open(ann, newline="") as f:
        reader = csv.DictReader(f)
        need = {"label", "youtube_id", "time_start", "time_end", "split"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ValueError(f"kinetics: {ann} header {reader.fieldnames} lacks {sorted(need)}")
        raw = list(reader)
    split_map = {"train": "train", "val": "test", "validate": "test", "validation": "test"}
    rows, skipped = [], 0
    for r in raw:
        split_raw = (r["split"] or "").strip()
        label = (r["label"] or "").strip()
        if split_raw not in split_map or not label:
            skipped += 1
            continue
        ytid = r["youtube_id"].strip()
        start, end = _time_field(r["time_start"]), _time_field(r["time_end"])
        vid = f"{ytid}_{start:06d}_{end:06d}"
        split = split_map[split_raw]
        if split == "train":
            split = carve_val(ytid, p.val_fraction)  # clips of one YouTube video stay together
        rows.append((vid, ytid, label, split, split_raw))
    if skipped:
        log.info("kinetics: skipped %d rows (test split or no label)", skipped)
    classes = sorted({r[2] for r in rows})
    cidx = {c: i for i, c in enumerate(classes)}
    index = FileIndex(p.root)
    cands, missing = [], []
    for vid, ytid, label, split, split_raw in rows:
        path = index.stem(vid, ytid, prefer_dir=f"{split_raw}/{label}")
        if path is None:
            missing.append(missing_row(index.root / split_raw / label / f"{vid}.mp4", vid, split,
                                        f"no {split_raw}/{label}/{vid}.*, {vid}.* or {ytid}.* under {index.root}"))
            continue
        cands.append(Candidate(vid, str(path), (cidx[label],), split))
    return finish("kinetics", cands, classes, missing)


# ------------------------------------------------------------------------------------- ucf101
