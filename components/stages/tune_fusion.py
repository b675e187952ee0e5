"""Stage ``tune_fusion``: Optuna on the **val** split over the inference-time fusion settings.

Reads the feature store (val labels and cached frame-recognizer logits), the stored val saliencies
of every seed of TSQNet and NSNet (``data/samplers/<name>/``) and the encoders (for the cost of a
prediction); trains nothing. Runs (:mod:`components.tuning`)

* :func:`~components.tuning.tune_fusion`: TPE over ``fusion.lambda_v`` (TSQNet) and
  ``fusion.nsnet_strategy`` / ``fusion.nsnet_ratio`` (NSNet), objective = val mAP of the frame
  recognizer's mean softmax over the selected frames, mean over seeds and ``fusion.budgets``;
  writes ``data/tuned_fusion.json`` (what evaluate uses with ``fusion.source: tuned``);
* :func:`~components.tuning.pareto_study`: NSGA-II over (sampler, K in ``evaluate.budgets``, fusion
  settings), val mAP at K vs GMACs per video (measured as evaluate does), writes
  ``reports/pareto.csv`` (every trial, ``pareto`` = 1 on the front) and ``reports/figures/pareto.png``.

Metrics: ``reports/tune_fusion.json`` (best and default val objective per sampler, the gain,
trials, trials per second of the Optuna loop, the cost of one uncached objective evaluation).
Studies live in ``fusion.storage`` (``optuna-dashboard sqlite:///.salient/optuna.db`` shows them).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from components.tracking import mlflow_tracking as tracking
from components.evaluation.cost import encoder_gmacs, sampler_gmacs, video_gmacs
from components.evaluation.fusion import params_fusion, single_branch_note
from components.models.samplers import sampler_class
from components.core.params import Params
from components.core.paths import Paths, write_report, write_timings
from components.store.sampler_data import load_split
from components.training.sampler_training import load_sampler, sampler_seeds
from components.ops.stage_runner import stage_main
from components.store.feature_store import FeatureStore
from components.tuning import (FusionData, fusion_objective_data, input_study_name, learned_objectives, pareto_study,
                               storage_from_url, study_lock, tune_fusion, write_pareto)

log = logging.getLogger(__name__)


def prediction_gmacs(p: Params, paths: Paths, data: FusionData) -> Callable[[str, int], float]:
    """``gmacs(sampler, K)``: GMACs of one whole prediction (what the sampler looks at + the sampler +
    the frame recognizer on K frames), counted on the real modules as the evaluate stage does."""
    store = FeatureStore(paths.features)
    batch, _ = load_split(store, "val")
    one = {k: v[:1] for k, v in batch.items()}  # one video, to count each sampler's MACs
    enc = encoder_gmacs(p, paths.encoders)
    own = {name: sampler_gmacs(runs[0].model, one) for name, runs in data.runs.items()}
    cache: dict[tuple[str, int], float] = {}

    def gmacs(name: str, K: int) -> float:
        if (name, K) not in cache:
            cache[(name, K)] = video_gmacs(name, data.runs[name][0].model, enc, own[name], store.T, K)
        return cache[(name, K)]

    return gmacs


def objective_ms(data: FusionData, repeats: int = 5) -> float | None:
    """Median wall time of one *uncached* objective evaluation (all seeds and budgets), in ms."""
    times = []
    for name in data.runs:
        for i in range(repeats):
            data.val.clear_memo()
            values = sampler_class(name).fusion_probe(i, repeats)
            t0 = time.perf_counter()
            data.score(name, values)
            times.append(time.perf_counter() - t0)
    data.val.clear_memo()
    return 1e3 * float(np.median(times)) if times else None


#: How ``register_best`` chooses ``models:/salient-sampler@best`` (written into the model's description).
BEST_RULE = ("the learned sampler of evaluate.samplers with the highest val objective ({objective}; TSQNet and NSNet "
             "at their tuned fusion, samplers without fusion settings such as AVGN as trained), then its seed "
             "with the best kept {monitor}; ties keep evaluate.samplers order")


def register_best(p: Params, paths: Paths, candidates: dict[str, dict], objective: str,
                  model_name: str = "salient-sampler", alias: str = "best") -> str | None:
    """Register the learned sampler with the best **val** objective among ``candidates`` (every learned
    sampler, :func:`components.tuning.learned_objectives`) in the MLflow Model Registry as
    ``models:/salient-sampler@best``: its seed with the best kept val score (``training.json``; the
    first seed when none is recorded) as an MLflow pyfunc model (:mod:`components.training.sampler_model`, with
    the tuned fusion setting). The registered model's and the version's description state the rule
    (:data:`BEST_RULE`) and every candidate's value; tags name the sampler, seed, val objective, the
    candidates, data fingerprint and git commit. ``salient predict --checkpoint
    models:/salient-sampler@best`` and ``mlflow.pyfunc.load_model`` load it. No-op without tracking."""
    import json
    import tempfile

    from components.training.sampler_model import save_sampler_model  # deferred: mlflow.pyfunc, only when tracking

    run = tracking.active_run()
    if run is None or not candidates:
        return None
    best = max(candidates, key=lambda n: candidates[n]["value"])  # first of equals: evaluate.samplers order
    folder = paths.data / "samplers" / best
    seeds = sampler_seeds(p, best)
    training = json.loads((folder / "training.json").read_text()) if (folder / "training.json").exists() else {}
    monitor = f"best_{p.train_sampler.monitor}"
    scored = [s for s in seeds if monitor in training.get(str(s), {})]
    sign = 1 if p.train_sampler.monitor == "val_map" else -1  # val_loss: lower is better
    seed = max(scored, key=lambda s: sign * training[str(s)][monitor]) if scored else seeds[0]
    store = FeatureStore(paths.features)
    git = tracking.git_info()
    meta = {"sampler": best, "seed": seed, "val_objective": candidates[best]["value"],
            "objective": objective, "fusion": candidates[best]["fusion"],
            "seed_selected_by": monitor if scored else "first seed (no val score recorded)",
            "data_fingerprint": store.meta.get("fingerprint"), "git_commit": git.get("git.commit"),
            "pipeline_seed": paths.pipeline_seed}
    with tempfile.TemporaryDirectory() as tmp:
        # two val videos, every array the chosen sampler reads (AVGN: light_maps), as the input example
        inputs = tuple(load_sampler(folder / f"seed{seed}.pt").inputs)
        example, _ = load_split(store, "val", keys=inputs)
        model_dir = save_sampler_model(folder / f"seed{seed}.pt", Path(tmp) / "sampler", meta,
                                       {k: v[:2].numpy() for k, v in example.items()})
        tracking.log_artifacts([model_dir])  # -> artifact path "sampler"
    values = ", ".join(f"{n} {c['value']:.4f}" for n, c in candidates.items())
    tracking.set_tags({"salient.best_sampler": best, "salient.best_seed": seed, "salient.best_candidates": values})
    rule = BEST_RULE.format(objective=objective, monitor=monitor)
    description = (f"Chosen by tune_fusion as {rule}. Candidates (val objective): {values}. "
                   f"This version: {best}, seed {seed} (pipeline seed {paths.pipeline_seed}), "
                   f"{meta['val_objective']:.4f}, fusion {meta['fusion'] or 'none'}. "
                   f"Load with mlflow.pyfunc.load_model or `salient predict --checkpoint models:/{model_name}@{alias}`.")
    tags = {"sampler": best, "seed": seed, "val_objective": f"{meta['val_objective']:.6f}",
            "objective": objective, "rule": rule, "candidates": values, "data_fingerprint": meta["data_fingerprint"],
            "git_commit": meta["git_commit"], "pipeline_seed": paths.pipeline_seed}
    mv = tracking.register_model(run.run_id, "sampler", model_name, alias=alias, description=description, tags=tags)
    return f"models:/{model_name}@{alias} = {best} seed {seed} (version {mv.version})" if mv is not None else None


def run(p: Params, paths: Paths) -> dict:
    data = fusion_objective_data(p, paths)
    cost_ms = objective_ms(data)
    with study_lock(p.fusion.storage, input_study_name(p, data, "tune_fusion")):  # one filler at a time
        return _tune(p, paths, data, cost_ms)


def _tune(p: Params, paths: Paths, data: FusionData, cost_ms: float | None) -> dict:
    tuned = tune_fusion(p, paths, data)
    report: dict = {"objective": tuned["objective"], "storage": tracking.redact(p.fusion.storage), "samplers": {}}
    for name in data.runs:
        report["samplers"][name] = {"tuned": tuned[name], "defaults": params_fusion(p)[name],
                                    **{k: tuned[k][name] for k in ("best_value", "default_value", "gain", "trials",
                                                                    "study")},
                                    "single_branch": single_branch_note(name, tuned[name], p.evaluate.budgets)}
        if report["samplers"][name]["single_branch"]:
            log.warning("tune_fusion: %s", report["samplers"][name]["single_branch"])
            tracking.set_tags({f"salient.fusion_note.{name}": report["samplers"][name]["single_branch"]})
    write_timings(paths, "tune_fusion", {"objective_ms_uncached": cost_ms,
                                         "trials_per_second": tuned["trials_per_second"]})
    fig, csv_path = paths.reports / "figures" / "pareto.png", paths.reports / "pareto.csv"
    if data.runs:
        gmacs = prediction_gmacs(p, paths, data)
        ks = sorted(set(p.evaluate.budgets))
        n = p.fusion.trials + len(data.runs) * len(ks)  # + the params' settings at every (sampler, K)
        study, rows, front = pareto_study(data, ks, gmacs, n, seed=p.seed, storage=storage_from_url(p.fusion.storage),
                                          study_name=input_study_name(p, data, "pareto"), defaults=params_fusion(p))
        write_pareto(rows, front, csv_path, fig)
        # NSGA-II may propose one setting several times: the front lists each point once, cheapest first
        unique = {(r["sampler"], r["k"], r["map"], r["gmacs"]): r for r in (rows[i] for i in front)}
        report["pareto"] = {"study": study.study_name, "trials": len(rows),
                            "front": sorted(unique.values(), key=lambda r: (r["gmacs"], -r["map"]))}
    else:
        log.warning("tune_fusion: no trained sampler with fusion settings; nothing tuned")
        write_pareto([], [], csv_path, fig)
        report["pareto"] = {"trials": 0, "front": []}
    write_report(paths, "tune_fusion.json", report)
    if tracking.active_run() is not None:
        report["registered"] = register_best(p, paths, learned_objectives(p, paths, data, tuned), tuned["objective"])
    return {k: {n: v for n, v in tuned[k].items() if v is not None}
            for k in ("best_value", "default_value", "gain", "trials_per_second")}


def main(argv: list[str] | None = None) -> int:
    return stage_main("tune_fusion", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
