"""Figures shared by the per-seed ``report`` and the all-seeds ``summary``.

* :func:`plot_curves` — the main figure (the papers' Fig. 3): mAP and top-1 against GMACs per video
  of the learned samplers against the key baselines (uniform, MaxConf-L, the oracle; dense as one
  point), each line the mean over runs (pipeline seed × sampler seed) with the min–max band over them;
  the TSI recognizer's rows as open diamonds in their sampler's colour; AVGN's own head (recognizer
  ``avgn``: glance + patches + its classifier) as a line of open diamonds in AVGN's colour.
* :func:`plot_variants` — small multiples: one panel per learned sampler with its ablations and
  branches (uniform as the grey reference), and one panel with every training-free baseline.
* :func:`plot_frontier` — the efficiency frontier: mAP against GMACs of uniform over every K, dense's
  point and each learned sampler with its band, a cross where it reaches dense's mAP.
* :func:`plot_frame_picks` — the T observation frames of a few videos with each sampler's K picks
  (TSQNet Fig. 5).

A series' role comes from its name (:func:`kind`): ``BASELINES`` are the training-free samplers,
``<sampler>[<branch>]`` one branch of a fused sampler, an ablation is named in ``params.yaml``'s
``ablations`` (without that map: ``<sampler>_<change>``), everything else is learned. The Vega-Lite
templates in ``plots/`` (``dvc plots show``, ``salient plots``) draw the same two groups.
"""
from __future__ import annotations

import csv
from typing import Mapping, NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from matplotlib import patheffects  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from components.core.atomic import atomic_savefig  # noqa: E402

METRICS = ("gmacs", "map", "top1", "salient_recall", "distractor_share")


def read_curves(path) -> list[dict]:
    """``curves.csv`` rows with typed numbers (a metric column an older file lacks reads as NaN)."""
    with open(path) as f:
        return [{**r, "k": int(r["k"]), "seed": int(r["seed"]),
                 **{m: float(r.get(m) or "nan") for m in METRICS}} for r in csv.DictReader(f)]


#: The training-free samplers (no weights; tests check this against the sampler registry).
BASELINES = ("uniform", "random", "dense", "maxconf", "maxconf_l", "videoconf_l", "oracle")
#: The baselines the main figure draws against the learned samplers (dense: one point, all T frames).
KEY_BASELINES = ("uniform", "maxconf_l", "oracle", "dense")
#: Names a reader sees; a name not here is shown as it is in the tables.
LABELS = {"uniform": "Uniform", "random": "Random", "dense": "Dense (all T frames)", "maxconf": "MaxConf",
          "maxconf_l": "MaxConf-L", "videoconf_l": "VideoConf-L", "oracle": "Oracle (true salient frames)",
          "tsqnet": "TSQNet", "nsnet": "NSNet", "avgn": "AVGN"}
#: Axis titles for the columns of ``curves.csv``.
AXES = {"gmacs": "GMACs per video", "map": "mAP (%)", "top1": "top-1 accuracy (%)",
        "salient_recall": "saliency recall@K (%)", "distractor_share": "distractor frames among the K picks (%)",
        "k": "frames selected (K)"}
#: Fixed colours of every registered sampler, the same in every figure and in the HTML pages of
#: ``salient plots`` (:func:`components.reporting.dvc_plots.render_dvc_plots` reads :func:`colours`): the one palette.
COLOURS = {"tsqnet": "#1f77b4", "nsnet": "#d62728", "avgn": "#e7298a", "uniform": "#7f7f7f", "maxconf_l": "#2ca02c",
           "oracle": "#ff7f0e", "dense": "#000000", "random": "#17becf", "maxconf": "#9467bd",
           "videoconf_l": "#a6761d"}
