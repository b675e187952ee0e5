"""The efficiency frontier: how much accuracy a sampler buys for its cost, against uniform and dense.

A sampler spends compute twice: on choosing (its own encoders and layers over all T frames) and on
recognizing the K frames it picks. Comparing it with uniform at the same K hides the first part, so
this module compares at the same *cost*, GMACs per video (the ``gmacs`` column of ``curves.csv``):

* **Uniform at matched GMACs.** Uniform's mAP at each K it was evaluated at (``evaluate.budgets``;
  in the summary, every K whose per-video scores ``scores.npz`` holds) gives a curve of mAP against
  GMACs. Read at a sampler's cost by a straight line between the two uniform points whose costs
  enclose it, it says what uniform reaches when spending what the sampler spends. The *difference*
  is the sampler's mAP minus that value: positive means the sampler is worth its cost. A cost below
  uniform's cheapest or above its dearest point is read off the line through the two nearest points
  and marked ``extrapolated`` (never clipped to the end of the curve): the number then assumes
  uniform keeps improving at the rate of its last step, which nobody measured.
* **GMACs to reach a target.** Along a sampler's own curve (mAP against GMACs at each K it was
  evaluated at, points joined by straight lines in order of cost), the smallest cost at which the
  line reaches the target mAP. Targets: dense's mAP (all T frames) and uniform's mAP at
  ``reference_k`` (the largest of ``evaluate.sampler_budgets``, K=8). When even the dearest measured
  point stays below the target the answer is *not reached* (``null`` with ``reached: false``), never a
  number made up beyond the measured K. When the cheapest point already reaches it
  (``at_first_point``), the value is that point's cost: the curve may reach the target at a lower cost
  nobody measured, so it is an upper bound. The saving is ``100 × (1 − cost / dense's GMACs)``.

Pooling follows :mod:`components.reporting.aggregate` (which builds the runs, :func:`components.reporting.aggregate.frontier`):
a *run* is one (pipeline seed, sampler seed); a sampler's mAP at K is the mean over its runs; each run is
compared with uniform of *its own* pipeline seed (runs of a pipeline seed without uniform are left out).
The 95% CIs are percentile bootstraps over test videos with the *same* resamples for every method
(:func:`components.evaluation.metrics.bootstrap_stats`, seed 0, the resamples of every other CI in the summary):
each run carries its mAP on every resample, and on each resample uniform's curve, the sampler's mAP, the
interpolation, the targets and the crossing are all recomputed, so the CI carries the uncertainty of
both sides and of the interpolation (not that of an extrapolation's straight-line assumption). A
crossing not reached on a resample counts as infinitely expensive, so a CI's upper end can be *not
reached* too. Costs are the evaluated ones, not resampled (they do not depend on the videos).

Covered: the frame recognizer and AVGN's own head (recognizer ``avgn``: glance, patches, its
classifier), both against uniform with the frame recognizer; the clip (TSI) recognizer is evaluated
at a few K only and has no curve. A sampler, ablation or branch whose GMACs are missing or not finite
is an error naming it (a zero cost would put it at the front of the frontier).

Per run (MLflow, :func:`run_metrics`, logged on the evaluate stage's variant runs) the same definitions
with that run's own points, its pipeline seed's uniform and dense, and no CI.

This module imports numpy and :mod:`components.evaluation.metrics` only, so the evaluate stage can use it without
depending on the figures or the summary.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from components.evaluation.metrics import percentile_ci

REFERENCE = "uniform"  #: the curve every sampler is read against (frame recognizer)
TARGET = "dense"  #: the accuracy to reach: all T frames (frame recognizer)


def curve_recognizers(heads: Iterable[str] = ()) -> tuple[str, ...]:
    """The recognizers with a curve over K: the frame recognizer and the samplers' own heads (``heads``:
    the ``own_recognizer`` their classes declare, :func:`components.models.samplers.own_recognizers`;
    AVGN's head is ``avgn``). Others (TSI, evaluated at ``tsi.budgets`` only) are left out."""
    return ("frame", *heads)

ROUND = 5


