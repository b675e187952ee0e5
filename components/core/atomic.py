"""Atomic file writes: the one place that writes a temp file beside the target and renames it.

Every output a reader (a later stage, DVC, another worker) may open is written through here, so a
crash or a kill mid-write leaves either the old file or no file, never half of one:

* :func:`atomic_path` - the context manager under all of them: yields a per-process temp path in the
  target's folder (``<name>.<pid>.tmp<suffix>``), fsyncs and ``os.replace``-s it on success, removes
  it on any error (including ``KeyboardInterrupt``).
* :func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_savez`,
  :func:`atomic_savefig` - text, JSON, ``np.savez`` and matplotlib figures through it; :func:`atomic_torch_save` - ``torch.save`` the same way, from a private
  temp folder (torch stamps the temp file's name into the archive).

The temp name carries the pid, so two processes writing the same target never share a temp file;
the last rename wins and both renames leave a complete file.

Under DDP (:mod:`components.core.distributed`) only rank 0 publishes: on the other ranks, which compute
the same outputs, every write here goes to its temp file and is discarded.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from components.core.distributed import is_main


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit fsync it and rename it onto ``path``.

    ``suffix`` is appended to the temp name for writers that insist on an extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        if not is_main():
            tmp.unlink(missing_ok=True)
            return
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (``newline`` as in :func:`open`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline=newline) as f:
            f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      trailing_newline: bool = True) -> Path:
    """``json.dumps(obj, indent=indent, sort_keys=sort_keys)`` (+ ``\\n``) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + ("\n" if trailing_newline else "")
    return atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (checkpoints, encoders, samplers).

    ``torch.save`` names the zip's top folder after the file it writes (``x.pt.tmp`` -> ``x.pt/...``),
    so the temp file is ``<name>.tmp`` inside a private per-process folder: the bytes never depend on
    the pid or on which process wrote them.
    """
    import torch  # deferred: heavy optional dependency; JSON / npz writers never need it

    path = Path(path)
    if not is_main():  # another DDP rank: rank 0 writes it
        return path
    folder = path.with_name(f".{path.name}.{os.getpid()}.tmpdir")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        tmp = folder / f"{path.name}.tmp"
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``fig.savefig(path, **kwargs)`` (matplotlib) atomically; the format follows ``path``'s suffix."""
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez(path, **arrays)`` atomically: a reader never sees a half-written archive."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return Path(path)
