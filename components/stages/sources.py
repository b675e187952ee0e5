"""Stage ``sources``: the dataset's source files -> ``data/sources.json`` (``always_changed`` in dvc.yaml).

Runs on every ``dvc repro`` and rewrites the file only when the listing changed
(:mod:`components.data.source_listing`), so ``prepare``, which depends on it, reruns exactly when a video or
annotation file of a real dataset was added, removed or replaced. Deliberately tiny: no torch and no
MLflow run (a ``dvc repro`` that finds everything else up to date leaves no empty parent run); like
every stage it leaves its wall time (:func:`components.ops.stage_runner.record_stage_time`).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from components.data.source_listing import source_listing, write_listing
from components.core.params import ParamsError, load_params
from components.core.paths import Paths
from components.ops.stage_runner import record_stage_time, setup_logging

log = logging.getLogger(__name__)


def run(data, paths: Paths) -> bool:
    """Write the listing of ``data`` (:class:`components.core.params.DataParams`); True if the file changed."""
    changed = write_listing(source_listing(data), paths.sources)
    log.info("%s %s", paths.sources, "written (the sources changed)" if changed else "unchanged")
    return changed


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()  # its run: reading the params and listing the files
    ap = argparse.ArgumentParser(prog="python -m components.stages.sources")
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        p = load_params(args.params, args.set)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run(p.data, Paths())
    record_stage_time("sources", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
