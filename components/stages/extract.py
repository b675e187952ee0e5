"""Stage ``extract``: decode T observation frames per video once and write the feature store.

Per split (``train``, ``val``, ``test``), memory-mapped ``[N, T, ...]`` arrays (see
:func:`components.store.features.store_specs`): light-encoder features and logits, ImageNet object
scores, recognizer features and logits, audio embeddings with a has-audio mask, the frame indices
and timestamps used, per-frame ground truth, labels and a ``valid`` mask. Plus the text embeddings
of the 1000 object names and of the class names. Streams to disk (memory flat in N), resumes after
an interruption, and publishes the store atomically (:mod:`components.store.feature_store`).

``extract.shards: S > 1`` splits the work into S shard processes, each writing its own resumable
part, and one merge publishes a store byte-identical to the one-process store
(:mod:`components.store.extraction`)::

    python -m components.stages.extract                    # what dvc repro runs: S shard processes + merge
    python -m components.stages.extract --shard 1/4        # shard 1 (0-based) of 4 only, e.g. on another box
    python -m components.stages.extract --merge            # merge finished parts and publish

``--shard`` and ``--merge`` take ``--params`` / ``--set`` / ``--pipeline-seed`` as the stage does;
``--prepared`` / ``--encoders`` / ``--features`` point them at other folders, ``--threads`` sets torch's
threads. The Prefect flow ``flows/extract_shards.py`` runs the same shards as tasks.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from components.store.extraction import (ShardError, extract_store, merge_shards, run_shard, run_shards_locally,
                                   write_params)
from components.core.params import Params, ParamsError, for_pipeline_seed, load_params
from components.core.paths import Paths
from components.ops.processes import venv_env
from components.core.runtime import deterministic_torch, die_with_parent, end_with_launcher
from components.core.scratch import collect
from components.ops.stage_runner import setup_logging, stage_main
from components.store.feature_store import StoreError

log = logging.getLogger(__name__)


def run(p: Params, paths: Paths) -> Path:
    out = extract_store(p, paths) if p.extract.shards <= 1 else _sharded(p, paths)
    # remove the partial stores no current key can use (components.core.scratch)
    collect(p, paths.work, paths.features.parent, areas=(), seed=paths.pipeline_seed)
    return out


def _sharded(p: Params, paths: Paths) -> Path:
    params_file = write_params(p, paths)  # the shards get exactly these params and folders

    def command(i: int, S: int, threads: int) -> list[str]:
        return [sys.executable, "-m", "components.stages.extract", "--shard", f"{i}/{S}", "--params",
                str(params_file.resolve()), "--threads", str(threads), "--die-with-parent",
                *(a for k in ("prepared", "encoders", "features") for a in (f"--{k}", str(Path(getattr(paths, k)).resolve())))]

    stats = run_shards_locally(p, paths, command, env={**venv_env(), "SALIENT_TRACKING": "0"})
    log.info("extract: %d shards merged (attempts %s, merge %.1f s)", p.extract.shards, stats["attempts"],
             stats["merge_seconds"])
    return paths.features


def _shard_or_merge(args: argparse.Namespace) -> int:
    """``--shard i/S`` or ``--merge``: no MLflow run of their own (the stage's run, or the flow's, is it)."""
    setup_logging()
    if args.die_with_parent:
        die_with_parent()
    try:
        p = load_params(args.params, args.set)
        if args.pipeline_seed is not None:
            p = for_pipeline_seed(p, args.pipeline_seed)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = Paths() if args.pipeline_seed is None else Paths().seeded(args.pipeline_seed)
    paths = replace(paths, **{k: Path(v) for k in ("prepared", "encoders", "features") if (v := getattr(args, k))})
    deterministic_torch()
    end_with_launcher()
    try:
        if args.merge:
            merge_shards(p, paths, args.merge_shards or p.extract.shards)
        else:
            i, _, S = args.shard.partition("/")
            run_shard(p, paths, int(i), int(S), threads=args.threads)
    except (ShardError, StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--shard", metavar="I/S", help="run shard I (0-based) of S only, into <features>.shards/I-of-S/")
    ap.add_argument("--merge", action="store_true", help="merge the finished shard parts and publish the store")
    ap.add_argument("--merge-shards", type=int, metavar="S", help="with --merge: the S of the parts (default extract.shards)")
    ap.add_argument("--threads", type=int, help="torch threads (default train_encoders.threads)")
    ap.add_argument("--die-with-parent", action="store_true", help="end when the launching process dies")
    for k in ("prepared", "encoders", "features"):
        ap.add_argument(f"--{k}", help=f"the {k} folder (default: the pipeline's)")
    args, rest = ap.parse_known_args(argv)
    if not (args.shard or args.merge):
        return stage_main("extract", run, rest)
    full = argparse.ArgumentParser(prog="python -m components.stages.extract", parents=[ap])
    full.add_argument("--params", default="params.yaml")
    full.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    full.add_argument("--pipeline-seed", type=int, default=None, metavar="S")
    args = full.parse_args(argv)
    if args.shard and ("/" not in args.shard or not all(x.strip().isdigit() for x in args.shard.split("/", 1))):
        full.error(f"--shard {args.shard!r}: want I/S, e.g. 0/2")
    return _shard_or_merge(args)


if __name__ == "__main__":
    raise SystemExit(main())
