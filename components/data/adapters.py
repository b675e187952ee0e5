"""Dataset adapters: annotation files + a video folder -> a list of candidate videos.

An adapter only *lists* videos and resolves their files; it decodes nothing (the dataset stage
probes every candidate with :func:`components.data.video.probe` and quarantines the bad ones).
Every adapter has the signature ``fn(p: DataParams) -> AdapterResult`` and is registered by name::

    @register_adapter("synthetic")
    def synthetic(p: DataParams) -> AdapterResult: ...

``AdapterResult.missing`` holds quarantine rows (``path, video_id, split, reason="missing",
detail``) for annotated videos whose file is not under ``p.root``; they are not candidates.

Splits are always ``train`` / ``val`` / ``test``. Where a dataset has no val split, ``val`` is
carved out of ``train`` with :func:`stable_fraction` (sha1 of a key, so the assignment never
depends on row order, the machine or Python's hash seed): a video goes to val when
``stable_fraction(key) < p.val_fraction``. The key is the unit that must not straddle train / val
(the UCF101 group, the YouTube id of a Kinetics clip, the video id elsewhere).

Per dataset (``p.annotations`` = the annotation file or folder; video paths resolve against
``p.root``):

``activitynet``
    ActivityNet v1.3 JSON. ``training`` -> train (+ carved val), ``validation`` -> **test**
    (the official test labels are withheld, so papers report on the validation set), ``testing`` is
    skipped (no labels). Labels: all distinct annotation labels of the video (multi-label); classes:
    the sorted union of annotation labels of the kept videos (the taxonomy's inner nodes are not
    classes). Files: ``v_{id}.*`` or ``{id}.*`` or any ``*{id}.*`` anywhere under ``root``.
``kinetics``
    Kinetics / Mini-Kinetics CSV ``label,youtube_id,time_start,time_end,split`` (extra columns are
    ignored). ``train`` -> train (+ carved val, keyed by YouTube id), ``val`` / ``validate`` ->
    **test** (as papers report), ``test`` rows are skipped (the official test labels were not
    public for most versions; mixing them with val would double-count). Files:
    ``{split}/{label}/{id}_{start:06d}_{end:06d}.*``, ``{id}_{start:06d}_{end:06d}.*`` or ``{id}.*``
    anywhere under ``root``. video_id = ``{id}_{start:06d}_{end:06d}``.
``ucf101``
    ``p.annotations`` is the ``ucfTrainTestlist`` folder (``classInd.txt``, ``trainlist0{fold}.txt``,
    ``testlist0{fold}.txt``; fold = ``p.split_fold``). Classes in ``classInd.txt`` order (the
    official indices minus one). Val is carved from train by (class, group) so clips of one group
    (same actor / background) never straddle train and val.
``fcvid``
    ``p.annotations`` folder with ``classes.txt`` (one name per line, line i = class i) and
    ``train.txt`` / ``test.txt`` lines ``relative/path.mp4 i[,j,...]`` with 0-based class indices
    (multi-label). Classes in file order. video_id = relative path without extension.
``csv``
    Generic CSV with a header and columns ``path,label[,split][,video_id]``; ``label`` is a class
    *name* (several names separated by ``;`` for multi-label; repeated rows of one path are merged).
    Relative paths resolve against ``root``. Without a ``split`` column the split is drawn by hash of
    the path: 70 % train / 15 % val / 15 % test. ``split`` values: train / val / test (also
    training / validation / validate / testing). Classes: sorted label names.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping

from components.data.synthetic import generate as generate_synthetic
from components.core.params import DataParams
from components.core.registry import Registry

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv")


@dataclass(frozen=True)
class Candidate:
    """One annotated video whose file exists (not yet probed)."""
    video_id: str
    path: str  # absolute
    labels: tuple[int, ...]
    split: str  # train | val | test
    gt: str = ""


@dataclass
class AdapterResult:
    """What an adapter returns: candidates, class names (index = label) and missing-file rows."""
    candidates: list[Candidate] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)


Adapter = Callable[[DataParams], AdapterResult]
ADAPTER_REGISTRY = Registry("dataset adapter")
ADAPTERS: Mapping[str, Adapter] = ADAPTER_REGISTRY.members  # name -> adapter, read-only


def register_adapter(name: str) -> Callable[[Adapter], Adapter]:
    """Decorator: register ``fn(p: DataParams) -> AdapterResult`` under ``name`` (ValueError if taken)."""
    return ADAPTER_REGISTRY.register(name)


def list_adapters() -> list[str]:
    """Registered adapter names, sorted."""
    return ADAPTER_REGISTRY.list()


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; ValueError listing the valid names otherwise."""
    if name not in ADAPTER_REGISTRY:
        raise ValueError(f"unknown dataset adapter {name!r}; valid: {list_adapters()}")
    return ADAPTER_REGISTRY.get(name)


