"""The headline table in the form a paper takes it: ``reports/table.csv`` and ``reports/table.tex``,
written by the ``summary`` stage from its pooled cells (:func:`components.reporting.aggregate.pool`).

Per sampler (frame recognizer; branches left out) at :data:`TABLE_KS` (the papers' K=3 and K=5, those of
``evaluate.sampler_budgets``): mAP (%) as the mean over pipeline seeds ± the std over them (over
sampler seeds with one pipeline seed), GMACs per video, and the difference to uniform with its paired 95%
bootstrap CI over test videos. :func:`spread` says what the ± is: a value with no spread over several
runs is *deterministic* (every run selects the same frames: uniform, dense, the oracle, ...) and is
printed without ±, as is a single run.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Mapping

#: The frame budgets of the paper table (the papers' headline K), where evaluated.
TABLE_KS = (3, 5)
CSV_COLUMNS = ("sampler", "k", "map_pct", "map_std_pct", "spread", "runs", "gmacs", "minus_uniform_pct",
               "minus_uniform_ci_lo_pct", "minus_uniform_ci_hi_pct", "resolved_vs_uniform")


def spread(cell: Mapping[str, Any]) -> tuple[float | None, str]:
    """(std, what it is over) of a pooled cell's mAP: ``over pipeline seeds``, ``over sampler seeds``,
    ``deterministic`` (several runs, no spread: std None) or ``single run`` (std None)."""
    if cell["runs"] <= 1:
        return None, "single run"
    std = cell["map_std_pipeline"] if cell["pipeline_seeds"] > 1 else cell["map_std_runs"]
    if std == 0:
        return None, "deterministic"
    return std, "over pipeline seeds" if cell["pipeline_seeds"] > 1 else "over sampler seeds"


def map_text(cell: Mapping[str, Any], pm: str = " ± ") -> str:
    """mAP (%) with ``± std`` where it has a spread (none for a deterministic value or a single run)."""
    std, _ = spread(cell)
    return f"{100 * cell['map']:.1f}" + (f"{pm}{100 * std:.1f}" if std is not None else "")


def table_rows(headline: Mapping[str, Mapping], budgets: list[int], recognizer: str = "frame") -> list[dict]:
    """One row per (sampler, K in :data:`TABLE_KS` ∩ ``budgets``), in the headline's sampler order."""
    ks = [k for k in TABLE_KS if k in budgets]
    rows = []
    for s, by_rec in headline.items():
        cells = by_rec.get(recognizer, {})
        if "[" in s or not cells:
            continue
        for k in ks:
            c = cells.get(str(k))
            if c is None:
                continue
            std, what = spread(c)
            ci = c.get("map_minus_uniform_ci")
            rows.append({"sampler": s, "k": k, "map_pct": round(100 * c["map"], 4),
                         "map_std_pct": round(100 * std, 4) if std is not None else "", "spread": what,
                         "runs": c["runs"], "gmacs": round(c["gmacs"], 4) if c.get("gmacs") is not None else "",
                         "minus_uniform_pct": round(100 * c["map_minus_uniform"], 4) if ci else "",
                         "minus_uniform_ci_lo_pct": round(100 * ci[0], 4) if ci else "",
                         "minus_uniform_ci_hi_pct": round(100 * ci[1], 4) if ci else "",
                         "resolved_vs_uniform": (ci[0] > 0 or ci[1] < 0) if ci else ""})
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _tex(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def to_latex(rows: list[dict], caption: str) -> str:
    """A booktabs ``table``: sampler | mAP at each K | GMACs at each K | mAP − uniform [95% CI] at each K."""
    ks = sorted({r["k"] for r in rows})
    by = {(r["sampler"], r["k"]): r for r in rows}
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))

    def cell_map(r):
        return f"{r['map_pct']:.1f}" + (f" $\\pm$ {r['map_std_pct']:.1f}" if r["map_std_pct"] != "" else "")

    def cell_diff(r):
        if r["minus_uniform_pct"] == "":
            return "--"
        text = f"{r['minus_uniform_pct']:+.1f} [{r['minus_uniform_ci_lo_pct']:+.1f}, {r['minus_uniform_ci_hi_pct']:+.1f}]"
        return text if r["resolved_vs_uniform"] else f"\\textit{{{text}}}"

    head = (["Sampler"] + [f"mAP K={k}" for k in ks] + [f"GMACs K={k}" for k in ks]
            + [f"$\\Delta$ uniform K={k}" for k in ks])
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (3 * len(ks)) + "}",
             r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for s in samplers:
        cells = [by.get((s, k)) for k in ks]
        lines.append(" & ".join([_tex(s)] + [cell_map(r) if r else "--" for r in cells]
                                + [f"{r['gmacs']:.3f}" if r and r["gmacs"] != "" else "--" for r in cells]
                                + [cell_diff(r) if r else "--" for r in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{_tex(caption)}}}", r"\label{tab:salient-headline}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def caption(out: Mapping[str, Any], bootstrap: int) -> str:
    """What the table's numbers are (mAP definition, seeds, test videos, the CI), for the LaTeX caption."""
    seeds = out["pipeline_seeds"]
    return (f"mAP (%) of the frame recognizer on the K selected frames, {out['videos']} test videos, "
            f"{len(seeds)} pipeline seed(s); mean, with +- the std over pipeline seeds (over sampler seeds with "
            "one pipeline seed) where the value has a spread (none: deterministic or a single run). GMACs per "
            "video (the whole prediction). Delta uniform: mAP minus uniform's at the same K, paired 95% "
            f"percentile bootstrap CI over test videos ({bootstrap} resamples); italic: the CI contains 0 "
            f"(not resolved). mAP: {out['map_variant']}.")
