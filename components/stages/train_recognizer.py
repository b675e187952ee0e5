"""Stage ``train_recognizer``: the TSI temporal recognizer, trained TSN-style on K-frame clips.

TSI paper §4.1: "divide [the video] into T segments, randomly sample one frame from each segment";
here K = ``tsi.frames`` segments over the ``train_encoders.bank_frames`` frames already decoded per
train / val video (the same resumable bank ``train_encoders`` built: no second decode), validation
on the segment centres, the best epoch by val clip mAP. With ``tsi.arch: recognizer`` the backbone
starts from the trained frame recognizer and the TSI blocks start as an exact identity
(``identity_init``), so training begins at the frame recognizer's own clip scores — the 2-core
analogue of the paper's ImageNet initialisation. With ``tsi.consensus: probs`` (the default) the clip
score is the log of the mean per-frame softmax, so at init TSI scores any K frames exactly as
``evaluate`` scores the frame recognizer on them (the mean softmax); with ``logits`` (TSN's and the
paper's average of class scores) it starts well below that on untrimmed videos (see
:mod:`components.models.recognizers`). Clip augmentation (flip, translation) is shared by all frames
of a clip, as in TSN. Training on uniform TSN clips carries over to a sampler's picks: on the demo's
val split TSI gains as much over its init on TSQNet's and NSNet's picks as on uniform ones, so the
clips are not drawn the way a sampler picks.

Outputs ``data/recognizers/tsi.pt`` and ``reports/train_recognizer.json`` (val clip accuracy and mAP
of TSI next to the untrained TSN consensus of the same frame recognizer, and GMACs of both).
"""
from __future__ import annotations

import logging
import sys
import time

import numpy as np
import torch

from components.core import distributed

from components.tracking import mlflow_tracking as tracking
from components.core.atomic import atomic_write_text
from components.training.banks import augment, bank_fingerprint, bank_key, build_bank, soft_targets, usable_videos
from components.data.manifest import read_manifest
from components.training.engine import CKPT_VERSION, Compute, FitConfig, fit, remove_checkpoints
from components.store.features import ENCODER_FIX
from components.evaluation.cost import count_macs
from components.core.hashing import code_fingerprint, fingerprint
from components.core.integrity import load_checkpoint, save_checkpoint
from components.evaluation.metrics import mean_average_precision
from components.models.recognizers import Recognizer, create_recognizer
from components.core.params import Params
from components.core.paths import Paths, write_report, write_timings
from components.core.scratch import ScratchKey, collect
from components.ops.stage_runner import stage_main
from components.store.feature_store import FeatureStore

log = logging.getLogger(__name__)


