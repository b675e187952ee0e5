"""Loss-weight sweeps with Optuna: orchestration only (the trial logic is ``components.tuning``).

    python -m flows.sweep                          # sweep.trials trials in this process
    python -m flows.sweep --workers 2 --trials 12  # 2 worker processes filling one study to 12 more trials
    python -m flows.sweep --set sweep.sampler=nsnet --set sweep.pruner=halving
    python -m flows.sweep --prefect --workers 2    # the Prefect flow: trials as tasks (2 at a time)

Every trial trains ``sweep.sampler`` (the first seed of ``train_sampler.seeds``) for ``sweep.epochs``
with loss weights from the sampler class's ``sweep_space`` (TSQNet alpha, beta in [0, 1.5]; NSNet gamma in
[0, 1]), reports val mAP after every epoch to the pruner (``sweep.pruner``), and is an MLflow child
run of one parent run ``sweep <study>``. Trials that raise are recorded FAIL; the study goes on.
Checkpoints: ``.salient/work/sweep/<study>/<trial>/`` (scratch, not DVC outputs).

The best weights are written to ``data/tuned_losses.json``; params.yaml is never edited. Apply them
yourself: copy the values into params.yaml, or run the ``apply`` command the file spells out
(``dvc exp run -S tsqnet.alpha=0.83 -S tsqnet.beta=0.41``) to retrain and evaluate with them.

``--workers N`` starts N processes that fill the study together up to its settled trials plus ``--trials``
(:func:`components.tuning.storage.fill_study`): a worker that dies is made up for by the others (its
running trial is failed by the heartbeat and retried), and none is run twice. Each worker retries a lost
database connection for ``sweep.reconnect`` seconds, then stops naming the cause.

Workers share the study through ``sweep.storage``: the default SQLite file for processes on one
machine; ``postgresql://user@host:5432/optuna`` for workers on several machines (docs/design.md §5; the
password from ``PGPASSWORD`` or ``~/.pgpass``, never the URL) - start ``python -m flows.sweep
--trials N`` (or ``--workers N``) on each, or deploy :func:`sweep_flow` to a Prefect work pool.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import components  # noqa: F401, I001  (before prefect: telemetry off, PREFECT_HOME inside the project)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from components.tracking import mlflow_tracking as tracking
from components.core.params import Params, for_pipeline_seed, load_params, to_dict
from components.core.paths import Paths
from components.ops.stage_runner import setup_logging
from components.tuning import run_sweep, storage_from_url, sweep_study_name, write_best_losses
from components.tuning.storage import StorageUnavailable, _study, settled_trials

log = logging.getLogger(__name__)

__all__ = ["run_sweep", "split_trials", "sweep_trials", "sweep_flow", "launch_workers", "main"]


def split_trials(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` over ``workers`` as evenly as possible (the first ones get the remainder)."""
    workers = max(1, min(int(workers), max(int(n_trials), 1)))
    return [n_trials // workers + (i < n_trials % workers) for i in range(workers)]


def _params(params_file: str, overrides: Sequence[str]) -> Params:
    """The params of the first pipeline seed (a sweep tunes loss weights on one pipeline seed's features)."""
    p = load_params(params_file, list(overrides))
    return for_pipeline_seed(p, p.pipeline.seeds[0])


def _paths(project: str, p: Params) -> Paths:
    base = Paths().under(Path(project)) if project not in ("", ".") else Paths()
    return base.seeded(p.pipeline.seeds[0])


@task(cache_policy=NO_CACHE, name="sweep-trials")
def sweep_trials(params_file: str, overrides: list[str], n_trials: int, worker_id: int, project: str = ".",
                 until: int | None = None) -> dict:
    """``n_trials`` trials of the study (one Prefect task), or with ``until`` trials until the study holds that
    many settled ones (shared with the flow's other tasks); the flow's parent MLflow run is inherited."""
    p = _params(params_file, overrides)
    return run_sweep(p, _paths(project, p), n_trials, worker_id, parent=False,
                     write_best=False, until=until)


def _target(p: Params, n: int) -> int:
    """The settled trials the study must hold after a sweep of ``n`` more (the study made if new, before
    workers race for it): what every worker of the sweep fills it up to."""
    study = _study(sweep_study_name(p), storage_from_url(p.sweep.storage, 0, p.sweep.reconnect), None)
    return settled_trials(study)[0] + n


def _best(p: Params, project: str = ".") -> dict | None:
    import optuna

    study = optuna.load_study(study_name=sweep_study_name(p), storage=storage_from_url(p.sweep.storage))
    return write_best_losses(p, _paths(project, p), study, p.sweep.storage)


@flow(name="sweep")
def sweep_flow(n_trials: int | None = None, workers: int = 1, overrides: list[str] | None = None,
               params_file: str = "params.yaml", trials_per_task: int = 1, project: str = ".") -> dict | None:
    """``n_trials`` loss-weight trials as Prefect tasks, all in one study; then ``data/tuned_losses.json``.

    ``sweep_flow.fn(...)`` runs the same body without Prefect (tasks become plain calls, one after
    another).

    Args:
        n_trials: Trials of this run (added to the study); null: `sweep.trials` of the params file.
        workers: Tasks running at once (threads of this process), all filling one Optuna study.
        overrides: Params fixed for every trial, as KEY=VALUE strings, e.g. ["sweep.sampler=nsnet"].
        params_file: The params file, relative to the working directory (the worker's checkout).
        trials_per_task: Trials each Prefect task runs, one after another.
        project: The folder whose `data/` (the features trained on) and `.salient/work` are used.
    """
    overrides = list(overrides or [])
    p = _params(params_file, overrides)
    n = p.sweep.trials if n_trials is None else int(n_trials)
    chunks = split_trials(n, max(1, -(-n // max(1, trials_per_task))))
    in_flow = FlowRunContext.get() is not None
    until = _target(p, n) if in_flow and workers > 1 else None  # tasks at once: fill to one count together
    with tracking.parent_run(f"sweep {sweep_study_name(p)}", {"sweep": to_dict(p.sweep)}, tracking=p):
        if in_flow:
            running, done = [], []
            for i, k in enumerate(chunks):
                if len(running) >= max(1, workers):
                    done.append(running.pop(0).result())
                running.append(sweep_trials.submit(params_file, overrides, k, i, project, until))
            done += [f.result() for f in running]
        else:
            done = [sweep_trials.fn(params_file, overrides, k, i, project) for i, k in enumerate(chunks)]
    log.info("sweep %s: %d tasks done", sweep_study_name(p), len(done))
    return _best(p, project)


def launch_workers(params_file: str, overrides: Sequence[str], n_trials: int, workers: int) -> int:
    """Start ``workers`` processes of this module on one study (inside one MLflow parent run), all filling it
    up to its settled trials now plus ``n_trials`` (a worker that dies is made up for by the others), and
    wait; returns the number of workers that failed when the study fell short of that count, else 0."""
    p = _params(params_file, overrides)
    until = _target(p, n_trials)  # also creates the database and the study before the workers race for them
    sets = [a for o in overrides for a in ("--set", o)]
    with tracking.parent_run(f"sweep {sweep_study_name(p)}", {"sweep": to_dict(p.sweep), "workers": workers},
                             tracking=p):
        procs = [subprocess.Popen([sys.executable, "-m", "flows.sweep", "--params", params_file, *sets,
                                   "--trials", str(k), "--until", str(until), "--worker-id", str(i),
                                   "--no-parent", "--no-best"], env=dict(os.environ))
                 for i, k in enumerate(split_trials(n_trials, workers))]
        codes = [proc.wait() for proc in procs]
    failed = sum(1 for c in codes if c)
    if failed:
        reached = _target(p, 0)
        log.error("%d of %d sweep workers failed (exit codes %s); the study holds %d of %d settled trials", failed,
                  len(codes), codes, reached, until)
        failed = failed if reached < until else 0  # the others made up for them: the sweep is complete
    best = _best(p)
    if best:
        log.info("best %s: %s (val %.4f) -> %s", best["study"], best["params"], best["best_value"],
                 _paths(".", p).data / "tuned_losses.json")
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    ap.add_argument("--trials", type=int, help="trials in all (default: sweep.trials)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes on the one study")
    ap.add_argument("--prefect", action="store_true", help="run as the Prefect flow (trials as tasks)")
    ap.add_argument("--until", type=int, help=argparse.SUPPRESS)  # fill the study to this many settled trials
    ap.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--no-parent", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-best", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup_logging()  # a no-op here: importing Prefect gave the root logger a handler, at WARNING
    for name in ("components", __name__):  # so the workers' INFO lines (storage, trials, best) show
        logging.getLogger(name).setLevel(logging.INFO)
    p = _params(args.params, args.set)
    n = p.sweep.trials if args.trials is None else args.trials
    if args.prefect:
        sweep_flow(n, args.workers, args.set, args.params)
        return 0
    if args.workers > 1:
        return 1 if launch_workers(args.params, args.set, n, args.workers) else 0
    try:
        res = run_sweep(p, _paths(".", p), n, args.worker_id, parent=not args.no_parent,
                        write_best=not args.no_best, until=args.until)
    except StorageUnavailable as e:  # the cause, not Optuna's follow-up errors
        log.error("sweep worker %d stopped: %s", args.worker_id, e)
        return 3
    log.info("sweep worker %d done: %s", args.worker_id, res.get("trials"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
