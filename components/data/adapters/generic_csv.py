"""The ``csv`` dataset adapter (:mod:`components.data.adapters`).

Generic CSV with a header and columns ``path,label[,split][,video_id]``; ``label`` is a class
*name* (several names separated by ``;`` for multi-label; repeated rows of one path are merged).
Relative paths resolve against ``root``. Without a ``split`` column the split is drawn by hash of
the path: 70 % train / 15 % val / 15 % test. ``split`` values: train / val / test (also
training / validation / validate / testing). Classes: sorted label names.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath

from components.core.params import DataParams
from components.data.adapters import (
    AdapterResult, Candidate, register_adapter, stable_fraction, missing_row, annotations_path,
    finish)


_CSV_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "validate": "val",
               "test": "test", "testing": "test"}


def _hash_split(key: str) -> str:
    u = stable_fraction(key)
    return "train" if u < 0.70 else "val" if u < 0.85 else "test"


@register_adapter("csv")
def generic_csv(p: DataParams) -> AdapterResult:
    """Generic ``path,label[,split][,video_id]`` CSV (see module docstring)."""
    ann = annotations_path(p, "csv", want_dir=False)
    with open(ann, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        if not {"path", "label"} <= set(fields):
            raise ValueError(f"csv: {ann} needs a header with at least 'path,label' (got {fields})")
        reader.fieldnames = fields
        raw = list(reader)
    has_split = "split" in fields
    root = Path(os.path.abspath(p.root))
    entries: dict[str, dict] = {}
    order: list[str] = []
    for n, r in enumerate(raw, 2):
        rel = (r.get("path") or "").strip()
        names = [x.strip() for x in (r.get("label") or "").split(";") if x.strip()]
        if not rel or not names:
            raise ValueError(f"csv: {ann}:{n}: empty path or label")
        if has_split:
            s = (r.get("split") or "").strip().lower()
            if s not in _CSV_SPLITS:
                raise ValueError(f"csv: {ann}:{n}: split {s!r} not one of {sorted(_CSV_SPLITS)}")
            split = _CSV_SPLITS[s]
        else:
            split = _hash_split(rel)
        vid = (r.get("video_id") or "").strip() or PurePosixPath(rel).with_suffix("").as_posix().lstrip("/")
        if rel in entries:
            e = entries[rel]
            if e["split"] != split:
                raise ValueError(f"csv: {ann}:{n}: {rel} listed in both {e['split']} and {split}")
            e["names"].update(names)
        else:
            entries[rel] = {"names": set(names), "split": split, "vid": vid}
            order.append(rel)
    classes = sorted({name for e in entries.values() for name in e["names"]})
    cidx = {c: i for i, c in enumerate(classes)}
    cands, missing = [], []
    for rel in order:
        e = entries[rel]
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        if not path.is_file():
            missing.append(missing_row(path, e["vid"], e["split"], f"{path} does not exist"))
            continue
        labels = tuple(sorted(cidx[x] for x in e["names"]))
        cands.append(Candidate(e["vid"], os.path.abspath(path), labels, e["split"]))
    return finish("csv", cands, classes, missing)