# ------------------------------------------------------------------------------------------ the geometry
def bracket(xs: np.ndarray, x: float) -> tuple[int, int, float, bool]:
    """Where ``x`` falls on the increasing costs ``xs``: ``(i, j, w, extrapolated)`` such that the straight
    line through points ``i`` and ``j`` gives ``(1 − w)·y[i] + w·y[j]`` at ``x``; outside ``[xs[0], xs[-1]]``
    the two end points nearest to ``x`` (``w`` < 0 or > 1) and ``extrapolated`` True."""
    xs = np.asarray(xs, dtype=np.float64)
    if len(xs) < 2:
        raise ValueError(f"a curve needs at least 2 points to be read between them, got {len(xs)}")
    if not np.all(np.diff(xs) > 0):
        raise ValueError(f"the reference costs must increase strictly with K, got {xs.tolist()}")
    if not math.isfinite(x):
        raise ValueError(f"cost {x} is not finite")
    j = int(np.clip(np.searchsorted(xs, x, side="left"), 1, len(xs) - 1))
    i = j - 1
    w = float((x - xs[i]) / (xs[j] - xs[i]))
    return i, j, w, bool(x < xs[0] or x > xs[-1])


def interpolate(xs: np.ndarray, ys: np.ndarray, x: float) -> tuple[np.ndarray | float, bool]:
    """The curve ``(xs, ys)`` read at cost ``x`` by :func:`bracket`; ``ys`` ``[..., P]`` (one curve per
    bootstrap resample, say) -> ``[...]``; and whether that was an extrapolation."""
    i, j, w, extrapolated = bracket(xs, x)
    ys = np.asarray(ys, dtype=np.float64)
    out = (1 - w) * ys[..., i] + w * ys[..., j]
    return (float(out) if out.ndim == 0 else out), extrapolated


def crossing(xs: np.ndarray, ys: np.ndarray, target) -> np.ndarray | float:
    """The smallest cost at which the curve through ``(xs, ys)`` (points ordered by cost, joined by
    straight lines) reaches ``target``: the first point's cost when it already does, ``inf`` when no
    point does. ``ys`` ``[..., P]`` with ``target`` ``[...]`` (or a scalar) -> ``[...]``."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[..., order]
    t = np.asarray(target, dtype=np.float64)[..., None]
    hit = ys >= t  # [..., P]
    first = np.argmax(hit, axis=-1)
    prev = np.maximum(first - 1, 0)
    y0, y1 = np.take_along_axis(ys, prev[..., None], -1)[..., 0], np.take_along_axis(ys, first[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(first > 0, (t[..., 0] - y0) / (y1 - y0), 0.0)
    out = xs[prev] + frac * (xs[first] - xs[prev])
    out = np.where(hit.any(-1), np.where(first > 0, out, xs[first]), np.inf)
    return float(out) if out.ndim == 0 else out


def checked_gmacs(value, sampler: str, recognizer: str, k: int, where: str = "") -> float:
    """``value`` as a finite cost; ``ValueError`` naming the sampler otherwise (never a zero)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if value is None or not math.isfinite(v):
        raise ValueError(f"sampler {sampler!r} ({recognizer} recognizer, K={k}{where}): GMACs "
                         f"{'missing' if value is None else repr(value)}; the frontier needs every evaluated "
                         "cost (rerun evaluate)")
    return v