def segment_frames(F_: int, K: int, rng: np.random.Generator | None) -> np.ndarray:
    """TSN sampling of K of F_ bank frames: one per equal segment, random (train) or the centre (val)."""
    edges = np.floor(np.linspace(0, F_, K + 1)).astype(int)
    lo = edges[:-1]
    hi = np.maximum(edges[1:], lo + 1)  # K > F_: empty segments repeat a frame
    if rng is None:
        return np.minimum((lo + hi - 1) // 2, F_ - 1)
    return np.minimum(rng.integers(lo, hi), F_ - 1)


def clip_batches(bank: FeatureStore, split: str, K: int, batch_size: int, seed: int, epoch: int | None):
    """(uint8 clips [B,K,3,s,s], soft targets [B,C]); train clips reshuffled and resampled per epoch."""
    arr, labels = bank.array(split, "recognizer"), bank.array(split, "labels")
    vids = usable_videos(bank, split, "recognizer")
    F_ = arr.shape[1]
    rng = np.random.default_rng([seed, epoch]) if epoch is not None else None
    order = rng.permutation(vids) if rng is not None else vids
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        x = torch.from_numpy(np.stack([arr[v][segment_frames(F_, K, rng)] for v in chunk]))
        yield x, soft_targets(np.stack([labels[v] for v in chunk]))


def make_step(seed: int):
    gen = torch.Generator().manual_seed(seed)

    def step(model, batch, train):
        x, y = batch
        x = x.float().div_(255.0)  # [B,K,3,s,s]
        if train:  # one flip / translation per clip, shared by its frames
            B, K, _, s, _ = x.shape
            x = augment(x.reshape(B, K * 3, s, s), gen).reshape(B, K, 3, s, s)
        logits = model(x)
        loss = -(y * logits.log_softmax(-1)).sum(-1).mean()
        return loss, {"acc": (logits.argmax(-1) == y.argmax(-1)).float().mean().item(), "n": len(y)}

    return step


@torch.no_grad()
def clip_metrics(model: Recognizer, bank: FeatureStore, split: str, K: int) -> dict[str, float]:
    """Clip accuracy and mAP (``sklearn``, the evaluate default) of ``model`` on the split's segment-centre clips."""
    model.eval()
    scores, targets = [], []
    for x, y in clip_batches(bank, split, K, 16, 0, None):
        scores.append(model(x.float().div_(255.0)).softmax(-1))
        targets.append(y)
    if not scores:
        return {"acc": float("nan"), "map": float("nan")}
    s, y = torch.cat(scores).numpy(), torch.cat(targets).numpy()
    return {"acc": float((s.argmax(-1) == y.argmax(-1)).mean()), "map": mean_average_precision(s, y > 0)}


def run(p: Params, paths: Paths) -> dict:
    t = p.tsi
    if not t.enabled:  # evaluate runs no TSI rows: train nothing, say so in the outputs DVC expects
        out = paths.features.parent / "recognizers"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "DISABLED", "tsi.enabled is false: no TSI recognizer was trained\n")
        summary = {"enabled": False}
        write_report(paths, "train_recognizer.json", summary)
        write_timings(paths, "train_recognizer", {"seconds": 0.0})
        return summary
    if t.threads:
        torch.set_num_threads(t.threads)
    _, classes = read_manifest(paths.prepared)
    with distributed.main_first():  # DDP: rank 0 decodes the bank, the others then open it
        bank = build_bank(p, paths, bank_fingerprint(p, paths))
    frame_ck = load_checkpoint(paths.encoders / "recognizer.pt", "encoder checkpoint", ENCODER_FIX)
    from_frames = t.arch == "recognizer"
    arch = frame_ck["cfg"]["arch"] if from_frames else t.arch
    cfg = {"arch": arch, "num_classes": len(classes), "num_frames": t.frames, "pyramid": t.pyramid,
           "groups": t.groups, "reduction": t.reduction, "consensus": t.consensus, "min_stride": t.min_stride}
    torch.manual_seed(t.seed)
    model = create_recognizer("tsi", **cfg, identity_init=from_frames,
                              pretrained_state=frame_ck["state_dict"] if from_frames else None)
    tsn = create_recognizer("tsn", arch=arch, num_classes=len(classes), num_frames=t.frames,
                            pretrained_state=frame_ck["state_dict"], consensus=t.consensus) if from_frames else None
    t0 = time.perf_counter()
    fcfg = FitConfig(epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay, patience=t.patience, seed=t.seed,
                     desc="train tsi", monitor="val_map", mode="max", grad_clip=5.0)
    fp = fingerprint(bank.meta["fingerprint"], frame_ck.get("fingerprint", ""), cfg, from_frames, repr(fcfg), CKPT_VERSION,
                     code_fingerprint("components.stages.train_recognizer"))  # other code never resumes it
    ScratchKey("components.stages.train_recognizer", ("tsi", "frames", "audio", "train_encoders.bank_frames"),
               (*bank_key(paths).inputs, paths.encoders / "recognizer.pt"),
               pipeline_seed=paths.pipeline_seed).stamp(paths.work / "train_recognizer" / fp, p)
    res = fit(model, make_step(t.seed),
              lambda ep: clip_batches(bank, "train", t.frames, t.batch_size, t.seed, ep),
              lambda: clip_batches(bank, "val", t.frames, t.batch_size, t.seed, None),
              fcfg, paths.work / "train_recognizer" / fp, fp, log_metrics=tracking.log_metrics,
              val_metrics=lambda: {"map": clip_metrics(model, bank, "val", t.frames)["map"]},
              compute=Compute.of(p.compute))
    out = paths.features.parent / "recognizers" / "tsi.pt"
    save_checkpoint({"name": "tsi", "cfg": cfg, "state_dict": model.state_dict(), "classes": classes,
                 "history": res.history, "fingerprint": fp}, out)
    s = p.frames.recognizer_size
    clip = torch.zeros(1, t.frames, 3, s, s)
    summary = {"arch": arch, "init": "frame recognizer + identity TSI blocks" if from_frames else "random",
               "clip_frames": t.frames, "best_epoch": res.best_epoch, "epochs_run": len(res.history),
               "consensus": t.consensus,
               **{f"val_clip_{k}_tsi": v for k, v in clip_metrics(model, bank, "val", t.frames).items()},
               "gmacs_per_clip_tsi": count_macs(lambda: model(clip)) / 1e9}
    seconds = round(time.perf_counter() - t0, 1)
    if tsn is not None:  # TSI's starting point: the frame recognizer with the same consensus
        summary.update({f"val_clip_{k}_tsn": v for k, v in clip_metrics(tsn, bank, "val", t.frames).items()})
        summary["gmacs_per_clip_tsn"] = count_macs(lambda: tsn(clip)) / 1e9
        summary["gmacs_ratio_tsi_over_tsn"] = summary["gmacs_per_clip_tsi"] / summary["gmacs_per_clip_tsn"]
    write_report(paths, "train_recognizer.json", summary)
    write_timings(paths, "train_recognizer", {"seconds": seconds})
    remove_checkpoints([paths.work / "train_recognizer" / fp])  # outputs written: a rerun trains again
    # then what no current key can use (components.core.scratch)
    collect(p, paths.work, None, areas=("train_recognizer",), seed=paths.pipeline_seed)
    log.info("train_recognizer: %s (%.1f s)", summary, seconds)
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main("train_recognizer", run, argv,
                      ddp=("components.stages.train_recognizer", sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
