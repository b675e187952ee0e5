"""``salient benchmark`` / ``make benchmark``: the benchmark profile run end to end, the normal way.

A *profile* (``profiles/<name>.yaml``) is a partial params tree merged over ``params.yaml``. The run
happens in a workspace of its own (default ``.salient/bench/<name>/``) so the demo's outputs in the
checkout are untouched: this checkout's files (``git ls-files``, so uncommitted edits count) are copied
there, ``params.yaml`` is the merged tree (validated by the typed loader first), and ``dvc repro`` runs
the whole pipeline, every pipeline seed included. Stopping and rerunning resumes: DVC skips the
finished stages and the trainers resume their checkpoints. When it finishes, the workspace's
``dvc.lock``, ``params.yaml``, ``reports/`` and ``results/`` are recorded under ``benchmarks/<name>/`` in the
checkout (replaced as a whole, never half-written), with the wall time in ``timing.json``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.core.atomic import atomic_write_text
from components.core.params import ParamsError, load_params, to_dict
from components.ops.processes import dvc_command, venv_env

log = logging.getLogger(__name__)
SKIP = ("reports/", "dvc.lock", "params.yaml", "benchmarks/", "results/", "data/")


def merge(base: dict, over: dict) -> dict:
    """``over`` merged into ``base`` (nested mappings merged, anything else replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "ablations" else v
    return out


def profile_tree(profile: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A profile's partial params tree; ``extends: other.yaml`` (relative to the profile's folder)
    merges the profile over that one first, so a profile can add to another without copying it."""
    profile = Path(profile)
    if profile.resolve() in _seen:
        raise ParamsError(f"{profile}: 'extends' loops back to itself ({' -> '.join(map(str, _seen))})")
    over = yaml.safe_load(profile.read_text()) or {}
    if not isinstance(over, dict):
        raise ParamsError(f"{profile}: a profile is a mapping of params sections, got {type(over).__name__}")
    parent = over.pop("extends", None)
    if parent is None:
        return over
    return merge(profile_tree(profile.parent / str(parent), (*_seen, profile.resolve())), over)


def profile_params(root: Path, profile: Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """The merged, validated params tree of ``profile`` over ``root/params.yaml``, then the dotted
    ``overrides`` (``{"data.synthetic.distractor_fraction": 0.3}``: one point of a sweep)."""
    base = yaml.safe_load((root / "params.yaml").read_text()) or {}
    tree = merge(base, profile_tree(Path(profile)))
    with tempfile.TemporaryDirectory() as d:  # the typed loader's errors name the key
        f = Path(d) / "params.yaml"
        f.write_text(yaml.safe_dump(tree, sort_keys=False))
        return to_dict(load_params(f, dict(overrides or {})))


def copy_checkout(root: Path, dst: Path, skip: tuple[str, ...]) -> None:
    """The checkout's files (``git ls-files``: tracked plus untracked, not ignored) into ``dst``, except
    paths starting with one of ``skip``; a file already there with the same bytes is left alone."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split()
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        src = Path(root) / f
        if src.is_file() and not f.startswith(skip):
            out = dst / f
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists() or out.read_bytes() != src.read_bytes():
                shutil.copy2(src, out)


def sync_workspace(root: Path, ws: Path, params: dict) -> None:
    """Copy the checkout's files into ``ws`` (outputs and params excepted) and write its params.yaml."""
    copy_checkout(root, ws, SKIP)
    atomic_write_text(ws / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    if not (ws / ".git").exists():  # a repository of its own: the checkout's git ignores .salient/
        subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    if not (ws / ".dvc").exists():
        subprocess.run(dvc_command() + ["init", "-q"], cwd=ws, check=True)


def record(ws: Path, dest: Path, wall: float, profile: Path, overrides: Mapping[str, Any] | None = None) -> None:
    """``ws``'s dvc.lock, params.yaml, reports/ and results/ -> ``dest`` (swapped in whole)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(ws / "dvc.lock", tmp / "dvc.lock")
    shutil.copy2(ws / "params.yaml", tmp / "params.yaml")
    shutil.copytree(ws / "reports", tmp / "reports")
    if (ws / "results").is_dir():  # evaluate's per-seed grids and scores: `summary` reruns from them alone
        shutil.copytree(ws / "results", tmp / "results")
    atomic_write_text(tmp / "timing.json", json.dumps({"profile": str(profile), "overrides": dict(overrides or {}),
                                                       "wall_seconds": round(wall, 1),
                                                       "cpu_threads": os.cpu_count(),
                                                       "note": "this invocation only: stages DVC found up to date "
                                                               "were not rerun"}, indent=1) + "\n")
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def run_benchmark(root: Path, profile: Path, workspace: Path | None = None, record_to: Path | None = None,
                  targets: list[str] | None = None, overrides: Mapping[str, Any] | None = None) -> int:
    """Run ``profile`` (plus dotted ``overrides``) end to end in ``workspace`` and, when the whole
    pipeline finished, record it in ``record_to`` (default ``benchmarks/<profile>``). Returns the exit code."""
    root = Path(root).resolve()
    name = Path(profile).stem
    ws = Path(workspace) if workspace else root / ".salient" / "bench" / name
    params = profile_params(root, Path(profile), overrides)
    sync_workspace(root, ws, params)
    seeds = params["pipeline"]["seeds"]
    log.info("benchmark %s in %s: pipeline seeds %s", name, ws, seeds)
    t0 = time.perf_counter()
    rc = subprocess.run(dvc_command() + ["repro", *(targets or [])], cwd=ws, env=venv_env()).returncode
    wall = time.perf_counter() - t0
    if rc:
        log.error("dvc repro failed (exit %d) after %.0f s; rerun `salient benchmark` to resume", rc, wall)
        return rc
    if not targets:
        dest = record_to or root / "benchmarks" / name
        record(ws, dest, wall, profile, overrides)
        log.info("benchmark %s finished in %.0f s; recorded in %s", name, wall, dest)
    return 0
