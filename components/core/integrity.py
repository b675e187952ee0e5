"""Content digests for every artifact a stage reads: model checkpoints and feature-store files.

One mechanism for all of them, written at save time and checked at load:

* a checkpoint (``{"state_dict": ..., ...}``: encoders, the TSI recognizer, samplers, AVGN's f_L,
  which is the frame recognizer's file) carries ``state_digest``, the SHA-256 of its weights
  (:func:`state_digest`, over names, dtypes, shapes and bytes). :func:`save_checkpoint` adds it;
  :func:`load_checkpoint` refuses a file that does not load (random bytes, truncated: the file is
  named, never a bare torch traceback), that has no digest, or whose weights hash to another digest
  (a file damaged with its zip layout intact would otherwise load and answer with wrong weights);
* a file of the feature store (every ``.npy`` array, ``ids.txt``, ...) has its SHA-256 recorded in
  the store's ``meta.json`` (``digests``, :func:`file_digests` at ``finalize``) and is checked the
  first time a process reads it (:func:`check_file`).

A check runs once per process per file (keyed by path, size, mtime and inode, so a file changed
while the process runs is checked again). Every refusal names the file, both digests where there
are two, and what to rerun. :func:`verify_workspace` checks every artifact of a workspace at once
(``salient verify``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from components.core.atomic import atomic_torch_save

#: Files of a store folder that are not part of its content (written or removed around ``finalize``).
UNSEALED = frozenset({"meta.json", "fingerprint.txt", "progress.json", "resume.json"})

_checked: set[tuple] = set()  # (path, size, mtime_ns, inode, digest) verified in this process


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: unreadable, or its weights not the ones saved."""


class DigestMismatch(ValueError):
    """A file whose content no longer hashes to the digest written when it was saved."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_digest(state: dict) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (any dtype)."""
    import torch  # deferred: heavy; store checks never need it

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _identity(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def _once(path: Path, want: str, check: Callable[[], None]) -> None:
    """Run ``check`` unless this process already verified this file (same bytes on disk) against ``want``."""
    key = (*_identity(path), want)
    if key not in _checked:
        check()
        _checked.add(key)


# ------------------------------------------------------------------------------- checkpoints
def with_digest(ck: dict) -> dict:
    """``ck`` plus ``state_digest`` of its ``state_dict`` (None for a checkpoint without weights)."""
    state = ck.get("state_dict")
    return {**ck, "state_digest": state_digest(state) if state else None}


def save_checkpoint(ck: dict, path: str | os.PathLike) -> Path:
    """``ck`` with its weight digest, saved atomically (:func:`components.core.atomic.atomic_torch_save`)."""
    return atomic_torch_save(with_digest(ck), path)


#: Modules renamed when ``components/`` was split into packages by role (issue 25): a checkpoint written
#: before pickled its config classes (``AVGNParams``, ``AVGNConfig``, ...) under the old names, and would
#: no longer load. Old name -> new; read only when the name no longer resolves.
MOVED_MODULES: dict[str, str] = {
    "components.params": "components.core.params", "components.paths": "components.core.paths",
    "components.registry": "components.core.registry", "components.selection": "components.core.selection",
    "components.hashing": "components.core.hashing", "components.integrity": "components.core.integrity",
    "components.atomic": "components.core.atomic", "components.runtime": "components.core.runtime",
    "components.scratch": "components.core.scratch", "components.distributed": "components.core.distributed",
    "components.models.avgn": "components.models.avgn_net", "components.fusion": "components.evaluation.fusion",
    "components.metrics": "components.evaluation.metrics", "components.flops": "components.evaluation.cost",
    "components.evaluation": "components.evaluation.sampler_eval",
    "components.store": "components.store.feature_store", "components.features": "components.store.features",
    "components.prototypes": "components.store.prototype_math",
    "components.sampler_data": "components.store.sampler_data", "components.engine": "components.training.engine",
    "components.sampler_model": "components.training.sampler_model",
    "components.sampler_training": "components.training.sampler_training",
    "components.validation": "components.training.val_objective",
    "components.tracking": "components.tracking.mlflow_tracking",
}


@functools.lru_cache(maxsize=1)
def _moved_pickle():
    """A ``pickle`` module for ``torch.load`` whose unpickler finds a class of a renamed module
    (:data:`MOVED_MODULES`) at its new place."""
    import pickle
    import types

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            try:
                return super().find_class(module, name)
            except (ModuleNotFoundError, AttributeError):
                if module not in MOVED_MODULES:
                    raise
                return super().find_class(MOVED_MODULES[module], name)

    mod = types.ModuleType("moved_pickle")
    mod.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    mod.Unpickler = Unpickler
    return mod


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint",
                    fix: str = "rerun the stage that wrote it") -> dict:
    """A checkpoint dict from ``path``, its weights checked against the digest saved with them.
    Raises :class:`CheckpointError` naming the file (and both digests on a mismatch), or
    ``FileNotFoundError`` naming it when it is not there."""
    import torch  # deferred: heavy; store checks never need it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}; {fix}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_moved_pickle())
        if not isinstance(ck, dict) or "state_dict" not in ck:
            raise TypeError(f"a {type(ck).__name__} without a state_dict")
    except Exception as e:  # noqa: BLE001 - whatever fails (zip, pickle, missing file): the file is unusable
        raise CheckpointError(f"{path}: not a loadable {what} ({type(e).__name__}: {str(e)[:300]}); {fix}") from e
    if ck["state_dict"]:
        want = ck.get("state_digest")
        if not want:
            raise CheckpointError(f"{path}: no weight digest (written before checkpoints carried one); {fix}")

        def check() -> None:
            got = state_digest(ck["state_dict"])
            if got != want:
                raise CheckpointError(f"{path}: weights changed since they were saved (digest {got[:16]} != "
                                      f"saved {want[:16]}); {fix}")
        _once(path, want, check)
    return ck


