"""TSI against the frame recognizer on the same K picks, paired bootstrap 95% CI over test videos (mAP
difference, points), from one pipeline seed's ``results/s<seed>/scores.npz`` (the ``evaluate`` stage).

    python experiments/tsi_vs_frame.py [results/s0] [K]
"""
import sys
from pathlib import Path

import numpy as np

from components.evaluation.metrics import map_ci, map_metric

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/s0")
K = sys.argv[2] if len(sys.argv) > 2 else "5"
z = np.load(folder / "scores.npz", allow_pickle=True)
labels = z["labels"] > 0
print(f"| picks (K={K}) | TSI | frame recognizer | TSI − frame [95% CI] |\n|---|---|---|---|")
for s in ("uniform", "tsqnet", "nsnet", "avgn", "dense"):
    tsi = [z[k] for k in z.files if k.startswith(f"{s}|tsi|{K}|")]
    frame = [z[k.replace("|tsi|", "|frame|")] for k in z.files if k.startswith(f"{s}|tsi|{K}|")]
    if not tsi:
        continue
    all_ = np.arange(len(labels))[None]
    a, b = (float(map_metric(r, labels)(all_)[0]) for r in (tsi, frame))
    lo, hi = map_ci(tsi, labels, "sklearn", 1000, minus=frame)
    tag = "" if lo > 0 or hi < 0 else " not resolved"
    print(f"| {s} | {100 * a:.1f} | {100 * b:.1f} | {100 * (a - b):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{tag} |")
