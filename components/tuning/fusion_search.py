"""Tuning the fusion settings on val (``tune_fusion``): TSQNet's union ratio ``lambda_v`` and NSNet's
fusion strategy and ratio, from the val saliencies that ``train_sampler`` stored.

The objective (:class:`FusionData`) is the val mAP of the frame recognizer's mean softmax over the
K selected frames, averaged over every trained seed and over ``fusion.budgets``: pure numpy on
cached logits (the softmax is computed once, mAPs are memoised by selection), so a trial costs
about a millisecond plus Optuna's own bookkeeping. :func:`tune_fusion` runs a TPE study per sampler,
seeded with ``seed``, whose first trial is the params' values, so the result is never worse on val
than the defaults; the result goes atomically to ``data/tuned_fusion.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from components.core.atomic import atomic_write_json
from components.ops.redaction import redact
from components.evaluation.sampler_eval import SamplerRun, load_runs
from components.evaluation.fusion import params_fusion, saliency_digest, tuned_fusion_path
from components.models.samplers import fusion_samplers, sampler_class, sampler_trainable
from components.core.params import Params
from components.core.paths import Paths
from components.training.sampler_training import load_sampler, sampler_seeds
from components.tuning.storage import _complete, _progress, _quiet_optuna, _study, _trials_per_second, storage_from_url
from components.training.val_objective import ValSet, load_val

if TYPE_CHECKING:  # pragma: no cover
    import optuna

log = logging.getLogger(__name__)


@dataclass
class FusionData:
    """Everything the fusion objective reads, loaded once: the val set and, per tunable sampler, every
    trained seed with its stored val branch scores (:class:`components.evaluation.sampler_eval.SamplerRun`)."""
    val: ValSet
    runs: dict[str, list[SamplerRun]]
    inputs: dict[str, str] = field(default_factory=dict)  # sampler -> saliency_digest

    def score(self, name: str, values: Mapping[str, Any], budgets: Iterable[int] | None = None) -> float:
        """The objective: val mAP with fusion ``values``, mean over seeds and budgets."""
        out = []
        for run in self.runs[name]:
            out.append(self.val.score(run.with_fusion(values).select, budgets))
        return float(np.mean(out))


def fusion_objective_data(p: Params, paths: Paths, names: Iterable[str] | None = None) -> FusionData:
    """Load the val set and the val saliencies of every seed of ``names`` once. A sampler that is not
    in ``evaluate.samplers`` or not trained is skipped with a log line. ``names``: default every sampler
    with fusion settings (:func:`components.models.samplers.fusion_samplers`)."""
    tunable = fusion_samplers()
    names = tuple(tunable) if names is None else names
    val = load_val(p, paths)
    root = paths.data / "samplers"
    runs, inputs = {}, {}
    for name in names:
        if name not in tunable:
            raise ValueError(f"{name!r} has no fusion settings to tune; tunable: {list(tunable)}")
        if name not in p.evaluate.samplers:
            log.info("tune_fusion: %s is not in evaluate.samplers: skipped", name)
            continue
        if not list(Path(root, name).glob("seed*.pt")):
            log.info("tune_fusion: %s is not trained (no %s/seed*.pt): skipped", name, Path(root, name))
            continue
        runs[name] = load_runs(root, name, "val", val.ids, load_sampler, sampler_seeds(p, name))
        inputs[name] = saliency_digest(root, name)
    return FusionData(val, runs, inputs)


def learned_objectives(p: Params, paths: Paths, data: FusionData, tuned: Mapping[str, Any]) -> dict[str, dict]:
    """The val objective of **every** learned sampler of ``evaluate.samplers`` that is trained: the tuned
    ones (TSQNet, NSNet) at their best tuned fusion (``tuned["best_value"]``), the others (AVGN: no fusion
    settings) scored by the same objective on their stored val saliencies. ``{name: {"value", "fusion"}}``
    in ``evaluate.samplers`` order; what ``register_best`` chooses ``@best`` among."""
    root, out = paths.data / "samplers", {}
    for name in p.evaluate.samplers:
        if name in tuned.get("best_value", {}):
            out[name] = {"value": float(tuned["best_value"][name]), "fusion": dict(tuned.get(name) or {})}
        elif sampler_trainable(name) and list(Path(root, name).glob("seed*.pt")):
            runs = load_runs(root, name, "val", data.val.ids, load_sampler, sampler_seeds(p, name))
            out[name] = {"value": FusionData(data.val, {name: runs}).score(name, {}), "fusion": {}}
        elif sampler_trainable(name):
            log.info("register_best: %s is not trained (no %s/seed*.pt): not a candidate", name, Path(root, name))
    return out


def suggest_fusion(trial: "optuna.Trial", name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The search space of sampler ``name``, as its class declares it (``Sampler.suggest_fusion``: TSQNet
    lambda_v in [0, 1]; NSNet strategy in ``FUSION_STRATEGIES`` and, for the strategies that read it, ratio
    in [0, 1], else the default)."""
    return sampler_class(name).suggest_fusion(trial, defaults)


