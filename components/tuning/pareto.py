"""Accuracy vs cost on val: an NSGA-II study over (sampler, K, fusion settings) maximising val mAP
and minimising GMACs per video (:func:`pareto_study`), the exact non-dominated set
(:func:`pareto_front`), and the CSV + plot of it (:func:`write_pareto`, ``reports/pareto.csv``,
``reports/figures/pareto.png``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from components.models.samplers import fusion_samplers
from components.tuning.fusion_search import FusionData, _enqueue_defaults, suggest_fusion
from components.tuning.storage import _complete, _progress, _quiet_optuna, _study
from components.core.atomic import atomic_path, atomic_savefig

if TYPE_CHECKING:  # pragma: no cover
    import optuna


def pareto_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points [n, 2] = (accuracy, cost)``, accuracy
    maximised and cost minimised: row i is dominated when some row j has ``acc_j >= acc_i`` and
    ``cost_j <= cost_i`` with one of them strict (identical rows do not dominate each other). Rows
    with a NaN are never on the front. O(n log n): sort by cost, sweep the best accuracy so far."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ok = ~np.isnan(pts).any(1)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return idx
    acc, cost = pts[idx, 0], pts[idx, 1]
    order = np.lexsort((-acc, cost))  # cost ascending, then accuracy descending
    front, best_lower = [], -np.inf  # best accuracy among strictly cheaper rows
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and cost[order[j]] == cost[order[i]]:
            j += 1
        group = order[i:j]
        top = acc[group].max()
        if top > best_lower:
            front += [g for g in group if acc[g] == top]
        best_lower = max(best_lower, top)
        i = j
    return np.sort(idx[np.asarray(front, dtype=np.int64)])


def pareto_study(data: FusionData, budgets: Iterable[int], gmacs: Callable[[str, int], float], n_trials: int,
                 seed: int = 0, storage: Any = None, study_name: str | None = None,
                 defaults: Mapping[str, Mapping[str, Any]] | None = None) -> tuple["optuna.Study", list[dict], np.ndarray]:
    """NSGA-II (seeded) over (sampler in ``data.runs``, K in ``budgets``, the sampler's fusion
    settings), maximising val mAP at K (mean over seeds) and minimising ``gmacs(sampler, K)`` per video.

    ``storage``: an Optuna storage (or None: in memory); an existing study of that name is topped up
    to ``n_trials`` complete trials. Returns ``(study, rows, front)``: one row per complete trial
    (``number, sampler, k, map, gmacs`` and the fusion values), ``front`` the indices of
    :func:`pareto_front` into ``rows`` (the same set as Optuna's ``study.best_trials``).
    """
    import optuna

    names = list(data.runs)
    ks = sorted(set(int(k) for k in budgets))
    if not names:
        raise ValueError("pareto_study: no trained sampler with fusion settings to search")
    study = _study(study_name or "pareto", storage,
                   optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 3))),
                   directions=("maximize", "minimize"))
    if defaults and not study.trials:
        for name in names:  # the params' settings at every K: the front is never worse than them
            for k in ks:
                _enqueue_defaults(study, name, defaults[name], {"sampler": name, "k": k})
    todo = max(0, n_trials - len(_complete(study)))

    def objective(trial):
        name = trial.suggest_categorical("sampler", names)
        k = trial.suggest_categorical("k", ks)
        values = suggest_fusion(trial, name, (defaults or {}).get(name) or {"nsnet_ratio": 0.6})
        trial.set_user_attr("values", values)
        return data.score(name, values, budgets=(k,)), float(gmacs(name, k))

    with _quiet_optuna():
        study.optimize(objective, n_trials=todo, show_progress_bar=todo > 0 and _progress())
    rows = []
    for t in _complete(study):
        vals = t.user_attrs.get("values", {})
        rows.append({"number": t.number, "sampler": t.params["sampler"], "k": int(t.params["k"]),
                     "map": float(t.values[0]), "gmacs": float(t.values[1]),
                     **{key: vals.get(key, "") for keys in fusion_samplers().values() for key in keys}})
    front = pareto_front([(r["map"], r["gmacs"]) for r in rows])
    return study, rows, front


PARETO_COLUMNS = ("number", "sampler", "k", "map", "gmacs", "pareto", "lambda_v", "nsnet_strategy", "nsnet_ratio")


def write_pareto(rows: Sequence[Mapping], front: Iterable[int], csv_path: Path, png_path: Path | None = None,
                 title: str = "val mAP vs GMACs per video") -> None:
    """``csv_path``: every trial with a ``pareto`` 0/1 column (front first, by cost); ``png_path``: all
    trials in grey, each sampler's own front as a staircase in its colour (:func:`components.reporting.figures.colours`),
    the joint front of all samplers circled, every front named in the legend."""
    front = set(int(i) for i in front)
    order = sorted(range(len(rows)), key=lambda i: (i not in front, rows[i]["gmacs"], -rows[i]["map"]))
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=PARETO_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for i in order:
            r = rows[i]
            w.writerow({**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()},
                        "pareto": int(i in front)})
    if png_path is None:
        return
    import matplotlib.pyplot as plt

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig = draw_pareto(rows, front, title)
    atomic_savefig(fig, png_path, dpi=120)
    plt.close(fig)


def draw_pareto(rows: Sequence[Mapping], front: Iterable[int], title: str = "val mAP vs GMACs per video"):
    """The figure of :func:`write_pareto`: all trials in grey, each sampler's own front as a staircase in its
    colour (:func:`components.reporting.figures.colours`), the joint front (``front``: indices of ``rows``) circled,
    every front named in the legend."""
    from components.reporting.figures import LABELS, colours, plt  # deferred: matplotlib (Agg), and the one palette

    front = set(int(i) for i in front)
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    ax.scatter([r["gmacs"] for r in rows], [r["map"] for r in rows], s=14, c="0.8", label="all trials", zorder=1)
    col = colours([r["sampler"] for r in rows])
    for name in sorted({r["sampler"] for r in rows}):  # each sampler's own front: its best mAP per cost
        own = [r for r in rows if r["sampler"] == name]
        pts = sorted({(r["gmacs"], r["map"]): r for r in (own[i] for i in pareto_front(
            [(r["map"], r["gmacs"]) for r in own]))}.values(), key=lambda r: (r["gmacs"], -r["map"]))
        ax.step([r["gmacs"] for r in pts], [r["map"] for r in pts], where="post", c=col[name], lw=1.2, alpha=0.8,
                zorder=2)
        ax.scatter([r["gmacs"] for r in pts], [r["map"] for r in pts], s=22, c=col[name], zorder=3,
                   label=f"front of {LABELS.get(name, name)} ({len(pts)} points)")
    fr = sorted({(rows[i]["gmacs"], rows[i]["map"]): rows[i] for i in front}.values(),  # repeats drawn once
                key=lambda r: (r["gmacs"], -r["map"]))
    if fr:
        ax.scatter([r["gmacs"] for r in fr], [r["map"] for r in fr], s=90, facecolors="none", edgecolors="k", lw=1.2,
                   zorder=4, label="front of all samplers (" + ", ".join(
                       f"{LABELS.get(n, n)} {sum(r['sampler'] == n for r in fr)}"
                       for n in sorted({r["sampler"] for r in fr})) + ")")
        for r in fr:
            ax.annotate(f"K={r['k']}", (r["gmacs"], r["map"]), textcoords="offset points", xytext=(5, -11), fontsize=7)
    ax.set_xlabel("GMACs per video")
    ax.set_ylabel("val mAP")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", title="every sampler's front; circles: the joint front", title_fontsize=8)
    fig.tight_layout()
    return fig
