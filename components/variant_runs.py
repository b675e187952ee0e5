"""One MLflow run per evaluated or trained *variant* and seed, all with the same keys, so MLflow's
compare view lines samplers up against each other.

A variant is what one row of ``curves.csv`` names: a sampler (``tsqnet``, ``uniform``), an ablation
(``tsqnet_vqm_only``: a sampler with overrides, ``params.ablations``) or a branch of a two-branch
sampler (``tsqnet[vqm]``: the same model selecting by one branch). Every run carries

* params ``variant``, ``sampler`` (the registered sampler it is built from), ``kind`` (``baseline``,
  ``learned``, ``ablation`` or ``branch``), ``seed`` (the training seed; pipeline seed s offsets it
  by s x 1000), ``pipeline_seed``, ``recognizer`` (evaluation runs), the *effective* sampler section
  and ``train_sampler`` section after the ablation's overrides (``tsqnet.branches = vqm`` for
  ``tsqnet_vqm_only``), and the fusion setting used (none for a branch, which selects by one branch);
* evaluation metrics under one naming scheme for the budget K: summaries ``map_k03``, ``gmacs_k03``,
  ``top1_k03`` at every K of ``evaluate.sampler_budgets`` from ``evaluate.headroom_k`` (3) up (the
  compare view's table and scatter plot read the latest value of a metric, so each K a reader compares
  needs its own key; two digits, so K sorts as a number) and curves ``vs_k/map``, ``vs_k/top1``,
  ``vs_k/salient_recall``, ``vs_k/distractor_share``, ``vs_k/gmacs`` at **step = K** over every K
  (MLflow's chart of a metric over steps is the metric vs K). MLflow lists a run's metrics by name:
  the first a reader sees is ``gmacs_k03`` / ``map_k03``, never a bare ``map`` whose latest value
  would be the last K's. mAP and top-1 as fractions (as in ``curves.csv``), GMACs per video;
* a training-free sampler that draws nothing (uniform, dense, the oracle, MaxConf-L: identical rows in
  every sampler seed) has one run per pipeline seed (param ``seed = deterministic``, tag
  ``salient.seeds``), not one copy per sampler seed; ``random`` keeps one per seed;
* the efficiency frontier of the run (given by the evaluate stage, :func:`components.frontier.run_metrics`;
  frame recognizer and AVGN's own head), against uniform and dense of the same pipeline seed:
  ``matched_uniform_map_k3`` (uniform's mAP read at this run's GMACs at K=3), ``matched_uniform_diff_k3``
  (this run's mAP minus it), ``matched_extrapolated_k3`` (1: this cost is outside uniform's measured
  range), ``reaches_dense`` (1/0) and, where reached, ``gmacs_to_dense`` and ``saving_vs_dense_pct``; ``reaches_uniform_k8`` /
  ``gmacs_to_uniform_k8`` (K=8: the largest of ``evaluate.sampler_budgets``). A cost never reached has
  no ``gmacs_to_*`` key (the compare view shows it blank), never a made-up number;
* training metrics without prefixes (``train_loss``, ``val_loss``, ``val_map`` at step = epoch) and
  ``best_epoch``, ``steps_to_best``.

Runs are children of the stage's run (``evaluate@0``, ``train_sampler@0-tsqnet``) and tagged
``salient.kind = variant`` plus ``salient.variant`` / ``salient.sampler``, so a search such as
``tags.salient.kind = 'variant' and params.recognizer = 'frame'`` lists exactly the comparable runs.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from components import tracking
from components.fusion import single_branch_note
from components.params import Params, to_dict, variant_params as effective_params

#: the per-K metrics of an evaluation run (``curves.csv`` columns)
CURVE_METRICS = {"map": "map", "top1": "top1", "salient_recall": "salient_recall",
                 "distractor_share": "distractor_share", "gmacs": "gmacs"}
SUMMARY_METRICS = ("map", "gmacs", "top1")  # also logged as <metric>_k<KK> (see summary_budgets)
#: the prefix of the curves over K (``vs_k/map`` at step = K): it sorts after every summary key, so the
#: first metric a reader sees on a run page (MLflow lists them by name) is a headline K's, never the
#: bare last K that a curve's latest value would show
CURVE_PREFIX = "vs_k/"


def summary_key(metric: str, k: int) -> str:
    """The key of ``metric`` at budget ``k`` in the summaries: ``map_k03`` (two digits: K sorts as a number)."""
    return f"{metric}_k{int(k):02d}"


def curve_key(metric: str) -> str:
    """The key of ``metric``'s curve over K (step = K): ``vs_k/map``."""
    return CURVE_PREFIX + metric


def summary_budgets(p: Params) -> list[int]:
    """The K of the summary keys: ``evaluate.sampler_budgets`` from ``evaluate.headroom_k`` (3, the K of
    the headline tables) up, so ``gmacs_k03`` / ``map_k03`` are the first keys by name; every K is in the
    curves."""
    return sorted(k for k in set(p.evaluate.sampler_budgets) if k >= p.evaluate.headroom_k)


def variant_kind(p: Params, variant: str, trainable: bool) -> str:
    """``branch`` (``name[branch]``), ``ablation`` (a key of ``params.ablations``), else ``learned`` or
    ``baseline`` by whether the registered sampler trains."""
    if "[" in variant:
        return "branch"
    if variant in p.ablations:
        return "ablation"
    return "learned" if trainable else "baseline"