# ------------------------------------------------------------------------------------------ per run (MLflow)
def run_metrics(rows: Iterable[Mapping], budgets: Iterable[int], reference_k: int,
                heads: Iterable[str] = ()) -> dict[tuple, dict[str, float]]:
    """(variant, recognizer, sampler seed) -> the frontier metrics of that run, from one pipeline seed's
    evaluation rows (``sampler``, ``recognizer``, ``k``, ``seed``, ``gmacs``, ``map``) at ``budgets``:

    * ``matched_uniform_map_k<K>``, ``matched_uniform_diff_k<K>``, ``matched_extrapolated_k<K>`` (1/0);
    * ``reaches_dense`` (1/0), and where reached ``gmacs_to_dense`` and ``saving_vs_dense_pct``;
    * ``reaches_uniform_k<R>`` (1/0), and where reached ``gmacs_to_uniform_k<R>`` (R = ``reference_k``).

    A key that would be a made-up number is left out, never logged as 0. Empty when uniform has
    fewer than 2 K with the frame recognizer (no curve to read). ``heads``: :func:`curve_recognizers`."""
    keep = curve_recognizers(heads)
    rows = [r for r in rows if r["recognizer"] in keep]
    ref = _curve([r for r in rows if r["sampler"] == REFERENCE and r["recognizer"] == "frame"], REFERENCE)
    if len(ref) < 2:
        return {}
    uk = sorted(ref)
    ux, uy = np.array([ref[k][0] for k in uk]), np.array([ref[k][1] for k in uk])
    dense = _curve([r for r in rows if r["sampler"] == TARGET and r["recognizer"] == "frame"], TARGET)
    targets, gd = {}, None
    if dense:
        gd, md = dense[max(dense)]
        targets["dense"] = md
    if reference_k in ref:
        targets[f"uniform_k{reference_k}"] = ref[reference_k][1]
    budgets = set(budgets)
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        if int(r["k"]) in budgets:
            groups.setdefault((r["sampler"], r["recognizer"], int(r["seed"])), []).append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        pts = _curve(rs, key[0])
        m: dict[str, float] = {}
        for k, (x, y) in sorted(pts.items()):
            u, ex = interpolate(ux, uy, x)
            m.update({f"matched_uniform_map_k{k}": u, f"matched_uniform_diff_k{k}": y - u,
                      f"matched_extrapolated_k{k}": float(ex)})
        xs, ys = np.array([p[0] for p in pts.values()]), np.array([p[1] for p in pts.values()])
        for name, t in targets.items():
            c = crossing(xs, ys, t)
            m[f"reaches_{name}"] = float(math.isfinite(c))
            if math.isfinite(c):
                m[f"gmacs_to_{name}"] = c
                if name == "dense":
                    m["saving_vs_dense_pct"] = 100 * (1 - c / gd)
        out[key] = m
    return out


def _curve(rows: list[Mapping], sampler: str) -> dict[int, tuple[float, float]]:
    """K -> (mean GMACs, mean mAP) over the rows at that K; a missing / non-finite cost raises."""
    by: dict[int, list[Mapping]] = {}
    for r in rows:
        by.setdefault(int(r["k"]), []).append(r)
    return {k: (float(np.mean([checked_gmacs(r.get("gmacs"), sampler, r["recognizer"], k, f", seed {r['seed']}")
                               for r in rs])), float(np.mean([float(r["map"]) for r in rs])))
            for k, rs in sorted(by.items())}


# ------------------------------------------------------------------------------------------ pooled (summary)
class Run(NamedTuple):
    """One run of a (sampler, recognizer, K): its ``gmacs``, its ``map`` on all test videos and ``boot``, its
    mAP on each bootstrap resample (``[n_boot]``, the same resamples for every run; empty without CIs)."""
    pipeline_seed: int
    sampler_seed: int
    gmacs: float
    map: float
    boot: np.ndarray


def _finite(x: float) -> float | None:
    return round(float(x), ROUND) if math.isfinite(x) else None


def _ci(stats: np.ndarray) -> list[float | None] | None:
    if not len(stats):
        return None
    lo, hi = percentile_ci(stats)
    return [_finite(lo), _finite(hi)]


def _mean(rs: list[Run]) -> tuple[float, float, np.ndarray]:
    """Mean GMACs, mAP and mAP per resample over runs (each run weighs the same, as in the summary)."""
    return (float(np.mean([r.gmacs for r in rs])), float(np.mean([r.map for r in rs])),
            np.mean([r.boot for r in rs], axis=0))


