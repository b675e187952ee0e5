"""The ``avgn_report`` stage and its library (components/reporting/avgn_tables.py): hand-computed checks of the
geometry, the early-exit bookkeeping and the paired statistics, and one run of the stage on the tiny
pipeline's trained AVGN."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from components.evaluation.avgn_calibration import gate_candidates
from components.reporting.avgn_tables import (Inputs, exit_costs, exit_table, fixed_k_curve, frame_targets, load_variants,
                                    map_ci, match_fixed, paired_difference, patch_pixel_boxes, per_video_mean,
                                    random_centres, resolved, seed_mean, spatial_section)
from components.data.manifest import FrameBoxes
from components.evaluation.metrics import patch_boxes
from components.core.paths import Paths


# ------------------------------------------------------------------------------------- geometry
def test_a_centre_maps_to_its_patch_in_video_pixels():
    # S = 48 frame cache, P = 24: half a patch is 0.25 of the frame on each axis
    box = patch_pixel_boxes(np.array([0.5, 0.5]), 24, 48, (64, 64))
    assert np.allclose(box, [16, 16, 48, 48])
    # a 128 x 64 video: the patch spans P W / S = 64 by P H / S = 32 video pixels
    assert np.allclose(patch_pixel_boxes(np.array([0.5, 0.5]), 24, 48, (128, 64)), [32, 16, 96, 48])
    # (0.75, 0.25) on 100 x 100, P/S = 0.2: centre (75, 25), half side 10
    assert np.allclose(patch_pixel_boxes(np.array([0.75, 0.25]), 12, 60, (100, 100)), [65, 15, 85, 35])
    # a centre at the corner is clamped so the patch lies inside, as the model crops it
    assert np.allclose(patch_pixel_boxes(np.array([0.0, 1.0]), 24, 48, (64, 64)), [0, 32, 32, 64])
    # square videos: the same as components.evaluation.metrics.patch_boxes on x_c W, side P W / S
    c = np.random.default_rng(0).uniform(0.3, 0.7, (5, 3, 2))
    assert np.allclose(patch_pixel_boxes(c, 24, 48, (112, 112)), patch_boxes(c * 112, 24 * 112 / 48))
    # per-video sizes broadcast: [N,1,2] against [N,K,2]
    sizes = np.array([[64, 64], [128, 128]])[:, None, :]
    b = patch_pixel_boxes(np.full((2, 3, 2), 0.5), 24, 48, sizes)
    assert b.shape == (2, 3, 4) and np.allclose(b[1, 0], [32, 32, 96, 96])
    with pytest.raises(ValueError, match="exceeds"):
        patch_pixel_boxes(np.array([0.5, 0.5]), 50, 48, (64, 64))


def test_random_centres_are_seeded_and_keep_the_patch_inside():
    a, b = random_centres((40, 3), 24, 48, seed=7), random_centres((40, 3), 24, 48, seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, random_centres((40, 3), 24, 48, seed=8))
    assert a.shape == (40, 3, 2) and (a >= 0.25 - 1e-12).all() and (a <= 0.75 + 1e-12).all()


def test_frame_targets_keep_only_the_videos_own_key_object():
    boxes = np.full((5, 2, 4), np.nan, np.float32)
    boxes[:, 0] = [[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12], [3, 3, 13, 13], [4, 4, 14, 14]]
    codes = np.array([1, 1, 2, -1, 1], np.int16)  # frame 2 a distractor (class 2), frame 3 generic
    gt = {"v": FrameBoxes(boxes, codes, (64, 48))}
    labels = np.array([[0, 1, 0], [1, 0, 0]])  # "v" is class 1; "w" has no boxes
    t, sizes = frame_targets(gt, ["v", "w"], labels, np.array([[4, 2, 3, 0, 9], [0, 1, 2, 3, 4]]))
    assert np.allclose(t[0, 0], [4, 4, 14, 14]) and np.allclose(t[0, 3], [0, 0, 10, 10])
    assert np.isnan(t[0, 1]).all() and np.isnan(t[0, 2]).all()  # distractor, generic
    assert np.isnan(t[0, 4]).all()  # frame 9 past the video's 5 frames
    assert np.isnan(t[1]).all() and np.array_equal(sizes, [[64, 48], [0, 0]])


def test_per_video_and_seed_means_skip_frames_without_an_object():
    v = np.array([[1.0, np.nan, 0.0], [np.nan, np.nan, np.nan]])
    assert np.allclose(per_video_mean(v)[:1], [0.5]) and np.isnan(per_video_mean(v)[1])
    s = np.array([[1.0, np.nan, 0.0], [0.0, np.nan, np.nan]])  # [S=2, N=3]
    m = seed_mean(s)
    assert np.allclose(m[[0, 2]], [0.5, 0.0]) and np.isnan(m[1])


# ------------------------------------------------------------------------------------ statistics
def test_paired_difference_leaves_out_videos_missing_on_either_side():
    d = paired_difference(np.array([1.0, 1.0, 0.0, np.nan]), np.array([0.0, 1.0, 0.0, 1.0]), n_boot=200)
    assert d["videos"] == 3 and d["mean"] == pytest.approx(1 / 3)
    lo, hi = d["ci"]
    assert 0.0 <= lo <= 1 / 3 <= hi <= 1.0 and not d["resolved"]  # a resample of [1,0,0] can be all zeros
    d = paired_difference(np.full(20, 0.7), np.full(20, 0.2), n_boot=100)  # a constant difference of 0.5
    assert d["ci"] == pytest.approx([0.5, 0.5]) and d["resolved"]
    assert paired_difference(np.ones(5), np.zeros(5), n_boot=0)["ci"] is None
    assert not resolved(None) and not resolved([-0.1, 0.2]) and resolved([0.01, 0.2]) and resolved([-0.3, -0.1])


def test_map_ci_of_a_method_against_itself_is_zero_and_brackets_the_seed_mean():
    rng = np.random.default_rng(0)
    labels = np.eye(3)[rng.integers(0, 3, 30)]
    scores = rng.random((2, 30, 3))
    assert map_ci(scores, labels, "sklearn", 100, minus=scores) == pytest.approx([0.0, 0.0])
    lo, hi = map_ci(scores, labels, "sklearn", 200)
    from components.evaluation.metrics import mean_average_precision

    m = np.mean([mean_average_precision(s, labels) for s in scores])
    assert lo <= m <= hi


# ------------------------------------------------------------------------------------ early exit
# 3 videos, 3 steps, 2 classes: p_t after t frames (one seed)
PROBS = np.array([[[[0.95, 0.05], [0.90, 0.10], [0.80, 0.20]],   # passes 0.9 at step 1
                   [[0.60, 0.40], [0.30, 0.70], [0.05, 0.95]],   # passes 0.9 at step 3
                   [[0.50, 0.50], [0.20, 0.80], [0.40, 0.60]]]])  # never passes 0.9: all 3 frames
LABELS = np.array([[1, 0], [0, 1], [1, 0]])
GMACS = [1.0, 1.5, 2.0]  # a prediction with 1, 2, 3 frames


def _sk_map(scores, labels):
    return np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in range(labels.shape[1])])


def test_exit_costs_index_the_per_k_cost_by_the_frames_used():
    assert np.allclose(exit_costs(np.array([1, 3, 3, 2]), GMACS), [1.0, 2.0, 2.0, 1.5])
    with pytest.raises(ValueError, match="1..3"):
        exit_costs(np.array([0, 1]), GMACS)


def test_exit_table_bookkeeping_by_hand():
    rows, scores = exit_table(PROBS, LABELS, GMACS, [0.9, 0.5], "sklearn")
    r9, r5 = rows
    assert r9["frames"]["mean"] == pytest.approx(7 / 3)  # 1 + 3 + 3
    assert r9["gmacs"]["mean"] == pytest.approx((1.0 + 2.0 + 2.0) / 3)
    pred = np.array([[0.95, 0.05], [0.05, 0.95], [0.40, 0.60]])  # the prediction at each exit
    assert np.allclose(scores[0.9][0], pred)
    assert r9["top1"]["mean"] == pytest.approx(2 / 3)  # the third video's class 1 is wrong
    assert r9["map"]["mean"] == pytest.approx(_sk_map(pred, LABELS))
    # 0.5: every video stops after its first frame (0.5 >= 0.5 passes)
    assert r5["frames"]["mean"] == 1.0 and r5["gmacs"]["mean"] == 1.0
    assert np.allclose(scores[0.5][0], PROBS[0, :, 0])
    assert r9["map"]["seeds"] == 1 and r9["map"]["std"] == 0.0


def test_fixed_k_curve_reads_step_k():
    rows = fixed_k_curve(PROBS, LABELS, GMACS, [3, 1], "sklearn")
    assert [r["k"] for r in rows] == [1, 3] and [r["gmacs"] for r in rows] == [1.0, 2.0]
    assert rows[1]["map"]["mean"] == pytest.approx(_sk_map(PROBS[0, :, 2], LABELS))
    assert rows[0]["top1"]["mean"] == pytest.approx(2 / 3)  # step 1: 0.95 / 0.60 (wrong) / 0.50 tie -> class 0


def test_match_fixed_finds_the_cheapest_k_with_at_least_the_exit_map():
    fixed = [{"k": k, "gmacs": g, "map": {"mean": m}} for k, g, m in ((1, 1.0, 0.5), (2, 1.5, 0.7), (3, 2.0, 0.8))]
    ex = lambda m, g: {"map": {"mean": m}, "gmacs": {"mean": g}}  # noqa: E731
    assert match_fixed(ex(0.65, 1.2), fixed) == {"k": 2, "gmacs": 1.5, "reached": True, "fixed_needs_more": True}
    assert match_fixed(ex(0.65, 1.6), fixed)["fixed_needs_more"] is False  # K=2 is cheaper than the exit
    assert match_fixed(ex(0.7, 1.2), fixed)["k"] == 2  # equal mAP counts as reached
    m = match_fixed(ex(0.9, 1.9), fixed)
    assert m["reached"] is False and m["k"] == 3 and m["fixed_needs_more"] is True


# ------------------------------------------------------------------------------------ bad input
def test_no_boxes_means_no_spatial_ground_truth_not_a_crash():
    inp = Inputs(ids=["a", "b"], data={}, labels=np.eye(2, dtype=np.int64), frame_probs=np.zeros((2, 4, 2)),
                 has_audio=np.ones(2, bool), frame_idx=np.zeros((2, 4), np.int64), variants={}, boxes={},
                 enc={}, T=4, classes=["x", "y"])
    out = spatial_section(inp, {}, 2, 10, "sklearn")
    assert out["available"] is False and out["rows"] == [] and "no spatial ground truth" in out["note"]


def test_no_trained_avgn_names_the_missing_folder(tmp_path, tiny_params):
    paths = Paths().under(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(paths.data / "samplers" / "avgn"))):
        load_variants(tiny_params, paths)


# ------------------------------------------------------------------------------------ the stage
def test_stage_on_the_tiny_pipeline(tiny_samplers):
    from components.core.params import load_params
    from components.stages import avgn_report
    from conftest import ROOT, TINY

    p = load_params(ROOT / "params.yaml", [*TINY, "avgn.t_g_eval=[2,20]", "evaluate.sampler_budgets=[1,2]"])
    headline = avgn_report.run(p, tiny_samplers)
    rep = tiny_samplers.reports
    for f in ("avgn.md", "avgn.json", "figures/avgn_exit.png", "figures/avgn_patches.png"):
        assert (rep / f).stat().st_size > 0, f
    r = json.loads((rep / "avgn.json").read_text())
    assert r["seeds"] == {"avgn": list(p.train_sampler.seeds)}  # the tiny ablation is NSNet's, not AVGN's
    sp = r["spatial"]
    assert sp["available"] and [row["policy"] for row in sp["rows"]] == ["policy", "centre", "random"]
    for row in sp["rows"]:
        assert 0 <= row["hit"]["mean"] <= 1 and 0 <= row["iou"]["mean"] <= 1
    assert "minus_centre" in sp["rows"][0]
    ex = r["early_exit"]
    g = ex["gmacs_by_k"]
    assert ex["k_max"] == 3 and len(g) == 3 and 0 < g[0] < g[1] < g[2]
    assert [f["k"] for f in ex["fixed"]] == [1, 2, 3]
    for row in ex["exit"]:
        assert 1 <= row["frames"]["mean"] <= 3 and g[0] - 1e-9 <= row["gmacs"]["mean"] <= g[2] + 1e-9
        assert 0 <= row["map"]["mean"] <= 1 and row["verdict"].split(":")[0] in ("yes", "no")
    gl = r["glance"]["rows"]
    assert sorted({row["t_g"] for row in gl}) == [2, 8]  # 20 > T = 8 glances at all 8 frames
    by = {(row["t_g"], row["k"]): row for row in gl}
    assert by[2, 1]["head_gmacs"] < by[8, 1]["head_gmacs"]  # a longer glance encodes more frames
    assert by[2, 2]["frame_gmacs"] > by[2, 1]["frame_gmacs"]
    au = r["audio"]["subsets"]
    assert au["with_audio"]["n"] + au["without_audio"]["n"] == r["videos"]
    md = (rep / "avgn.md").read_text()
    for title in ("## 1. Spatial", "## 2. Early exit", "## 3. Glance budget", "## 4. Videos without audio"):
        assert title in md
    assert "exit_gmacs_t0.9" in headline and "patch_hit_rate" in headline
    # val (section 5): temperatures per seed and step, gates chosen on val, then applied to test
    v = r["val"]
    assert len(v["exit"]["temperatures"]) == len(p.train_sampler.seeds)
    assert all(len(t) == 3 and all(0.05 <= x <= 50 for x in t) for t in v["exit"]["temperatures"])
    for kind in ("raw", "calibrated"):
        gate = ex["chosen"][kind]
        assert gate["threshold"] in gate_candidates(p.avgn.exit_thresholds)
        assert 1 <= gate["test"]["frames"]["mean"] <= 3
    assert [row["threshold"] for row in ex["calibrated"]] == list(p.avgn.exit_thresholds)
    assert [row["k"] for row in r["head_vs_frame"]] == [1, 2] == [row["k"] for row in v["head_vs_frame"]]
    pr = v["probes"]
    assert 0 <= pr["audio"] <= 1 and pr["val_videos"] > 0 and 0 < pr["chance"] < 1
    for title in ("**Calibrated exit**", "**Gates chosen on val**", "## 5. Val split", "Linear probes"):
        assert title in md


def test_only_the_ablations_a_section_reads_are_loaded(tiny_params, tmp_path):
    """Every ablation of profiles/ablations.yaml (the papers' tables): the report reads only three."""
    import dataclasses

    import yaml

    from components.reporting.avgn_tables import avgn_variants
    from components.app.profile_run import profile_params
    from components.core.params import DEFAULT_ABLATIONS, load_params

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(profile_params(root, root / "profiles/ablations.yaml"),
                                                         sort_keys=False))
    full = load_params(tmp_path / "params.yaml").ablations
    assert len(full) == 17
    p = dataclasses.replace(tiny_params, ablations=full)
    assert avgn_variants(p) == ["avgn", "avgn_no_audio", "avgn_no_aespa", "avgn_centre_crop"]
    assert avgn_variants(dataclasses.replace(tiny_params, ablations=DEFAULT_ABLATIONS)) == ["avgn", "avgn_no_audio"]
    assert avgn_variants(tiny_params) == ["avgn"]  # the tiny ablation is NSNet's


def test_video_costs_charge_f_g_for_processed_frames_outside_the_glance():
    """Frames at positions >= T_G were never encoded by the glance: the head encodes each once (hand-computed)."""
    from components.reporting.avgn_tables import exit_costs, video_costs

    base = [1.0, 2.0, 3.0]
    idx = np.array([[0, 5, 1], [6, 7, 2]])  # T_G = 4: video 0 has one frame beyond (5), video 1 two (6, 7)
    g = video_costs(base, idx, t_g=4, light=0.5)
    assert np.allclose(g, [[1.0, 2.5, 3.5], [1.5, 3.0, 4.0]])
    assert np.allclose(exit_costs(np.array([2, 1]), g), [2.5, 1.5])  # each video at its own frame count