#: The other series' colours (ablations, branches, samplers this table lacks), each far from every one of
#: ``COLOURS`` and from each other, handed out in name order (:func:`colours`).
PALETTE = ("#8c564b", "#1b9e77", "#393b79", "#e6ab02", "#7b4173", "#bcbd22", "#f4a6c8", "#843c39", "#637939")
LINES = {"learned": "-", "baseline": "--", "ablation": ":", "branch": "-."}
MARKERS = {"learned": "o", "baseline": "s", "ablation": "v", "branch": "^"}
#: Markers that take over where a (colour, marker) pair would repeat in one figure (the palette wrapped).
MORE_MARKERS = ("P", "X", "h", "<", ">", "d", "p", "*")
#: The K marked with their number along the lines of the main figure.
MARK_KS = (1, 3, 5, 8)


def colours(names) -> dict[str, str]:
    """One colour per series name: ``COLOURS`` for the registered samplers (and a branch or ablation
    whose name is there), the rest ``PALETTE`` in sorted name order, so a name has the same colour in every
    figure drawn from the same set of names (give each figure every name of ``curves.csv``)."""
    free = sorted({n for n in names if n not in COLOURS})
    return {n: COLOURS.get(n) or PALETTE[free.index(n) % len(PALETTE)] for n in dict.fromkeys(names)}


def kind(name: str, ablations: Mapping[str, str] | None = None) -> str:
    """``learned``, ``baseline`` (training-free), ``ablation`` or ``branch`` (``<sampler>[<branch>]``)."""
    if "[" in name:
        return "branch"
    if name in BASELINES:
        return "baseline"
    if ablations is not None:
        return "ablation" if name in ablations else "learned"
    return "ablation" if "_" in name else "learned"


def base_of(name: str, ablations: Mapping[str, str] | None = None) -> str:
    """The learned sampler a branch or an ablation varies (the name itself for anything else)."""
    k = kind(name, ablations)
    if k == "branch":
        return name.split("[")[0]
    if k == "ablation":
        return (ablations or {}).get(name) or name.split("_")[0]
    return name


def label(name: str, ablations: Mapping[str, str] | None = None) -> str:
    """What a legend calls a series: ``TSQNet``, ``TSQNet: VQM branch``, an ablation by its params name."""
    if kind(name, ablations) == "branch":
        base, branch = name[:-1].split("[")
        return f"{LABELS.get(base, base)}: {branch.upper()} branch only"
    return LABELS.get(name, name)


def series_style(name: str, recognizer: str, index: int, ablations: Mapping[str, str] | None = None,
                 colour: str | None = None, heads: Sequence[str] = ()) -> dict:
    """Matplotlib keywords of one series: ``colour`` or the one of ``COLOURS`` or else ``PALETTE[index]``,
    the line and marker by :func:`kind` (learned solid, training-free dashed, ablation dotted, branch
    dash-dot); a sampler's own head (``heads``: the ``own_recognizer`` names its class declares, AVGN's
    glance -> K patches -> f_C) is a whole curve over K, a line of open diamonds; any other clip recognizer's
    (TSI) row is open diamonds without a line (it is evaluated at a few K only)."""
    k = kind(name, ablations)
    style = {"color": colour or COLOURS.get(name) or PALETTE[index % len(PALETTE)], "ls": LINES[k],
             "lw": 2.2 if k == "learned" else 1.6, "marker": MARKERS[k], "ms": 4.5,
             "zorder": 2 if k == "learned" else 3}  # thin lines over thick ones: both stay visible
    if recognizer in heads:  # a sampler's own head: a whole curve over K, drawn as a line of open diamonds
        style.update(ls="-", marker="D", ms=5, mfc="white", mew=1.4)
    elif recognizer != "frame":
        style.update(ls="none", marker="D", ms=7, mfc="none", mew=1.6)
    return style


def figure_styles(names: list[str], ablations: Mapping[str, str] | None = None,
                  every: list[str] | None = None) -> dict[str, dict]:
    """Frame-recognizer styles of ``names``: colours by :func:`colours` over ``every`` name of the data
    (default ``names``), and no two series with the same (colour, marker) pair: where the palette wrapped,
    the later series takes the next of ``MORE_MARKERS``."""
    col = colours(list(every or []) + list(names))
    out, seen = {}, set()
    for n in dict.fromkeys(names):
        style = series_style(n, "frame", 0, ablations, col[n])
        extra = iter(MORE_MARKERS)
        while (style["color"], style["marker"]) in seen:
            style["marker"] = next(extra)
        seen.add((style["color"], style["marker"]))
        out[n] = style
    return out


