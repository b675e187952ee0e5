"""Stage ``evaluate``: every sampler and baseline × K × recognizer × seed on the **test** split.

Recognizers: ``frame`` (the per-frame recognizer, from its cached logits: mean softmax over the K
selected frames) at every K of ``evaluate.budgets``, and ``tsi`` (the temporal recognizer of
``train_recognizer``, run for real on the decoded selected frames) at ``tsi.budgets``. Metrics:
mAP (``evaluate.map_variant``, its definition recorded in the output), top-1, saliency recall@K
against ground truth, and GMACs per video of the whole prediction.

Writes, per pipeline seed, ``results/s<seed>/curves.csv``
(``sampler,recognizer,k,seed,gmacs,map,top1,salient_recall,distractor_share``), ``metrics.json`` (mean ± std over
sampler seeds at ``evaluate.sampler_budgets``, with first-seed bootstrap CIs over test videos and the
paired difference to uniform) and ``scores.npz`` (every run's per-video class scores at those K, uniform's
at every K of ``evaluate.budgets`` for the efficiency frontier, with the labels and ids), from which the
``summary`` stage pools all pipeline seeds. Each variant run in MLflow also gets this pipeline seed's
frontier metrics (:func:`components.evaluation.frontier.run_metrics`).
"""
from __future__ import annotations

import csv
import logging

import numpy as np
import torch

from components.tracking import mlflow_tracking as tracking
from components.data.clips import iter_clips
from components.data.manifest import read_manifest
from components.evaluation.sampler_eval import (CURVE_COLUMNS, ClipScorer, SamplerRun, evaluate_grid, load_runs, softmax,
                                   summarize)
from components.evaluation.cost import RECOGNIZER_OUTPUTS, count_macs, encoder_gmacs, sampler_gmacs, video_gmacs
from components.evaluation.metrics import MAP_DEFINITIONS, distractor_mask, map_ci, salient_mask
from components.evaluation.avgn_eval import HeadScorer, avgn_gmacs, frames_beyond_glance
from components.core.params import Params, evaluated_samplers, variant_params
from components.store.sampler_data import SAMPLER_KEYS, check_store, load_split, sampler_keys
from components.models.samplers import sampler_class
from components.core.paths import Paths
from components.ops.stage_runner import stage_main
from components.models.recognizers import load_recognizer
from components.training.sampler_training import load_sampler, sampler_seeds
from components.store.feature_store import FeatureStore
from components.evaluation.frontier import run_metrics
from components.evaluation.fusion import fusion_values
from components.tracking.variant_runs import log_evaluation
from components.core.atomic import atomic_path, atomic_savez, atomic_write_json

log = logging.getLogger(__name__)


def decode_test_frames(paths: Paths, store: FeatureStore, ids: list[str], size: int, workers: int) -> np.ndarray:
    """The store's T observation frames of each valid test video at recognizer resolution, uint8 [N,T,3,s,s]."""
    records = {r.video_id: r for r in read_manifest(paths.prepared)[0]}
    fidx = np.asarray(store.array("test", "frame_indices"))
    pos = {v: i for i, v in enumerate(store.ids("test"))}
    recs = [records[v] for v in ids]
    out = np.zeros((len(ids), store.T, 3, size, size), np.uint8)
    for item in iter_clips(recs, [fidx[pos[v]] for v in ids], {"recognizer": size}, workers=workers):
        if not hasattr(item, "frames"):  # ClipError: the file changed since extract
            raise RuntimeError(f"test video {item.video_id} ({item.path}) no longer decodes: {item.reason}; "
                               "rerun `dvc repro extract`")
        out[item.index] = item.frames["recognizer"].numpy()
    return out


