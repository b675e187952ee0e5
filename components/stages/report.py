"""Stage ``report``: figures and paper-style tables from ``evaluate``'s outputs.

* ``reports/figures/curves.png``: mAP and top-1 vs GMACs per video of the learned samplers against
  uniform, MaxConf-L, the oracle and dense (one point): mean over the sampler seeds with the min–max
  band, K = 1…10 along each line; TSI recognizer rows as open diamonds — the papers' Fig. 3.
* ``reports/figures/curves_ablations.png``: one panel per learned sampler with its ablations and
  branches (uniform the reference), one with every training-free baseline.
* ``reports/figures/saliency.png``: every learned sampler's (TSQNet, NSNet, AVGN, ...) per-frame saliency
  over time for one test video per class (min-max normalised, EMA-smoothed; MaxConf-L dashed for
  reference), over the ground-truth salient spans — NSNet Fig. 5.
* ``reports/figures/frames.png``: the T observation frames of a few test videos, a ground-truth row
  and the K picks of uniform, MaxConf-L, every learned sampler and the oracle outlined — TSQNet Fig. 5.
* ``reports/README.md``: the tables (samplers × K with mAP / top-1 / recall / GMACs, mean ± std over
  seeds, bootstrap CIs) and links to the figures.

The figures are drawn by :mod:`components.reporting.figures`. ``dvc plots show`` renders ``reports/curves.csv``
with the templates in ``plots/``; offline use ``salient plots`` (Vega-Lite rendered locally by
vl-convert, no CDN).
"""
from __future__ import annotations

import json
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.tracking import mlflow_tracking as tracking  # noqa: E402
from components.data.manifest import GT_UNKNOWN, read_manifest  # noqa: E402
from components.data.video import read_frames  # noqa: E402
from components.evaluation.sampler_eval import load_runs, summarize  # noqa: E402
from components.reporting.figures import (COLOURS, LABELS, VideoPicks, plot_curves, plot_frame_picks,  # noqa: E402
                                plot_variants, read_curves)
from components.evaluation.metrics import salient_mask  # noqa: E402
from components.models.samplers import own_recognizers, sampler_trainable  # noqa: E402
from components.core.params import Params  # noqa: E402
from components.core.paths import Paths  # noqa: E402
from components.ops.stage_runner import stage_main  # noqa: E402
from components.training.sampler_training import load_sampler, sampler_seeds  # noqa: E402
from components.store.feature_store import FeatureStore  # noqa: E402
from components.evaluation.fusion import fusion_values  # noqa: E402
from components.core.atomic import atomic_savefig, atomic_write_text  # noqa: E402

log = logging.getLogger(__name__)
#: Training-free samplers drawn beside every learned one: MaxConf-L in saliency.png (its per-frame
#: confidence), these in frames.png (before and after the learned samplers' rows).
SALIENCY_REFERENCES, FRAMES_BEFORE, FRAMES_AFTER = ("maxconf_l",), ("uniform", "maxconf_l"), ("oracle",)


def figure_samplers(p: Params) -> tuple[list[str], list[str]]:
    """The samplers of ``saliency.png`` and of ``frames.png``: every learned (trainable) sampler of
    ``evaluate.samplers`` (TSQNet, NSNet, AVGN, ...) with the references around them."""
    learned = [n for n in p.evaluate.samplers if sampler_trainable(n)]
    present = lambda names: [n for n in dict.fromkeys(names) if n in p.evaluate.samplers]  # noqa: E731
    return present([*learned, *SALIENCY_REFERENCES]), present([*FRAMES_BEFORE, *learned, *FRAMES_AFTER])


