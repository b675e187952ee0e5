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
* the efficiency frontier of the run (given by the evaluate stage, :func:`components.evaluation.frontier.run_metrics`;
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
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from components.tracking import mlflow_tracking as tracking
from components.evaluation.fusion import single_branch_note
from components.core.params import Params, to_dict, variant_params as effective_params

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------ the saved view
#: the saved view of the experiment's runs table that ``salient ui`` and the README link to
#: (:func:`components.tracking.mlflow_tracking.save_view`): MLflow keeps a table arranged by hand in that one browser only
VIEW_ID = "salient-variant-runs"


def view_name(p: Params) -> str:
    k = p.evaluate.headroom_k
    return f"Variant runs: mAP@{k}, GMACs@{k} (salient)"


def _column(kind: str, key: str) -> str:
    """A runs-table column id of MLflow's UI: ``metrics.`map_k03```."""
    return f"{kind}.`{key}`"


RUN_NAME_COLUMN = "attributes.`Run Name`"
#: one group of the view per variant and experiment (a DVC experiment's runs are not averaged with the workspace's)
VIEW_GROUPS = (("param", "variant"), ("tag", tracking.EXPERIMENT_TAG))


#: the most groups the view keeps closed (a tag holds at most 20,000 characters; ~60 a group)
MAX_CLOSED = 200


def group_id(variant: str, experiment: str) -> str:
    """The id MLflow's UI gives the group of ``variant``'s runs in ``experiment`` (``groupsExpanded`` keys)."""
    return ",".join(f"{mode}.{key}.{value}" for (mode, key), value in zip(VIEW_GROUPS, (variant, experiment)))


def view_state(p: Params, collapsed: Iterable[str] = ()) -> dict[str, Any]:
    """The runs-table state of the variant view: the evaluated variant runs with a value at K =
    ``evaluate.headroom_k`` (``tags.`salient.kind` = 'variant' and metrics.map_k03 >= 0``: no training run,
    no clip-recognizer run without that K), one row per variant and experiment (MLflow's group by, the mean
    over seeds; a group opens on its runs), best ``map_k03`` first, columns ``map_k03``, ``gmacs_k03`` and
    the recognizer. ``collapsed``: the :func:`group_id` of the groups shown closed."""
    k = p.evaluate.headroom_k
    map_k, gmacs_k = _column("metrics", summary_key("map", k)), _column("metrics", summary_key("gmacs", k))
    columns = [map_k, gmacs_k, _column("params", "recognizer")]  # a group's seed would read as their mean
    return {"searchFilter": f"tags.`salient.kind` = 'variant' and metrics.{summary_key('map', k)} >= 0",
            "orderByKey": map_k, "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active",
            # the UI sizes the columns that columnOrder names: room for a group's name ("Group: variant: tsqnet,
            # salient.experiment: workspace") and its "43.5 (average)"
            "selectedColumns": columns, "columnOrder": [RUN_NAME_COLUMN, *columns],
            "columnWidths": {RUN_NAME_COLUMN: 400, map_k: 160, gmacs_k: 160},
            "groupBy": {"aggregateFunction": "average",
                        "groupByKeys": [{"mode": mode, "groupByData": key} for mode, key in VIEW_GROUPS]},
            "groupsExpanded": {g: False for g in dict.fromkeys(collapsed)},
            "runListHidden": False, "viewMaximized": False}


def note(p: Params, experiment_id: str) -> str:
    """The experiment's description: how to open the variant view (markdown)."""
    k = p.evaluate.headroom_k
    link = tracking.ui_url(0, experiment_id, base="", view=VIEW_ID)  # relative: on whichever server shows it
    return (f"**salient**: the comparable runs are the *variant runs* (one child run per sampler variant, "
            f"recognizer and seed of `evaluate`). Open them with the saved view **{view_name(p)}** (*Views* menu "
            f"above the runs table, or the link [{link}]({link}) on this server; `salient ui` prints it): one row "
            f"per variant and DVC experiment with its mean `{summary_key('map', k)}` (mAP at K={k}) and "
            f"`{summary_key('gmacs', k)}` (GMACs per video at K={k}) over seeds, best first; open a row for its "
            f"seeds. salient rewrites that view after each `evaluate`: save yours under another name.")


def save_variant_view(p: Params, experiment_id: str, groups: Iterable[str] = ()) -> str:
    """Write the variant view (:func:`view_state`) and the experiment's description (:func:`note`, unless
    someone else wrote one) to an experiment; ``groups``: the :func:`group_id` of more groups to show
    closed, added to those the view already closes. Returns the view id."""
    old = tracking.saved_view(experiment_id, VIEW_ID, tracking=p)
    before = list(((old or {}).get("state") or {}).get("groupsExpanded") or {})
    closed = list(dict.fromkeys([*groups, *before]))[:MAX_CLOSED]  # this evaluation's first; a group left out opens
    tracking.save_view(experiment_id, VIEW_ID, view_name(p), view_state(p, closed), tracking=p)
    tracking.set_experiment_note(experiment_id, note(p, experiment_id), owner="**salient**:", tracking=p)
    return VIEW_ID


def view_url(p: Params, port: int | str, experiment_id: str, **kw: Any) -> str:
    """The link that opens ``experiment_id`` on the variant view (:func:`components.tracking.mlflow_tracking.ui_url`)."""
    return tracking.ui_url(port, experiment_id, view=VIEW_ID, **kw)


def log_evaluation(p: Params, rows: Iterable[Mapping[str, Any]], *, trainable: Mapping[str, bool],
                   fusion: Mapping[str, Mapping[str, Any] | None], pipeline_seed: int | None,
                   extra: Mapping[tuple[str, str, int], Mapping[str, float]] | None = None) -> list[str]:
    """One child run of the open (``evaluate``) run per (variant, recognizer, seed) of ``rows`` (the
    evaluation grid's rows: ``sampler``, ``recognizer``, ``k``, ``seed`` and the metrics of
    :data:`CURVE_METRICS`); a baseline whose rows are identical in every seed (uniform, dense, the oracle:
    nothing drawn) gets **one** run per pipeline seed, param ``seed`` = ``deterministic`` and tag
    ``salient.seeds`` listing the seeds it stands for. ``trainable`` / ``fusion`` are keyed by the variant
    without its branch; ``extra``: more metrics per (variant, recognizer, seed) (the frontier's,
    :func:`components.evaluation.frontier.run_metrics`). Returns the run ids (none when tracking is off or no run
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
    _update_view(p, {v for (v, _, _) in groups})
    return ids


def _update_view(p: Params, variants: set[str]) -> None:
    """The variant view of the open run's experiment, its groups of ``variants`` in this run's experiment
    closed; a failure is logged, never raised (a convenience, not a result), and a run buffered offline
    (no experiment id until it is synced) leaves it to ``salient ui``."""
    run = tracking.active_run()
    if run is None or not run.experiment_id or run.spool is not None:
        return
    experiment = tracking.experiment_tags()[tracking.EXPERIMENT_TAG]
    try:
        save_variant_view(p, run.experiment_id, [group_id(v, experiment) for v in variants])
    except Exception as e:  # noqa: BLE001
        log.warning("could not save the MLflow view of the variant runs: %s", e)


@contextlib.contextmanager
def training_run(p: Params, variant: str, seed: int, *, trainable: bool,
                 pipeline_seed: int | None) -> Iterator[Any]:
    """The run of one (variant, seed) training inside the ``train_sampler`` / ``ablate`` stage run: the
    engine's epoch rows land here unprefixed (``val_map`` at step = epoch)."""
    params = variant_params(p, variant, seed, trainable=trainable, pipeline_seed=pipeline_seed)
    with tracking.variant_run(f"{variant} · train · seed {seed}", params,
                              tags=_tags(params, {"salient.stage": "train_sampler"}), tracking=p) as run:
        yield run
