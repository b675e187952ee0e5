"""Stage ``summary``: every pipeline seed's evaluation pooled into the headline tables.

Reads ``results/s<seed>/`` for each of ``pipeline.seeds`` (:mod:`components.reporting.aggregate`) and writes

* ``reports/curves.csv``: the whole grid of every seed, with a ``pipeline_seed`` column (DVC plots);
* ``reports/summary.json`` (DVC metrics): per sampler × recognizer × K at ``evaluate.sampler_budgets``,
  mAP as the mean over pipeline seeds ± the std over them, the pooled bootstrap CI over test videos,
  and the paired CIs of the difference to uniform and of fused − branch, each marked resolved or not;
* ``reports/README.md``: those tables, a difference stated only where its CI excludes 0, and the
  efficiency frontier (:mod:`components.evaluation.frontier`): each sampler's mAP against uniform's at the same
  GMACs, and the GMACs it needs to reach dense's mAP and uniform's at the largest sampler budget
  (also ``summary.json``'s ``frontier`` section and metrics ``frontier/<sampler>/<recognizer>/...`` of
  the stage's MLflow run);
* ``reports/table.csv`` and ``reports/table.tex``: the paper table (:mod:`components.evaluation.paper_table`);
* ``reports/figures/curves.png``: accuracy vs GMACs of the learned samplers against the key baselines,
  mean over all runs with the min–max band over them; ``curves_ablations.png``: the ablations and
  branches beside their sampler, and every training-free baseline; ``frontier.png``: mAP vs GMACs of
  uniform over every K, dense's point and the learned samplers (:mod:`components.reporting.figures`).

A seed whose results are missing is named as failed in every output, never averaged away.
"""
from __future__ import annotations

import csv
import logging

from components.tracking import mlflow_tracking as tracking
from components.core.atomic import atomic_path, atomic_write_text
from components.evaluation.sampler_eval import CURVE_COLUMNS
from components.reporting.figures import plot_curves, plot_frontier, plot_variants
from components.evaluation.frontier import flat_metrics, tables as frontier_tables
from components.evaluation.metrics import MAP_DEFINITIONS
from components.models.samplers import own_recognizers
from components.core.params import Params
from components.evaluation.paper_table import caption, map_text, spread, table_rows, to_csv, to_latex
from components.core.paths import Paths, write_report
from components.ops.stage_runner import stage_main
from components.reporting.aggregate import frontier, load_seed, pool

log = logging.getLogger(__name__)


#: K of the GMACs columns of the README's mAP tables (those evaluated; else the largest K)
GMACS_KS = (3, 5, 8)


def ci_text(ci) -> str:
    lo, hi = ci
    tag = "" if lo > 0 or hi < 0 else " (not resolved)"
    return f"[{100 * lo:+.1f}, {100 * hi:+.1f}]{tag}"