def pooled(runs: Mapping[tuple[str, str, int], list[Run]], reference_k: int, heads: Iterable[str] = ()) -> dict:
    """The pooled frontier (module docstring) of ``runs``: (sampler, recognizer, K) -> its runs, every
    pipeline seed's (:func:`components.reporting.aggregate.frontier` builds them from ``results/s<seed>/``). For
    ``summary.json``'s ``frontier`` section:

    * ``reference``: uniform's curve (``ks``, ``gmacs``, ``map``: means over pipeline seeds);
    * ``dense``: its ``gmacs``, ``map`` (the target), ``map_ci``; ``uniform_k<R>``: the same at K = R;
    * ``samplers[name][recognizer]``: ``matched[K]`` with ``gmacs``, ``map``, ``uniform_at_matched_gmacs``,
      ``uniform_between_k`` (the two uniform K read between), ``diff``, ``ci``, ``resolved`` (the CI
      excludes 0), ``extrapolated``, ``runs``; and ``to_dense`` / ``to_uniform_k<R>`` with ``gmacs``
      (null: not reached), ``reached``, ``at_first_point``, ``ci`` (an end null: not reached on that
      share of resamples), ``reached_share`` (of the resamples), ``ks`` (the curve's K), ``target_map``,
      and for dense ``saving_pct`` / ``saving_pct_ci``.

    Uniform itself has only ``to_*``; dense none (it is the target); recognizers outside
    :func:`curve_recognizers` (``heads``) are left out. Only ``skipped`` (the reason) when uniform has fewer than 2 K in the
    pipeline seeds that evaluated it. Costs must be finite (:func:`checked_gmacs`)."""
    keep = curve_recognizers(heads)
    runs = {key: rs for key, rs in runs.items() if key[1] in keep and rs}
    for (name, rec, k), rs in runs.items():
        for r in rs:
            checked_gmacs(r.gmacs, name, rec, k, f", pipeline seed {r.pipeline_seed}, sampler seed {r.sampler_seed}")
    # uniform's curve per pipeline seed (those that evaluated it), at the K every one of them has
    per_seed: dict[int, set[int]] = {}
    for (name, rec, k), rs in runs.items():
        if (name, rec) == (REFERENCE, "frame"):
            for r in rs:
                per_seed.setdefault(r.pipeline_seed, set()).add(k)
    uk = sorted(set.intersection(*per_seed.values())) if per_seed else []
    if len(uk) < 2:
        return {"skipped": f"uniform (frame recognizer) has per-video scores at K={uk} only: no curve to read "
                           "other samplers against (the frontier needs at least 2 K of uniform)"}
    ref: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # pipeline seed -> costs [P], mAP [P], [n_boot, P]
    for ps in sorted(per_seed):
        at = [_mean([r for r in runs[(REFERENCE, "frame", k)] if r.pipeline_seed == ps]) for k in uk]
        ref[ps] = (np.array([a[0] for a in at]), np.array([a[1] for a in at]), np.stack([a[2] for a in at], axis=-1))
    ref_gmacs = [float(np.mean([ref[ps][0][i] for ps in ref])) for i in range(len(uk))]
    out: dict = {"reference": {"sampler": REFERENCE, "recognizer": "frame", "ks": uk,
                               "gmacs": [round(g, ROUND) for g in ref_gmacs],
                               "map": [round(float(np.mean([ref[ps][1][i] for ps in ref])), ROUND)
                                       for i in range(len(uk))]},
                 "reference_k": reference_k}

    targets: dict[str, tuple[float, np.ndarray]] = {}
    dense_ks = sorted(k for (n, r, k) in runs if (n, r) == (TARGET, "frame"))
    dense_gmacs = float("nan")
    if dense_ks:  # dense's picks are all T frames whatever K: its largest K stands for it
        dense_gmacs, m, b = _mean(runs[(TARGET, "frame", dense_ks[-1])])
        targets["dense"] = (m, b)
        out["dense"] = {"gmacs": round(dense_gmacs, ROUND), "map": round(m, ROUND), "map_ci": _ci(b)}
    if reference_k in uk:
        _, m, b = _mean(runs[(REFERENCE, "frame", reference_k)])
        targets[f"uniform_k{reference_k}"] = (m, b)
        out[f"uniform_k{reference_k}"] = {"map": round(m, ROUND), "map_ci": _ci(b)}

    def saving(v: float | None) -> float | None:
        return None if v is None else round(100 * (1 - v / dense_gmacs), 2)

    samplers: dict = {}
    for name, rec in dict.fromkeys((n, r) for (n, r, _) in runs):
        if name == TARGET:
            continue
        ks = sorted(k for (n, r, k) in runs if (n, r) == (name, rec))
        cell: dict = {}
        if name != REFERENCE:
            matched = cell["matched"] = {}
            for k in ks:
                g, m, u, d, db, ex = [], [], [], [], [], False  # per run: GMACs, mAP, uniform there, difference
                for r in runs[(name, rec, k)]:
                    if r.pipeline_seed not in ref:  # that pipeline seed has no uniform: left out, as in the summary
                        continue
                    xs, yp, yb = ref[r.pipeline_seed]
                    up, e = interpolate(xs, yp, r.gmacs)
                    g.append(r.gmacs)
                    m.append(r.map)
                    u.append(up)
                    d.append(r.map - up)
                    db.append(r.boot - interpolate(xs, yb, r.gmacs)[0])  # the interpolation redone per resample
                    ex |= e
                if not d:
                    continue
                i, j, _, _ = bracket(ref_gmacs, float(np.mean(g)))
                ci = _ci(np.mean(db, axis=0))
                matched[str(k)] = {"gmacs": round(float(np.mean(g)), ROUND), "map": round(float(np.mean(m)), ROUND),
                                   "uniform_at_matched_gmacs": round(float(np.mean(u)), ROUND),
                                   "uniform_between_k": [uk[i], uk[j]], "diff": round(float(np.mean(d)), ROUND),
                                   "ci": ci, "resolved": bool(ci is not None and None not in ci
                                                              and (ci[0] > 0 or ci[1] < 0)),
                                   "extrapolated": bool(ex), "runs": len(d)}
        curve = [_mean(runs[(name, rec, k)]) for k in ks]
        xs = np.array([c[0] for c in curve])
        yp, yb = np.array([c[1] for c in curve]), np.stack([c[2] for c in curve], axis=-1)
        for tname, (tp, tb) in targets.items():
            c = crossing(xs, yp, tp)
            cb = crossing(xs, yb, tb) if len(tb) else np.zeros(0)  # target and crossing per resample
            entry = {"gmacs": _finite(c), "reached": bool(math.isfinite(c)),
                     "at_first_point": bool(math.isfinite(c) and yp[np.argmin(xs)] >= tp), "ci": _ci(cb),
                     "reached_share": round(float(np.isfinite(cb).mean()), 4) if len(cb) else None,
                     "ks": ks, "target_map": round(tp, ROUND)}
            if tname == "dense":
                entry["saving_pct"] = saving(entry["gmacs"])
                entry["saving_pct_ci"] = None if entry["ci"] is None else [saving(entry["ci"][1]),
                                                                            saving(entry["ci"][0])]
            cell[f"to_{tname}"] = entry
        samplers.setdefault(name, {})[rec] = cell
    out["samplers"] = samplers
    return out


