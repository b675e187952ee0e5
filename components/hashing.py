"""Fingerprints that key resumable work (checkpoints, partial stores) to exactly one configuration."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from components.params import to_dict


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
