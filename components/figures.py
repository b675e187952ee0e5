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


def plot_curves(summary: list[dict], out, title: str = "Accuracy vs cost on the test split (mean over seeds; "
                "K grows along each line)") -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(dict.fromkeys(s["sampler"] for s in summary))
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for ax, metric, label in ((axes[0], "map", "mAP (%)"), (axes[1], "top1", "top-1 (%)")):
        for (name, rec) in dict.fromkeys((s["sampler"], s["recognizer"]) for s in summary):
            pts = sorted((s["gflops"], 100 * s[metric]) for s in summary if (s["sampler"], s["recognizer"]) == (name, rec))
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-o" if rec == "frame" else "--s", color=colors[name], ms=3,
                    label=name if rec == "frame" else f"{name} ({rec})")
        ax.set_xlabel("GMACs per video")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, out, dpi=120)
    plt.close(fig)