# ------------------------------------------------------------------------------------ helpers
def stable_fraction(key: str) -> float:
    """Deterministic number in [0, 1) from ``key`` (sha1; independent of Python's hash seed)."""
    digest = hashlib.sha1(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def carve_val(key: str, val_fraction: float) -> str:
    """``"val"`` for a stable ``val_fraction`` share of keys, else ``"train"``."""
    return "val" if stable_fraction(key) < val_fraction else "train"


def _missing_row(path: Path | str, video_id: str, split: str, detail: str) -> dict:
    return {"path": str(path), "video_id": video_id, "split": split, "reason": "missing", "detail": detail}


def _annotations(p: DataParams, kind: str, want_dir: bool) -> Path:
    if not p.annotations:
        raise ValueError(f"{kind}: data.annotations is empty; it must name the annotation "
                         f"{'folder' if want_dir else 'file'}")
    path = Path(p.annotations)
    if not path.exists():
        raise FileNotFoundError(f"{kind}: annotation {'folder' if want_dir else 'file'} {path} not found "
                                f"(data.annotations)")
    if want_dir and not path.is_dir():
        raise NotADirectoryError(f"{kind}: data.annotations={path} must be a folder")
    if not want_dir and path.is_dir():
        raise IsADirectoryError(f"{kind}: data.annotations={path} must be a file")
    return path


class FileIndex:
    """One recursive walk of ``root``: video files by relative path and by stem.

    Lookups never touch the disk again, so resolving N videos costs one directory walk.
    Among several files with one stem, the preferred one is chosen by (preferred folder,
    extension order of :data:`VIDEO_EXTENSIONS`, path).
    """

    def __init__(self, root: Path | str, extensions: Iterable[str] = VIDEO_EXTENSIONS):
        self.root = Path(os.path.abspath(root))
        self.ext_rank = {e.lower(): i for i, e in enumerate(extensions)}
        self.by_rel: dict[str, Path] = {}
        self.by_stem: dict[str, list[Path]] = {}
        self._by_suffix: dict[int, dict[str, list[Path]]] = {}
        if not self.root.is_dir():
            log.warning("video root %s does not exist: every video will be missing", self.root)
            return
        seen = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # symlink loop
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames.sort()
            for name in sorted(filenames):
                ext = os.path.splitext(name)[1].lower()
                if ext not in self.ext_rank:
                    continue
                full = Path(dirpath) / name
                self.by_rel[full.relative_to(self.root).as_posix()] = full
                self.by_stem.setdefault(os.path.splitext(name)[0], []).append(full)
        log.info("indexed %d video files under %s", len(self.by_rel), self.root)

    def __len__(self) -> int:
        return len(self.by_rel)

    def _best(self, paths: list[Path], prefer_dir: str | None) -> Path:
        def rank(path: Path):
            rel = path.relative_to(self.root).as_posix()
            in_pref = 0 if prefer_dir and rel.startswith(prefer_dir.rstrip("/") + "/") else 1
            return in_pref, self.ext_rank.get(path.suffix.lower(), 99), rel
        return min(paths, key=rank)

    def rel(self, relpath: str) -> Path | None:
        """The file at ``root/relpath`` if indexed."""
        return self.by_rel.get(PurePosixPath(relpath.replace("\\", "/")).as_posix())

    def stem(self, *stems: str, prefer_dir: str | None = None) -> Path | None:
        """The best file whose name without extension is the first of ``stems`` that exists."""
        for s in stems:
            hits = self.by_stem.get(s)
            if hits:
                return self._best(hits, prefer_dir)
        return None

    def suffix(self, key: str) -> Path | None:
        """The best file whose stem ends with ``key`` (``*{key}.*``)."""
        table = self._by_suffix.get(len(key))
        if table is None:  # built once per key length
            table = {}
            for s, paths in self.by_stem.items():
                if len(s) >= len(key):
                    table.setdefault(s[-len(key):], []).extend(paths)
            self._by_suffix[len(key)] = table
        hits = table.get(key)
        return self._best(hits, None) if hits else None


def _finish(kind: str, cands: list[Candidate], classes: list[str], missing: list[dict]) -> AdapterResult:
    cands = sorted(cands, key=lambda c: c.video_id)
    ids = [c.video_id for c in cands]
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for i in ids:
            if i in seen:
                dup.append(i)
            seen.add(i)
        raise ValueError(f"{kind}: duplicate video ids {sorted(set(dup))[:5]}")
    missing = sorted(missing, key=lambda r: (r["video_id"], r["path"]))
    counts = {s: sum(c.split == s for c in cands) for s in ("train", "val", "test")}
    log.info("%s: %d candidates %s, %d classes, %d missing files", kind, len(cands), counts,
             len(classes), len(missing))
    return AdapterResult(candidates=cands, classes=list(classes), missing=missing)


# -------------------------------------------------------------------------------- activitynet
@register_adapter("activitynet")
def activitynet(p: DataParams) -> AdapterResult:
    """ActivityNet v1.3 JSON (see module docstring for the split mapping)."""
    ann = _annotations(p, "activitynet", want_dir=False)
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
            missing.append(_missing_row(index.root / f"v_{vid}.mp4", vid, split,
                                        f"no v_{vid}.* / {vid}.* / *{vid}.* under {index.root}"))
            continue
        cands.append(Candidate(vid, str(path), tuple(cidx[lab] for lab in labels), split))
    return _finish("activitynet", cands, classes, missing)


# ----------------------------------------------------------------------------------- kinetics
def _time_field(value: str) -> int:
    return int(round(float(value)))


@register_adapter("kinetics")
def kinetics(p: DataParams) -> AdapterResult:
    """Kinetics / Mini-Kinetics CSV (see module docstring for the split mapping)."""
    ann = _annotations(p, "kinetics", want_dir=False)
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
            missing.append(_missing_row(index.root / split_raw / label / f"{vid}.mp4", vid, split,
                                        f"no {split_raw}/{label}/{vid}.*, {vid}.* or {ytid}.* under {index.root}"))
            continue
        cands.append(Candidate(vid, str(path), (cidx[label],), split))
    return _finish("kinetics", cands, classes, missing)


# ------------------------------------------------------------------------------------- ucf101
_UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")
_UCF_NAME = re.compile(r"^v_(.+)_g\d+_c\d+$")


def _resolve_rel(index: FileIndex, rel: str) -> Path | None:
    """``root/rel``, else the same name anywhere under root (flat layout), else the same stem."""
    rel = PurePosixPath(rel.strip().replace("\\", "/"))
    return index.rel(rel.as_posix()) or index.stem(rel.stem, prefer_dir=rel.parent.as_posix())


@register_adapter("ucf101")
def ucf101(p: DataParams) -> AdapterResult:
    """UCF101 official split lists (see module docstring); val carved by (class, group)."""
    folder = _annotations(p, "ucf101", want_dir=True)
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
            path = _resolve_rel(index, rel)
            if path is None:
                missing.append(_missing_row(index.root / rel, vid, split, f"{rel} not under {index.root}"))
                continue
            cands.append(Candidate(vid, str(path), (label,), split))
    return _finish("ucf101", cands, classes, missing)


# -------------------------------------------------------------------------------------- fcvid
_FCVID_LINE = re.compile(r"^(.*?\S)\s+(\d+(?:\s*,\s*\d+)*)\s*$")


@register_adapter("fcvid")
def fcvid(p: DataParams) -> AdapterResult:
    """FCVID in the documented folder form (classes.txt, train.txt, test.txt); multi-label."""
    folder = _annotations(p, "fcvid", want_dir=True)
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
                missing.append(_missing_row(index.root / rel, vid, split, f"{rel} not under {index.root}"))
                continue
            cands.append(Candidate(vid, str(path), labels, split))
    return _finish("fcvid", cands, classes, missing)


# ---------------------------------------------------------------------------------------- csv
_CSV_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "validate": "val",
               "test": "test", "testing": "test"}


def _hash_split(key: str) -> str:
    u = stable_fraction(key)
    return "train" if u < 0.70 else "val" if u < 0.85 else "test"


@register_adapter("csv")
def generic_csv(p: DataParams) -> AdapterResult:
    """Generic ``path,label[,split][,video_id]`` CSV (see module docstring)."""
    ann = _annotations(p, "csv", want_dir=False)
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
            missing.append(_missing_row(path, e["vid"], e["split"], f"{path} does not exist"))
            continue
        labels = tuple(sorted(cidx[x] for x in e["names"]))
        cands.append(Candidate(e["vid"], os.path.abspath(path), labels, e["split"]))
    return _finish("csv", cands, classes, missing)


@register_adapter("synthetic")
def synthetic(p: DataParams) -> AdapterResult:
    """The synthetic benchmark: generate (or resume generating) the videos under ``p.root``."""
    cands, classes = generate_synthetic(p.synthetic, Path(p.root), workers=p.workers)
    return AdapterResult([Candidate(c.video_id, c.path, tuple(c.labels), c.split, c.gt) for c in cands], classes, [])
