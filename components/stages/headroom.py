"""Stage ``headroom``: how much a perfect sampler could win on this dataset.

On the **test** split of the feature store, the frame recognizer's cached logits are averaged over K
frames chosen by the ground-truth *oracle*, *uniform*, *random* and *dense* (all T) selection, for
every K in ``evaluate.budgets``. Writes ``reports/headroom.json`` (DVC metrics) and
``reports/headroom.md``. Also reports the per-frame accuracy of the recognizer (which explains the
gap) and of the light encoder's classifier (what the samplers see) on salient, distractor, generic
and low-quality frames.
"""
from __future__ import annotations

import logging

import numpy as np

from components.data.manifest import GT_GENERIC, GT_LOWQ, GT_UNKNOWN
from components.evaluation.metrics import (mean_average_precision, paired_bootstrap_ci, salient_mask, salient_recall, top1,
                                top1_hits)
from components.core.params import Params
from components.core.selection import average_predictions, oracle_select, random_select, uniform_select
from components.core.paths import Paths, write_report
from components.tracking import mlflow_tracking as tracking
from components.ops.stage_runner import stage_main
from components.store.feature_store import FeatureStore
from components.core.atomic import atomic_write_text

log = logging.getLogger(__name__)


def frame_accuracy(logits: np.ndarray, labels: np.ndarray, kinds: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Share of frames of each kind (mask [N,T]) whose arg-max class is one of the video's labels."""
    correct = np.take_along_axis(labels.astype(bool), logits.argmax(-1), axis=1)
    return {k: float(correct[m].mean()) if m.any() else None for k, m in kinds.items()}


def run(p: Params, paths: Paths) -> dict:
    store = FeatureStore(paths.features)
    ok = np.asarray(store.array("test", "valid"))
    logits = np.asarray(store.array("test", "rec_logits"))[ok]
    gt = np.asarray(store.array("test", "gt"))[ok]
    labels = np.asarray(store.array("test", "labels"))[ok]
    if (gt == GT_UNKNOWN).all():
        raise ValueError("headroom needs per-frame ground truth (the synthetic dataset has it)")
    N, T, _ = logits.shape
    sal = salient_mask(gt, labels)
    rng = np.random.default_rng(p.seed)
    rows = {}
    for K in sorted(set(p.evaluate.budgets) | {p.evaluate.headroom_k}):
        sel = {"oracle": oracle_select(sal, K), "uniform": uniform_select(N, T, K),
               "random": random_select(N, T, K, rng)}
        scores = {name: average_predictions(logits, idx) for name, idx in sel.items()}
        rows[K] = {name: {"top1": top1(scores[name], labels), "map": mean_average_precision(scores[name], labels),
                          "salient_recall": salient_recall(idx, sal)} for name, idx in sel.items()}
        lo, hi = paired_bootstrap_ci(top1_hits(scores["oracle"], labels), top1_hits(scores["uniform"], labels),
                                     seed=p.seed)
        rows[K]["oracle_minus_uniform_top1_ci95"] = [lo, hi]
    dense = average_predictions(logits, uniform_select(N, T, T))
    kinds = {"salient": sal, "distractor": (gt >= 0) & ~sal, "generic": gt == GT_GENERIC, "lowq": gt == GT_LOWQ}
    K0 = p.evaluate.headroom_k
    result = {
        "videos": int(N), "T": int(T), "k": K0,
        "oracle_top1": rows[K0]["oracle"]["top1"], "uniform_top1": rows[K0]["uniform"]["top1"],
        "headroom_top1_points": 100 * (rows[K0]["oracle"]["top1"] - rows[K0]["uniform"]["top1"]),
        "headroom_top1_points_ci95": [100 * x for x in rows[K0]["oracle_minus_uniform_top1_ci95"]],
        "dense_top1": top1(dense, labels), "dense_map": mean_average_precision(dense, labels),
        "frame_acc": frame_accuracy(logits, labels, kinds),
        "light_frame_acc": frame_accuracy(np.asarray(store.array("test", "light_logits"))[ok], labels, kinds),
        "frame_share": {k: float(m.mean()) for k, m in kinds.items()},
        "by_k": {str(k): v for k, v in rows.items()},
    }
    write_report(paths, "headroom.json", result)
    ks = sorted(rows)  # MLflow: <selector>_<metric> at step = K, the one scheme for K (components.tracking.variant_runs)
    for name in ("oracle", "uniform", "random"):
        for m in ("map", "top1", "salient_recall"):
            tracking.log_budget_curve(f"{name}_{m}", ks, [rows[k][name][m] for k in ks])
    lines = [f"# Headroom on the test split ({N} videos, T={T}, frame recognizer, cached logits)", "",
             "| K | oracle top-1 | uniform top-1 | random top-1 | oracle − uniform [95% CI] | oracle recall | uniform recall |",
             "|---|---|---|---|---|---|---|"]
    for K, r in rows.items():
        lines.append(f"| {K} | {100 * r['oracle']['top1']:.1f} | {100 * r['uniform']['top1']:.1f} | "
                     f"{100 * r['random']['top1']:.1f} | {100 * (r['oracle']['top1'] - r['uniform']['top1']):+.1f} "
                     f"[{100 * r['oracle_minus_uniform_top1_ci95'][0]:+.1f}, {100 * r['oracle_minus_uniform_top1_ci95'][1]:+.1f}] | "
                     f"{r['oracle']['salient_recall']:.2f} | {r['uniform']['salient_recall']:.2f} |")
    lines += ["", "Top-1 = arg-max of the mean softmax over the K selected frames; CI: paired bootstrap over "
              "videos (2000 resamples). Recall@K = |selected ∩ salient| / min(K, |salient|).",
              "", f"Dense (all {T} frames): top-1 {100 * result['dense_top1']:.1f}, mAP {100 * result['dense_map']:.1f}.",
              "", "Per-frame recognizer accuracy by frame kind: " + ", ".join(
                  f"{k} {100 * v:.1f}% ({100 * result['frame_share'][k]:.0f}% of frames)"
                  for k, v in result["frame_acc"].items() if v is not None) + ".",
              "", "Per-frame accuracy of the light encoder's classifier (the features every sampler reads): " + ", ".join(
                  f"{k} {100 * v:.1f}%" for k, v in result["light_frame_acc"].items() if v is not None) + "."]
    atomic_write_text(paths.reports / "headroom.md", "\n".join(lines) + "\n")
    log.info("headroom at K=%d: oracle %.3f vs uniform %.3f", K0, result["oracle_top1"], result["uniform_top1"])
    return result


def main(argv: list[str] | None = None) -> int:
    # MLflow: by_k is logged at step = K inside run(), not as by_k/<K>/... metric names
    return stage_main("headroom", lambda p, paths: {k: v for k, v in run(p, paths).items() if k != "by_k"}, argv)


if __name__ == "__main__":
    raise SystemExit(main())
