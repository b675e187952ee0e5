"""AVGN's and TSI's claims across the pipeline seeds of one benchmark run, in one table.

    python experiments/claims_3seeds.py [WORKSPACE]   # default .salient/bench/benchmark

Reads ``reports/s<seed>/avgn.json`` (the ``avgn_report`` stage) and ``results/s<seed>/scores.npz`` (the
``evaluate`` stage) of every pipeline seed in WORKSPACE and prints markdown:

* **TSI − frame recognizer** on each sampler's K=5 picks: pooled over the seeds as the summary stage
  pools (the mean over seeds of mAP, one paired bootstrap over the test videos, which every seed shares);
* **AVGN's claims** (π − centre-crop hit rate, own head − frame recognizer at K=3, calibrated early exit
  − the cheapest fixed K that reaches it): the per-seed value and 95% CI as the report wrote them, the
  mean ± std over seeds, and a combined CI under a normal approximation (the seeds' CIs read as
  ±1.96 standard errors, the mean's error sqrt(sum se²) / n), which covers the test videos' sampling
  only; and a t-interval over the seeds (mean ± t(0.975, n−1)·std/√n), which covers training-seed
  variance too and is the one to quote when the seeds disagree. The per-video data behind these rows
  is not saved, so the first is an approximation, stated as such next to the table.

A difference is *resolved* when its CI excludes 0.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from components.evaluation.metrics import map_ci, map_metric

ws = Path(sys.argv[1] if len(sys.argv) > 1 else ".salient/bench/benchmark")
seeds = sorted(int(p.name[1:]) for p in (ws / "results").glob("s[0-9]*") if (p / "scores.npz").exists())
if not seeds:
    sys.exit(f"no results/s<seed>/scores.npz under {ws}: run the benchmark first (make benchmark)")


def pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def verdict(lo: float, hi: float) -> str:
    return "" if lo > 0 or hi < 0 else " (not resolved)"


# ----------------------------------------------------------------------- TSI vs the frame recognizer
K = "5"
z = {s: np.load(ws / "results" / f"s{s}" / "scores.npz", allow_pickle=True) for s in seeds}
labels = z[seeds[0]]["labels"] > 0
for s in seeds[1:]:
    if not np.array_equal(z[s]["labels"] > 0, labels):
        sys.exit(f"seed {s} has other test videos than seed {seeds[0]}: no pooled paired CI")
print(f"## TSI − frame recognizer on the same K={K} picks, pipeline seeds {seeds} pooled\n")
print("| picks | TSI mAP | frame mAP | TSI − frame [95% CI] | per seed |\n|---|---|---|---|---|")
for sampler in ("uniform", "tsqnet", "nsnet", "avgn", "dense"):
    tsi, frame, per_seed = [], [], []
    for s in seeds:
        keys = [k for k in z[s].files if k.startswith(f"{sampler}|tsi|{K}|")]
        t = [z[s][k] for k in keys]
        f = [z[s][k.replace("|tsi|", "|frame|")] for k in keys]
        tsi += t
        frame += f
        if t:
            everyone = np.arange(len(labels))[None]
            per_seed.append(float(map_metric(t, labels)(everyone)[0] - map_metric(f, labels)(everyone)[0]))
    if not tsi:
        continue
    everyone = np.arange(len(labels))[None]
    a, b = (float(map_metric(r, labels)(everyone)[0]) for r in (tsi, frame))
    lo, hi = map_ci(tsi, labels, "sklearn", 1000, minus=frame)
    print(f"| {sampler} | {100 * a:.1f} | {100 * b:.1f} | {pct(a - b)} [{pct(lo)}, {pct(hi)}]{verdict(lo, hi)} | "
          f"{', '.join(pct(d) for d in per_seed)} |")

# ------------------------------------------------------------------------------------ AVGN's claims
reports = {s: json.loads((ws / "reports" / f"s{s}" / "avgn.json").read_text()) for s in seeds
           if (ws / "reports" / f"s{s}" / "avgn.json").exists()}


T975 = (12.706, 4.303, 3.182, 2.776, 2.571)  # Student t quantiles, 1-5 degrees of freedom


def combine(rows: list[tuple[float, float, float]]) -> str:
    """(value, lo, hi) per seed -> 'mean ± std; combined CI'."""
    v = np.array([r[0] for r in rows])
    se = np.array([(r[2] - r[1]) / (2 * 1.96) for r in rows])
    m, e = float(v.mean()), float(np.sqrt((se ** 2).sum()) / len(rows))
    lo, hi = m - 1.96 * e, m + 1.96 * e
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    seeds_ci = "–"
    if 1 < len(v) <= len(T975):  # the seeds as draws: mean ± t(0.975, n-1) · std / sqrt(n)
        h = T975[len(v) - 2] * std / np.sqrt(len(v))
        seeds_ci = f"[{pct(m - h)}, {pct(m + h)}]{verdict(m - h, m + h)}"
    return f"{pct(m)} ± {100 * std:.1f} | [{pct(lo)}, {pct(hi)}]{verdict(lo, hi)} | {seeds_ci}"


def per_seed(rows: list[tuple[float, float, float]]) -> str:
    return "; ".join(f"{pct(v)} [{pct(lo)}, {pct(hi)}]" for v, lo, hi in rows)


claims: dict[str, list[tuple[float, float, float]]] = {"π − centre crop, hit rate (K=3 frames)": [],
                                                       "π − random patch, hit rate": [],
                                                       "own head − frame recognizer, mAP at K=3": [],
                                                       "calibrated early exit − matched fixed K, mAP": []}
extra: dict[str, list[str]] = {"π hit rate / centre / random": [], "exit GMACs vs matched fixed K": [],
                               "audio-only / visual-only / both probe, val top-1": []}
for s, d in reports.items():
    rows = {r["policy"]: r for r in d["spatial"]["rows"] if r["variant"] == "avgn"}
    pol = rows["policy"]
    claims["π − centre crop, hit rate (K=3 frames)"].append((pol["minus_centre"]["hit"]["mean"], *pol["minus_centre"]["hit"]["ci"]))
    claims["π − random patch, hit rate"].append((pol["minus_random"]["hit"]["mean"], *pol["minus_random"]["hit"]["ci"]))
    extra["π hit rate / centre / random"].append(" / ".join(f"{100 * rows[p]['hit']['mean']:.1f}"
                                                             for p in ("policy", "centre", "random") if p in rows))
    hv = next(r for r in d["head_vs_frame"] if r["k"] == 3)
    claims["own head − frame recognizer, mAP at K=3"].append(
        (hv["head_map"]["mean"] - hv["frame_map"]["mean"], *hv["head_minus_frame_ci"]))
    test = d["early_exit"]["chosen"]["calibrated"]["test"]
    match = test["match"]
    claims["calibrated early exit − matched fixed K, mAP"].append((match["map_diff"], *match["map_diff_ci"]))
    extra["exit GMACs vs matched fixed K"].append(f"{test['gmacs']['mean']:.3f} vs K={match['k']} {match['gmacs']:.3f}")
    pr = d["val"]["probes"]
    extra["audio-only / visual-only / both probe, val top-1"].append(
        f"{100 * pr['audio']:.1f} / {100 * pr['visual']:.1f} / {100 * pr['audio_visual']:.1f} (chance {100 * pr['chance']:.1f})")

if reports:
    print(f"\n## AVGN, pipeline seeds {sorted(reports)} (points)\n")
    print("| claim | mean ± std over seeds | 95% CI, test videos (normal approx.) | 95% CI, seeds (t) | "
          "per seed: value [95% CI] |\n|---|---|---|---|---|")
    for name, rows in claims.items():
        print(f"| {name} | {combine(rows)} | {per_seed(rows)} |")
    print("\n| also measured | per seed |\n|---|---|")
    for name, vals in extra.items():
        print(f"| {name} | {'; '.join(vals)} |")
