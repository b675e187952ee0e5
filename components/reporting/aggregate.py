"""Pool the evaluation of every pipeline seed (docs/design.md §3: seeds are an axis of the whole pipeline).

Each pipeline seed ``s`` trains its own encoders, recognizer and samplers and evaluates them on the same
test videos (``results/s<s>/``: ``curves.csv``, ``metrics.json``, ``scores.npz``). A *run* is one
(pipeline seed, sampler seed) pair. For each (sampler, recognizer, K) at ``evaluate.sampler_budgets``:

* ``map``: the mean over pipeline seeds of each seed's mean over its sampler seeds (equal weight per
  pipeline seed); ``map_std_pipeline``: the std over pipeline seeds of those per-seed means (the
  spread the headline tables show); ``map_std_runs``: the std over all runs;
* ``map_ci``: percentile bootstrap 95% CI over test videos of the mean over runs of mAP;
* ``map_minus_uniform`` and ``map_minus_uniform_ci``: the paired difference to uniform, run by run
  (uniform of the same pipeline seed), averaged over runs, with the *same* video resamples for both
  sides (paired bootstrap); ``resolved_vs_uniform``: the CI excludes 0;
* ``top1``, ``salient_recall``, ``distractor_share`` (share of the picks showing another class's scene),
  ``gmacs``: pooled like ``map``;
* ``vs[ref]``: ``diff``, ``ci``, ``resolved``, ``pairs``: the same paired difference against each
  ``references`` sampler (``evaluate.references``: MaxConf-L, VideoConf-L, ...; not for the
  references themselves nor branch rows) and, for an ablation, against its base sampler
  (:func:`_pairs` says which runs are paired);
* for a branch row ``name[branch]``: ``fused_minus_branch`` / ``_ci`` (same trained models).

A pipeline seed whose results are missing or unreadable is listed in ``failed_seeds`` and named in the
tables; it is never silently dropped from a mean that claims to cover it.

:func:`frontier`: the efficiency frontier (:mod:`components.evaluation.frontier`) of the same runs, every mAP
bootstrapped on the same resamples as the CIs above.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.evaluation import frontier as fr
from components.reporting.figures import read_curves
from components.evaluation.metrics import bootstrap_ci, bootstrap_stats, map_metric

#: Curve metrics pooled as the mean over pipeline seeds of each seed's mean over sampler seeds.
POOLED = ("map", "top1", "salient_recall", "distractor_share", "gmacs")


@dataclass
class SeedResults:
    seed: int
    curves: list[dict]
    labels: np.ndarray  # [N,C]
    ids: list[str]
    scores: dict[tuple[str, str, int, int], np.ndarray]  # (sampler, recognizer, K, sampler seed) -> [N,C]


def load_seed(results: Path, seed: int) -> SeedResults:
    """``results/s<seed>/``; raises ``FileNotFoundError`` / ``ValueError`` naming the file when incomplete."""
    folder = Path(results) / f"s{seed}"
    for f in ("curves.csv", "metrics.json", "scores.npz"):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder / f} missing (pipeline seed {seed} did not finish evaluate)")
    try:
        with np.load(folder / "scores.npz") as z:
            labels, ids = z["labels"], [str(x) for x in z["ids"]]
            scores = {}
            for key in z.files:
                if key in ("labels", "ids"):
                    continue
                name, rec, k, sd = key.split("|")
                scores[(name, rec, int(k), int(sd))] = z[key].astype(np.float64)
        json.loads((folder / "metrics.json").read_text())  # evaluate finished it: it must parse
        curves = read_curves(folder / "curves.csv")
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder}: unreadable results ({e})") from e
    return SeedResults(seed, [{**r, "pipeline_seed": seed} for r in curves], labels, ids, scores)


def same_videos(seeds: list[SeedResults]) -> tuple[list[str], np.ndarray]:
    """The test video ids and labels every pipeline seed was evaluated on; ``ValueError`` when two seeds
    differ (their runs cannot be paired video by video)."""
    ids, labels = seeds[0].ids, seeds[0].labels
    for s in seeds[1:]:
        if s.ids != ids or not np.array_equal(s.labels, labels):
            raise ValueError(f"pipeline seeds {seeds[0].seed} and {s.seed} were evaluated on different test videos; "
                             "their results cannot be paired")
    return ids, labels


def _diff(pairs: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray, variant: str):
    """metric(I [b,n]) -> [b]: the mean over the pairs of the paired mAP difference (:func:`map_metric`)."""
    return map_metric([a for a, _ in pairs], labels, variant, [b for _, b in pairs])


def _pairs(runs: list[tuple], ref: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each run ``(pipeline seed, sampler seed, scores)`` paired with the reference's run of the same
    pipeline seed and sampler seed, else with the reference's first run of that pipeline seed (a
    training-free reference has one run per pipeline seed); runs of a pipeline seed the reference
    lacks are left out."""
    exact = {(ps, sd): sc for ps, sd, sc in ref}
    first: dict[int, np.ndarray] = {}
    for ps, _, sc in ref:
        first.setdefault(ps, sc)
    return [(sc, exact.get((ps, sd), first.get(ps))) for ps, sd, sc in runs if ps in first]


