"""Fingerprints that key resumable work (checkpoints, partial stores) to exactly one configuration.

A configuration is the params, the inputs (by content) *and the code*: :func:`code_fingerprint` of
a module is the digest of every project file it imports (the same closure ``dvc.yaml`` lists as the
stage's deps, :mod:`components.core.depgraph`), so a checkpoint written by other code is never resumed.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from components.core.depgraph import build_graph, closure
from components.core.params import to_dict

#: The checkout (or install) root that holds ``components/`` and ``flows/``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # components/core/hashing.py


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """sha1 over params sections, plain data and file contents (``Path`` parts are hashed by content)."""
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, Path):
            h.update(file_digest(part).encode() if part.is_file() else str(part).encode())
        else:
            h.update(json.dumps(to_dict(part), sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_fingerprint(module: str) -> str:
    """sha1 over the relative path and content of every project file ``module`` imports (itself
    included, transitively, registries' members too): the code that can change what it computes."""
    g = build_graph(PROJECT_ROOT)
    if module not in g.files:
        raise KeyError(f"{module} is not a module of {PROJECT_ROOT}")
    h = hashlib.sha1()
    for m in sorted(closure(g, module)):
        f = g.files[m]
        h.update(f.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]
