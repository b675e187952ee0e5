"""Prefect flow ``extract``: the feature store as shard tasks and one merge task (docs/design.md §5).

    python -m flows.extract_shards --shards 4                       # a local run (temporary Prefect API if none)
    prefect deployment run 'extract/extract' -p shards=4      # on a worker of the pool (salient serve)
    prefect deployment run 'extract/extract' -p shards=8 -p spread=true   # shards on several workers

Orchestration only (docs/design.md §4): every piece of work is the stage's own command line in the project
directory, ``python -m components.stages.extract --shard i/S`` per shard and ``--merge`` once, its
output streamed line by line into the task's logger (:func:`flows.pipeline.run_logged`). Each shard is
a task of its own, retried alone ``extract.shard_retries`` times (a retry resumes the shard's part);
at most ``parallel`` run at once. The merge task runs after every shard succeeded; it checks each
part's fingerprint and rows and publishes the store by rename (:mod:`components.store.extraction`), so a
failed or cancelled flow run never leaves a half store.

``spread=true``: each shard task starts a run of the ``extract-shard`` deployment (the flow
:func:`extract_shard_flow`) and waits for it, so the pool's workers, one per GPU machine, share the
shards. The parts are written under the workers' ``data/`` and merged where this flow runs: the
workers must share that folder (a network file system); without one, run ``spread=false`` (the
shards then share the GPUs of the machine that runs the flow).

The store equals ``dvc repro extract`` byte for byte; DVC does not know about a store written this
way until ``dvc commit extract`` (or ``dvc repro``, which finds it up to date only if dvc.lock agrees).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import components  # noqa: F401, I001  (before prefect: telemetry off, PREFECT_HOME inside the project)
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.core.params import for_pipeline_seed, load_params
from components.core.paths import Paths
from components.ops.processes import venv_env
from flows.pipeline import RETRY_DELAY_SECONDS, run_logged

SHARD_DEPLOYMENT = "extract-shard/extract-shard"


class ShardTaskFailed(RuntimeError):
    """A shard or merge command exited non-zero; the message ends with its output's tail."""


def stage_command(args: list[str], params_file: str, overrides: list[str] | None, pipeline_seed: int | None,
                  folders: dict[str, str | None] | None = None) -> list[str]:
    """``python -m components.stages.extract ARGS --params F [--set K=V ...] [--pipeline-seed S] [--features D ...]``."""
    cmd = [sys.executable, "-m", "components.stages.extract", *args, "--params", params_file]
    cmd += [a for o in overrides or [] for a in ("--set", o)]
    cmd += ["--pipeline-seed", str(pipeline_seed)] if pipeline_seed is not None else []
    cmd += [a for k, v in (folders or {}).items() if v for a in (f"--{k}", str(v))]
    return cmd


def _run(cmd: list[str], project: str, label: str) -> None:
    logger = get_run_logger()
    t0 = time.perf_counter()
    rc, tail = run_logged(cmd, project, {**venv_env(), "PYTHONUNBUFFERED": "1", "SALIENT_TRACKING": "0"}, logger, label)
    if rc:
        logger.error("%s failed (exit %d); last lines:\n%s", label, rc, tail)
        raise ShardTaskFailed(f"{label} exited with {rc}; last lines:\n{tail}")
    logger.info("%s done in %.1f s", label, time.perf_counter() - t0)


@task(cache_policy=NO_CACHE, retry_delay_seconds=RETRY_DELAY_SECONDS, task_run_name="shard {shard}/{shards}")
def extract_shard(shard: int, shards: int, params_file: str, overrides: list[str] | None, pipeline_seed: int | None,
                  project: str, folders: dict[str, str | None], spread: bool = False) -> int:
    """One shard: its command here, or (``spread``) a run of the ``extract-shard`` deployment on the pool."""
    if spread:
        from prefect.deployments import run_deployment

        fr = run_deployment(SHARD_DEPLOYMENT, timeout=None, parameters={
            "shard": shard, "shards": shards, "params_file": params_file, "overrides": overrides,
            "pipeline_seed": pipeline_seed, "folders": folders})
        if not (fr.state and fr.state.is_completed()):
            raise ShardTaskFailed(f"shard {shard}/{shards}: flow run {fr.name} ended {fr.state and fr.state.name}")
        return shard
    _run(stage_command(["--shard", f"{shard}/{shards}"], params_file, overrides, pipeline_seed, folders),
         project, f"shard {shard}/{shards}")
    return shard