def comparisons(p: Params, hl: dict, Ks: list[int]) -> list[str]:
    """Frame recognizer: each sampler against each reference other than uniform (its own table above),
    and each ablation against the sampler it varies; paired 95% CIs."""
    rows = []
    for s, by_rec in hl.items():
        cells = by_rec.get("frame", {})
        refs = dict.fromkeys(r for k in Ks for r in cells.get(str(k), {}).get("vs", {}) if r != "uniform")
        for ref in refs:
            rows.append(f"| {s} − {ref} | " + " | ".join(
                f"{100 * v['diff']:+.1f} {ci_text(v['ci'])}" if (v := cells.get(str(k), {}).get("vs", {}).get(ref))
                else "–" for k in Ks) + " |")
    if not rows:
        return []
    return ["## Paired comparisons (frame recognizer): points, 95% CI", "",
            f"Every sampler against `evaluate.references` ({', '.join(p.evaluate.references)}) and each ablation "
            "against its base sampler; runs paired by pipeline seed (and sampler seed where both have it).", "",
            "| difference | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks), *rows, ""]


def tables(p: Params, out: dict) -> list[str]:
    hl, Ks = out["headline"], list(p.evaluate.sampler_budgets)
    seeds, failed = out["pipeline_seeds"], out["failed_seeds"]
    lines = [f"# Results over {len(seeds)} pipeline seed(s) ({', '.join(map(str, seeds))}), "
             f"{out['videos']} test videos", ""]
    if failed:
        lines += ["**Failed pipeline seeds (not in any number below): " +
                  "; ".join(f"{s}: {r}" for s, r in failed.items()) + "**", ""]
    lines += [f"mAP definition (`evaluate.map_variant={out['map_variant']}`): {out['map_definition']}", "",
              "Each pipeline seed trains its own encoders, recognizer and samplers (`pipeline.seeds`); a run is one "
              "(pipeline seed, sampler seed). mAP = mean over pipeline seeds of each seed's mean over sampler "
              "seeds, ± the std over pipeline seeds (with one pipeline seed: over sampler seeds); no ± for a single "
              "run or a value without spread (*deterministic*: every run picks the same frames). GMACs per video, "
              "the whole prediction. CIs: percentile bootstrap over test videos (95%), "
              f"{p.evaluate.bootstrap} resamples, the mean over runs recomputed on each resample; differences "
              "are paired (same resamples, same pipeline seed). A CI containing 0 is marked *not resolved*.", ""]
    heads = own_recognizers()  # AVGN's head: the recognizer "avgn"
    for rec in ("frame", "tsi", *heads):
        ks = [k for k in Ks if any(str(k) in hl[s].get(rec, {}) for s in hl)]
        if not ks:
            continue
        what = ("AVGN's own head (glance → its K most salient frames → P×P patches → its classifier) as the "
                "recognizer" if rec in heads else f"{rec} recognizer")
        gks = [k for k in ks if k in GMACS_KS] or ks[-1:]
        lines += [f"## {what}: mAP (%) by K", "",
                  "| sampler | " + " | ".join(f"K={k}" for k in ks) + "".join(f" | GMACs K={k}" for k in gks) + " |",
                  "|---|" + "---|" * (len(ks) + len(gks))]
        for s, by_rec in hl.items():
            cells = by_rec.get(rec, {})
            if not cells or "[" in s:
                continue
            row = [map_text(cells[str(k)]) if str(k) in cells else "–" for k in ks]
            det = all(spread(c)[1] == "deterministic" for c in cells.values())
            row += [f"{g:.3f}" if (g := cells.get(str(k), {}).get("gmacs")) is not None else "–" for k in gks]
            lines.append(f"| {s}{' (deterministic)' if det else ''} | " + " | ".join(row) + " |")
        if not any(s != "uniform" and "[" not in s and any("map_minus_uniform_ci" in hl[s].get(rec, {}).get(str(k), {})
                                                          for k in ks) for s in hl):
            lines.append("")
            continue  # no uniform row with this recognizer (AVGN's head runs on AVGN's own picks only)
        lines += ["", f"### {rec} recognizer: mAP − uniform (points), paired 95% CI", "",
                  "| sampler | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for s, by_rec in hl.items():
            cells = by_rec.get(rec, {})
            if s == "uniform" or "[" in s or not any("map_minus_uniform_ci" in cells.get(str(k), {}) for k in ks):
                continue
            lines.append(f"| {s} | " + " | ".join(
                f"{100 * cells[str(k)]['map_minus_uniform']:+.1f} {ci_text(cells[str(k)]['map_minus_uniform_ci'])}"
                if "map_minus_uniform_ci" in cells.get(str(k), {}) else "–" for k in ks) + " |")
        lines.append("")
    lines += comparisons(p, hl, Ks)
    branches = [b for b in hl if "[" in b and "fused_minus_branch_ci" in str(hl[b])]
    if branches:
        lines += ["## Fused − branch (frame recognizer, same models): points, paired 95% CI", "",
                  "| fused − branch | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
        for b in branches:
            cells = hl[b].get("frame", {})
            lines.append(f"| {b.split('[')[0]} − {b} | " + " | ".join(
                f"{100 * cells[str(k)]['fused_minus_branch']:+.1f} {ci_text(cells[str(k)]['fused_minus_branch_ci'])}"
                if "fused_minus_branch_ci" in cells.get(str(k), {}) else "–" for k in Ks) + " |")
        lines.append("")
    lines += ["## Saliency recall@K against ground truth (frame recognizer rows)", "",
              "| sampler | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
    for s, by_rec in hl.items():
        cells = by_rec.get("frame", {})
        lines.append(f"| {s} | " + " | ".join(f"{cells[str(k)]['salient_recall']:.2f}" if str(k) in cells else "–"
                                              for k in Ks) + " |")
    if any(c.get("distractor_share") == c.get("distractor_share") for by in hl.values() for c in by.get("frame", {}).values()):
        lines += ["", "## Share of distractor frames (another class's scene) among the K picks (frame recognizer rows)", "",
                  "| sampler | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
        for s, by_rec in hl.items():
            cells = by_rec.get("frame", {})
            lines.append(f"| {s} | " + " | ".join(f"{cells[str(k)]['distractor_share']:.3f}" if str(k) in cells
                                                  else "–" for k in Ks) + " |")
    lines += [""] + frontier_tables(out.get("frontier", {}))
    lines += ["Per-seed reports: `reports/s<seed>/README.md`. Full grid: `curves.csv`. Figures: "
              "`figures/curves.png` (learned samplers vs key baselines), `figures/curves_ablations.png` "
              "(ablations and branches, all baselines), `figures/frontier.png` (the efficiency frontier). "
              "The paper table (K=3 and K=5: mAP ± std, GMACs, mAP − uniform with its CI): `table.csv`, "
              "`table.tex`. Regenerate: `dvc repro summary`."]
    return lines


def run(p: Params, paths: Paths) -> dict:
    loaded, failed = [], {}
    heads = own_recognizers()  # the samplers' own recognizers (AVGN's head): curves over K like the frame recognizer
    for s in p.pipeline.seeds:
        try:
            loaded.append(load_seed(paths.results, s))
        except (FileNotFoundError, ValueError) as e:
            failed[str(s)] = str(e)
            log.error("pipeline seed %d: %s", s, e)
    if not loaded:
        raise RuntimeError("no pipeline seed has results: " + "; ".join(failed.values()))
    rows = [r for s in loaded for r in s.curves]
    paths.reports.mkdir(parents=True, exist_ok=True)
    cols = ("pipeline_seed", *CURVE_COLUMNS)
    with atomic_path(paths.reports / "curves.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in cols})
    out = {"pipeline_seeds": [s.seed for s in loaded], "failed_seeds": failed, "videos": len(loaded[0].ids),
           "map_variant": p.evaluate.map_variant, "map_definition": MAP_DEFINITIONS[p.evaluate.map_variant],
           "references": list(p.evaluate.references),
           "headline": pool(loaded, list(p.evaluate.sampler_budgets), p.evaluate.map_variant, p.evaluate.bootstrap,
                            tuple(p.evaluate.references), {n: a.sampler for n, a in p.ablations.items()}),
           "frontier": frontier(loaded, p.evaluate.map_variant, p.evaluate.bootstrap,
                                max(p.evaluate.sampler_budgets), heads)}
    write_report(paths, "summary.json", out)
    fig_dir = paths.reports / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    ablations = {n: a.sampler for n, a in p.ablations.items()}
    plot_curves(rows, fig_dir / "curves.png", ablations, heads=heads,
                title=f"Accuracy vs cost on the test split, {len(loaded)} pipeline seed(s): learned samplers "
                      "against the key baselines")
    plot_variants(rows, fig_dir / "curves_ablations.png", ablations)
    plot_frontier(rows, out["frontier"], fig_dir / "frontier.png", ablations, heads=heads)
    text = "\n".join(tables(p, out)) + "\n"
    atomic_write_text(paths.reports / "README.md", text)
    paper = table_rows(out["headline"], list(p.evaluate.sampler_budgets))
    atomic_write_text(paths.reports / "table.csv", to_csv(paper))
    atomic_write_text(paths.reports / "table.tex", to_latex(paper, caption(out, p.evaluate.bootstrap)))
    tracking.log_metrics(flat_metrics(out["frontier"]))
    tracking.log_artifacts([paths.reports / "README.md", paths.reports / "summary.json", fig_dir / "curves.png",
                            fig_dir / "curves_ablations.png", fig_dir / "frontier.png"])
    log.info("\n%s", text)
    return {"pipeline_seeds": len(loaded), "failed_seeds": len(failed)}


def main(argv: list[str] | None = None) -> int:
    return stage_main("summary", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
