"""Spatial ground truth (issue 14): per-frame key-object boxes of the synthetic generator, their
sidecar (boxes.npz, read_boxes) and the patch coverage metrics (hit rate, IoU, reference policies)."""
from __future__ import annotations

import zipfile
from dataclasses import replace

import numpy as np
import pytest

from components.data import synthetic as syn
from components.data.manifest import BOXES_FILE, FrameBoxes, read_boxes, write_boxes
from components.evaluation.metrics import (box_iou, centre_patches, patch_boxes, patch_hit_rate, patch_hits, patch_iou,
                                random_patches)
from components.core.params import SyntheticParams

# 8 classes: one of each motion pattern; no noise, so a pixel differs only where something is drawn
CLEAN = SyntheticParams(num_classes=8, videos_per_class=2, min_frames=50, max_frames=70, size=64, noise=0.0,
                        jitter=3, keyframe_interval=8, audio_missing_fraction=0.0)


def _render(p: SyntheticParams, plan: syn.VideoPlan, monkeypatch, hide: set[int]) -> np.ndarray:
    """All frames [L,S,S,3], with key object o invisible (alpha 0) for every o in ``hide``.

    ``render_frames`` draws object 0 then object 1 in every frame that has them; _class_sprite draws no
    random numbers, so hiding objects changes no other pixel."""
    real = syn._class_sprite
    calls = [0]

    def sprite(*args):
        alpha, rgb = real(*args)
        o = calls[0] % 2
        calls[0] += 1
        return (np.zeros_like(alpha), rgb) if o in hide else (alpha, rgb)

    with monkeypatch.context() as m:
        m.setattr(syn, "_class_sprite", sprite)
        return np.stack(list(syn.render_frames(p, plan)))