@task(cache_policy=NO_CACHE, retry_delay_seconds=RETRY_DELAY_SECONDS, task_run_name="merge {shards} shards")
def merge(shards: int, params_file: str, overrides: list[str] | None, pipeline_seed: int | None, project: str,
          folders: dict[str, str | None]) -> None:
    """Check every part and publish the store (``--merge``)."""
    _run(stage_command(["--merge", "--merge-shards", str(shards)], params_file, overrides, pipeline_seed, folders),
         project, "merge")


@flow(name="extract")
def extract_flow(shards: int | None = None, parallel: int | None = None, spread: bool = False,
                 params_file: str = "params.yaml", overrides: list[str] | None = None,
                 pipeline_seed: int | None = None, project: str = ".", prepared: str | None = None,
                 encoders: str | None = None, features: str | None = None) -> dict:
    """The feature store as shard tasks (each retried alone) and one merge task.

    Args:
        shards: Shards S; null: `extract.shards` of the params file (the store is the same for any S).
        parallel: Shard tasks running at once; null: all S (each a process of its own).
        spread: Run each shard as a run of the `extract-shard` deployment, so several workers share them (needs a shared data folder).
        params_file: The params file, relative to the project folder (the worker's checkout).
        overrides: Params fixed for this run, as KEY=VALUE strings, e.g. ["extract.batch_videos=16"].
        pipeline_seed: The pipeline seed whose store is written (data/s<seed>/features); null: the plain layout.
        project: The project folder the commands run in (the pull step already changed into it).
        prepared: Another prepared-data folder (default: the pipeline's data/prepared).
        encoders: Another encoders folder (default: the pipeline's).
        features: Where the store is published (default: the pipeline's data/[s<seed>/]features).
    """
    logger = get_run_logger()
    p = load_params(Path(project) / params_file, list(overrides or []))
    if pipeline_seed is not None:
        p = for_pipeline_seed(p, pipeline_seed)
    S = int(shards or p.extract.shards)
    parallel = max(1, int(parallel or S))
    folders = {k: str(Path(v).resolve()) if v else None
               for k, v in (("prepared", prepared), ("encoders", encoders), ("features", features))}
    shard_task = extract_shard.with_options(retries=p.extract.shard_retries)
    running, done = [], []
    for i in range(S):  # at most `parallel` at a time; each retried on its own
        if len(running) >= parallel:
            done.append(running.pop(0).result())
        running.append(shard_task.submit(i, S, params_file, overrides, pipeline_seed, project, folders, spread))
    done += [f.result() for f in running]
    merge.with_options(retries=1)(S, params_file, overrides, pipeline_seed, project, folders)
    base = Paths() if pipeline_seed is None else Paths().seeded(pipeline_seed)
    store = Path(features) if features else Path(project) / base.features
    logger.info("extract: %d shards merged into %s", S, store)
    return {"shards": S, "store": str(store.resolve()), "done": sorted(done)}


@flow(name="extract-shard")
def extract_shard_flow(shard: int, shards: int, params_file: str = "params.yaml", overrides: list[str] | None = None,
                       pipeline_seed: int | None = None, folders: dict[str, str | None] | None = None) -> int:
    """One shard of the store, on whichever worker of the pool picks it up (see `extract`, spread=true).

    Args:
        shard: The shard's index i, 0 <= i < shards.
        shards: The number of shards S of the whole extraction.
        params_file: The params file, relative to the worker's checkout.
        overrides: Params fixed for this run, as KEY=VALUE strings (the same as the parent flow's).
        pipeline_seed: The pipeline seed whose store is written; null: the plain layout.
        folders: Other prepared / encoders / features folders ({"features": "/shared/data/features"}).
    """
    return extract_shard.fn(shard, shards, params_file, overrides, pipeline_seed, ".", folders or {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.extract_shards", description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int)
    ap.add_argument("--parallel", type=int)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--pipeline-seed", type=int)
    args = ap.parse_args(argv)
    out = extract_flow(args.shards, args.parallel, params_file=args.params, overrides=args.set,
                       pipeline_seed=args.pipeline_seed)
    print(out["store"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
