"""Baseline spatial coverage of the reference patch policies on the demo's synthetic set (issue 14).

Run: `python experiments/spatial_baselines.py > experiments/spatial_baselines.txt`.
Boxes come from components.data.synthetic.object_boxes (no rendering needed); the target is the large
key object of the video's own class, frames without it (generic, low quality, distractor) excluded.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
from components.data import synthetic as syn
from components.data.video import uniform_indices
from components.evaluation.metrics import box_iou, centre_patches, patch_boxes, patch_hit_rate, patch_iou, random_patches
from components.core.params import load_params

prm = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
p, T = prm.data.synthetic, prm.frames.T
plans = [syn.plan_video(p, i, c) for c in range(p.num_classes) for i in range(p.videos_per_class)]
tgt = {pl.video_id: syn.object_boxes(p, pl).target((pl.label,)) for pl in plans}
size = (p.size, p.size)
sets = {
    "all frames, all 168 videos": np.concatenate([tgt[pl.video_id] for pl in plans]),
    f"test split, T={T} uniform frames": np.concatenate(
        [tgt[pl.video_id][uniform_indices(pl.num_frames, T)] for pl in plans if pl.split == "test"]),
}
w = np.concatenate([tgt[pl.video_id] for pl in plans])
w = w[np.isfinite(w).all(1)]
print(f"demo synthetic: {len(plans)} videos, {p.size} px frames, jitter {p.jitter}; large own-class object: "
      f"width {np.mean(w[:, 2] - w[:, 0]):.1f} px (min {np.min(w[:, 2] - w[:, 0]):.0f}, max {np.max(w[:, 2] - w[:, 0]):.0f}), "
      f"height {np.mean(w[:, 3] - w[:, 1]):.1f} px")
for name, obj in sets.items():
    n = int(np.isfinite(obj).all(1).sum())
    print(f"\n## {name}: {n} frames with the target of {len(obj)}")
    print("| P (px) | policy | hit (>=50% covered) | hit (contains centre) | IoU |")
    print("|---|---|---|---|---|")
    for P in (32, 48, 64):
        rows = {"centre crop": [centre_patches((len(obj),), size, P)],
                "random patch (5 seeds)": [random_patches((len(obj),), size, P, seed=s) for s in range(5)],
                "oracle (on the box centre)": [patch_boxes(np.nan_to_num((obj[:, :2] + obj[:, 2:]) / 2), P)]}
        for pol, pats in rows.items():
            vals = np.array([[patch_hit_rate(q, obj), patch_hit_rate(q, obj, "centre"), patch_iou(q, obj)] for q in pats])
            m, sd = vals.mean(0), vals.std(0)
            cell = (lambda j: f"{m[j]:.3f} ± {sd[j]:.3f}") if len(pats) > 1 else (lambda j: f"{m[j]:.3f}")
            print(f"| {P} | {pol} | {cell(0)} | {cell(1)} | {cell(2)} |")