def ema(x: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Exponential moving average along the last axis: y_0 = x_0, y_t = α x_t + (1-α) y_{t-1}."""
    y = np.array(x, dtype=np.float64)
    for t in range(1, y.shape[-1]):
        y[..., t] = alpha * y[..., t] + (1 - alpha) * y[..., t - 1]
    return y


def plot_saliency(p: Params, paths: Paths, store: FeatureStore, ids: list[str], runs: dict, out) -> list[str]:
    """One panel per class (first test video of it): normalised EMA saliency of each learned sampler."""
    records = {r.video_id: r for r in read_manifest(paths.prepared)[0]}
    classes = store.classes
    labels = np.asarray(store.array("test", "labels"))
    pos = {v: i for i, v in enumerate(store.ids("test"))}
    fidx = np.asarray(store.array("test", "frame_indices"))
    picks = []
    for c in range(len(classes)):
        vid = next((v for v in ids if labels[pos[v], c]), None)
        if vid is not None:
            picks.append((c, vid))
    picks = picks[:12]
    if not picks:
        return []
    cols = min(4, len(picks))
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.8 * rows), squeeze=False)
    for ax, (c, vid) in zip(axes.flat, picks):
        rec, n = records[vid], ids.index(vid)
        codes = rec.gt_codes()
        if codes is not None:
            sal = codes == c
            ax.fill_between(np.arange(len(codes)), 0, 1, where=sal, color="0.85", step="mid", label="salient (GT)")
        for name, run in runs.items():
            s = run.out.saliency[n].numpy().astype(np.float64)
            s = (s - s.min()) / (s.max() - s.min() + 1e-12)
            ax.plot(fidx[pos[vid]], ema(s), "-" if sampler_trainable(name) else "--", lw=1.6, color=COLOURS.get(name),
                    label=LABELS.get(name, name))
        ax.set_title(f"{classes[c]} ({vid})", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(picks):]:
        ax.axis("off")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=6, fontsize=10, frameon=False)
    fig.supxlabel("frame index in the video", fontsize=11)
    fig.supylabel("saliency (min–max normalised, EMA)", fontsize=11)
    fig.tight_layout()
    atomic_savefig(fig, out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [vid for _, vid in picks]


def plot_frames(paths: Paths, store: FeatureStore, ids: list[str], runs: dict, K: int, out, videos: int = 3) -> None:
    """A few test videos' T observation frames with each sampler's K picks (:func:`plot_frame_picks`)."""
    records = {r.video_id: r for r in read_manifest(paths.prepared)[0]}
    pos = {v: i for i, v in enumerate(store.ids("test"))}
    fidx = np.asarray(store.array("test", "frame_indices"))
    gt = np.asarray(store.array("test", "gt"))
    labels = np.asarray(store.array("test", "labels"))
    vids = ids[:: max(1, len(ids) // videos)][:videos]
    picks = {name: run.select(K) for name, run in runs.items()}
    shown = []
    for vid in vids:
        n, row = ids.index(vid), pos[vid]
        salient = None if (gt[row] == GT_UNKNOWN).all() else salient_mask(gt[row:row + 1], labels[row:row + 1])[0]
        classes = ", ".join(store.classes[c] for c in np.flatnonzero(labels[row]))
        shown.append(VideoPicks(f"{vid} ({classes})", read_frames(records[vid].path, fidx[row], size=64), salient,
                                {name: [int(i) for i in picks[name][n]] for name in runs}))
    plot_frame_picks(shown, K, out)


def tables(p: Params, summary: list[dict], metrics: dict) -> list[str]:
    Ks = [k for k in p.evaluate.sampler_budgets]
    hl = metrics["headline"]
    lines = [f"# Evaluation on the test split ({metrics['videos']} videos, T={metrics['T']})", "",
             f"mAP definition (`evaluate.map_variant={metrics['map_variant']}`): {metrics['map_definition']}", "",
             "Mean ± std over sampler seeds. Frame recognizer = mean softmax of the per-frame recognizer over the K "
             "selected frames (cached logits); TSI = the temporal recognizer run on the selected frames.", ""]
    for rec in metrics["recognizers"]:
        ks = [k for k in Ks if any(str(k) in hl[s].get(rec, {}) for s in hl)]
        if not ks:
            continue
        lines += [f"## {rec} recognizer: mAP (%) / top-1 (%) by K", "",
                  "| sampler | " + " | ".join(f"K={k}" for k in ks) + " | GMACs at K=" + str(ks[-1]) + " |",
                  "|---|" + "---|" * (len(ks) + 1)]
        for s, by_rec in hl.items():
            cells = by_rec.get(rec, {})
            if not cells or "[" in s:  # ablations have no TSI rows; branch rows have their own table
                continue
            row = [f"{100 * cells[str(k)]['map']:.1f} ± {100 * cells[str(k)]['map_std']:.1f} / "
                   f"{100 * cells[str(k)]['top1']:.1f}" if str(k) in cells else "–" for k in ks]
            g = cells.get(str(ks[-1]), {}).get("gmacs")
            lines.append(f"| {s} | " + " | ".join(row) + (f" | {g:.3f} |" if g is not None else " | – |"))
        lines.append("")
    lines += ["## Differences to uniform (frame recognizer, first seed, paired bootstrap 95% CI of ΔmAP)", "",
              "| sampler | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
    for s, by_rec in hl.items():
        cells = by_rec.get("frame", {})
        if s == "uniform" or "[" in s or not any("map_minus_uniform_ci" in cells.get(str(k), {}) for k in Ks):
            continue
        lines.append(f"| {s} | " + " | ".join(
            "[{:+.1f}, {:+.1f}]".format(*(100 * np.array(cells[str(k)]["map_minus_uniform_ci"])))
            if "map_minus_uniform_ci" in cells.get(str(k), {}) else "–" for k in Ks) + " |")
    fused = [s for s in hl if f"{s}[" in " ".join(hl)]  # samplers with branch rows
    if fused:
        lines += ["", "## Fusion vs its branches (frame recognizer, same trained models): mAP (%)", "",
                  "| selection | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
        for s in fused:
            for key in [s] + [b for b in hl if b.startswith(f"{s}[")]:
                cells = hl[key].get("frame", {})
                lines.append(f"| {key if key != s else s + ' (fused)'} | " + " | ".join(
                    f"{100 * cells[str(k)]['map']:.1f} ± {100 * cells[str(k)]['map_std']:.1f}" if str(k) in cells
                    else "–" for k in Ks) + " |")
        lines += ["", "Fused minus branch, first seed, paired bootstrap 95% CI of ΔmAP (an interval above 0: fusion "
                  "helps; containing 0: no difference shown on this test set):", "",
                  "| fused − branch | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
        for s in fused:
            for b in [b for b in hl if b.startswith(f"{s}[")]:
                cells = hl[b].get("frame", {})
                lines.append(f"| {s} − {b} | " + " | ".join(
                    "[{:+.1f}, {:+.1f}]".format(*(100 * np.array(cells[str(k)]["fused_minus_branch_ci"])))
                    if "fused_minus_branch_ci" in cells.get(str(k), {}) else "–" for k in Ks) + " |")
    if p.ablations:
        lines += ["", "## Ablations (frame recognizer): mAP (%) of each variant and its base sampler", "",
                  "| variant | changes | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|---|" + "---|" * len(Ks)]
        shown: set[str] = set()
        for name, ab in sorted(p.ablations.items(), key=lambda kv: kv[1].sampler):
            rows_ = [(name, name)] if ab.sampler in shown else [(f"{ab.sampler} (base)", ab.sampler), (name, name)]
            shown.add(ab.sampler)
            for label, key in rows_:
                cells = hl.get(key, {}).get("frame", {})
                lines.append(f"| {label} | {', '.join(ab.set) if key == name else ''} | " + " | ".join(
                    f"{100 * cells[str(k)]['map']:.1f} ± {100 * cells[str(k)]['map_std']:.1f}" if str(k) in cells
                    else "–" for k in Ks) + " |")
    lines += ["", "## Saliency recall@K against ground truth (frame recognizer rows)", "",
              "| sampler | " + " | ".join(f"K={k}" for k in Ks) + " |", "|---|" + "---|" * len(Ks)]
    for s, by_rec in hl.items():
        cells = by_rec.get("frame", {})
        lines.append(f"| {s} | " + " | ".join(f"{cells[str(k)]['salient_recall']:.2f}" if str(k) in cells else "–"
                                              for k in Ks) + " |")
    lines += ["", "## Figures", "", "- accuracy vs GMACs, learned samplers vs key baselines: `figures/curves.png`",
              "- ablations and branches of each learned sampler, all baselines: `figures/curves_ablations.png`",
              "- saliency over time vs ground truth: `figures/saliency.png`",
              "- frames picked by each sampler: `figures/frames.png`", "",
              "Full grid (every K, seed, recognizer): `curves.csv`. Regenerate: `dvc repro report`."]
    return lines


def run(p: Params, paths: Paths) -> dict:
    metrics = json.loads((paths.results / "metrics.json").read_text())
    rows = read_curves(paths.results / "curves.csv")
    summary = summarize(rows)
    fig_dir = paths.reports / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    ablations = {n: a.sampler for n, a in p.ablations.items()}
    plot_curves(rows, fig_dir / "curves.png", ablations, heads=own_recognizers())
    plot_variants(rows, fig_dir / "curves_ablations.png", ablations)
    store = FeatureStore(paths.features)
    valid = np.asarray(store.array("test", "valid"), dtype=bool)
    ids = [i for i, v in zip(store.ids("test"), valid) if v]
    root = paths.features.parent / "samplers"
    fusion = fusion_values(p, paths)  # the settings evaluate used
    runs = {name: load_runs(root, name, "test", ids, load_sampler, sampler_seeds(p, name), fusion.get(name))[0]
            for name in p.evaluate.samplers}
    on_saliency, on_frames = figure_samplers(p)
    plot_saliency(p, paths, store, ids, {n: runs[n] for n in on_saliency}, fig_dir / "saliency.png")
    shown = {n: runs[n] for n in on_frames}
    plot_frames(paths, store, ids, shown, min(p.evaluate.headroom_k, store.T), fig_dir / "frames.png")
    text = "\n".join(tables(p, summary, metrics)) + "\n"
    atomic_write_text(paths.reports / "README.md", text)
    tracking.log_artifacts([fig_dir, paths.reports / "README.md"])
    log.info("\n%s", text)
    return {"figures": sorted(str(f) for f in fig_dir.glob("*.png"))}


def main(argv: list[str] | None = None) -> int:
    return stage_main("report", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
