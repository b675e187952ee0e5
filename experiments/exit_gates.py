"""Why AVGN's early exit does not beat fixed K, and whether any gate learned on val does.

    python experiments/exit_gates.py [WORKSPACE]   # default .salient/bench/benchmark

For every pipeline seed of a finished benchmark WORKSPACE, AVGN's head is run on the train, val and test
splits with K_max frames (most salient first; step t's prediction uses the first t). An exit policy stops
at the first step t <= cap whose gate score reaches a threshold (at the cap when none does). Four gates:

* **max prob** - the calibrated max probability (per-step temperatures fitted on val);
* **probabilities** - a FrameExit-style gate ("FrameExit: Conditional Early Exiting for Efficient Video
  Recognition", arXiv:2104.13400: a gate per step predicts that the current prediction is correct): a
  logistic regression over step t's calibrated max probability, top-1 - top-2 margin, entropy, the step,
  the change of the max probability since the last step and whether the arg-max changed;
* **+ other heads** - those six and what AVGN's other heads say of step t's top-1 class c: the audio-only
  head (f_C^A, eq. 10) - its max probability, whether its arg-max is c, its probability of c; the
  visual-only head (f_C^V, eq. 9) and the frame-t-alone head (eq. 11) - whether each one's arg-max is c
  and its probability of c; the share of steps <= t whose top-1 was c; frame t's saliency s_t;
* **+ embedding** - those 15 and eq. 8's running-max embedding ``max_{s<=t} h_s`` (256-d): the feature
  FrameExit's gates read.

Each learned gate is a standardised L2 logistic regression (C=0.1) fitted on val (the head is trained on
train and is right 80-94% of the time there, against 53-65% on val). The policy's (cap, threshold) is
the cheapest on val - over out-of-fold gate scores (5 folds over videos) - whose val mAP reaches fixed
K=3's val mAP (the issue's target: fixed K=3's mAP at fewer GMACs); on test the gate fitted on all of
val is applied. Also reported:

* **AUROC** of each gate for "step t's top-1 is a label" at steps 1-3: val out-of-fold, test (gate
  fitted on val), and val for the gate fitted on the train split instead (0.5: no information);
* **oracle exit** - stop at the first step whose top-1 is correct (at step 1 when none is), the bound
  no gate can pass; and the bound the cost structure sets: an exit saves at most fixed K=3's GMACs less
  K=1's (the glance over all T frames is paid before any exit).

Every test difference is paired over the same videos (:func:`components.evaluation.metrics.map_ci`);
nothing is chosen on test. Head outputs are cached under ``WORKSPACE/.salient/exit_gates/``.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from components.core.params import for_pipeline_seed, load_params
from components.core.paths import Paths
from components.evaluation.avgn_calibration import calibrate, choose_gate, step_temperatures
from components.evaluation.avgn_eval import head_predictions
from components.evaluation.metrics import map_ci, mean_average_precision, top1_hits
from components.reporting.avgn_tables import exit_costs, gmacs_counter, load_inputs, video_costs

ws = Path(sys.argv[1] if len(sys.argv) > 1 else ".salient/bench/benchmark").resolve()
p = load_params(ws / "params.yaml")
p = dataclasses.replace(p, ablations={})  # AVGN itself only: ablations need not be trained
K_MAX = min(max(p.evaluate.budgets), p.frames.T)
MAPV, BOOT = p.evaluate.map_variant, p.evaluate.bootstrap
CANDS = np.append(np.round(np.linspace(0.02, 0.995, 80), 4), np.inf)  # inf: never exit before the cap
GATES = ("max prob", "probabilities", "+ other heads", "+ embedding")
KEYS = ("probs", "labels", "costs", "idx", "saliency", "frame_probs", "visual_probs", "audio_probs", "embedding")
SPLITS = ("train", "val", "test")


def heads(seed: int) -> dict[str, dict[str, np.ndarray]]:
    """{split: {probs [N,K,C], labels [N,C], costs [N,K], idx, saliency and the gate inputs of
    ``head_predictions(extras=True)``}} of the AVGN head at pipeline seed ``seed``."""
    cache = ws / ".salient" / "exit_gates" / f"s{seed}_heads.npz"
    if cache.exists():
        z = np.load(cache)
        return {sp: {k: z[f"{sp}_{k}"] for k in KEYS} for sp in SPLITS}
    paths, q = Paths().under(ws).seeded(seed), for_pipeline_seed(p, seed)
    test = load_inputs(q, paths, "test")
    model = test.variants["avgn"].models[0]
    cost = gmacs_counter(model, test)
    base = [cost(k) for k in range(1, K_MAX + 1)]
    out = {}
    for split in SPLITS:
        inp = test if split == "test" else load_inputs(q, paths, split, variants=test.variants)
        h = head_predictions(model, inp.data, K_MAX, extras=True)
        out[split] = {k: h[k].astype(np.float64) if h[k].dtype.kind == "f" else h[k] for k in KEYS if k in h}
        out[split].update(labels=inp.labels, costs=video_costs(base, h["idx"], model.glance_frames, inp.enc["light"]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"{sp}_{k}": a for sp, d in out.items() for k, a in d.items()})
    return out


def prob_features(cal: np.ndarray) -> np.ndarray:
    """The "probabilities" gate's inputs per (video, step) from calibrated ``cal [N,K,C]`` -> ``[N,K,6]``."""
    s = np.sort(cal, -1)
    top, margin = s[..., -1], s[..., -1] - s[..., -2]
    ent = -(cal * np.log(np.clip(cal, 1e-12, None))).sum(-1)
    N, K, _ = cal.shape
    step = np.broadcast_to(np.arange(1, K + 1) / K, (N, K))
    arg = cal.argmax(-1)
    d_top = np.concatenate([np.zeros((N, 1)), np.diff(top, axis=1)], 1)
    flip = np.concatenate([np.zeros((N, 1)), (arg[:, 1:] != arg[:, :-1]).astype(float)], 1)
    return np.stack([top, margin, ent, step, d_top, flip], -1)