class Spread(NamedTuple):
    """One series over K: arrays of K, mean GMACs, and the metric's mean, min and max over runs."""
    k: np.ndarray
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    runs: np.ndarray

    @property
    def is_point(self) -> bool:
        """Every K at the same cost and accuracy (one K; or dense: all T frames whatever K)."""
        return bool(np.ptp(self.x) < 1e-9 and np.ptp(self.mean) < 1e-9 and np.ptp(self.lo) < 1e-9
                    and np.ptp(self.hi) < 1e-9)


def spread(rows: list[dict], metric: str, x: str = "gmacs") -> dict[tuple[str, str], Spread]:
    """(sampler, recognizer) -> :class:`Spread` of ``metric`` (in %) over the runs of each K, a run being
    one row per (pipeline seed, sampler seed); first-seen order."""
    groups: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["recognizer"]), {}).setdefault(r["k"], []).append(r)
    out = {}
    for key, by_k in groups.items():
        ks = sorted(by_k)
        vals = [100 * np.array([r[metric] for r in by_k[k]], dtype=np.float64) for k in ks]
        out[key] = Spread(np.array(ks), np.array([np.mean([r[x] for r in by_k[k]]) for k in ks], dtype=np.float64),
                          np.array([v.mean() for v in vals]), np.array([v.min() for v in vals]),
                          np.array([v.max() for v in vals]), np.array([len(v) for v in vals]))
    return out


def _draw(ax, s: Spread, style: dict, text: str, band: bool = True) -> None:
    """The mean line and its min–max band (where the runs differ); a series of markers only (a TSI row)
    gets min–max bars; a series whose K all fall on one point (dense) is one star."""
    if s.is_point or style.get("ls") == "none":
        star = s.is_point and len(s.k) > 1 and style.get("mfc") != "none"
        at = slice(-1, None) if s.is_point else slice(None)
        mean, lo, hi = s.mean[at], s.lo[at], s.hi[at]
        ax.errorbar(s.x[at], mean, yerr=np.clip([mean - lo, hi - mean], 0, None), capsize=3, label=text,
                    **{**style, "ls": "none", "marker": "*" if star else style["marker"],
                       "ms": 12 if star else style["ms"]})
        return
    ax.plot(s.x, s.mean, label=text, **style)
    if band and np.any(s.hi - s.lo > 1e-9):
        ax.fill_between(s.x, s.lo, s.hi, color=style["color"], alpha=0.15, lw=0)


