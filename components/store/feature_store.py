"""The feature store: per-split, memory-mappable ``.npy`` arrays that every later stage trains on.

Layout of a finished store (``data/features/``)::

    meta.json                      version, T, fingerprint, classes, per-split N and array specs, complete=true,
                                   digests (SHA-256 of every other file: checked once per process on first read)
    text_objects.npy               [1000, e]  object-name embeddings (TQM)
    text_classes.npy               [C, e]     class-name embeddings (TQM init)
    object_names.txt               the 1000 ImageNet names, in order
    <split>/ids.txt                video ids, row order
    <split>/<name>.npy             one array per feature, first axis = video (see ``extract``)

Writing is crash-safe. :class:`StoreWriter` builds everything inside ``<out>.partial/`` (never a DVC
output, so it survives an interrupted run), streams rows into ``np.lib.format.open_memmap`` files,
and every ``checkpoint`` flushes the arrays before atomically recording how many rows are done.
A rerun with the same fingerprint resumes from there; another fingerprint starts over. Only
:meth:`StoreWriter.finalize` writes ``meta.json`` (``complete: true``) and renames the folder into
place, so a reader can never open a half-written store as complete: :class:`FeatureStore` refuses
any folder without a complete ``meta.json``.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from components.core.atomic import atomic_path, atomic_write_json
from components.core.integrity import DigestMismatch, check_file, file_digests

log = logging.getLogger(__name__)
STORE_VERSION = 1
REDO = "rerun `dvc repro -f extract@<seed>`"


class StoreError(RuntimeError):
    """A store that is missing, incomplete, or does not match what the caller expects."""


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[int, ...]  # per-video shape (without the leading N)
    dtype: str


def reserve(path: Path) -> None:
    """Allocate every block of a memory-mapped file now (``posix_fallocate``). A memmap file is sparse:
    without this, a full disk shows up later as SIGBUS when a row is written (the process dies with no
    message, exit 135); with it, as an error naming the file and the space needed, before any work."""
    size = path.stat().st_size
    if not size or not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"{path}: no space left for {size / 2**20:.1f} MiB of features "
                             f"({shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free); free some and rerun "
                             "(finished rows are kept)") from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: as before
            raise
    finally:
        os.close(fd)


class SplitWriter:
    def __init__(self, folder: Path, ids: list[str], specs: Mapping[str, ArraySpec], fingerprint: str):
        self.folder, self.ids, self.specs = folder, list(ids), dict(specs)
        folder.mkdir(parents=True, exist_ok=True)
        progress = folder / "progress.json"
        state = json.loads(progress.read_text()) if progress.exists() else {}
        resumable = (state.get("fingerprint") == fingerprint and state.get("ids") == self.ids
                     and state.get("specs") == {k: [list(s.shape), s.dtype] for k, s in self.specs.items()})
        self.done = int(state.get("done", 0)) if resumable else 0
        self._state = {"fingerprint": fingerprint, "ids": self.ids,
                       "specs": {k: [list(s.shape), s.dtype] for k, s in self.specs.items()}}
        mode = "r+" if resumable and self.done > 0 else "w+"
        self.arrays = {}
        for name, spec in self.specs.items():
            path = folder / f"{name}.npy"
            if mode == "r+" and path.exists():
                self.arrays[name] = np.lib.format.open_memmap(path, mode="r+")
            else:
                self.done = 0 if mode == "r+" else self.done
                self.arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(spec.dtype),
                                                              shape=(len(self.ids), *spec.shape))
            reserve(path)
        (folder / "ids.txt").write_text("".join(f"{i}\n" for i in self.ids))
        if self.done:
            log.info("%s: resuming at video %d / %d", folder.name, self.done, len(self.ids))

    def write(self, row: int, values: Mapping[str, np.ndarray]) -> None:
        missing = set(self.specs) - set(values)
        if missing:
            raise StoreError(f"row {row}: missing arrays {sorted(missing)}")
        for name, v in values.items():
            arr = self.arrays[name]
            if tuple(np.shape(v)) != arr.shape[1:]:
                raise StoreError(f"{name}: row shape {np.shape(v)} != {arr.shape[1:]}")
            arr[row] = v

    def write_rows(self, start: int, values: Mapping[str, np.ndarray]) -> int:
        """Rows ``[start, start + n)`` of every array at once (a merged shard part); returns ``n``."""
        if set(values) != set(self.specs):
            raise StoreError(f"rows from {start}: arrays {sorted(values)} != {sorted(self.specs)}")
        n = {len(v) for v in values.values()}
        if len(n) != 1 or start + next(iter(n)) > len(self.ids):
            raise StoreError(f"rows from {start}: row counts {sorted(n)} do not fit {len(self.ids)} rows")
        (n,) = n
        for name, v in values.items():
            arr = self.arrays[name]
            if tuple(v.shape[1:]) != arr.shape[1:] or v.dtype != arr.dtype:
                raise StoreError(f"{name}: rows {v.shape[1:]} {v.dtype} != {arr.shape[1:]} {arr.dtype}")
            arr[start:start + n] = v
        return n

    def checkpoint(self, done: int) -> None:
        """Flush every array, then record that rows [0, done) are complete."""
        for arr in self.arrays.values():
            arr.flush()
        self.done = done
        atomic_write_json(self.folder / "progress.json", {**self._state, "done": done}, sort_keys=True, trailing_newline=False)

    def close(self) -> None:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()


class StoreWriter:
    """Build a store in ``<out>.partial`` and publish it atomically with :meth:`finalize`.
    ``fresh``: discard any partial store there, even one of this fingerprint (a merge starts over)."""

    def __init__(self, out: Path, fingerprint: str, fresh: bool = False):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.fingerprint = fingerprint
        fp_file = self.partial / "fingerprint.txt"
        if self.partial.exists() and (fresh or not fp_file.exists() or fp_file.read_text() != fingerprint):
            log.info("discarding %s (%s)", self.partial, "starting over" if fresh else "from another configuration")
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        fp_file.write_text(fingerprint)
        self.splits: dict[str, dict] = {}

    def split(self, name: str, ids: list[str], specs: Mapping[str, ArraySpec]) -> SplitWriter:
        self.splits[name] = {"n": len(ids), "arrays": {k: {"shape": list(s.shape), "dtype": s.dtype}
                                                       for k, s in specs.items()}}
        return SplitWriter(self.partial / name, ids, specs, self.fingerprint)

    def save_array(self, name: str, value: np.ndarray) -> None:
        with atomic_path(self.partial / f"{name}.npy", suffix=".npy") as tmp:
            np.save(tmp, value)

    def save_text(self, name: str, lines: list[str]) -> None:
        (self.partial / name).write_text("".join(f"{x}\n" for x in lines))

    def finalize(self, meta: Mapping) -> Path:
        for split in self.splits:
            prog = self.partial / split / "progress.json"
            state = json.loads(prog.read_text()) if prog.exists() else {}
            if state.get("done") != self.splits[split]["n"]:
                raise StoreError(f"split {split}: {state.get('done')} of {self.splits[split]['n']} rows written")
            prog.unlink()
        for scratch in ("fingerprint.txt", "resume.json"):
            (self.partial / scratch).unlink(missing_ok=True)
        atomic_write_json(self.partial / "meta.json", {**meta, "version": STORE_VERSION, "complete": True,
                                                       "fingerprint": self.fingerprint, "splits": self.splits,
                                                       "digests": file_digests(self.partial)},
                          sort_keys=True, trailing_newline=False)
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.partial, self.out)
        return self.out


class FeatureStore:
    """Read-only view of a finished store; arrays are memory-mapped, nothing is loaded eagerly."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            partial = self.folder.with_name(self.folder.name + ".partial")
            extra = f" (an unfinished extraction is in {partial}; rerun `extract`)" if partial.exists() else ""
            raise StoreError(f"{self.folder}: no complete feature store (meta.json missing){extra}")
        self.meta = json.loads(meta_path.read_text())
        if not self.meta.get("complete") or self.meta.get("version") != STORE_VERSION:
            raise StoreError(f"{self.folder}: store incomplete or version {self.meta.get('version')} "
                             f"!= {STORE_VERSION}; rerun `extract`")

    @property
    def T(self) -> int:
        return int(self.meta["T"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def split_names(self) -> list[str]:
        return list(self.meta["splits"])

    def ids(self, split: str) -> list[str]:
        self._check_split(split)
        return self._checked(f"{split}/ids.txt").read_text().split()

    def array(self, split: str, name: str) -> np.ndarray:
        self._check_split(split)
        if name not in self.meta["splits"][split]["arrays"]:
            raise StoreError(f"split {split}: no array {name!r}; has {sorted(self.meta['splits'][split]['arrays'])}")
        path = self.folder / split / f"{name}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:  # truncated, overwritten, not an .npy any more
            raise StoreError(f"{path}: unreadable ({e}); the store was changed after extract: {REDO}") from e
        spec = self.meta["splits"][split]["arrays"][name]
        n = self.meta["splits"][split].get("n", arr.shape[0] if arr.ndim else None)
        want = (int(n), *spec["shape"])
        if arr.shape != want or arr.dtype != np.dtype(spec["dtype"]):
            raise StoreError(f"{path}: shape {arr.shape} {arr.dtype}, but meta.json records {want} {spec['dtype']}; "
                             "the store was changed after extract: rerun `dvc repro -f extract@<seed>`")
        self._checked(f"{split}/{name}.npy")
        return arr

    def load(self, name: str) -> np.ndarray:
        return np.load(self._checked(f"{name}.npy"))

    def _checked(self, rel: str) -> Path:
        """``<folder>/<rel>`` once its SHA-256 matches the one ``meta.json`` records (checked once per
        process per file, :func:`components.core.integrity.check_file`); :class:`StoreError` otherwise."""
        path = self.folder / rel
        try:
            check_file(path, self.meta.get("digests", {}).get(rel), REDO)
        except DigestMismatch as e:
            raise StoreError(str(e)) from None
        return path

    def _check_split(self, split: str) -> None:
        if split not in self.meta["splits"]:
            raise StoreError(f"{self.folder}: no split {split!r}; has {self.split_names}")