def head_features(h: dict[str, np.ndarray], cal: np.ndarray) -> np.ndarray:
    """The "+ other heads" gate's 9 extra inputs ``[N,K,9]`` (module docstring)."""
    N, K, _ = cal.shape
    arg = cal.argmax(-1)  # [N,K] step t's top-1 class c

    def at_c(x: np.ndarray) -> np.ndarray:  # [N,K,C] -> [N,K] probability of c
        return np.take_along_axis(x, arg[..., None], -1)[..., 0]

    audio = np.broadcast_to(h["audio_probs"][:, None], cal.shape)
    f = [audio.max(-1), (audio.argmax(-1) == arg).astype(float), at_c(audio)]
    for k in ("visual_probs", "frame_probs"):
        f += [(h[k].argmax(-1) == arg).astype(float), at_c(h[k])]
    f += [np.stack([(arg[:, :t + 1] == arg[:, t:t + 1]).mean(1) for t in range(K)], 1)]
    f += [np.take_along_axis(h["saliency"], h["idx"], 1)]
    return np.stack(f, -1)


def gate_inputs(h: dict[str, np.ndarray], cal: np.ndarray, gate: str) -> np.ndarray:
    x = prob_features(cal)
    if gate in ("+ other heads", "+ embedding"):
        x = np.concatenate([x, head_features(h, cal)], -1)
    if gate == "+ embedding":
        x = np.concatenate([x, h["embedding"]], -1)
    return x


def correct(cal: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N,K] 0/1: step t's top-1 is a label."""
    return np.stack([top1_hits(cal[:, t], labels) for t in range(cal.shape[1])], 1)


def fit(x: np.ndarray, ok: np.ndarray):
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)).fit(
        x.reshape(-1, x.shape[-1]), ok.reshape(-1))


def score(model, x: np.ndarray) -> np.ndarray:
    return model.predict_proba(x.reshape(-1, x.shape[-1]))[:, 1].reshape(x.shape[:2])


def out_of_fold(x: np.ndarray, ok: np.ndarray, folds: int = 5) -> np.ndarray:
    s = np.zeros(ok.shape)
    for tr, te in KFold(folds, shuffle=True, random_state=0).split(np.arange(len(ok))):
        s[te] = score(fit(x[tr], ok[tr]), x[te])
    return s


