"""Stage ``train_encoders``: fine-tune the light encoder, train the frame recognizer and the audio encoder.

All three are per-frame (per-window) classifiers trained on single frames with the video's label,
"without TSN-style training" as in TSQNet / NSNet: every step draws one random frame per video.
Frames come from a *bank* decoded once per video (``train_encoders.bank_frames`` uniformly spaced
frames at each consumer's resolution, plus their log-mel windows; :mod:`components.training.banks`), built
resumably under ``.salient/work`` with the same streaming writer as the feature store. Training runs through the
one engine (:mod:`components.training.engine`) with checkpoints / resume / early stopping on val video
accuracy.

Encoders that start from pretrained weights (the ImageNet light encoder by default) are fine-tuned at
``train_encoders.pretrained_lr``, the others trained at ``train_encoders.lr``. On the demo bank, the
light encoder at the from-scratch lr (2e-3) lost its ImageNet features within an epoch: val
salient-frame accuracy 0.65 after epoch 0 and 0.91 after 10 epochs, vs 0.97 after 2 epochs at 3e-4,
and val video accuracy 0.44 vs 0.81.

The recognizer trains for at most ``train_encoders.recognizer_epochs`` epochs when that is set (0: ``epochs``,
like the others). Outputs ``data/encoders/{light,recognizer,audio}.pt`` and ``reports/train_encoders.json``.
"""
from __future__ import annotations

import logging
import sys
import time

import torch

from components.core import distributed
from components.tracking import mlflow_tracking as tracking
from components.training.banks import bank_fingerprint, bank_key, batches_for, build_bank, make_step, video_accuracy
from components.data.manifest import read_manifest
from components.training.engine import CKPT_VERSION, Compute, FitConfig, fit, remove_checkpoints, seed_everything
from components.core.hashing import code_fingerprint, fingerprint
from components.core.integrity import save_checkpoint
from components.models.encoders import create_encoder
from components.core.params import Params
from components.core.paths import Paths, write_report, write_timings
from components.core.scratch import ScratchKey, collect
from components.ops.stage_runner import stage_main

log = logging.getLogger(__name__)
ROLES = ("light", "recognizer", "audio")


def run(p: Params, paths: Paths) -> dict:
    if p.train_encoders.threads:
        torch.set_num_threads(p.train_encoders.threads)
    _, classes = read_manifest(paths.prepared)
    C, e = len(classes), p.encoders
    t = p.train_encoders
    fp = bank_fingerprint(p, paths)
    with distributed.main_first():  # DDP: rank 0 decodes the bank, the others then open it
        bank = build_bank(p, paths, fp)
    cfgs = {"light": {"arch": e.light_arch, "num_classes": C, "weights": e.light_weights},
            "recognizer": {"arch": e.recognizer_arch, "num_classes": C, "pretrained": e.recognizer_pretrained,
                           "weights": e.recognizer_weights},
            "audio": {"num_classes": C, "dim": e.audio_dim}}
    if e.audio_width != 32:  # saved only when set, so a default run's checkpoint holds what it always held
        cfgs["audio"]["width"] = e.audio_width
    pretrained = {"light": e.light_weights != "none",
                  "recognizer": e.recognizer_pretrained or e.recognizer_weights != "none", "audio": False}
    summary, seconds, ckpts = {}, {}, []
    code = code_fingerprint("components.stages.train_encoders")  # other code never resumes these checkpoints
    for role in ROLES:
        t0 = time.perf_counter()
        seed_everything(t.seed)  # before the model exists: a new classifier head draws from the generator
        model = create_encoder(role, **cfgs[role])
        epochs = t.recognizer_epochs if role == "recognizer" and t.recognizer_epochs else t.epochs
        cfg = FitConfig(epochs=epochs, lr=t.pretrained_lr if pretrained[role] else t.lr, weight_decay=t.weight_decay, patience=t.patience,
                        seed=t.seed, desc=f"train {role}", monitor="val_acc", mode="max")
        rfp = fingerprint(fp, role, cfgs[role], t, repr(cfg), CKPT_VERSION, code)
        ckpts.append(paths.work / "train_encoders" / rfp)
        ScratchKey("components.stages.train_encoders", ("frames", "audio", "encoders", "train_encoders"),
                   bank_key(paths).inputs, pipeline_seed=paths.pipeline_seed).stamp(ckpts[-1], p)
        res = fit(model, make_step(role, t.seed),
                  lambda ep, r=role: batches_for(bank, "train", r, t.batch_size, t.seed, ep, t.epoch_repeats),
                  lambda r=role: batches_for(bank, "val", r, t.batch_size, t.seed, None, 1),
                  cfg, paths.work / "train_encoders" / rfp, rfp, log_metrics=tracking.log_metrics,
                  compute=Compute.of(p.compute))
        save_checkpoint({"role": role, "cfg": cfgs[role], "state_dict": model.state_dict(), "classes": classes,
                     "history": res.history, "fingerprint": rfp}, paths.encoders / f"{role}.pt")
        best = res.history[res.best_epoch] if res.history else {}
        summary[role] = {"lr": cfg.lr, "best_epoch": res.best_epoch, "epochs_run": len(res.history),
                         "val_loss": best.get("val_loss"), "val_video_acc_monitored": best.get("val_acc"),
                         "val_video_acc": video_accuracy(model, bank, "val", role)}
        seconds[role] = round(time.perf_counter() - t0, 1)
        log.info("%s: %s (%.1f s)", role, summary[role], seconds[role])
    write_report(paths, "train_encoders.json", summary)
    write_timings(paths, "train_encoders", {"seconds": seconds})
    remove_checkpoints(ckpts)  # outputs written: a forced or dependency-triggered rerun trains again
    # then what no current key can use (components.core.scratch)
    collect(p, paths.work, None, areas=("train_encoders",), seed=paths.pipeline_seed)
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main("train_encoders", run, argv,
                      ddp=("components.stages.train_encoders", sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