def run(p: Params, paths: Paths) -> dict:
    store = FeatureStore(paths.features)
    check_store(store, p.frames.T)
    T = store.T
    valid = np.asarray(store.array("test", "valid"), dtype=bool)
    ids = [i for i, v in zip(store.ids("test"), valid) if v]
    labels = np.asarray(store.array("test", "labels"))[valid].astype(np.int64)
    gt = np.asarray(store.array("test", "gt"))[valid]
    salient = salient_mask(gt, labels) if (gt >= -2).any() else None
    distractor = distractor_mask(gt, labels) if salient is not None else None
    frame_probs = softmax(np.asarray(store.array("test", "rec_logits"))[valid])  # [N,T,C]
    enc = encoder_gmacs(p, paths.encoders)
    names = evaluated_samplers(p)
    classes = {n: sampler_class(variant_params(p, n)[0]) for n in names}
    heads = {c.own_recognizer: c for c in classes.values() if c.own_recognizer}  # AVGN's head: recognizer "avgn"
    keys = dict.fromkeys(SAMPLER_KEYS)  # what the samplers read; an own recognizer path also its training inputs
    for c in classes.values():
        keys.update(dict.fromkeys(sampler_keys(c, training=bool(c.own_recognizer))))
    data, _ = load_split(store, "test", keys=tuple(keys))
    one = {k: v[:1] for k, v in data.items() if k != "frames_full"}  # one video, to count each sampler's MACs

    runs: list[SamplerRun] = []
    own_gmacs: dict[str, float] = {}  # each sampler's own layers
    fusion = fusion_values(p, paths)  # fusion.source: the tune_fusion result or the params
    for name in names:  # evaluate.samplers, then the ablations
        rs = load_runs(paths.features.parent / "samplers", name, "test", ids, load_sampler, sampler_seeds(p, name),
                       fusion.get(name))
        runs += rs
        own_gmacs[name] = sampler_gmacs(rs[0].model, one)

    scorers, clip_gmacs = {}, {}
    tsi_path = paths.features.parent / "recognizers" / "tsi.pt"
    if p.tsi.enabled:
        if not tsi_path.exists():
            raise FileNotFoundError(f"{tsi_path} missing: run `dvc repro train_recognizer` (or set tsi.enabled: false)")
        tsi = load_recognizer(tsi_path)
        frames = decode_test_frames(paths, store, ids, p.frames.recognizer_size, p.extract.decode_workers)
        scorers["tsi"] = (ClipScorer(tsi, frames), tuple(p.tsi.budgets))
        s = p.frames.recognizer_size
        for k in sorted(set(p.tsi.budgets) | {T}):
            clip_gmacs[k] = count_macs(lambda k=k: tsi(torch.zeros(1, k, 3, s, s))) / 1e9

    head_gmacs: dict[tuple[str, int, int], float] = {}
    for head in heads:  # AVGN's own recognizer path: glance -> top-K -> patches -> head (components.evaluation.avgn_eval)
        scorers[head] = (HeadScorer(data, max(p.evaluate.budgets)), tuple(p.evaluate.budgets))

    def gmacs(run: SamplerRun, recognizer: str, K: int) -> float:
        name = run.sampler  # a branch run costs what its sampler costs
        if recognizer in heads:
            key = (name, K, run.seed)  # frames outside the glance re-run f_G: a mean over this run's picks
            if key not in head_gmacs:
                beyond = frames_beyond_glance(run.select(K), run.model.glance_frames)
                head_gmacs[key] = avgn_gmacs(run.model, enc, data, K, beyond=beyond)
            return head_gmacs[key]
        frame_cost = video_gmacs(name, run.model, enc, own_gmacs[name], T, K)
        if recognizer == "frame":
            return frame_cost
        on_all = getattr(run.model, "uses_all_frames", False)  # dense: the clip recognizer sees all T frames
        n = T if on_all else K
        # MaxConf still scores all T frames with the frame recognizer (it reads its cached logits); the clip
        # recognizer then sees n
        scores_all = not on_all and bool(set(run.model.cost_inputs()) & RECOGNIZER_OUTPUTS)
        looked = enc["recognizer"] * T if scores_all else 0.0
        return frame_cost - enc["recognizer"] * (T if on_all or scores_all else K) + looked + clip_gmacs[n]

    base = [r for r in runs if r.name in p.evaluate.samplers]  # the clip recognizer runs for these only
    rows, kept = evaluate_grid(base, p.evaluate.budgets, labels, salient, gmacs, frame_probs, scorers,
                               p.evaluate.map_variant, keep_scores=True, distractor=distractor)
    extra = [r for r in runs if r.name in p.ablations] + [b for r in base for b in r.branches()]
    ablation_rows, ablation_kept = evaluate_grid(extra, p.evaluate.budgets, labels, salient, gmacs, frame_probs,
                                                 {k: v for k, v in scorers.items() if k in heads},
                                                 p.evaluate.map_variant, keep_scores=True,
                                                 distractor=distractor)
    rows, kept = rows + ablation_rows, {**kept, **ablation_kept}
    paths.results.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths.results / "curves.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in CURVE_COLUMNS})

    summary = summarize(rows)  # mean ± std over seeds per (sampler, recognizer, K)
    result = {"videos": len(ids), "T": T, "map_variant": p.evaluate.map_variant,
              "ablations": {n: {"sampler": a.sampler, "set": list(a.set)} for n, a in p.ablations.items()},
              "map_definition": MAP_DEFINITIONS[p.evaluate.map_variant],
              "recognizers": ["frame", *scorers], "headline": headline(p, summary, kept, labels),
              "fusion": {"source": p.fusion.source, **{n: v for n, v in fusion.items() if n in p.evaluate.samplers}}}
    if "tsi" in scorers:
        result["tsi_clips_run"] = scorers["tsi"][0].calls
        result["tsi_gmacs_per_clip"] = {str(k): v for k, v in clip_gmacs.items()}
    atomic_write_json(paths.results / "metrics.json", result)
    show = set(p.evaluate.sampler_budgets)  # per-video scores of every run, for the summary's pooled CIs
    # uniform's at every K too: the efficiency frontier reads the other samplers against its whole curve
    atomic_savez(paths.results / "scores.npz", labels=labels, ids=np.array(ids),
                 **{"|".join(map(str, key)): sc.astype(np.float32) for key, sc in kept.items()
                    if key[2] in show or key[0] == "uniform"})
    # MLflow: one child run per (variant, recognizer, seed), with the same keys (components.tracking.variant_runs)
    log_evaluation(p, rows, trainable={r.name: r.model.trainable for r in runs}, fusion=fusion,
                   pipeline_seed=paths.pipeline_seed,
                   extra=run_metrics(rows, p.evaluate.sampler_budgets, max(p.evaluate.sampler_budgets), tuple(heads)))
    tracking.log_artifacts([paths.results / "curves.csv", paths.results / "metrics.json"])
    return {"videos": len(ids)}