def _pixel_box(diff: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open bounding box of the True pixels of [S,S], None when there are none."""
    rows, cols = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
    if not rows.size:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@pytest.mark.parametrize("label", range(8))
def test_boxes_are_where_the_pixels_are(label, monkeypatch):
    """For every motion pattern (class c has MOTIONS[c]), with camera jitter: the pixels that change
    when object o is hidden lie inside its box, and the box is tight (each side within 1 px; exact at noise 0 on this machine)."""
    p = CLEAN
    plan = syn.plan_video(p, 1, label)
    gt = syn.object_boxes(p, plan)
    assert gt.boxes.shape == (plan.num_frames, 2, 4) and gt.size == (p.size, p.size)
    assert np.array_equal(gt.codes, plan.codes)
    assert syn.class_signature(label).motion == syn.MOTIONS[label]
    none = _render(p, plan, monkeypatch, hide={0, 1})
    only = {0: _render(p, plan, monkeypatch, hide={1}), 1: _render(p, plan, monkeypatch, hide={0})}
    drawn = plan.codes >= 0
    assert drawn.any() and (plan.codes == label).any()
    sc = syn._scene(p, plan)
    assert len(set(sc.jx[drawn])) > 1 and len(set(sc.jy[drawn])) > 1  # the camera shakes while objects move
    for o in (0, 1):
        diff = (only[o] != none).any(-1)  # [L,S,S]
        for f in range(plan.num_frames):
            box, pix = gt.boxes[f, o], _pixel_box(diff[f])
            if not drawn[f]:
                assert np.isnan(box).all() and pix is None, (f, o)
                continue
            assert pix is not None and not np.isnan(box).any(), (f, o, box, pix)
            x0, y0, x1, y1 = box
            assert x0 <= pix[0] and y0 <= pix[1] and pix[2] <= x1 and pix[3] <= y1, (f, o, box, pix)
            assert max(pix[0] - x0, pix[1] - y0, x1 - pix[2], y1 - pix[3]) <= 1, (f, o, box, pix)
            assert 0 <= x0 < x1 <= p.size and 0 <= y0 < y1 <= p.size


def test_target_and_distractor_boxes():
    p = CLEAN
    plan = next(pl for pl in (syn.plan_video(p, i, c) for c in range(8) for i in range(2))
                if any(s.kind == "distractor" for s in pl.segments))
    gt = syn.object_boxes(p, plan)
    own, other = gt.target((plan.label,)), gt.distractor((plan.label,))
    sal = plan.codes == plan.label
    dis = (plan.codes >= 0) & ~sal
    assert dis.any() and sal.any()
    assert np.isfinite(own[sal]).all() and np.isnan(own[~sal]).all()  # distractor objects are not the target
    assert np.isfinite(other[dis]).all() and np.isnan(other[~dis]).all()
    assert np.array_equal(gt.target((plan.label,), obj=1)[sal], gt.boxes[sal, 1])
    norm = gt.resized(1, 1)
    assert norm.size == (1, 1) and np.nanmax(norm.boxes) <= 1.0 and np.nanmin(norm.boxes) >= 0.0
    np.testing.assert_allclose(norm.boxes * p.size, gt.boxes, rtol=1e-6)


def test_generate_writes_sidecar_and_read_boxes(tmp_path):
    """generate() writes boxes.npz for every video (existing videos are not re-rendered: empty stand-ins
    here), byte-identical on a second call; read_boxes finds it from the file, its folder or the
    manifest folder above (prepare's layout), and returns {} where there is none."""
    p = replace(CLEAN, num_classes=3)
    out = tmp_path / "prepared" / "videos"
    (out / "videos").mkdir(parents=True)
    plans = [syn.plan_video(p, i, c) for c in range(p.num_classes) for i in range(p.videos_per_class)]
    for plan in plans:
        (out / "videos" / f"{plan.video_id}.mp4").write_bytes(b"")
    cands, _ = syn.generate(p, out, workers=1)
    side = out / BOXES_FILE
    first = side.read_bytes()
    syn.generate(p, out, workers=1)
    assert side.read_bytes() == first
    with zipfile.ZipFile(side) as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    for where in (side, out, tmp_path / "prepared"):
        table = read_boxes(where)
        assert list(table) == [c.video_id for c in cands]
    for plan, cand in zip(plans, cands):
        got, want = table[plan.video_id], syn.object_boxes(p, plan)
        assert np.array_equal(got.boxes, want.boxes, equal_nan=True) and got.size == want.size
        assert np.array_equal(got.codes, want.codes) and got.boxes.dtype == np.float32
        assert len(got.codes) == plan.num_frames
    assert read_boxes(tmp_path / "nowhere") == {} and read_boxes(tmp_path / "x.npz") == {}


def test_write_boxes_round_trip_and_checks(tmp_path):
    a = FrameBoxes(np.array([[[1, 2, 3, 4]], [[np.nan] * 4]], np.float32), np.array([0, -1], np.int16), (10, 20))
    b = FrameBoxes(np.zeros((3, 1, 4), np.float32), np.array([1, 1, 2], np.int16), (30, 30))
    got = read_boxes(write_boxes(tmp_path / "b.npz", {"a": a, "b": b}))
    assert list(got) == ["a", "b"] and got["a"].size == (10, 20) and got["b"].size == (30, 30)
    assert np.array_equal(got["a"].boxes, a.boxes, equal_nan=True) and np.array_equal(got["b"].codes, b.codes)
    assert read_boxes(write_boxes(tmp_path / "empty.npz", {})) == {}
    with pytest.raises(ValueError, match="do not match"):
        write_boxes(tmp_path / "bad.npz", {"a": FrameBoxes(a.boxes, np.zeros(3, np.int16), (10, 10))})


# --------------------------------------------------------------------------------------------- metrics
OBJ = np.array([20.0, 30.0, 30.0, 40.0])  # a 10 x 10 object, centre (25, 35)


def test_patch_on_the_object():
    on = patch_boxes(np.array([25.0, 35.0]), 10)
    np.testing.assert_array_equal(on, OBJ)
    assert patch_hits(on, OBJ) == 1.0 and box_iou(on, OBJ) == 1.0
    big = patch_boxes(np.array([25.0, 35.0]), 20)  # covers the object, 4x its area
    assert patch_hits(big, OBJ) == 1.0 and box_iou(big, OBJ) == pytest.approx(100 / 400)


@pytest.mark.parametrize("dx, coverage_hit, centre_hit, iou", [
    (4, 1.0, 1.0, 60 / 140),  # patch [24, 34): overlap 6 x 10, contains the object centre x = 25
    (5, 1.0, 1.0, 50 / 150),  # patch [25, 35): exactly half covered (>= 50%: a hit); 25 in [25, 35)
    (6, 0.0, 0.0, 40 / 160),  # patch [26, 36): 40% covered, centre outside
    (10, 0.0, 0.0, 0.0),  # patch [30, 40): touching edges only
])
def test_shifted_patch(dx, coverage_hit, centre_hit, iou):
    patch = patch_boxes(np.array([25.0 + dx, 35.0]), 10)
    assert patch_hits(patch, OBJ, "coverage") == coverage_hit
    assert patch_hits(patch, OBJ, "centre") == centre_hit
    assert box_iou(patch, OBJ) == pytest.approx(iou)


def test_centre_crop_misses_a_corner_object():
    corner = np.array([0.0, 0.0, 10.0, 10.0])
    crop = centre_patches((1,), (112, 112), 48)[0]
    np.testing.assert_array_equal(crop, [32, 32, 80, 80])
    assert patch_hits(crop, corner) == 0.0 and patch_hits(crop, corner, "centre") == 0.0
    assert box_iou(crop, corner) == 0.0
    middle = np.array([50.0, 50.0, 60.0, 60.0])
    assert patch_hits(crop, middle) == 1.0 and box_iou(crop, middle) == pytest.approx(100 / 48 ** 2)


def test_rates_average_over_frames_with_a_box_only():
    objs = np.stack([OBJ, OBJ, np.full(4, np.nan), OBJ])  # [4,4]; frame 2: no own-class object
    patches = np.stack([patch_boxes(np.array([25.0, 35.0]), 10)] * 2
                       + [patch_boxes(np.array([25.0, 35.0]), 10), patch_boxes(np.array([90.0, 90.0]), 10)])
    patches[1] = patch_boxes(np.array([80.0, 80.0]), 10)  # a miss
    hits = patch_hits(patches, objs)
    assert np.isnan(hits[2]) and list(hits[[0, 1, 3]]) == [1.0, 0.0, 0.0]
    assert patch_hit_rate(patches, objs) == pytest.approx(1 / 3)
    assert patch_iou(patches, objs) == pytest.approx(1 / 3)
    nan = np.full((3, 4), np.nan)
    assert np.isnan(patch_hit_rate(patches[:3], nan)) and np.isnan(patch_iou(patches[:3], nan))
    with pytest.raises(ValueError, match="rule"):
        patch_hits(patches, objs, "touch")


def test_random_patches_inside_the_frame_and_seeded():
    a = random_patches((50, 16), (112, 96), 48, seed=3)
    assert a.shape == (50, 16, 4)
    np.testing.assert_array_equal(a, random_patches((50, 16), (112, 96), 48, seed=3))
    assert not np.array_equal(a, random_patches((50, 16), (112, 96), 48, seed=4))
    assert (a[..., :2] >= 0).all() and (a[..., 2] <= 112).all() and (a[..., 3] <= 96).all()
    np.testing.assert_allclose(a[..., 2] - a[..., 0], 48)
    big = random_patches((4,), (32, 32), 48, seed=0)  # larger than the frame: centred
    np.testing.assert_allclose(big, np.tile([-8, -8, 40, 40], (4, 1)))
