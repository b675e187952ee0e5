"""``salient robustness`` / ``make robustness``: one profile run end to end at several values of one
param, and every sampler compared along that axis (issue 11 item 7: distractor robustness).

The default axis is ``data.synthetic.distractor_fraction`` (the share of frames that show another
class's full scene, sound included), over ``profiles/distractors.yaml``. Each value is a whole
benchmark run (:func:`components.app.profile_run.run_benchmark`: its own workspace
``.salient/bench/<profile>/<key>=<value>/``, data generated, encoders, recognizer and samplers trained
and tuned on val at that value, evaluated on its test split) recorded in ``benchmarks/<profile>/<value>/``.
:func:`collect` then reads each recorded ``reports/summary.json`` and writes, beside them,

* ``robustness.json``: per value and sampler at K (default 3, frame recognizer): mAP (mean over
  pipeline seeds of the mean over sampler seeds), its std over runs, its 95% bootstrap CI over test
  videos, mAP − uniform with its paired CI, and the share of distractor frames among the K picks;
* ``README.md``: the same as tables, a difference stated only where its CI excludes 0;
* ``figures/robustness.png``: mAP and distractor share against the axis.

A value whose run failed is named in every output, never left out silently. Rerunning resumes: the
finished values' workspaces are up to date and DVC skips them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

from components.core.atomic import atomic_savefig, atomic_write_text
from components.app.profile_run import run_benchmark

log = logging.getLogger(__name__)

DEFAULT_KEY = "data.synthetic.distractor_fraction"


def value_label(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def run_sweep(root: Path, profile: Path, key: str, values: Iterable[Any], k: int = 3) -> int:
    """Run ``profile`` at each value of ``key`` and collect the results; returns 0 when every value finished."""
    root = Path(root).resolve()
    name = Path(profile).stem
    record_root = root / "benchmarks" / name
    failed = {}
    for v in values:
        label = value_label(v)
        ws = root / ".salient" / "bench" / name / f"{key}={label}"
        log.info("%s: %s = %s in %s", name, key, label, ws)
        rc = run_benchmark(root, Path(profile), ws, record_root / label, overrides={key: v})
        if rc:
            failed[label] = f"dvc repro exited {rc} (rerun to resume; workspace {ws})"
            log.error("%s = %s failed: %s", key, label, failed[label])
    collect(record_root, key, [value_label(v) for v in values], k, failed)
    return 1 if failed else 0


def collect(record_root: Path, key: str, labels: list[str], k: int = 3, failed: dict[str, str] | None = None) -> dict:
    """Read ``<record_root>/<label>/reports/summary.json`` for each label -> robustness.json, README.md, figure."""
    failed = dict(failed or {})
    by_value: dict[str, dict] = {}
    for label in labels:
        f = Path(record_root) / label / "reports" / "summary.json"
        if label in failed:
            continue
        if not f.is_file():
            failed[label] = f"{f} missing (that value's run did not finish)"
            continue
        try:
            s = json.loads(f.read_text())
            by_value[label] = {"videos": s["videos"], "pipeline_seeds": s["pipeline_seeds"],
                               "failed_seeds": s["failed_seeds"],
                               "samplers": {n: cells["frame"][str(k)] for n, cells in s["headline"].items()
                                            if "[" not in n and str(k) in cells.get("frame", {})}}
        except (ValueError, KeyError) as e:
            failed[label] = f"{f}: unreadable ({e})"
    out = {"key": key, "k": k, "recognizer": "frame", "values": labels, "failed_values": failed, "by_value": by_value}
    record_root = Path(record_root)
    record_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_root / "robustness.json", json.dumps(out, indent=1, sort_keys=True) + "\n")
    if by_value:
        (record_root / "figures").mkdir(exist_ok=True)
        plot(out, record_root / "figures" / "robustness.png")
    atomic_write_text(record_root / "README.md", "\n".join(tables(out)) + "\n")
    return out


def _samplers(out: dict) -> list[str]:
    return list(dict.fromkeys(n for v in out["by_value"].values() for n in v["samplers"]))


def _ci(ci) -> str:
    lo, hi = ci
    return f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" + ("" if lo > 0 or hi < 0 else " not resolved")


def tables(out: dict) -> list[str]:
    key, k, vals = out["key"], out["k"], [v for v in out["values"] if v in out["by_value"]]
    names = _samplers(out)
    first = out["by_value"][vals[0]] if vals else {}
    lines = [f"# Robustness along `{key}` (K={k}, frame recognizer, test split)", "",
             f"Each value is a whole pipeline run (data, encoders, recognizer, samplers, fusion tuned on val) "
             f"recorded in `<value>/`; {first.get('videos', '?')} test videos, pipeline seeds "
             f"{first.get('pipeline_seeds', '?')}. mAP = mean over runs ± std over runs; CIs: 95% bootstrap "
             "over test videos, paired for differences. Regenerate: `salient robustness` (resumes).", ""]
    if out["failed_values"]:
        lines += ["**Failed values (not in any number below): " +
                  "; ".join(f"{v}: {r}" for v, r in out["failed_values"].items()) + "**", ""]
    if not vals:
        return lines
    head = "| sampler | " + " | ".join(f"{key.split('.')[-1]}={v}" for v in vals) + " |"
    rule = "|---|" + "---|" * len(vals)

    def cell(n, v, f):
        c = out["by_value"][v]["samplers"].get(n)
        return f(c) if c else "–"

    lines += ["## mAP (%)", "", head, rule]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(cell(n, v, lambda c: f"{100 * c['map']:.1f} ± {100 * c['map_std_runs']:.1f}")
                                             for v in vals) + " |")
    lines += ["", "## mAP − uniform (points), paired 95% CI", "", head, rule]
    for n in names:
        if n == "uniform":
            continue
        lines.append(f"| {n} | " + " | ".join(cell(n, v, lambda c: f"{100 * c['map_minus_uniform']:+.1f} "
                                                                   f"{_ci(c['map_minus_uniform_ci'])}"
                                                   if "map_minus_uniform_ci" in c else "–") for v in vals) + " |")
    lines += ["", f"## Share of distractor frames among the {k} picks", "", head, rule]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(cell(n, v, lambda c: f"{c.get('distractor_share', float('nan')):.3f}")
                                             for v in vals) + " |")
    return lines


def plot(out: dict, path: Path) -> None:
    # deferred: figures imports matplotlib (~1 s), which the CLI that imports this module never needs otherwise
    from components.reporting.figures import plt, series_style

    vals = [v for v in out["values"] if v in out["by_value"]]
    xs = [float(v) for v in vals]
    names = _samplers(out)
    step = (max(xs) - min(xs) or 1.0) / 150  # a small offset per sampler, so error bars do not hide each other
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, n in enumerate(names):
        style = series_style(n, "frame", i)
        pts = [(x, out["by_value"][v]["samplers"].get(n)) for x, v in zip(xs, vals)]
        pts = [(x, c) for x, c in pts if c]
        if not pts:
            continue
        x = [p[0] + (i - len(names) / 2) * step for p in pts]
        m = [100 * c["map"] for _, c in pts]
        err = [[100 * (c["map"] - c["map_ci"][0]) for _, c in pts], [100 * (c["map_ci"][1] - c["map"]) for _, c in pts]] \
            if all("map_ci" in c for _, c in pts) else None
        axes[0].errorbar(x, m, yerr=err, capsize=2, label=n, **style)
        axes[1].plot(x, [c.get("distractor_share", float("nan")) for _, c in pts], label=n, **style)
    axis = out["key"].split(".")[-1].replace("_", " ")
    axes[0].set(xlabel=axis, ylabel=f"mAP (%) at K={out['k']}", title="mAP (bars: 95% bootstrap CI over test videos)")
    axes[1].set(xlabel=axis, ylabel=f"share of the {out['k']} picks that are distractors",
                title="Distractor frames picked (dashed: training-free baselines)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xticks(xs)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
