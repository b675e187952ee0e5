"""Figures shared by the per-seed ``report`` and the all-seeds ``summary``: the evaluation grid read
back from ``curves.csv`` (:func:`read_curves`) and accuracy vs GMACs (:func:`plot_curves`, the papers' Fig. 3)."""
from __future__ import annotations

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from components.atomic import atomic_savefig  # noqa: E402

METRICS = ("gflops", "map", "top1", "salient_recall", "distractor_share")


def read_curves(path) -> list[dict]:
    """``curves.csv`` rows with typed numbers (a metric column an older file lacks reads as NaN)."""
    with open(path) as f:
        return [{**r, "k": int(r["k"]), "seed": int(r["seed"]),
                 **{m: float(r.get(m) or "nan") for m in METRICS}} for r in csv.DictReader(f)]


#: Training-free references; drawn dashed with square markers (learned samplers solid, circles).
BASELINES = ("uniform", "random", "dense", "maxconf", "maxconf_l", "videoconf_l", "oracle")


def series_style(name: str, recognizer: str, index: int) -> dict:
    """One distinct look per series: a colour per sampler (23 distinct ones: tab10, Dark2, Set1) and the
    line by kind: learned solid, training-free baseline dashed, ablation dotted, branch dash-dot
    (thin); a clip recognizer (TSI) row gets open markers."""
    import matplotlib.pyplot as plt

    kind = ("branch" if "[" in name else "baseline" if name in BASELINES else
            "learned" if name in ("tsqnet", "nsnet", "avgn") else "ablation")
    ls = {"learned": "-", "baseline": "--", "ablation": ":", "branch": "-."}[kind]
    palette = [*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors, *plt.get_cmap("Set1").colors[:5]]
    style = {"color": palette[index % len(palette)], "ls": ls, "lw": 2.0 if kind == "learned" else 1.2,
             "marker": "o" if kind in ("learned", "ablation") else "s" if kind == "baseline" else "^", "ms": 3.5}
    if recognizer != "frame":
        style["mfc"] = "none"
    return style


def plot_curves(summary: list[dict], out, title: str = "Accuracy vs cost on the test split (mean over seeds; "
                "K grows along each line)") -> None:
    """mAP and top-1 against GMACs per video, one line per (sampler, recognizer); the legend sits
    outside the axes and says which line style is which kind of sampler."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
    series = list(dict.fromkeys((s["sampler"], s["recognizer"]) for s in summary))
    names = list(dict.fromkeys(n for n, _ in series))
    for ax, metric, label in ((axes[0], "map", "mAP (%)"), (axes[1], "top1", "top-1 (%)")):
        for (name, rec) in series:
            pts = sorted((s["gflops"], 100 * s[metric]) for s in summary if (s["sampler"], s["recognizer"]) == (name, rec))
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=name if rec == "frame" else f"{name} ({rec})",
                    **series_style(name, rec, names.index(name)))
        ax.set_xlabel("GMACs per video")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="solid: learned; dashed: "
                   "training-free;\ndotted: ablation; dash-dot: one branch", title_fontsize=7.5)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
