"""Why AVGN's early exit does not beat fixed K, and whether a gate learned on val does.

    python experiments/exit_gates.py [WORKSPACE]   # default .salient/bench/benchmark

For every pipeline seed of a finished benchmark WORKSPACE, AVGN's head is run on the val and the test
split with K_max frames (most salient first; step t's prediction uses the first t), and on test:

* **fixed K** - the head after exactly K frames (mAP, GMACs per video: the report's section 2 costs);
* **calibrated exit** - stop at the first step whose calibrated max probability (per-step temperatures
  fitted on val) reaches a threshold; the threshold chosen on val as the cheapest whose val mAP reaches
  fixed K=3's val mAP (the issue's target: fixed K=3's mAP at fewer GMACs);
* **learned gate** (FrameExit-style, "FrameExit: Conditional Early Exiting for Efficient Video
  Recognition", arXiv:2104.13400, trains one gate per step to predict that the current prediction is
  correct): one logistic regression on val over the step's calibrated max probability, top-1 − top-2
  margin, entropy, the step, the change of the max probability since the last step and whether the
  arg-max changed; exit at the first step whose gate probability reaches a threshold, chosen on val as
  above;
* **oracle exit** - stop at the first step whose top-1 is correct (at step 1 when none is): the bound no
  gate can pass, i.e. what the head's predictions leave to be gained by stopping early at all;
* **AUROC** of the calibrated max probability and of the learned gate for "the top-1 is correct" at
  steps 1-3 (0.5: no information).

Every test difference is paired over the same videos (:func:`components.evaluation.metrics.map_ci`);
nothing is chosen on test. Head predictions are cached under ``WORKSPACE/.salient/exit_gates/``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from components.core.params import for_pipeline_seed, load_params
from components.core.paths import Paths
from components.evaluation.avgn_calibration import calibrate, choose_gate, step_temperatures
from components.evaluation.avgn_eval import head_predictions
from components.evaluation.metrics import map_ci, mean_average_precision, top1_hits
from components.reporting.avgn_tables import exit_costs, gmacs_counter, load_inputs, video_costs

ws = Path(sys.argv[1] if len(sys.argv) > 1 else ".salient/bench/benchmark").resolve()
p = load_params(ws / "params.yaml")
K_MAX = min(max(p.evaluate.budgets), p.frames.T)
MAPV, BOOT = p.evaluate.map_variant, p.evaluate.bootstrap
CANDS = np.round(np.linspace(0.02, 0.995, 80), 4)


def heads(seed: int) -> dict[str, dict[str, np.ndarray]]:
    """{"val"|"test": {probs [N,K,C], labels [N,C], costs [N,K]}} of the AVGN head at pipeline seed ``seed``."""
    cache = ws / ".salient" / "exit_gates" / f"s{seed}.npz"
    if cache.exists():
        z = np.load(cache)
        return {sp: {k: z[f"{sp}_{k}"] for k in ("probs", "labels", "costs")} for sp in ("val", "test")}
    paths, q = Paths().under(ws).seeded(seed), for_pipeline_seed(p, seed)
    test = load_inputs(q, paths, "test")
    v = test.variants["avgn"]
    model = v.models[0]
    cost = gmacs_counter(model, test)
    base = [cost(k) for k in range(1, K_MAX + 1)]
    out = {}
    for split, inp in (("test", test), ("val", load_inputs(q, paths, "val", variants=test.variants))):
        h = head_predictions(model, inp.data, K_MAX)
        out[split] = {"probs": h["probs"][:, :K_MAX].astype(np.float64), "labels": inp.labels,
                      "costs": video_costs(base, h["idx"], model.glance_frames, inp.enc["light"])}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"{sp}_{k}": a for sp, d in out.items() for k, a in d.items()})
    return out


def features(cal: np.ndarray) -> np.ndarray:
    """Gate inputs per (video, step) from calibrated ``cal [N,K,C]`` -> ``[N,K,6]``."""
    s = np.sort(cal, -1)
    top, margin = s[..., -1], s[..., -1] - s[..., -2]
    ent = -(cal * np.log(np.clip(cal, 1e-12, None))).sum(-1)
    N, K, _ = cal.shape
    step = np.broadcast_to(np.arange(1, K + 1) / K, (N, K))
    arg = cal.argmax(-1)
    d_top = np.concatenate([np.zeros((N, 1)), np.diff(top, axis=1)], 1)
    flip = np.concatenate([np.zeros((N, 1)), (arg[:, 1:] != arg[:, :-1]).astype(float)], 1)
    return np.stack([top, margin, ent, step, d_top, flip], -1)


def correct(cal: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N,K] 0/1: step t's top-1 is a label."""
    return np.stack([top1_hits(cal[:, t], labels) for t in range(cal.shape[1])], 1)


def exit_at(conf: np.ndarray, thr: float) -> np.ndarray:
    """First step (0-based) whose ``conf [N,K]`` reaches ``thr``; the last step when none does."""
    hit = conf >= thr
    return np.where(hit.any(1), hit.argmax(1), conf.shape[1] - 1)


def evaluate_exit(cal: np.ndarray, labels: np.ndarray, costs: np.ndarray, stop: np.ndarray) -> tuple[float, float, np.ndarray]:
    n = np.arange(len(stop))
    pred = cal[n, stop]
    return mean_average_precision(pred, labels, MAPV), float(exit_costs(stop + 1, costs).mean()), pred


