"""Resume scratch (training checkpoints, frame banks, ``.partial`` stores) and what keys it: ``salient gc``.

Resumable work is kept under a key (:mod:`components.core.hashing`): a rerun with the same code, params and
inputs resumes it; anything else starts over beside it, and the old folder would stay forever. So
every such folder gets a stamp, ``resume.json`` (:meth:`ScratchKey.stamp`), recording what its key is
made of: the code fingerprint of one module, the fingerprint of each params section it reads, and the
digest of each input file (the manifest, the encoders, the store's ``meta.json``), plus the pipeline
seed and sampler variant its params were resolved for. :func:`why_stale` recomputes those from the
current checkout, params and files: a folder is *stale* when its module's code, one of its params
sections or one of its inputs changed, or when it carries no stamp (written before stamps, hence by
other code); no current stage's key can use it.

:func:`collect` removes the stale ones (or, ``dry_run``, lists them with their sizes):

* ``<work>/train_encoders/<key>/`` (encoder checkpoints, and the frame bank's folder),
  ``<work>/train_recognizer/<key>/``, ``<work>/train_sampler/<sampler>/<key>/``;
* every ``*.partial`` folder under ``data/`` (an interrupted ``extract``: ``data/s0/features.partial``,
  a shard's ``features.shards/<i>-of-<S>.partial``).

Loss-sweep trial folders (``<work>/sweep/``) are never touched: a finished trial's checkpoint is a
result. Every stage that resumes calls :func:`collect` on its own area at its end (after its outputs
are written), and ``salient gc`` does it for the whole workspace.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from components.core import distributed
from components.core.atomic import atomic_write_json
from components.core.hashing import code_fingerprint, file_digest, fingerprint
from components.core.params import Params, ParamsError, for_pipeline_seed, variant_params

log = logging.getLogger(__name__)
STAMP = "resume.json"
BASE = object()  # "the params as loaded from the file", not yet resolved for a pipeline seed
#: ``<work>/<area>`` -> how deep its keyed folders sit (train_sampler: ``<sampler>/<key>``).
WORK_AREAS = {"train_encoders": 1, "train_recognizer": 1, "train_sampler": 2}


def _section(p: Params, dotted: str):
    node = p
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@dataclass(frozen=True)
class ScratchKey:
    """What a resumable folder's key is made of (module docstring)."""
    module: str  # whose code fingerprint (import closure) keys it
    sections: tuple[str, ...]  # params sections (dotted for one field) it reads
    inputs: tuple[Path, ...] = ()  # files it reads, by content
    variant: str | None = None  # the sampler variant (an ablation) its params were resolved for
    pipeline_seed: int | None = None

    def record(self, p: Params) -> dict:
        return {"module": self.module, "code": code_fingerprint(self.module),
                "sections": {s: fingerprint(_section(p, s)) for s in self.sections},
                "inputs": {str(f): file_digest(f) if Path(f).is_file() else None for f in self.inputs},
                "variant": self.variant, "pipeline_seed": self.pipeline_seed}

    def input_parts(self) -> list[Path | None]:
        """The inputs as :func:`components.core.hashing.fingerprint` parts: a file by content, a missing one as
        None (never by its path's spelling, which differs between processes and workspaces)."""
        return [f if Path(f).is_file() else None for f in self.inputs]

    def stamp(self, folder: Path, p: Params) -> None:
        """Write ``<folder>/resume.json`` for params ``p`` (the ones the stage runs with)."""
        if distributed.is_main():
            Path(folder).mkdir(parents=True, exist_ok=True)
            atomic_write_json(Path(folder) / STAMP, self.record(p), sort_keys=True)


def why_stale(folder: Path, base: Params, seed: int | None | object = BASE) -> str | None:
    """None when ``folder``'s stamp matches the code, params and input files of now; else why no
    current key can use it. ``base`` is the params file as loaded (``seed=BASE``: resolved here for
    the stamp's pipeline seed) or the params a stage runs with for pipeline seed ``seed``: then a
    folder of another pipeline seed is not judged (None)."""
    try:
        rec = json.loads((Path(folder) / STAMP).read_text())
        key = ScratchKey(rec["module"], tuple(rec["sections"]), tuple(Path(f) for f in rec["inputs"]),
                         rec.get("variant"), rec.get("pipeline_seed"))
    except FileNotFoundError:
        return f"no {STAMP}: written before scratch was stamped, by other code"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {STAMP} ({type(e).__name__})"
    if seed is not BASE and key.pipeline_seed is not None and key.pipeline_seed != seed:
        return None  # another pipeline seed's work: that seed's stage (or `salient gc`) judges it
    try:
        p = base if key.pipeline_seed is None or seed is not BASE else for_pipeline_seed(base, key.pipeline_seed)
        p = p if not key.variant else variant_params(p, key.variant)[1]
        now = key.record(p)
    except ParamsError as e:
        return f"its pipeline seed / variant is no longer configured ({e})"
    except (KeyError, AttributeError) as e:
        return f"its module or params section no longer exists ({e})"
    if now["code"] != rec["code"]:
        return f"the code of {key.module} changed"
    changed = [s for s in key.sections if now["sections"][s] != rec["sections"].get(s)]
    if changed:
        return f"params {', '.join(changed)} changed"
    moved = [f for f, d in now["inputs"].items() if d != rec["inputs"].get(f)]
    return f"input {', '.join(moved)} changed" if moved else None


def scratch_folders(work: Path, data: Path, areas: Iterable[str] | None = None) -> list[Path]:
    """The keyed folders under ``work``'s :data:`WORK_AREAS` (or only ``areas``) and the ``*.partial``
    folders under ``data`` (outermost only); ``areas=()`` with a ``data`` folder: the partials only."""
    out: list[Path] = []
    for area, depth in WORK_AREAS.items():
        if areas is not None and area not in areas:
            continue
        base = Path(work) / area
        out += sorted(d for d in base.glob("/".join(["*"] * depth)) if d.is_dir()) if base.is_dir() else []
    if data is not None and Path(data).is_dir():
        parts = sorted(d for d in Path(data).rglob("*.partial") if d.is_dir())
        out += [d for d in parts if not any(a.name.endswith(".partial") for a in d.parents)]
    return out


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def collect(p: Params, work: Path, data: Path | None, *, areas: Sequence[str] | None = None,
            dry_run: bool = False, seed: int | None | object = BASE) -> list[dict]:
    """Remove (``dry_run``: only list) every stale scratch folder (:func:`why_stale`, ``p`` and ``seed``
    as there): rows ``{path, bytes, reason}``."""
    rows = []
    if not distributed.is_main():
        return rows
    for folder in scratch_folders(work, data, areas):
        reason = why_stale(folder, p, seed)
        if reason is None:
            continue
        rows.append({"path": str(folder), "bytes": _size(folder), "reason": reason})
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s (%s)", folder, reason)
    return rows


__all__ = ["BASE", "STAMP", "WORK_AREAS", "ScratchKey", "why_stale", "scratch_folders", "collect"]
