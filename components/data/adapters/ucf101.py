"""The ``ucf101`` dataset adapter (:mod:`components.data.adapters`).

``p.annotations`` is the ``ucfTrainTestlist`` folder (``classInd.txt``, ``trainlist0{fold}.txt``,
``testlist0{fold}.txt``; fold = ``p.split_fold``). Classes in ``classInd.txt`` order (the
official indices minus one). Val is carved from train by (class, group) so clips of one group
(same actor / background) never straddle train and val.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from components.core.params import DataParams
from components.data.adapters import (
    AdapterResult, Candidate, register_adapter, carve_val, missing_row, annotations_path, FileIndex,
    finish)


_UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")
_UCF_NAME = re.compile(r"^v_(.+)_g\d+_c\d+$")


def resolve_rel(index: FileIndex, rel: str) -> Path | None:
    """``root/rel``, else the same name anywhere under root (flat layout), else the same stem."""
    rel = PurePosixPath(rel.strip().replace("\\", "/"))
    return index.rel(rel.as_posix()) or index.stem(rel.stem, prefer_dir=rel.parent.as_posix())


@register_adapter("ucf101")
def ucf101(p: DataParams) -> AdapterResult:
    """UCF101 official split lists (see module docstring); val carved by (class, group)."""
    folder = annotations_path(p, "ucf101", want_dir=True)
    fold = p.split_fold
    class_file = folder / "classInd.txt"
    if not class_file.exists():
        raise FileNotFoundError(f"ucf101: {class_file} not found")
    official: dict[int, str] = {}
    for line in class_file.read_text().splitlines():
        if line.strip():
            num, name = line.split(maxsplit=1)
            official[int(num)] = name.strip()
    classes = [official[k] for k in sorted(official)]
    by_name = {c.lower(): i for i, c in enumerate(classes)}  # folder case differs in places
    by_num = {k: i for i, k in enumerate(sorted(official))}
    index = FileIndex(p.root)
    cands, missing = [], []
    for list_name, base_split in ((f"trainlist0{fold}.txt", "train"), (f"testlist0{fold}.txt", "test")):
        lf = folder / list_name
        if not lf.exists():
            raise FileNotFoundError(f"ucf101: {lf} not found (data.split_fold={fold})")
        for n, line in enumerate(lf.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            rel = parts[0]
            cls_dir = rel.replace("\\", "/").split("/")[0] if "/" in rel.replace("\\", "/") else None
            if len(parts) > 1:
                label = by_num.get(int(parts[1]))
            else:
                label = by_name.get(cls_dir.lower()) if cls_dir else None
            vid = PurePosixPath(rel.replace("\\", "/")).stem
            if label is None:  # flat list without class folder: v_{Class}_gXX_cYY
                m = _UCF_NAME.match(vid)
                label = by_name.get(m.group(1).lower()) if m else None
            if label is None:
                raise ValueError(f"ucf101: {lf}:{n}: cannot tell the class of {line!r}")
            split = base_split
            if split == "train":
                m = _UCF_GROUP.search(vid)
                group = f"{classes[label]}_g{m.group(1)}" if m else vid
                split = carve_val(group, p.val_fraction)
            path = resolve_rel(index, rel)
            if path is None:
                missing.append(missing_row(index.root / rel, vid, split, f"{rel} not under {index.root}"))
                continue
            cands.append(Candidate(vid, str(path), (label,), split))
    return finish("ucf101", cands, classes, missing)


# -------------------------------------------------------------------------------------- fcvid