def choose(conf_val: np.ndarray, cal_val: np.ndarray, val: dict, target: float) -> float:
    """The cheapest threshold whose val mAP reaches ``target`` (none: the best mAP): the report's
    :func:`components.evaluation.avgn_calibration.choose_gate` over this gate's val curve."""
    def curve(t: float) -> tuple[float, float]:
        return evaluate_exit(cal_val, val["labels"], val["costs"], exit_at(conf_val, t))[:2]
    return choose_gate(curve, CANDS, target, 1.0)["threshold"]


def auroc(score: np.ndarray, ok: np.ndarray) -> float:
    return float(roc_auc_score(ok, score)) if 0 < ok.mean() < 1 else float("nan")


def one_seed(seed: int) -> dict:
    h = heads(seed)
    val, test = h["val"], h["test"]
    temps = step_temperatures(val["probs"], val["labels"])
    cv, ct = calibrate(val["probs"], temps), calibrate(test["probs"], temps)
    target = mean_average_precision(cv[:, 2], val["labels"], MAPV)  # fixed K=3 on val
    fv, ft = features(cv), features(ct)
    okv, okt = correct(cv, val["labels"]), correct(ct, test["labels"])
    gate = LogisticRegression(C=1.0, max_iter=2000).fit(fv.reshape(-1, fv.shape[-1]), okv.reshape(-1))
    gv = gate.predict_proba(fv.reshape(-1, fv.shape[-1]))[:, 1].reshape(okv.shape)
    gt = gate.predict_proba(ft.reshape(-1, ft.shape[-1]))[:, 1].reshape(okt.shape)
    res = {"seed": seed, "videos": {"val": len(cv), "test": len(ct)}, "val_target_map_k3": target,
           "fixed": {}, "auroc": {}}
    for K in range(1, K_MAX + 1):
        res["fixed"][K] = {"map": mean_average_precision(ct[:, K - 1], test["labels"], MAPV),
                           "gmacs": float(test["costs"][:, K - 1].mean()), "top1": float(okt[:, K - 1].mean())}
    ref = ct[:, 2]
    for name, conf_v, conf_t in (("calibrated", cv.max(-1), ct.max(-1)), ("learned", gv, gt)):
        thr = choose(conf_v, cv, val, target)
        m, g, pred = evaluate_exit(ct, test["labels"], test["costs"], exit_at(conf_t, thr))
        res[name] = {"threshold": thr, "map": m, "gmacs": g, "frames": float(exit_at(conf_t, thr).mean() + 1),
                     "diff_k3": m - res["fixed"][3]["map"],
                     "diff_k3_ci": list(map_ci([pred], test["labels"], MAPV, BOOT, minus=[ref]))}
        res["auroc"][name] = [auroc(conf_t[:, t], okt[:, t]) for t in range(3)]
    first_ok = np.where(okt.any(1), okt.argmax(1), 0)
    m, g, _ = evaluate_exit(ct, test["labels"], test["costs"], first_ok)
    res["oracle"] = {"map": m, "gmacs": g, "frames": float(first_ok.mean() + 1),
                     "never_correct": float(1 - okt.any(1).mean())}
    res["gate_coef"] = dict(zip(("max_prob", "margin", "entropy", "step", "d_max_prob", "argmax_changed"),
                                [float(c) for c in gate.coef_[0]]))
    return res


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main() -> None:
    seeds = sorted(int(d.name[1:]) for d in (ws / "data").glob("s[0-9]*") if (d / "samplers" / "avgn").is_dir())
    if not seeds:
        sys.exit(f"no trained AVGN under {ws}/data/s<seed>/samplers/avgn: run the benchmark first")
    out = [one_seed(s) for s in seeds]
    (ws / ".salient" / "exit_gates" / "exit_gates.json").write_text(json.dumps(out, indent=1))
    print(f"# Early exit vs fixed K, AVGN's head ({ws.name}; seeds {seeds}; "
          f"{out[0]['videos']['test']} test videos; thresholds chosen on val for fixed K=3's val mAP)\n")
    print("| seed | fixed K=3 mAP / GMACs | calibrated exit: thr, frames, mAP / GMACs, ΔmAP vs K=3 [CI] "
          "| learned gate: thr, frames, mAP / GMACs, ΔmAP vs K=3 [CI] | oracle exit: frames, mAP / GMACs "
          "| AUROC steps 1-3 (calibrated; learned) |")
    print("|---|---|---|---|---|---|")
    for r in out:
        f3 = r["fixed"][3]
        cells = []
        for k in ("calibrated", "learned"):
            e = r[k]
            lo, hi = e["diff_k3_ci"]
            cells.append(f"{e['threshold']:.3f}, {e['frames']:.2f}, {pct(e['map'])} / {e['gmacs']:.3f}, "
                         f"{100 * e['diff_k3']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
        o = r["oracle"]
        au = "; ".join(", ".join(f"{a:.2f}" for a in r["auroc"][k]) for k in ("calibrated", "learned"))
        print(f"| {r['seed']} | {pct(f3['map'])} / {f3['gmacs']:.3f} | {cells[0]} | {cells[1]} | "
              f"{o['frames']:.2f}, {pct(o['map'])} / {o['gmacs']:.3f} | {au} |")
    print("\nFixed K (test mAP / GMACs per video), per seed:\n")
    print("| seed | " + " | ".join(f"K={k}" for k in range(1, K_MAX + 1)) + " |")
    print("|---|" + "---|" * K_MAX)
    for r in out:
        print(f"| {r['seed']} | " + " | ".join(f"{pct(r['fixed'][k]['map'])} / {r['fixed'][k]['gmacs']:.3f}"
                                            for k in range(1, K_MAX + 1)) + " |")


if __name__ == "__main__":
    main()