def flat_metrics(fr: dict) -> dict[str, float]:
    """The pooled frontier as scalar metrics for the summary stage's MLflow run:
    ``<sampler>/<recognizer>/matched_uniform_diff_k<K>``, ``.../gmacs_to_dense`` (where reached), ..."""
    out: dict[str, float] = {}
    for name, by_rec in fr.get("samplers", {}).items():
        for rec, cell in by_rec.items():
            pre = f"frontier/{name}/{rec}/"
            for k, c in cell.get("matched", {}).items():
                out[pre + f"matched_uniform_diff_k{k}"] = c["diff"]
                out[pre + f"matched_extrapolated_k{k}"] = float(c["extrapolated"])
            for key, t in cell.items():
                if key.startswith("to_"):
                    out[pre + f"reaches_{key[3:]}"] = float(t["reached"])
                    if t["reached"]:
                        out[pre + f"gmacs_{key}"] = t["gmacs"]
                        if t.get("saving_pct") is not None:
                            out[pre + "saving_vs_dense_pct"] = t["saving_pct"]
    return out


# ------------------------------------------------------------------------------------------ README tables
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cost_text(t: dict) -> str:
    if not t["reached"]:
        return "not reached"
    v = f"{'≤ ' if t['at_first_point'] else ''}{t['gmacs']:.3f}"
    if t["ci"] is None:
        return v
    lo, hi = t["ci"]
    return v + f" [{'–' if lo is None else f'{lo:.3f}'}, {'not reached' if hi is None else f'{hi:.3f}'}]"


def _row_name(name: str, rec: str) -> str:
    return name if rec == "frame" else f"{name} (own head)"