def mark_ks(ax, s: Spread, colour: str, ks=MARK_KS) -> None:
    """Write K beside the points of ``s`` at the budgets ``ks`` (in the series' colour, white halo)."""
    for k, x, y in zip(s.k, s.x, s.mean):
        if int(k) in ks:
            ax.annotate(str(int(k)), (x, y), textcoords="offset points", xytext=(-3, 5), ha="right", fontsize=8,
                        color=colour, fontweight="bold", zorder=7,
                        path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white")])


def _runs_text(spreads: dict, names) -> str:
    n = sorted({int(r) for (s, _), v in spreads.items() if s in names for r in v.runs})
    return str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"


def main_names(rows: list[dict], ablations: Mapping[str, str] | None = None) -> list[str]:
    """The samplers of the main figure: the learned ones, then the key baselines present."""
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    return ([n for n in names if kind(n, ablations) == "learned"] +
            [n for n in KEY_BASELINES if n in names])


def draw_curves(rows: list[dict], ablations: Mapping[str, str] | None = None, title: str | None = None,
                heads: Sequence[str] = ()):
    """The main figure (see the module docstring); returns the matplotlib figure. ``heads``: the samplers'
    own recognizers (:func:`series_style`)."""
    names = main_names(rows, ablations)
    styles = figure_styles(names, ablations, every=[r["sampler"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8))
    for ax, metric in zip(axes, ("map", "top1")):
        for (name, rec), s in spread(rows, metric).items():
            if name in names:
                text = label(name, ablations) + ("" if rec == "frame" else ": own head (glance + P×P patches)"
                                                  if rec in heads else f" + {rec.upper()} recognizer")
                style = styles[name] if rec == "frame" else series_style(name, rec, 0, ablations, heads=heads) | {
                    "color": styles[name]["color"]}
                _draw(ax, s, style, text)
                if rec == "frame" and not s.is_point:
                    mark_ks(ax, s, style["color"])
        ax.set_xlabel(AXES["gmacs"], fontsize=11)
        ax.set_ylabel(AXES[metric], fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    drawn = dict(zip(*axes[0].get_legend_handles_labels()[::-1]))  # text -> handle
    texts = [label(n, ablations) for n in names if label(n, ablations) in drawn]
    texts += [t for t in drawn if t.endswith("own head (glance + P×P patches)")]
    handles = [drawn[t] for t in texts]
    sp = spread(rows, "map")
    for rec in sorted({rec for (n, rec) in sp if rec != "frame" and rec not in heads and n in names}):
        ks = sorted({r["k"] for r in rows if r["recognizer"] == rec})
        handles.append(Line2D([], [], ls="none", marker="D", ms=7, mfc="none", mew=1.6, color="0.3"))
        texts.append(f"{rec.upper()} recognizer at K={','.join(map(str, ks))}\n(open diamond, sampler's colour)")
    handles.append(Patch(color="0.5", alpha=0.25))
    texts.append("min–max over runs")
    fig.legend(handles, texts, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=10, frameon=False,
               title="solid: learned; dashed: training-free", title_fontsize=10)
    ks = sorted({r["k"] for r in rows if r["recognizer"] == "frame"})
    fig.suptitle(title or "Accuracy vs cost on the test split: learned samplers against the key baselines",
                 fontsize=13)
    runs = _runs_text(sp, names)
    fig.text(0.5, 0.915, f"Lines: mean over {runs} run{'' if runs == '1' else 's'} (pipeline seed × sampler seed); "
             f"bands: min–max over them. K = {ks[0]}…{ks[-1]} frames along each line; numbers: K at "
             f"{', '.join(map(str, MARK_KS))}.", ha="center", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.91))
    return fig


def draw_variants(rows: list[dict], ablations: Mapping[str, str] | None = None, metric: str = "map"):
    """Small multiples (frame recognizer): one panel per learned sampler with its ablations and branches,
    uniform the grey reference; a last panel with every training-free baseline. One colour per series, as in
    every figure (:func:`colours`), and no (colour, marker) pair used twice in the figure; bands (min–max
    over runs) on the full model and uniform only."""
    rows = [r for r in rows if r["recognizer"] == "frame"]
    sp = {n: s for (n, _), s in spread(rows, metric).items()}
    names = list(sp)
    ref = ["uniform"] if "uniform" in sp else []
    panels = [(f"{label(n)}: full model vs its variants", ref, [n] + [
        v for v in names if kind(v, ablations) in ("ablation", "branch") and base_of(v, ablations) == n])
        for n in names if kind(n, ablations) == "learned"]
    panels.append(("Training-free baselines", [], [n for n in names if kind(n, ablations) == "baseline"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.6), squeeze=False)
    styles = figure_styles([n for _, refs, ns in panels for n in refs + ns], ablations, every=names)
    for ax, (title, refs, ns) in zip(axes[0], panels):
        for n in refs + ns:
            _draw(ax, sp[n], {**styles[n], "zorder": 1} if n in refs else styles[n],
                  label(n, ablations) + (" (reference)" if n in refs else ""),
                  band=n == "uniform" or kind(n, ablations) == "learned")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(AXES["gmacs"], fontsize=11)
        ax.set_ylabel(AXES[metric], fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=9.5, frameon=False, ncol=2)
    fig.suptitle("Ablations and branches (frame recognizer): each learned sampler against its variants. "
                 "Lines: mean over runs; bands: min–max over runs (full model and uniform)", fontsize=12)
    fig.tight_layout()
    return fig


def _save(fig, out) -> None:
    atomic_savefig(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_curves(rows: list[dict], out, ablations: Mapping[str, str] | None = None, title: str | None = None,
                heads: Sequence[str] = ()) -> None:
    """:func:`draw_curves` of ``curves.csv`` rows (every run, not a summary), saved to ``out``."""
    _save(draw_curves(rows, ablations, title, heads), out)


def plot_variants(rows: list[dict], out, ablations: Mapping[str, str] | None = None) -> None:
    """:func:`draw_variants` of ``curves.csv`` rows, saved to ``out``."""
    _save(draw_variants(rows, ablations), out)


def draw_frontier(rows: list[dict], fr: dict, ablations: Mapping[str, str] | None = None, log_x: bool = True,
                  heads: Sequence[str] = ()):
    """The efficiency frontier (:mod:`components.evaluation.frontier`): mAP against GMACs per video, uniform's curve
    over every K it was evaluated at (each point labelled with its K), dense as one star, and each learned
    sampler's curve at the K the frontier uses (``fr``'s ``ks``; AVGN's own head as open diamonds), lines the
    mean over runs, bands the min–max over them; a cross where a sampler's curve reaches dense's mAP.
    ``heads``: the samplers' own recognizers (:func:`series_style`)."""
    names = [n for n in dict.fromkeys(r["sampler"] for r in rows) if kind(n, ablations) == "learned"]
    styles = figure_styles(names + ["uniform", "dense"], ablations, every=[r["sampler"] for r in rows])
    fig, ax = plt.subplots(figsize=(10.5, 6.0))
    sp = spread([r for r in rows if r["sampler"] == "uniform" and r["recognizer"] == "frame"], "map")
    if ("uniform", "frame") in sp:
        u = sp[("uniform", "frame")]
        _draw(ax, u, {**styles["uniform"], "zorder": 1}, "Uniform (every K)")
        for k, x, y in zip(u.k, u.x, u.mean):
            ax.annotate(f"K={k}", (x, y), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8.5,
                        color="0.3", zorder=6, path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")])
    dense = [r for r in rows if r["sampler"] == "dense" and r["recognizer"] == "frame"]
    if dense:  # all T frames whatever K: one star at its largest K, bars min–max over runs
        d = spread([r for r in dense if r["k"] == max(r["k"] for r in dense)], "map")[("dense", "frame")]
        ax.errorbar(d.x, d.mean, yerr=np.clip([d.mean - d.lo, d.hi - d.mean], 0, None), capsize=3, ls="none",
                    marker="*", ms=15, color=styles["dense"]["color"], label=LABELS["dense"], zorder=4)
        ax.axhline(d.mean[-1], color="0.2", ls=":", lw=1.0, zorder=0)
        ax.annotate("dense's mAP", (0.0, d.mean[-1]), xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(4, 4), ha="left", fontsize=9, color="0.2")
    crosses = False
    for n in names:
        for rec in ("frame", *heads):
            cell = fr.get("samplers", {}).get(n, {}).get(rec)
            if not cell:
                continue
            ks = set(next(iter(t["ks"] for key, t in cell.items() if key.startswith("to_")), []))
            sub = [r for r in rows if r["sampler"] == n and r["recognizer"] == rec and (not ks or r["k"] in ks)]
            s = spread(sub, "map").get((n, rec))
            if s is None:
                continue
            style = (styles[n] if rec == "frame"
                     else series_style(n, rec, 0, ablations, heads=heads) | {"color": styles[n]["color"]})
            _draw(ax, s, style, label(n, ablations) + ("" if rec == "frame" else ": own head"))
            t = cell.get("to_dense")
            if t and t["reached"]:
                ax.plot([t["gmacs"]], [100 * t["target_map"]], ls="none", marker="X", ms=10, mec="white", mew=0.8,
                        color=styles[n]["color"], zorder=5)
                crosses = True
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(  # 0.2, 0.3, 0.5, 2, 3, 5 between decades
            lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (2, 3, 5) else ""))
    ax.set_xlabel(AXES["gmacs"] + (" (log scale)" if log_x else ""), fontsize=11)
    ax.set_ylabel(AXES["map"], fontsize=11)
    ax.tick_params(labelsize=10)
    ax.tick_params(which="minor", labelsize=8.5)
    ax.grid(alpha=0.3, which="both")
    handles, texts = ax.get_legend_handles_labels()
    if crosses:
        handles.append(Line2D([], [], ls="none", marker="X", ms=9, color="0.3"))
        texts.append("reaches dense's mAP\n(sampler's colour)")
    handles.append(Patch(color="0.5", alpha=0.25))
    texts.append("min–max over runs")
    ax.legend(handles, texts, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=10, frameon=False)
    ax.set_title("Efficiency frontier on the test split: mAP vs cost (frame recognizer unless marked)\n"
                 "a point above uniform's curve beats uniform at the same GMACs", fontsize=12)
    fig.tight_layout()
    return fig


def plot_frontier(rows: list[dict], fr: dict, out, ablations: Mapping[str, str] | None = None,
                  log_x: bool = True, heads: Sequence[str] = ()) -> None:
    """:func:`draw_frontier` of ``curves.csv`` rows and the summary's ``frontier`` section, saved to ``out``."""
    _save(draw_frontier(rows, fr, ablations, log_x, heads), out)


class VideoPicks(NamedTuple):
    """One video of :func:`plot_frame_picks`: thumbnails ``[T,H,W,3]`` uint8, ground-truth salient ``[T]``
    bool (``None`` when the data has no frame labels) and sampler -> the K picked frame indices."""
    title: str
    thumbs: np.ndarray
    salient: np.ndarray | None
    picks: dict[str, list[int]]


def draw_frame_picks(videos: list[VideoPicks], K: int):
    """Per video a ground-truth row (salient frames outlined green) and one row per sampler (picked
    frames outlined red and shown bright, the rest dimmed); row names at a readable size."""
    T = len(videos[0].thumbs)
    rows = [r for v in videos for r in ([(v, None)] if v.salient is not None else []) + [(v, s) for s in v.picks]]
    cell, top = 0.62, 0.95  # inches: one thumbnail, the title and frame numbers above the grid
    w, h = T * cell * 1.06, top + len(rows) * cell * 1.1
    fig, axes = plt.subplots(len(rows), T, figsize=(w, h), squeeze=False, gridspec_kw={"wspace": 0.06, "hspace": 0.1})
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - top / h)
    for r, (v, sampler) in enumerate(rows):
        chosen = set(int(i) for i in v.picks[sampler]) if sampler else set()
        for t in range(T):
            ax = axes[r, t]
            lit = t in chosen if sampler else bool(v.salient[t])
            ax.imshow(v.thumbs[t], alpha=1.0 if lit else 0.35)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = ("#d62728" if sampler else "#1a9850") if lit else "0.85"
            for sp in ax.spines.values():
                sp.set_edgecolor(colour)
                sp.set_linewidth(3.0 if lit else 0.8)
            if r == 0:
                ax.set_title(str(t), fontsize=9, pad=3)
        first = rows[r - 1][0] is not v if r else True
        name = "ground truth" if sampler is None else LABELS.get(sampler, sampler)
        axes[r, 0].set_ylabel((f"{v.title}\n" if first else "") + name, fontsize=10, rotation=0, ha="right",
                              va="center", labelpad=8, fontweight="bold" if first else "normal")
    fig.text(0, 1 - 0.05 / h, f"Frames picked at K={K}: red outline, bright\nGround truth: salient frames, green "
             "outline; columns: observation frame t", fontsize=11, ha="left", va="top")
    return fig


def plot_frame_picks(videos: list[VideoPicks], K: int, out) -> None:
    """:func:`draw_frame_picks`, saved to ``out``."""
    fig = draw_frame_picks(videos, K)
    atomic_savefig(fig, out, dpi=110, bbox_inches="tight")
    plt.close(fig)
