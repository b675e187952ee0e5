"""The ``fcvid`` dataset adapter (:mod:`components.data.adapters`).

``p.annotations`` folder with ``classes.txt`` (one name per line, line i = class i) and
``train.txt`` / ``test.txt`` lines ``relative/path.mp4 i[,j,...]`` with 0-based class indices
(multi-label). Classes in file order. video_id = relative path without extension.
"""
from __future__ import annotations

import re
from pathlib import Path

from components.core.params import DataParams
from components.data.adapters import (
    AdapterResult, Candidate, register_adapter, carve_val, missing_row, annotations_path, FileIndex,
    finish)


_FCVID_LINE = re.compile(r"^(.*?\S)\s+(\d+(?:\s*,\s*\d+)*)\s*$")


@register_adapter("fcvid")
def fcvid(p: DataParams) -> AdapterResult:
    """FCVID in the documented folder form (classes.txt, train.txt, test.txt); multi-label."""
    folder = annotations_path(p, "fcvid", want_dir=True)
    classes = [c.strip() for c in (folder / "classes.txt").read_text().splitlines() if c.strip()] \
        if (folder / "classes.txt").exists() else None
    if not classes:
        raise FileNotFoundError(f"fcvid: {folder / 'classes.txt'} missing or empty")
    index = FileIndex(p.root)
    cands, missing = [], []
    for list_name, base_split in (("train.txt", "train"), ("test.txt", "test")):
        lf = folder / list_name
        if not lf.exists():
            raise FileNotFoundError(f"fcvid: {lf} not found")
        for n, line in enumerate(lf.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = _FCVID_LINE.match(line.strip())
            if not m:
                raise ValueError(f"fcvid: {lf}:{n}: expected 'path idx[,idx...]', got {line!r}")
            rel = m.group(1).replace("\\", "/")
            labels = tuple(sorted({int(x) for x in m.group(2).replace(" ", "").split(",")}))
            bad = [i for i in labels if not 0 <= i < len(classes)]
            if bad:
                raise ValueError(f"fcvid: {lf}:{n}: class indices {bad} outside [0, {len(classes)})")
            vid = str(Path(rel).with_suffix("").as_posix())
            split = carve_val(vid, p.val_fraction) if base_split == "train" else base_split
            path = index.rel(rel)
            if path is None:
                missing.append(missing_row(index.root / rel, vid, split, f"{rel} not under {index.root}"))
                continue
            cands.append(Candidate(vid, str(path), labels, split))
    return finish("fcvid", cands, classes, missing)


# ---------------------------------------------------------------------------------------- csv