# ------------------------------------------------------------------------------- stores
def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under a store ``folder`` (relative POSIX path -> hex), but :data:`UNSEALED`."""
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in UNSEALED}


def check_file(path: Path, want: str | None, fix: str) -> None:
    """Refuse ``path`` unless its SHA-256 is ``want`` (:class:`DigestMismatch` naming the file, both
    digests and ``fix``); ``want`` None: no digest was recorded for it (an older store)."""
    path = Path(path)
    if want is None:
        raise DigestMismatch(f"{path}: no content digest recorded (written before stores carried them); {fix}")

    def check() -> None:
        got = file_sha256(path)
        if got != want:
            raise DigestMismatch(f"{path}: content changed since it was written (sha256 {got[:16]} != recorded "
                                 f"{want[:16]}); {fix}")
    _once(path, want, check)


# ------------------------------------------------------------------------------- a workspace
def _store_folders(root: Path) -> Iterable[Path]:
    for meta in sorted(root.rglob("meta.json")):
        try:
            m = json.loads(meta.read_text())
        except (OSError, ValueError):
            yield meta.parent
            continue
        if isinstance(m, dict) and m.get("complete") is True:
            yield meta.parent


def verify_store(folder: Path) -> list[dict]:
    """Every file of the store at ``folder`` against its ``meta.json`` digests: bad rows ``{path, problem}``;
    also files ``meta.json`` records that are gone and files it does not record."""
    try:
        m = json.loads((folder / "meta.json").read_text())
        digests = dict(m["digests"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [{"path": str(folder / "meta.json"), "problem": f"no readable content digests ({type(e).__name__}: {e})"}]
    bad = []
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name not in UNSEALED}
    for rel in sorted(on_disk | set(digests)):
        f = folder / rel
        if rel not in digests:
            bad.append({"path": str(f), "problem": "not recorded in meta.json (added after the store was written)"})
        elif rel not in on_disk:
            bad.append({"path": str(f), "problem": "missing (meta.json records it)"})
        elif (got := file_sha256(f)) != digests[rel]:
            bad.append({"path": str(f), "problem": f"sha256 {got[:16]} != recorded {digests[rel][:16]}"})
    return bad


def verify_workspace(root: str | os.PathLike = ".", data: str = "data") -> tuple[int, list[dict]]:
    """Check every checkpoint (``*.pt``) and every feature store under ``<root>/<data>``: (files
    checked, bad rows ``{path, problem}``). Everything is read in full: nothing is cached."""
    base = Path(root) / data
    checked, bad = 0, []
    for pt in sorted(base.rglob("*.pt")):
        if any(part.endswith((".partial", ".shards")) for part in pt.parts):
            continue
        checked += 1
        _checked.clear()
        try:
            load_checkpoint(pt)
        except CheckpointError as e:
            bad.append({"path": str(pt), "problem": str(e).removeprefix(f"{pt}: ")})
    for folder in _store_folders(base):
        if any(part.endswith((".partial", ".shards")) for part in folder.parts):
            continue
        rows = verify_store(folder)
        checked += sum(1 for p in folder.rglob("*") if p.is_file() and p.name not in UNSEALED) or 1
        bad += rows
    return checked, bad


def clear_cache() -> None:
    """Forget which files this process verified (tests; a long-lived process that wants a re-check)."""
    _checked.clear()


__all__ = ["CheckpointError", "DigestMismatch", "file_sha256", "state_digest", "with_digest", "save_checkpoint",
           "load_checkpoint", "file_digests", "check_file", "verify_store", "verify_workspace", "clear_cache",
           "UNSEALED"]
