"""Loss-weight sweeps (:func:`run_sweep`): every trial trains one sampler (one seed) through
:func:`components.training.sampler_training.train_one` with weights from the sampler class's ``sweep_space`` (TSQNet
alpha / beta, NSNet gamma), reports the val mAP after every epoch to a Median / SuccessiveHalving
pruner, and is an MLflow child run of the sweep's parent run. A trial that raises is recorded FAIL
and the study goes on. The best weights go to ``data/tuned_losses.json``, never into params.yaml:
copy them there or run ``dvc exp run -S tsqnet.alpha=... -S tsqnet.beta=...`` (the file spells the
command out). ``flows/sweep.py`` runs it from several processes / Prefect tasks on one study.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from components.tracking import mlflow_tracking as tracking
from components.core.atomic import atomic_torch_save, atomic_write_json
from components.evaluation.fusion import params_fusion
from components.models.samplers import sampler_class, sweep_space
from components.core.params import Params, params_from_dict, to_dict
from components.core.paths import Paths
from components.training.sampler_training import load_train_val, sampler_checkpoint, train_one
from components.store.sampler_data import sampler_keys
from components.store.feature_store import FeatureStore
from components.tuning.storage import _complete, _study, fill_study, storage_from_url
from components.training.val_objective import load_val, sampler_val_score

if TYPE_CHECKING:  # pragma: no cover
    import optuna

log = logging.getLogger(__name__)

TUNED_LOSSES = "tuned_losses.json"  # data/tuned_losses.json


def sweep_study_name(p: Params) -> str:
    """``sweep.study`` + the sampler, so a study never mixes two samplers' spaces."""
    return f"{p.sweep.study}-{p.sweep.sampler}"


def make_pruner(kind: str) -> "optuna.pruners.BasePruner":
    """``median``: prune below the median of earlier trials at the same epoch (after 2 complete trials
    and 1 warm-up epoch); ``halving``: asynchronous successive halving from epoch 1."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    raise ValueError(f"unknown sweep.pruner {kind!r}: median or halving")


def suggest_losses(trial: "optuna.Trial", sampler: str) -> dict[str, float]:
    """Loss weights of the sampler class's ``sweep_space`` as dotted params keys (``tsqnet.alpha``)."""
    return {f"{sec}.{key}": trial.suggest_float(f"{sec}.{key}", lo, hi) for sec, key, lo, hi in sweep_space(sampler)}


_DATA_CACHE: dict[tuple, tuple] = {}


def _sweep_inputs(p: Params, paths: Paths) -> tuple:
    """(store, (train, val) tensors, ValSet), loaded once per process and store."""
    store = FeatureStore(paths.features)
    keys = sampler_keys(p.sweep.sampler, training=True)  # AVGN also trains on its maps and frame cache
    key = (str(Path(paths.features).absolute()), store.meta.get("fingerprint"), p.evaluate.map_variant,
           tuple(p.fusion.budgets), p.frames.T, keys)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = (store, load_train_val(store, paths, keys, sampler_class(p.sweep.sampler).pseudo_labels),
                            load_val(p, paths))
    return _DATA_CACHE[key]


def sweep_objective(p: Params, paths: Paths, study_name: str) -> Callable[["optuna.Trial"], float]:
    """The objective of a loss-weight sweep trial (see the module docstring)."""
    import optuna

    name = p.sweep.sampler
    seed = p.train_sampler.seeds[0]
    fusion = params_fusion(p).get(name)

    def objective(trial: optuna.Trial) -> float:
        store, (train, val_data), val = _sweep_inputs(p, paths)
        weights = suggest_losses(trial, name)
        epochs_key = f"{sampler_class(name).schedule_section}.epochs"  # AVGN has its own schedule
        pt = params_from_dict(to_dict(p), {**weights, epochs_key: p.sweep.epochs})
        ckpt = Path(paths.work) / "sweep" / study_name / str(trial.number)
        shutil.rmtree(ckpt, ignore_errors=True)  # trial numbers are unique in a study: a leftover is stale
        pruned = None
        logged = {**weights, "sampler": name, "seed": seed, "epochs": p.sweep.epochs, "study": study_name,
                  "trial": trial.number}
        with tracking.stage_run(f"{study_name} trial {trial.number}", logged, tracking=p,
                                tags={"dvc.stage": "sweep", "optuna.study": study_name,
                                      "optuna.trial": trial.number}) as run:
            def on_epoch(model, epoch: int, row: dict) -> None:
                v = sampler_val_score(model, val_data, val, fusion)
                run.log_metrics({"val_map": v}, step=epoch)
                trial.report(v, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch}: val mAP {v:.4f}")

            try:
                # the engine's rows as engine/<key>: this run's own val_map is the fused selection's
                model, kwargs, history, *_ = train_one(pt, paths, name, seed, on_epoch, store=store,
                                                   data=(train, val_data), ckpt_dir=ckpt, log_prefix="engine")
            except optuna.TrialPruned as e:
                run.set_tags({"optuna.state": "PRUNED"})
                pruned = e
            else:
                value = sampler_val_score(model, val_data, val, fusion)
                atomic_torch_save(sampler_checkpoint(model, name, kwargs, seed, store.classes), ckpt / "sampler.pt")
                run.log_metrics({"val_map_final": value, "epochs_run": len(history or [])})
                run.set_tags({"optuna.state": "COMPLETE"})
                trial.set_user_attr("checkpoint", str(ckpt / "sampler.pt"))
        if pruned is not None:
            raise pruned
        return value

    return objective