def tables(fr: dict) -> list[str]:
    """The README section ``Efficiency frontier``: the matched-cost table and the cost-to-reach table."""
    if fr.get("skipped"):
        return ["## Efficiency frontier", "", f"Not computed: {fr['skipped']}.", ""]
    if not fr.get("samplers"):
        return []
    ref, rk = fr["reference"], fr["reference_k"]
    uk = ref["ks"]
    lines = ["## Efficiency frontier: mAP at matched GMACs against uniform", "",
             f"Uniform's mAP-vs-GMACs curve (frame recognizer, K={uk[0]}…{uk[-1]}: "
             f"{ref['gmacs'][0]:.3f}–{ref['gmacs'][-1]:.3f} GMACs per video) is read at each sampler's own cost "
             "by a straight line between the two uniform K whose costs enclose it (*uniform at matched GMACs*). "
             "Difference = sampler mAP − that value (points), paired 95% CI: the same bootstrap resamples of the "
             "test videos for both sides, the interpolation redone on each. A cost outside uniform's measured "
             "range is *extrapolated* along uniform's first or last segment and marked so; its CI does not "
             "cover that straight-line assumption. Own head: AVGN's own recognizer (glance + patches), same "
             "uniform curve.", "",
             "| sampler | K | GMACs | mAP (%) | uniform at matched GMACs (%) | difference [95% CI] | resolved? |",
             "|---|---|---|---|---|---|---|"]
    for name, by_rec in fr["samplers"].items():
        for rec, cell in by_rec.items():
            for k, c in cell.get("matched", {}).items():
                lo, hi = c["ci"] or (None, None)
                ci = "" if lo is None else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                between = (f"K={c['uniform_between_k'][0]}–{c['uniform_between_k'][1]}" if not c["extrapolated"]
                           else f"**extrapolated** from K={c['uniform_between_k'][0]}–{c['uniform_between_k'][1]}")
                resolved = "–" if lo is None else ("yes" if c["resolved"] else "no")
                lines.append(f"| {_row_name(name, rec)} | {k} | {c['gmacs']:.3f} | {_pct(c['map'])} | "
                             f"{_pct(c['uniform_at_matched_gmacs'])} ({between}) | {100 * c['diff']:+.1f}{ci} | "
                             f"{resolved + (', extrapolated' if c['extrapolated'] else '')} |")
    dense = fr.get("dense")
    uref = fr.get(f"uniform_k{rk}")
    lines += ["", "### GMACs per video to reach dense's mAP and uniform's mAP at K=" + str(rk), ""]
    what = []
    if dense:
        what.append(f"dense (all T frames): mAP {_pct(dense['map'])} at {dense['gmacs']:.3f} GMACs")
    if uref:
        what.append(f"uniform at K={rk}: mAP {_pct(uref['map'])}")
    lines += ["Targets: " + "; ".join(what) + ". Along each sampler's own curve (its evaluated K, points "
              "joined by straight lines in order of cost), the smallest cost at which it reaches the target, "
              "95% CI over the same resamples (target and crossing recomputed on each). *Not reached*: even the "
              "dearest measured K stays below the target (a CI end *not reached*: so on that share of resamples). "
              "*≤*: the cheapest measured K already reaches it (the true crossing may be cheaper). Saving: "
              "100 × (1 − GMACs / dense's GMACs).", "",
              f"| sampler | GMACs to reach dense [95% CI] | saving vs dense (%) | GMACs to reach uniform K={rk} [95% CI] |",
              "|---|---|---|---|"]
    for name, by_rec in fr["samplers"].items():
        for rec, cell in by_rec.items():
            td, tu = cell.get("to_dense"), cell.get(f"to_uniform_k{rk}")
            if td and td["reached"]:
                s = f"{td['saving_pct']:.1f}"
                if td.get("saving_pct_ci"):
                    lo, hi = td["saving_pct_ci"]
                    s += f" [{'not reached' if lo is None else f'{lo:.1f}'}, {'–' if hi is None else f'{hi:.1f}'}]"
            else:
                s = "–"
            lines.append(f"| {_row_name(name, rec)} | {_cost_text(td) if td else '–'} | {s} | "
                         f"{_cost_text(tu) if tu else '–'} |")
    lines += ["", "Figure: `figures/frontier.png` (mAP vs GMACs: uniform's curve, dense's point, each learned "
              "sampler's curve with its band over runs)."]
    return lines + [""]
