"""Light-encoder fine-tuning lr on the demo's encoder bank (val split; not part of the pipeline).

    python experiments/light_lr.py <demo workspace> 0.002 0.0003 [--epochs 10]

For each lr: fine-tune the ImageNet EfficientNet-Lite0 light encoder exactly as ``train_encoders``
does (same step, batches, engine; no early stopping) and print, after every epoch, the val video
accuracy over the 24 bank frames, the accuracy on the val videos' *salient* frames (ground truth)
and the AUC of the max softmax for salient vs other frames. Output: light_lr.txt beside this file.
"""
import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from components.training.engine import FitConfig, fit  # noqa: E402
from components.evaluation.metrics import salient_mask  # noqa: E402
from components.models.encoders import create_encoder  # noqa: E402
from components.core.params import load_params  # noqa: E402
from components.training.banks import bank_fingerprint  # noqa: E402
from components.core.paths import Paths  # noqa: E402
from components.training.banks import batches_for, make_step, video_accuracy  # noqa: E402
from components.store.feature_store import FeatureStore  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("workspace", type=Path)
ap.add_argument("lrs", type=float, nargs="+")
ap.add_argument("--epochs", type=int, default=10)
a = ap.parse_args()
p = load_params(a.workspace / "params.yaml")
paths = Paths().under(a.workspace)
bank = FeatureStore(paths.work / "train_encoders" / bank_fingerprint(p, paths) / "bank")
labels = np.asarray(bank.array("val", "labels"))
sal = salient_mask(np.asarray(bank.array("val", "gt")), labels)
frames = bank.array("val", "light")
for lr in a.lrs:
    model = create_encoder("light", arch=p.encoders.light_arch, num_classes=labels.shape[1], weights=p.encoders.light_weights)

    def report(epoch, row, lr=lr, model=model):
        model.eval()
        with torch.no_grad():
            probs = np.stack([model(torch.from_numpy(np.array(frames[v])).float() / 255)[1].softmax(-1).numpy()
                              for v in range(len(labels))])  # [N,F,C]
        right = np.take_along_axis(labels.astype(bool), probs.argmax(-1), axis=1)
        auc = roc_auc_score(sal.ravel(), probs.max(-1).ravel())
        print(f"lr={lr} epoch={epoch} val_video_acc={video_accuracy(model, bank, 'val', 'light'):.3f} "
              f"salient_frame_acc={right[sal].mean():.3f} maxconf_auc={auc:.3f}", flush=True)

    cfg = FitConfig(epochs=a.epochs, lr=lr, weight_decay=p.train_encoders.weight_decay, patience=a.epochs + 1,
                    seed=p.train_encoders.seed, desc=f"light lr {lr}", monitor="val_acc", mode="max")
    t = p.train_encoders
    ckpt = paths.work / "experiments" / f"light_lr_{lr}"
    shutil.rmtree(ckpt, ignore_errors=True)  # a fresh run, never a resume
    fit(model, make_step("light", t.seed),
        lambda ep: batches_for(bank, "train", "light", t.batch_size, t.seed, ep, t.epoch_repeats),
        lambda: batches_for(bank, "val", "light", t.batch_size, t.seed, None, 1), cfg,
        ckpt, f"light-lr-{lr}", on_epoch=report)