def _trial_counts(study: "optuna.Study") -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def write_best_losses(p: Params, paths: Paths, study: "optuna.Study", storage_url: str) -> dict | None:
    """``data/tuned_losses.json`` from the study's best complete trial (None when none completed)."""
    if not _complete(study):
        log.warning("sweep %s: no complete trial yet, %s not written", study.study_name, TUNED_LOSSES)
        return None
    best = study.best_trial
    values = {k: float(v) for k, v in best.params.items()}
    out = {"sampler": p.sweep.sampler, "params": values, "best_value": float(best.value),
           "objective": (f"val mAP ({p.evaluate.map_variant}) of the frame recognizer's mean softmax over the K "
                         f"selected frames, mean over K in {list(p.fusion.budgets)}; fusion from params; one seed "
                         f"({p.train_sampler.seeds[0]}), {p.sweep.epochs} epochs"),
           "trial": best.number, "checkpoint": best.user_attrs.get("checkpoint"), "study": study.study_name,
           "storage": tracking.redact(storage_url), "trials": _trial_counts(study),
           "apply": "dvc exp run " + " ".join(f"-S {k}={v:.4f}" for k, v in values.items()),
           "note": "not applied automatically: copy params into params.yaml, or run the `apply` command"}
    atomic_write_json(paths.data / TUNED_LOSSES, out)
    return out


def sampler_seed(seed: int, worker_id: int, trials_before: int) -> int:
    """The TPE seed of one sweep process: from the params seed, the worker and the number of trials the
    study already holds, so the same command on the same study state proposes the same trials, while a
    rerun or an extension of a sweep (more trials in the study) or another worker proposes new ones.
    (Seeding by ``seed * 1000 + worker_id`` alone made every rerun repeat its first trials: TPE's
    startup trials are random draws from the seed.)"""
    digest = hashlib.sha256(f"{seed}|{worker_id}|{trials_before}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def run_sweep(p: Params, paths: Paths, n_trials: int | None = None, worker_id: int = 0, *,
              parent: bool = True, write_best: bool = True, until: int | None = None,
              objective_wrapper: Callable[[Callable], Callable] | None = None) -> dict:
    """Run ``n_trials`` (default ``sweep.trials``) loss-weight trials into the study ``sweep.study`` in
    ``sweep.storage`` (several calls, processes, machines each add theirs), or, with ``until``, fill it up to
    ``until`` settled trials together with every other worker given the same ``until``
    (:func:`~components.tuning.storage.fill_study`): a killed worker's trials are then made up by the
    others, and none is run twice.

    ``worker_id`` and the trials already in the study seed this caller's TPE sampler
    (:func:`sampler_seed`; the constant liar keeps concurrent workers apart). ``parent``: open the MLflow parent run
    ``sweep <study>`` (off when a launcher already opened it for its workers). A trial that raises is
    recorded FAIL (settled: it counts towards ``until``). A lost database connection is retried for ``sweep.reconnect``
    seconds, then the worker ends with :class:`~components.tuning.storage.StorageUnavailable` naming the
    cause. ``objective_wrapper`` wraps the trial objective (fault injection in tests, extra logging). With
    ``write_best``, the study's best complete trial so far is written to ``data/tuned_losses.json``.
    Returns that content (or the trial counts when nothing completed).
    """
    import optuna

    n = p.sweep.trials if n_trials is None else int(n_trials)
    name = sweep_study_name(p)
    storage = storage_from_url(p.sweep.storage, p.sweep.heartbeat, p.sweep.reconnect)
    study = _study(name, storage, None, pruner=make_pruner(p.sweep.pruner))
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(p.seed, worker_id, len(study.trials)),
                                               constant_liar=True)
    objective = sweep_objective(p, paths, name)
    if objective_wrapper is not None:
        objective = objective_wrapper(objective)
    space = {f"{s}.{k}": [lo, hi] for s, k, lo, hi in sweep_space(p.sweep.sampler)}
    ctx = (tracking.parent_run(f"sweep {name}", {"sweep": to_dict(p.sweep), "space": space}, tracking=p)
           if parent else contextlib.nullcontext())
    with ctx:
        todo = f"trials until it holds {until}" if until is not None else f"{n} trials"
        log.info("sweep %s (worker %d): %s into %s", name, worker_id, todo, tracking.redact(p.sweep.storage))
        ran = fill_study(study, objective, p.sweep.storage, p.sweep.heartbeat, until=until, trials=n)
    log.info("sweep %s (worker %d): ran %d trials", name, worker_id, ran)
    result = write_best_losses(p, paths, study, p.sweep.storage) if write_best else None
    return result or {"study": name, "trials": _trial_counts(study)}