def exit_at(conf: np.ndarray, thr: float, cap: int) -> np.ndarray:
    """First step (0-based) < ``cap`` whose ``conf [N,K]`` reaches ``thr``; ``cap - 1`` when none does."""
    hit = conf[:, :cap] >= thr
    return np.where(hit.any(1), hit.argmax(1), cap - 1)


def evaluate_exit(cal: np.ndarray, labels: np.ndarray, costs: np.ndarray, stop: np.ndarray) -> tuple[float, float, np.ndarray]:
    pred = cal[np.arange(len(stop)), stop]
    return mean_average_precision(pred, labels, MAPV), float(exit_costs(stop + 1, costs).mean()), pred


def choose(conf: np.ndarray, cal: np.ndarray, split: dict, target: float) -> tuple[int, float]:
    """The cheapest (cap, threshold) whose mAP on this (val) split reaches ``target``; none: the best mAP.
    Per cap, the report's :func:`components.evaluation.avgn_calibration.choose_gate` picks the threshold."""
    def curve(cap: int):
        return lambda t: evaluate_exit(cal, split["labels"], split["costs"], exit_at(conf, t, cap))[:2]

    per_cap = {cap: choose_gate(curve(cap), CANDS, target, 1.0) for cap in range(1, K_MAX + 1)}
    ok = [c for c, g in per_cap.items() if g["reached"]]
    cap = (min(ok, key=lambda c: (per_cap[c]["gmacs"], -per_cap[c]["map"])) if ok
           else max(per_cap, key=lambda c: (per_cap[c]["map"], -per_cap[c]["gmacs"])))
    return cap, per_cap[cap]["threshold"]


def auroc(s: np.ndarray, ok: np.ndarray) -> list[float]:
    return [float(roc_auc_score(ok[:, t], s[:, t])) if 0 < ok[:, t].mean() < 1 else float("nan") for t in range(3)]


def one_seed(seed: int) -> dict:
    h = heads(seed)
    temps = step_temperatures(h["val"]["probs"], h["val"]["labels"])
    cal = {sp: calibrate(h[sp]["probs"], temps) for sp in SPLITS}
    ok = {sp: correct(cal[sp], h[sp]["labels"]) for sp in SPLITS}
    val, test = h["val"], h["test"]
    target = mean_average_precision(cal["val"][:, 2], val["labels"], MAPV)  # fixed K=3 on val
    res = {"seed": seed, "videos": {sp: len(cal[sp]) for sp in SPLITS}, "val_target_map_k3": target,
           "top1_steps_1_3": {sp: ok[sp][:, :3].mean(0).tolist() for sp in SPLITS}, "fixed": {}, "gates": {}}
    for K in range(1, K_MAX + 1):
        res["fixed"][K] = {"map": mean_average_precision(cal["test"][:, K - 1], test["labels"], MAPV),
                           "gmacs": float(test["costs"][:, K - 1].mean())}
    ref = cal["test"][:, 2]
    for gate in GATES:
        if gate == "max prob":
            sv, st = cal["val"].max(-1), cal["test"].max(-1)
            au = {"val_oof": auroc(sv, ok["val"]), "test": auroc(st, ok["test"])}
        else:
            xs = {sp: gate_inputs(h[sp], cal[sp], gate) for sp in SPLITS}
            sv, st = out_of_fold(xs["val"], ok["val"]), score(fit(xs["val"], ok["val"]), xs["test"])
            au = {"val_oof": auroc(sv, ok["val"]), "test": auroc(st, ok["test"]),
                  "val_from_train": auroc(score(fit(xs["train"], ok["train"]), xs["val"]), ok["val"])}
        cap, thr = choose(sv, cal["val"], val, target)
        stop = exit_at(st, thr, cap)
        m, g, pred = evaluate_exit(cal["test"], test["labels"], test["costs"], stop)
        res["gates"][gate] = {"cap": cap, "threshold": thr, "map": m, "gmacs": g, "frames": float(stop.mean() + 1),
                              "diff_k3": m - res["fixed"][3]["map"],
                              "diff_k3_ci": list(map_ci([pred], test["labels"], MAPV, BOOT, minus=[ref])),
                              "auroc": au}
    first_ok = np.where(ok["test"].any(1), ok["test"].argmax(1), 0)
    m, g, _ = evaluate_exit(cal["test"], test["labels"], test["costs"], first_ok)
    res["oracle"] = {"map": m, "gmacs": g, "frames": float(first_ok.mean() + 1),
                     "never_correct": float(1 - ok["test"].any(1).mean())}
    return res


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def aus(a: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in a)


