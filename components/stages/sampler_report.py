"""Stage ``sampler_report``: every sampler and baseline on the **test** split, mean ± std over seeds.

For each K in ``evaluate.sampler_budgets``: saliency recall@K against ground truth (where known),
top-1 and mAP of the frame recognizer's cached logits averaged over the K selected frames (the
sampler's own ``select``, so TSQNet's λ_v union and NSNet's fusion apply). Writes
``reports/samplers.json`` and ``reports/samplers.md``.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import torch

from components.evaluation.cost import encoder_gmacs, sampler_gmacs, video_gmacs
from components.evaluation.metrics import mean_average_precision, salient_mask, salient_recall, top1
from components.models.samplers import SamplerOutput
from components.core.params import Params, evaluated_samplers, variant_params
from components.store.sampler_data import check_store, load_split, union_keys
from components.core.selection import average_predictions
from components.core.paths import Paths, write_report
from components.ops.stage_runner import stage_main
from components.evaluation.sampler_eval import seed_checkpoints
from components.training.sampler_training import load_sampler, sampler_seeds
from components.store.feature_store import FeatureStore
from components.evaluation.fusion import fusion_values, select
from components.core.atomic import atomic_write_text

log = logging.getLogger(__name__)


def run(p: Params, paths: Paths) -> dict:
    store = FeatureStore(paths.features)
    check_store(store, p.frames.T)
    valid = np.asarray(store.array("test", "valid"), dtype=bool)
    ids = [i for i, v in zip(store.ids("test"), valid) if v]
    logits = np.asarray(store.array("test", "rec_logits"))[valid]
    labels = np.asarray(store.array("test", "labels"))[valid]
    gt = np.asarray(store.array("test", "gt"))[valid]
    sal = salient_mask(gt, labels) if (gt >= -2).any() else None
    root = paths.features.parent / "samplers"
    result: dict = {"videos": len(ids), "T": store.T, "recognizer": "frame recognizer (cached logits)", "samplers": {}}
    enc = encoder_gmacs(p, paths.encoders)
    result["encoder_gmacs_per_frame"] = enc
    registered = [variant_params(p, n)[0] for n in evaluated_samplers(p)]
    test_data, _ = load_split(store, "test", keys=union_keys(registered))  # the valid rows, as the samplers read them
    one = {k: v[:1] for k, v in test_data.items()}  # one video, to count each sampler's MACs
    costs = {}
    diag: dict[str, list[dict]] = {}  # attention diagnostics of TSQNet-like samplers, per seed
    Kd = min(p.evaluate.headroom_k, store.T)
    fusion = fusion_values(p, paths)  # fusion.source: the tune_fusion result or the params
    for name in evaluated_samplers(p):  # evaluate.samplers, then the ablations
        per_k: dict[str, dict[str, list[float]]] = {}
        for _, ck in seed_checkpoints(root, name, sampler_seeds(p, name)):  # the configured seeds, all present
            model = load_sampler(ck)
            sal_file = np.load(ck.with_name(f"saliency_{ck.stem}.npz"))
            if list(sal_file["test/ids"]) != ids:
                raise ValueError(f"{ck}: saliency rows do not match the feature store's test split; rerun train_sampler@{name}")
            branches = {k.split("/", 1)[1]: torch.from_numpy(sal_file[k]) for k in sal_file.files
                        if k.startswith("test/") and k not in ("test/ids", "test/saliency")}
            out = SamplerOutput(saliency=torch.from_numpy(sal_file["test/saliency"]), branches=branches)
            if sal is not None and hasattr(model, "attention_diagnostics"):
                diag.setdefault(name, []).append(model.attention_diagnostics(test_data, labels, sal, Kd))
            for K in p.evaluate.sampler_budgets:
                idx = select(model, out, K, fusion.get(name))
                scores = average_predictions(logits, idx)
                row = per_k.setdefault(str(K), {"top1": [], "map": [], "salient_recall": []})
                row["top1"].append(top1(scores, labels))
                row["map"].append(mean_average_precision(scores, labels))
                row["salient_recall"].append(salient_recall(idx, sal) if sal is not None else float("nan"))
        result["samplers"][name] = {K: {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)}
                                        for m, v in row.items()} for K, row in per_k.items()}
        own = sampler_gmacs(model, one)
        total5 = video_gmacs(name, model, enc, own, store.T, min(5, store.T))
        costs[name] = {"sampler_gmacs": own, "video_gmacs_k5": total5,
                       "sampler_share_k5": own / total5 if total5 else 0.0}
    result["costs"] = costs
    result["training"] = {n: json.loads((root / n / "training.json").read_text())
                          for n in evaluated_samplers(p) if (root / n / "training.json").exists()}
    result["attention_diagnostics"] = {"k": Kd, "samplers": {
        n: {b: {m: float(np.mean([d[b][m] for d in ds])) for m in ds[0][b]} for b in ds[0]} for n, ds in diag.items()}}
    write_report(paths, "samplers.json", result)
    Ks = [str(k) for k in p.evaluate.sampler_budgets]
    lines = [f"# Samplers on the test split ({len(ids)} videos, T={store.T}, frame recognizer)", "",
             "Top-1 (%) of the mean softmax over the K selected frames, mean ± std over seeds; "
             "recall@K = |selected ∩ salient| / min(K, |salient|).", "",
             "| sampler | " + " | ".join(f"top-1 K={k}" for k in Ks) + " | " + " | ".join(f"recall K={k}" for k in Ks) + " |",
             "|---|" + "---|" * (2 * len(Ks))]
    for name, r in result["samplers"].items():
        acc = " | ".join(f"{100 * r[k]['top1']['mean']:.1f} ± {100 * r[k]['top1']['std']:.1f}" for k in Ks)
        rec = " | ".join(f"{r[k]['salient_recall']['mean']:.2f}" for k in Ks)
        lines.append(f"| {name} | {acc} | {rec} |")
    lines += ["", "Cost per video at K=5 (GMACs, measured with FlopCounterMode / 2; encoders per frame: "
              + ", ".join(f"{k} {v:.3f}" for k, v in enc.items()) + ")", "",
              "| sampler | sampler's own layers | whole prediction, K=5 | sampler share |", "|---|---|---|---|"]
    lines += [f"| {n} | {c['sampler_gmacs']:.4f} | {c['video_gmacs_k5']:.3f} | {100 * c['sampler_share_k5']:.2f}% |"
              for n, c in costs.items()]
    if diag:
        lines += ["", f"Where TSQNet loses salient frames (diagnostic, reads the ground truth; recall@{Kd}, mean over "
                  "seeds): eq. 5 saliency vs the attention row of the predicted class and of the true class; "
                  "top-1 of the branch's coarse prediction z.", "",
                  "| sampler | branch | top-1 of z | recall eq. 5 | recall predicted-class row | recall true-class row |",
                  "|---|---|---|---|---|---|"]
        for n, by_b in result["attention_diagnostics"]["samplers"].items():
            lines += [f"| {n} | {b} | {100 * d['video_top1']:.1f} | {d['recall_eq5']:.2f} | "
                      f"{d['recall_predicted_row']:.2f} | {d['recall_true_row']:.2f} |" for b, d in by_b.items()]
    if result["training"]:
        lines += ["", "Training (per sampler seed): optimizer steps up to the kept epoch (early stopping on "
                  f"`train_sampler.monitor` = {p.train_sampler.monitor}), the best epoch and the epochs run.", "",
                  "| sampler | seed | steps to best | best epoch | epochs run | steps per epoch |", "|---|---|---|---|---|---|"]
        lines += [f"| {n} | {sd} | {r['steps_to_best']} | {r['best_epoch']} | {r['epochs_run']} | {r['steps_per_epoch']} |"
                  for n, by_seed in result["training"].items() for sd, r in by_seed.items()]
    atomic_write_text(paths.reports / "samplers.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
    return result


def main(argv: list[str] | None = None) -> int:
    # MLflow: the per-sampler numbers at each K are the evaluate stage's variant runs; here the costs only
    return stage_main("sampler_report", lambda p, paths: {"costs": run(p, paths)["costs"]}, argv)


if __name__ == "__main__":
    raise SystemExit(main())
