"""What every DVC stage's ``main()`` shares: parse ``--params`` / ``--set``, load typed params, run
the stage inside an MLflow stage run, log its numbers (:func:`stage_main`).

``python -m components.stages.<name> [--params params.yaml] [--set key=value ...]``. ``--set``
exists for quick experiments outside DVC; under ``dvc repro`` edit ``params.yaml`` (or use
``dvc exp run -S key=value``) so DVC sees the change. :func:`stage_params` is the slice of params a
stage declares in ``dvc.yaml`` (what its MLflow run records as params).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

from components.core import distributed

from components.tracking import mlflow_tracking as tracking
from components.core.atomic import atomic_write_json
from components.core.params import Params, ParamsError, for_pipeline_seed, load_params, to_dict
from components.core.paths import Paths
from components.core.runtime import deterministic_torch, end_with_launcher


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def stage_params(stage: str, p: Params, dvc_yaml: Path = Path("dvc.yaml")) -> dict:
    """The slice of params a DVC stage declares in ``dvc.yaml`` (``train_sampler@tsqnet`` resolves its
    per-item section); the whole params when the stage is not declared there."""
    full = to_dict(p)
    name, _, item = stage.partition("@")
    try:
        spec = yaml.safe_load(dvc_yaml.read_text())["stages"][name]
    except (OSError, KeyError, TypeError):
        return full
    keys = [str(k) for k in (spec.get("do") or spec).get("params", [])]
    if item and "matrix" in spec:  # a matrix item: its values joined by '-' in the matrix's key order
        fields = dict(zip(spec["matrix"], item.split("-", len(spec["matrix"]) - 1)))
        keys = [re.sub(r"\$\{item\.(\w+)\}", lambda m: str(fields.get(m.group(1), "")), k) for k in keys]
    elif item:  # a foreach item: resolve ${key} and ${item.<field>} from the literal dict or the params var
        items = spec.get("foreach")
        if isinstance(items, str) and items.startswith("${"):
            items = full.get(items.strip("${}"), {})
        fields = items.get(item, {}) if isinstance(items, dict) else {}
        keys = [k.replace("${key}", item) for k in keys]
        keys = [re.sub(r"\$\{item\.(\w+)\}", lambda m: str(fields.get(m.group(1), "")), k) for k in keys]
    out: dict = {}
    for key in keys:
        node, parts = full, str(key).split(".")
        try:
            for part in parts:
                node = node[part]
        except (KeyError, TypeError):
            continue
        tgt = out
        for part in parts[:-1]:
            tgt = tgt.setdefault(part, {})
        tgt[parts[-1]] = node
    return out


def always_changed_stages(dvc_yaml: Path = Path("dvc.yaml")) -> set[str]:
    """The stages ``dvc.yaml`` marks ``always_changed`` (``sources``): DVC runs them on every repro by
    design, so a repro that ran only these ran nothing (no MLflow run either)."""
    try:
        stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages") or {}
    except OSError:
        return set()
    return {name for name, spec in stages.items() if isinstance(spec, dict) and spec.get("always_changed")}


def stage_main(name: str, run: Callable[[Params, Paths], object], argv: list[str] | None = None,
               run_name: str | Callable[[Params], str] | None = None,
               effective: Callable[[Params], Params] | None = None,
               ddp: tuple[str, list[str]] | None = None) -> int:
    """Parse ``--params`` / ``--set``, run the stage inside an MLflow stage run (a child of
    ``$SALIENT_PARENT_RUN_ID`` when a flow or sweep set it; off with ``SALIENT_TRACKING=0``),
    log its returned numbers as metrics (nested mappings as ``a/b``), and return the exit status.

    The run's params are the stage's ``dvc.yaml`` params slice; ``effective(params)``, when given, is
    what the stage really runs with (an ablation's sampler with its overrides applied), and its
    sections replace the declared ones, so ``ablate@tsqnet_vqm_only`` records ``tsqnet.branches = vqm``.
    A stage returns no per-K table: K is a step (:mod:`components.tracking.variant_runs`), not a name part.

    ``ddp = (module, argv)`` marks a trainer stage: with ``distributed.launcher: torchrun`` it replaces
    this process by ``torchrun ... -m module argv`` (:func:`components.core.distributed.torchrun_command`);
    under torchrun every rank joins the process group, and only rank 0 tracks, logs at INFO and
    writes (:mod:`components.core.distributed`)."""
    ap = argparse.ArgumentParser(prog=f"python -m components.stages.{name}")
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    ap.add_argument("--pipeline-seed", type=int, default=None, metavar="S",
                    help="run for pipeline seed S (one of pipeline.seeds): seeds offset, outputs under "
                         "data/s<S>/ and reports/s<S>/ (what dvc.yaml's matrix stages pass)")
    args = ap.parse_args(argv)
    setup_logging()
    log = logging.getLogger(f"components.stages.{name}")
    try:
        params = load_params(args.params, args.set)
        run_params = params if args.pipeline_seed is None else for_pipeline_seed(params, args.pipeline_seed)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dp = params.distributed
    if ddp is not None and dp.launcher == "torchrun" and not distributed.launched_by_torchrun():
        cmd = distributed.torchrun_command(ddp[0], ddp[1], dp.nproc, dp.nnodes, dp.rdzv_endpoint)
        log.info("distributed.launcher is torchrun: %s", " ".join(cmd))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(cmd[0], cmd)  # the same pid: DVC's stop and exit status reach torchrun
    if ddp is not None and distributed.launched_by_torchrun():
        state = distributed.init(dp.backend, params.compute.device, dp.timeout)
        if not state.is_main:  # one MLflow run, one log: rank 0's
            os.environ["SALIENT_TRACKING"] = "0"
            logging.getLogger().setLevel(logging.WARNING)
    try:
        return _run_stage(name, run, args, params, run_params, run_name, effective, log)
    finally:
        distributed.shutdown()


def _run_stage(name, run, args, params, run_params, run_name, effective, log) -> int:
    deterministic_torch()
    end_with_launcher()  # a stopped `dvc repro` stops its stage instead of orphaning it
    t0 = time.perf_counter()
    stage = (run_name(params) if callable(run_name) else run_name) or name  # e.g. ablate@x
    paths, seeded = Paths(), {}
    if args.pipeline_seed is not None:  # the matrix stage DVC runs: seed first, e.g. ablate@0-x
        group, _, item = stage.partition("@")
        stage = f"{group}@{args.pipeline_seed}" + (f"-{item}" if item else "")
        paths, seeded = paths.seeded(args.pipeline_seed), {"pipeline_seed": args.pipeline_seed}
    logged = {**stage_params(stage, params), **(stage_params(stage, effective(params)) if effective else {}),
              **seeded}
    tags = {"dvc.stage": stage, **{k: str(v) for k, v in seeded.items()}}
    with tracking.stage_run(stage, logged, tags=tags, tracking=params):
        result = run(run_params, paths)
        seconds = time.perf_counter() - t0
        tracking.log_metrics({"stage_seconds": seconds, **(result if isinstance(result, dict) else {})})
    log.info("stage %s finished in %.1f s", stage, seconds)
    record_stage_time(stage, seconds)
    return 0


#: Where each stage process leaves its wall time (not a DVC output: timings are never reproducible).
STAGE_TIMES = Path(".salient/stage_times")


def process_seconds() -> float:
    """Seconds since this process started (its imports included), from the OS's start time."""
    import psutil

    return time.time() - psutil.Process().create_time()


def record_stage_time(stage: str, run_seconds: float, folder: Path = STAGE_TIMES) -> None:
    """Leave ``<folder>/<stage>.json``: the stage's own run time and the whole process's (imports,
    MLflow and all: what a user waits for), with the time it finished, for :func:`stage_times`."""
    atomic_write_json(folder / f"{stage}.json", {"stage": stage, "run_seconds": round(run_seconds, 2),
                                                  "process_seconds": round(process_seconds(), 2),
                                                  "finished": time.time()})


def stage_times(since: float, folder: Path = STAGE_TIMES) -> list[dict]:
    """The stage times recorded after ``since`` (a ``time.time()``), slowest first; unreadable files
    are skipped (a stage killed mid-write leaves none, :mod:`components.core.atomic`)."""
    import json

    rows = []
    for f in sorted(folder.glob("*.json")):
        try:
            row = json.loads(f.read_text())
            if float(row["finished"]) >= since:
                rows.append(row)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(rows, key=lambda r: (-float(r["process_seconds"]), r["stage"]))


def stage_time_table(rows: list[dict], wall: float | None = None) -> str:
    """A markdown table of :func:`stage_times` rows (slowest first) with each stage's share of the
    summed process time, and the total; ``wall`` adds the command's own wall time."""
    total = sum(float(r["process_seconds"]) for r in rows)
    lines = ["| stage | seconds | of which in the stage's run | share |", "|---|---:|---:|---:|"]
    for r in rows:
        sec = float(r["process_seconds"])
        lines.append(f"| {r['stage']} | {sec:.1f} | {float(r['run_seconds']):.1f} | "
                     f"{100 * sec / total if total else 0:.1f}% |")
    lines.append(f"| **all {len(rows)} stages** | **{total:.1f}** | | 100% |")
    if wall is not None:
        lines.append(f"| (wall time of the command, DVC's own work included) | {wall:.1f} | | |")
    return "\n".join(lines)
