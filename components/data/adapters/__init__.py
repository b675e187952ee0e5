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

Each dataset is one module of this package (``activitynet``, ``kinetics``, ``ucf101``, ``fcvid``,
``generic_csv``: ``csv``, ``synthetic_videos``: ``synthetic``), imported by the registry on first use:
a new dataset is one new file here with an ``@register_adapter(name)`` function, and ``data.dataset:
name`` in params (no other file changes; an unknown name is an error listing the registered ones).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping

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


def _import_members() -> None:
    """Import every module of this package so their ``@register_adapter`` decorators run (name order; a new
    dataset is one new file here, nothing else)."""
    import importlib
    import pkgutil

    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        importlib.import_module(f"components.data.adapters.{mod}")  # the literal prefix: components.core.depgraph


def list_adapters() -> list[str]:
    """Registered adapter names, sorted."""
    _import_members()
    return ADAPTER_REGISTRY.list()


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; ValueError listing the valid names otherwise."""
    _import_members()
    if name not in ADAPTER_REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list_adapters(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"data.dataset: unknown dataset adapter {name!r}{hint}; valid: {list_adapters()} "
                         "(a new one is a module of components/data/adapters/)")
    return ADAPTER_REGISTRY.get(name)


# ------------------------------------------------------------------------------------ helpers
def stable_fraction(key: str) -> float:
    """Deterministic number in [0, 1) from ``key`` (sha1; independent of Python's hash seed)."""
    digest = hashlib.sha1(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def carve_val(key: str, val_fraction: float) -> str:
    """``"val"`` for a stable ``val_fraction`` share of keys, else ``"train"``."""
    return "val" if stable_fraction(key) < val_fraction else "train"


def missing_row(path: Path | str, video_id: str, split: str, detail: str) -> dict:
    return {"path": str(path), "video_id": video_id, "split": split, "reason": "missing", "detail": detail}


def annotations_path(p: DataParams, kind: str, want_dir: bool) -> Path:
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


def finish(kind: str, cands: list[Candidate], classes: list[str], missing: list[dict]) -> AdapterResult:
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