def variant_params(p: Params, variant: str, seed: int, *, trainable: bool, pipeline_seed: int | None,
                   fusion: Mapping[str, Any] | None = None, recognizer: str | None = None) -> dict[str, Any]:
    """The params every variant run logs (see the module docstring); ``fusion``: the inference-time
    setting the run selected with (None: the sampler has none)."""
    base = variant.split("[", 1)[0]
    registered, eff = effective_params(p, base)
    tree = to_dict(eff)
    out: dict[str, Any] = {"variant": variant, "sampler": registered, "kind": variant_kind(p, variant, trainable),
                           "seed": seed, "pipeline_seed": pipeline_seed}
    if "[" in variant:
        out["branch"] = variant.split("[", 1)[1].rstrip("]")
    if recognizer is not None:
        out["recognizer"] = recognizer
    if isinstance(tree.get(registered), Mapping):
        out[registered] = tree[registered]
    if trainable:
        out["train_sampler"] = tree["train_sampler"]
    if fusion:
        out["fusion"] = dict(fusion)
    return {k: v for k, v in out.items() if v is not None}


def _tags(params: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"salient.variant": params["variant"], "salient.sampler": params["sampler"],
            "salient.variant_kind": params["kind"], **dict(extra or {})}


def _deterministic(groups: Mapping[tuple[str, str, int], list[Mapping[str, Any]]]) -> set[tuple[str, str]]:
    """(variant, recognizer) pairs evaluated under several sampler seeds with identical rows at every K:
    a training-free sampler that draws nothing (uniform, dense, the oracle, MaxConf-L), logged once."""
    by: dict[tuple[str, str], list[list]] = {}
    for (variant, recognizer, _), cells in sorted(groups.items()):
        by.setdefault((variant, recognizer), []).append(
            sorted((int(c["k"]), *(float(c[col]) for col in CURVE_METRICS.values())) for c in cells))
    return {key for key, runs in by.items() if len(runs) > 1 and all(r == runs[0] for r in runs)}


def log_evaluation(p: Params, rows: Iterable[Mapping[str, Any]], *, trainable: Mapping[str, bool],
                   fusion: Mapping[str, Mapping[str, Any] | None], pipeline_seed: int | None,
                   extra: Mapping[tuple[str, str, int], Mapping[str, float]] | None = None) -> list[str]:
    """One child run of the open (``evaluate``) run per (variant, recognizer, seed) of ``rows`` (the
    evaluation grid's rows: ``sampler``, ``recognizer``, ``k``, ``seed`` and the metrics of
    :data:`CURVE_METRICS`); a baseline whose rows are identical in every seed (uniform, dense, the oracle:
    nothing drawn) gets **one** run per pipeline seed, param ``seed`` = ``deterministic`` and tag
    ``salient.seeds`` listing the seeds it stands for. ``trainable`` / ``fusion`` are keyed by the variant
    without its branch; ``extra``: more metrics per (variant, recognizer, seed) (the frontier's,
    :func:`components.frontier.run_metrics`). Returns the run ids (none when tracking is off or no run
    is open)."""
    if tracking.active_run() is None:
        return []
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["recognizer"], int(r["seed"])), []).append(r)
    once, done = _deterministic(groups), set()
    show = set(summary_budgets(p))
    ids = []
    for (variant, recognizer, seed), cells in sorted(groups.items()):
        base = variant.split("[", 1)[0]
        learns = trainable.get(base, False)
        single = not learns and (variant, recognizer) in once
        if single and (variant, recognizer) in done:
            continue
        params = variant_params(p, variant, seed, trainable=learns, pipeline_seed=pipeline_seed,
                                fusion=None if "[" in variant else fusion.get(base), recognizer=recognizer)
        tags = {"salient.stage": "evaluate"}
        note = None if params["kind"] != "learned" else single_branch_note(params["sampler"], fusion.get(base),
                                                               [int(c["k"]) for c in cells])
        if note:  # why this sampler's numbers equal one of its branches'
            tags["salient.fusion_note"] = note
        if single:
            done.add((variant, recognizer))
            params["seed"] = "deterministic"
            tags["salient.seeds"] = ",".join(str(s) for (v, r, s) in sorted(groups) if (v, r) == (variant, recognizer))
        cells = sorted(cells, key=lambda c: int(c["k"]))
        ks = [int(c["k"]) for c in cells]
        name = f"{variant} · {recognizer} · " + (f"pipeline seed {pipeline_seed}" if single else f"seed {seed}")
        with tracking.variant_run(name, params, tags=_tags(params, tags), tracking=p) as run:
            points = {m: [float(c[col]) for c in cells] for m, col in CURVE_METRICS.items()}
            run.log_metrics({summary_key(m, k): v for m in SUMMARY_METRICS for k, v in zip(ks, points[m]) if k in show})
            for m, values in points.items():
                run.log_budget_curve(curve_key(m), ks, values)
            run.log_metrics((extra or {}).get((variant, recognizer, seed), {}))
            ids.append(run.run_id)
    return ids


@contextlib.contextmanager
def training_run(p: Params, variant: str, seed: int, *, trainable: bool,
                 pipeline_seed: int | None) -> Iterator[Any]:
    """The run of one (variant, seed) training inside the ``train_sampler`` / ``ablate`` stage run: the
    engine's epoch rows land here unprefixed (``val_map`` at step = epoch)."""
    params = variant_params(p, variant, seed, trainable=trainable, pipeline_seed=pipeline_seed)
    with tracking.variant_run(f"{variant} · train · seed {seed}", params,
                              tags=_tags(params, {"salient.stage": "train_sampler"}), tracking=p) as run:
        yield run