def headline(p: Params, summary: list[dict], kept: dict, labels: np.ndarray) -> dict:
    """Mean ± std over seeds at ``evaluate.sampler_budgets``, plus, on the first seed, a bootstrap CI of
    mAP over test videos, the paired bootstrap CI of the mAP difference to uniform and, for a branch
    row ``name[branch]``, of the fused sampler minus that branch (same model, same seed)."""
    out: dict = {}
    v = p.evaluate.map_variant
    n = len(labels)
    show = set(p.evaluate.sampler_budgets)

    def rounded(ci) -> list[float]:  # to the cells' precision, so a CI ending at its estimate still holds it
        return [round(float(x), 5) for x in ci]

    def paired_ci(a: np.ndarray, b: np.ndarray) -> list[float]:  # mAP(a) - mAP(b), resampling videos
        return rounded(map_ci([a], labels, v, p.evaluate.bootstrap, minus=[b]))

    for s in summary:
        if s["k"] not in show:
            continue
        cell = {m: round(s[m], 5) for m in ("map", "map_std", "top1", "top1_std", "top5", "mean_class_acc",
                                            "salient_recall", "gmacs")}
        cell["seeds"] = s["seeds"]
        first = min(sd for (nm, rec, k, sd) in kept if (nm, rec, k) == (s["sampler"], s["recognizer"], s["k"]))
        sc = kept[(s["sampler"], s["recognizer"], s["k"], first)]
        base = kept.get(("uniform", s["recognizer"], s["k"], 0))
        if p.evaluate.bootstrap:
            cell["map_ci"] = rounded(map_ci([sc], labels, v, p.evaluate.bootstrap))
            if base is not None and s["sampler"] != "uniform":
                cell["map_minus_uniform_ci"] = paired_ci(sc, base)
            fused = kept.get((s["sampler"].split("[")[0], s["recognizer"], s["k"], first))
            if "[" in s["sampler"] and fused is not None:
                cell["fused_minus_branch_ci"] = paired_ci(fused, sc)
        out.setdefault(s["sampler"], {}).setdefault(s["recognizer"], {})[str(s["k"])] = cell
    return out


def main(argv: list[str] | None = None) -> int:
    return stage_main("evaluate", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