def main() -> None:
    seeds = sorted(int(d.name[1:]) for d in (ws / "data").glob("s[0-9]*") if (d / "samplers" / "avgn").is_dir())
    if not seeds:
        sys.exit(f"no trained AVGN under {ws}/data/s<seed>/samplers/avgn: run the benchmark first")
    out = [one_seed(s) for s in seeds]
    (ws / ".salient" / "exit_gates" / "exit_gates.json").write_text(json.dumps(out, indent=1))
    r0 = out[0]
    print(f"# Early exit vs fixed K, AVGN's head ({ws.name}; seeds {seeds}; {r0['videos']['test']} test, "
          f"{r0['videos']['val']} val, {r0['videos']['train']} train videos)\n")
    print("Each policy's (cap, threshold) is the cheapest on val (out-of-fold gate scores) that reaches fixed "
          "K=3's val mAP; test: mAP / GMACs per video, ΔmAP vs fixed K=3 on the same videos [95% CI].\n")
    print("| seed | fixed K=3 | " + " | ".join(f"{g}: cap, thr, frames, mAP / GMACs, Δ [CI]" for g in GATES)
          + " | oracle exit: frames, mAP / GMACs |")
    print("|---|---|" + "---|" * len(GATES) + "---|")
    for r in out:
        f3, cells = r["fixed"][3], []
        for gate in GATES:
            e = r["gates"][gate]
            lo, hi = e["diff_k3_ci"]
            cells.append(f"{e['cap']}, {e['threshold']:.3f}, {e['frames']:.2f}, {pct(e['map'])} / {e['gmacs']:.3f}, "
                         f"{100 * e['diff_k3']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
        o = r["oracle"]
        print(f"| {r['seed']} | {pct(f3['map'])} / {f3['gmacs']:.3f} | " + " | ".join(cells)
              + f" | {o['frames']:.2f}, {pct(o['map'])} / {o['gmacs']:.3f} |")
    print("\nAUROC for \"step t's top-1 is a label\", steps 1, 2, 3 (val out-of-fold; test, gate fitted on val; "
          "val, gate fitted on train). Top-1 accuracy at steps 1-3 per seed: "
          + "; ".join(f"seed {r['seed']} train {aus(r['top1_steps_1_3']['train'])}, val "
                      f"{aus(r['top1_steps_1_3']['val'])}, test {aus(r['top1_steps_1_3']['test'])}" for r in out) + ".\n")
    print("| seed | " + " | ".join(GATES) + " |")
    print("|---|" + "---|" * len(GATES))
    for r in out:
        cells = []
        for gate in GATES:
            a = r["gates"][gate]["auroc"]
            cells.append(f"{aus(a['val_oof'])}; {aus(a['test'])}" + (f"; {aus(a['val_from_train'])}"
                                                                       if "val_from_train" in a else ""))
        print(f"| {r['seed']} | " + " | ".join(cells) + " |")
    print("\nThe most an exit can save: fixed K=3 costs "
          + ", ".join(f"{r['fixed'][3]['gmacs']:.3f}" for r in out) + " GMACs and K=1 "
          + ", ".join(f"{r['fixed'][1]['gmacs']:.3f}" for r in out) + " (the glance over all T frames is "
          "paid before the first exit), so stopping every video after one frame saves "
          + ", ".join(f"{100 * (1 - r['fixed'][1]['gmacs'] / r['fixed'][3]['gmacs']):.0f}%" for r in out) + ".\n")
    print("Fixed K (test mAP / GMACs per video), per seed:\n")
    print("| seed | " + " | ".join(f"K={k}" for k in range(1, K_MAX + 1)) + " |")
    print("|---|" + "---|" * K_MAX)
    for r in out:
        print(f"| {r['seed']} | " + " | ".join(f"{pct(r['fixed'][k]['map'])} / {r['fixed'][k]['gmacs']:.3f}"
                                            for k in range(1, K_MAX + 1)) + " |")


if __name__ == "__main__":
    main()