def _enqueue_defaults(study: "optuna.Study", name: str, defaults: Mapping[str, Any], extra: Mapping = {}) -> None:
    fixed = sampler_class(name).fusion_trial_defaults(defaults)
    study.enqueue_trial({**extra, **fixed}, user_attrs={"defaults": True})


def input_study_name(p: Params, data: FusionData, kind: str) -> str:
    """``<kind>-<digest>`` of the inputs (saliencies, budgets, mAP definition, seed): the same inputs
    reuse (top up) one study, other inputs get a fresh one."""
    key = json.dumps([data.inputs, list(data.val.budgets), data.val.map_variant, p.seed, kind], sort_keys=True)
    return f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def tune_fusion(p: Params, paths: Paths, data: FusionData | None = None, *,
                write: bool = True) -> dict:
    """TPE (seeded with ``seed``) over the fusion settings of every trained tunable sampler, on val.

    One study per sampler in ``fusion.storage``, named after a digest of the inputs (saliencies,
    budgets, mAP definition, seed): rerunning on the same inputs tops the study up to
    ``fusion.trials`` complete trials instead of starting over. The first trial is the params'
    values, so ``best_value >= default_value``, and ties keep the defaults.

    Returns (and, with ``write``, writes atomically to ``data/tuned_fusion.json``, less the timings)::

        {"tsqnet": {"lambda_v": ...}, "nsnet": {"nsnet_strategy": ..., "nsnet_ratio": ...},
         "objective": "val mAP ...", "best_value": {sampler: ...}, "default_value": {sampler: ...},
         "gain": {sampler: best - default}, "trials": {sampler: n}, "study": {sampler: name},
         "storage": url, "inputs": {sampler: saliency digest}, "trials_per_second": {sampler: ...}}

    Per-sampler numbers are keyed by sampler because each sampler has its own study. For NSNet
    strategies that ignore the ratio, ``nsnet_ratio`` is the params' value.
    """
    import optuna

    data = data if data is not None else fusion_objective_data(p, paths)
    defaults = params_fusion(p)
    storage = storage_from_url(p.fusion.storage)
    base = input_study_name(p, data, "fusion")
    out: dict[str, Any] = {"objective": data.val.describe(), "best_value": {}, "default_value": {}, "gain": {},
                           "trials": {}, "study": {}, "storage": redact(p.fusion.storage), "trials_per_second": {},
                           "inputs": dict(data.inputs)}
    for name in data.runs:
        study = _study(f"{base}-{name}", storage, optuna.samplers.TPESampler(seed=p.seed))
        if not study.trials:
            _enqueue_defaults(study, name, defaults[name])
        todo = max(0, p.fusion.trials - len(_complete(study)))

        def objective(trial, name=name):
            values = suggest_fusion(trial, name, defaults[name])
            trial.set_user_attr("values", values)
            return data.score(name, values)

        t0 = time.perf_counter()
        with _quiet_optuna():
            study.optimize(objective, n_trials=todo, show_progress_bar=todo > 0 and _progress())
        dt = time.perf_counter() - t0
        best = study.best_trial
        values = dict(best.user_attrs.get("values") or {**defaults[name], **best.params})
        default_value = data.score(name, defaults[name])
        out[name] = values
        out["best_value"][name] = float(best.value)
        out["default_value"][name] = default_value
        out["gain"][name] = float(best.value) - default_value
        out["trials"][name] = len(_complete(study))
        out["study"][name] = study.study_name
        out["trials_per_second"][name] = rate = _trials_per_second(study)
        log.info("tune_fusion %s: %s -> val objective %.4f (defaults %s: %.4f); %d trials (%d now, %.1f s), "
                 "%.1f trials/s", name, values, best.value, defaults[name], default_value, out["trials"][name], todo,
                 dt, rate or float("nan"))
    if write:  # timings stay out of the file: the same inputs give the same bytes (a stable DVC output)
        atomic_write_json(tuned_fusion_path(paths), {k: v for k, v in out.items() if k != "trials_per_second"})
    return out