def _point(metric, n: int) -> float:
    return float(metric(np.arange(n)[None])[0])


def _ci(metric, n: int, n_boot: int) -> list[float]:
    lo, hi = bootstrap_ci(metric, n, n_boot=n_boot, vectorized=True)
    return [round(float(lo), 5), round(float(hi), 5)]


def pool(seeds: list[SeedResults], budgets: list[int], variant: str, n_boot: int,
         references: tuple[str, ...] = (), bases: dict[str, str] | None = None) -> dict:
    """The pooled headline (module docstring) over the given, complete pipeline seeds; each sampler is
    also compared with every sampler of ``references`` and each ablation of ``bases`` (name -> the
    sampler it varies) with its base, in ``vs``."""
    if not seeds:
        return {}
    ids, labels = same_videos(seeds)
    n = len(ids)
    out: dict = {}
    cells = {}
    for s in seeds:
        for (name, rec, k, sd), sc in s.scores.items():
            if k in budgets:
                cells.setdefault((name, rec, k), []).append((s.seed, sd, sc))
    grid: dict[tuple, dict[int, list[dict]]] = {}  # (sampler, recognizer, K) -> pipeline seed -> curve rows
    for s in seeds:
        for r in s.curves:
            grid.setdefault((r["sampler"], r["recognizer"], r["k"]), {}).setdefault(s.seed, []).append(r)
    for (name, rec, k), runs in cells.items():
        per_seed = grid.get((name, rec, k), {})
        means = {ps: {m: float(np.mean([r[m] for r in rs])) for m in POOLED} for ps, rs in per_seed.items()}
        all_maps = [r["map"] for rs in per_seed.values() for r in rs]
        cell = {m: round(float(np.mean([v[m] for v in means.values()])), 5) for m in POOLED}
        cell.update({"map_std_pipeline": round(float(np.std([v["map"] for v in means.values()])), 5),
                     "map_std_runs": round(float(np.std(all_maps)), 5),
                     "map_by_pipeline_seed": {str(ps): round(v["map"], 5) for ps, v in sorted(means.items())},
                     "pipeline_seeds": len(means), "runs": len(all_maps)})
        if n_boot:
            cell["map_ci"] = _ci(map_metric([sc for _, _, sc in runs], labels, variant), n, n_boot)
            base = {ps: sc for ps, _, sc in cells.get(("uniform", rec, k), [])}
            if name != "uniform" and base:
                pairs = [(sc, base[ps]) for ps, _, sc in runs if ps in base]
                d = _diff(pairs, labels, variant)
                cell["map_minus_uniform"] = round(_point(d, n), 5)
                ci = cell["map_minus_uniform_ci"] = _ci(d, n, n_boot)
                cell["resolved_vs_uniform"] = bool(ci[0] > 0 or ci[1] < 0)
            # a reference is not compared with the others (each pair once, from the other side's rows); a
            # branch row has its own comparison with its fused model (fused_minus_branch)
            others = ([r for r in references if name not in references and "[" not in name]
                      + ([bases[name]] if name in (bases or {}) else []))
            for ref in dict.fromkeys(others):
                if ref == "uniform" and "map_minus_uniform_ci" in cell:  # computed above: same pairs, same resamples
                    ci = cell["map_minus_uniform_ci"]
                    cell.setdefault("vs", {})[ref] = {"diff": cell["map_minus_uniform"], "ci": ci,
                                                      "resolved": cell["resolved_vs_uniform"],
                                                      "pairs": sum(ps in base for ps, _, _ in runs)}
                    continue
                pairs = _pairs(runs, cells.get((ref, rec, k), []))
                if pairs:
                    d = _diff(pairs, labels, variant)
                    ci = _ci(d, n, n_boot)
                    cell.setdefault("vs", {})[ref] = {"diff": round(_point(d, n), 5), "ci": ci,
                                                      "resolved": bool(ci[0] > 0 or ci[1] < 0), "pairs": len(pairs)}
            fused = {(ps, sd): sc for ps, sd, sc in cells.get((name.split("[")[0], rec, k), [])}
            if "[" in name and fused:
                d = _diff([(fused[(ps, sd)], sc) for ps, sd, sc in runs if (ps, sd) in fused], labels, variant)
                cell["fused_minus_branch"] = round(_point(d, n), 5)
                cell["fused_minus_branch_ci"] = _ci(d, n, n_boot)
        out.setdefault(name, {}).setdefault(rec, {})[str(k)] = cell
    return out


