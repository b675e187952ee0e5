"""The cost table of the ``flops`` stage: :class:`~components.evaluation.cost.FlopsRow` lists as
``reports/flops.csv`` (:func:`write_flops_tables`, read back by :func:`read_flops_table`) and
``reports/flops.md`` (one :func:`markdown_table` per setting, in the papers' style). Measuring the
rows is :mod:`components.evaluation.cost`' job.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

from components.evaluation.cost import FlopsRow, total_gmacs
from components.core.atomic import atomic_path, atomic_write_text

CSV_COLUMNS = ("component", "model", "resolution", "gmacs_per_call", "calls", "gmacs", "paper_gmacs")


def markdown_table(rows: Sequence[FlopsRow], title: str, paper_total: float | None = None) -> list[str]:
    """The papers' style (model, resolution, GMACs per call, calls, GMACs, paper) with a total row; the
    paper total is ``paper_total`` or, when every row has one, the sum of the paper's rows."""
    if paper_total is None and rows and all(r.paper_gmacs is not None for r in rows):
        paper_total = sum(r.paper_gmacs for r in rows)

    def g(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    lines = [f"## {title}", "", "| component | model | resolution | GMACs / call | calls | GMACs | paper |",
             "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r.component} | {r.model} | {r.resolution} | {g(r.gmacs_per_call, 4)} | {r.calls} | {g(r.gmacs)} "
              f"| {g(r.paper_gmacs, 2)} |" for r in rows]
    lines.append(f"| **total** | | | | | **{total_gmacs(rows):.3f}** | **{g(paper_total, 2)}** |")
    lines += [f"\nPaper: {src}." for src in sorted({r.source for r in rows if r.source})]
    return lines + [""]


def write_flops_table(rows: Sequence[FlopsRow], csv_path: str | Path, md_path: str | Path | None = None,
                      title: str = "Cost of one prediction (GMACs = the papers' GFLOPs)",
                      paper_total: float | None = None) -> None:
    """One table: :func:`write_flops_tables` with a single setting."""
    write_flops_tables({title: (rows, paper_total)}, csv_path, md_path)


def write_flops_tables(tables: Mapping[str, tuple[Sequence[FlopsRow], float | None]], csv_path: str | Path,
                       md_path: str | Path | None = None, appendix: Sequence[str] = ()) -> None:
    """``csv_path``: one line per row, columns ``setting`` + :data:`CSV_COLUMNS` (empty ``paper_gmacs`` =
    none); ``md_path``: one :func:`markdown_table` per setting (title -> (rows, paper total or None)), then
    the ``appendix`` lines (the flops stage's "Cost regime" section)."""
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("setting", *CSV_COLUMNS))
        for setting, (rows, _) in tables.items():
            for r in rows:
                w.writerow([setting, r.component, r.model, r.resolution, repr(r.gmacs_per_call), r.calls,
                            repr(r.gmacs), "" if r.paper_gmacs is None else repr(r.paper_gmacs)])
    if md_path is None:
        return
    lines = ["# Cost of one prediction (GMACs = the papers' GFLOPs)", "",
             "Measured with torch FlopCounterMode / 2 (multiply-accumulates; convolutions and matrix products) "
             "on the real modules at the listed input size.", ""]
    for setting, (rows, paper_total) in tables.items():
        lines += markdown_table(rows, setting, paper_total)
    lines += list(appendix)
    atomic_write_text(md_path, "\n".join(lines))


def read_flops_table(csv_path: str | Path) -> list[FlopsRow]:
    """The rows of a CSV written by :func:`write_flops_tables`, all settings (``gmacs`` is recomputed)."""
    with Path(csv_path).open(newline="") as fh:
        return [FlopsRow(d["component"], d["model"], d["resolution"], float(d["gmacs_per_call"]), int(d["calls"]),
                         None if d["paper_gmacs"] == "" else float(d["paper_gmacs"]))
                for d in csv.DictReader(fh)]