def frontier(seeds: list[SeedResults], variant: str, n_boot: int, reference_k: int, heads: tuple[str, ...] = ()) -> dict:
    """:func:`components.evaluation.frontier.pooled` of every run with per-video scores (uniform at every K it has
    them), each run's mAP on all test videos and on each of ``n_boot`` bootstrap resamples (the resamples
    of :func:`_ci`), its GMACs from ``curves.csv`` (missing or not finite: ``ValueError`` naming the sampler).
    ``heads``: the samplers' own recognizers (:func:`components.evaluation.frontier.curve_recognizers`)."""
    if not seeds:
        return {}
    ids, labels = same_videos(seeds)
    n = len(ids)
    runs: dict[tuple[str, str, int], list[fr.Run]] = {}
    order = {n: i for i, n in enumerate(dict.fromkeys(r["sampler"] for s in seeds for r in s.curves))}
    keep = fr.curve_recognizers(heads)
    for s in seeds:  # samplers in curves.csv's order (evaluate.samplers, ablations, branches), frame recognizer first
        cost = {(r["sampler"], r["recognizer"], r["k"], r["seed"]): r.get("gmacs") for r in s.curves}
        for (name, rec, k, sd), sc in sorted(s.scores.items(), key=lambda kv: (
                order.get(kv[0][0], len(order)), kv[0][0], kv[0][1] != "frame", kv[0][1:])):
            if rec not in keep:
                continue
            g = fr.checked_gmacs(cost.get((name, rec, k, sd)), name, rec, k,
                                 f", pipeline seed {s.seed}, sampler seed {sd}")
            metric = map_metric([sc], labels, variant)
            boot = bootstrap_stats(metric, n, n_boot=n_boot, vectorized=True) if n_boot else np.zeros(0)
            runs.setdefault((name, rec, k), []).append(fr.Run(s.seed, sd, g, _point(metric, n), boot))
    return fr.pooled(runs, reference_k, heads)
