"""The synthetic benchmark generator: plans, ground truth, written files, audio, GOP, resume."""
from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from components.data import synthetic as syn
from components.data.manifest import GT_GENERIC, GT_LOWQ, decode_gt
from components.core.params import SyntheticParams

os.environ.setdefault("DO_NOT_TRACK", "1")

TINY = SyntheticParams(num_classes=3, videos_per_class=3, min_frames=24, max_frames=40, size=64,
                       keyframe_interval=8, audio_missing_fraction=0.34)


def _runs(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """(code, start, end) of every maximal run."""
    change = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [codes.size]])
    return [(int(codes[s]), int(s), int(e)) for s, e in zip(starts, ends)]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    cands, names = syn.generate(TINY, out, workers=2)
    return out, cands, names


# ---------------------------------------------------------------------------- signatures
def test_class_names_and_signatures():
    names = syn.class_names(64)
    assert names == syn.class_names(64)
    assert len(set(names)) == 64 and syn.class_names(5) == names[:5]
    assert all(n.count("_") == 2 for n in names)
    sigs = [syn.class_signature(c) for c in range(64)]
    assert len({(s.colour, s.shape) for s in sigs}) == 64  # same colour -> different shape
    for a, b in itertools.combinations(sigs[:12], 2):  # C <= 12: colour AND shape differ
        assert a.colour != b.colour and a.shape != b.shape
    assert len({round(s.tone_hz, 3) for s in sigs}) == 64


# ---------------------------------------------------------------------------------- plans
def test_plan_deterministic():
    a, b = syn.plan_video(TINY, 2, 1), syn.plan_video(TINY, 2, 1)
    assert a.codes.dtype == np.int16
    assert np.array_equal(a.codes, b.codes) and a.gt == b.gt
    assert (a.segments, a.render_seed, a.audio_seed, a.has_audio) == (b.segments, b.render_seed, b.audio_seed, b.has_audio)
    assert a.video_id == "c01_v0002"
    with pytest.raises(ValueError):
        syn.plan_video(TINY, 3, 0)
    other = syn.plan_video(replace(TINY, seed=1), 2, 1)
    assert other.render_seed != a.render_seed


@pytest.mark.parametrize("p", [
    SyntheticParams(num_classes=5, min_frames=400, max_frames=400),
    SyntheticParams(num_classes=2, min_frames=60, max_frames=300, max_segments=5),
    SyntheticParams(num_classes=4, min_frames=4, max_frames=12, max_segments=10),
    SyntheticParams(num_classes=3, preset="trimmed", salient_fraction=0.5, distractor_fraction=0.3,
                    lowq_fraction=0.15),
    TINY,
])
def test_plan_invariants(p):
    lo, hi = syn._length_range(p)
    for label, idx in itertools.product(range(p.num_classes), range(min(p.videos_per_class, 8))):
        plan = syn.plan_video(p, idx, label)
        L = plan.num_frames
        c = plan.codes
        assert lo <= L <= hi and len(c) == L and plan.label == label
        assert set(np.unique(c)) <= {GT_GENERIC, GT_LOWQ, *range(p.num_classes)}
        assert np.array_equal(decode_gt(plan.gt), c)
        # segments: non-overlapping, separated by generic frames, consistent with the codes
        covered = np.zeros(L, dtype=bool)
        for s in plan.segments:
            assert 0 <= s.start < s.end <= L and not covered[s.start:s.end].any()
            covered[s.start:s.end] = True
            assert (c[s.start:s.end] == s.code).all()
            assert s.start == 0 or c[s.start - 1] == GT_GENERIC
            assert s.kind in ("salient", "distractor", "blur", "dark", "fade")
            assert (s.code == label) == (s.kind == "salient")
            assert (s.code == GT_LOWQ) == (s.kind in ("blur", "dark", "fade"))
        assert (c[~covered] == GT_GENERIC).all()
        runs = _runs(c)
        n_salient_runs = sum(code == label for code, _, _ in runs)
        assert 1 <= n_salient_runs <= p.max_segments
        if L >= 24:  # the fractions hold up to rounding (tiny videos may drop segments)
            tol = 1.5 / L
            assert abs((c == label).mean() - p.salient_fraction) <= tol
            assert abs(((c >= 0) & (c != label)).mean() - p.distractor_fraction) <= tol
            assert abs((c == GT_LOWQ).mean() - p.lowq_fraction) <= tol
        assert sum(1 for code, _, _ in runs if code >= 0 and code != label) <= p.max_segments
        assert sum(1 for code, _, _ in runs if code == GT_LOWQ) <= p.max_segments


def test_trimmed_lengths():
    p = SyntheticParams(preset="trimmed", min_frames=60, max_frames=300, videos_per_class=20)
    lengths = {syn.plan_video(p, i, c).num_frames for i in range(20) for c in range(12)}
    assert syn._length_range(p) == (15, 30) and min(lengths) >= 15 and max(lengths) <= 30


def test_split_counts():
    for n in range(3, 30):
        tr, va, te = syn.split_counts(n, (0.6, 0.2, 0.2))
        assert tr + va + te == n and min(tr, va, te) >= 1
    assert syn.split_counts(20, (0.6, 0.2, 0.2)) == (12, 4, 4)
    assert syn.split_counts(10, (1.0, 0.0, 0.0)) == (10, 0, 0)
    assert sum(syn.split_counts(1, (0.6, 0.2, 0.2))) == 1


def test_audio_missing_exact_fraction():
    p = SyntheticParams(num_classes=4, videos_per_class=10, audio_missing_fraction=0.25)
    flags = [syn.plan_video(p, i, c).has_audio for c in range(4) for i in range(10)]
    assert flags.count(False) == 10
    assert all(syn.plan_video(replace(p, audio_missing_fraction=0.0), i, 0).has_audio for i in range(10))


# ------------------------------------------------------------------------ written files
def test_generate_candidates(generated):
    out, cands, names = generated
    assert names == syn.class_names(3)
    assert len(cands) == 9 and len({c.video_id for c in cands}) == 9
    for c in cands:
        assert Path(c.path).is_absolute() and Path(c.path).is_file()
        assert Path(c.path) == out / "videos" / f"{c.video_id}.mp4"
        assert c.gt == syn.plan_video(TINY, int(c.video_id[5:]), c.labels[0]).gt
    for label in range(3):
        splits = [c.split for c in cands if c.labels == (label,)]
        assert splits == ["train", "val", "test"]
    assert not list((out / "videos").glob("*.tmp*"))


def _decode(path):
    import decord
    vr = decord.VideoReader(path)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def test_decoded_frames(generated):
    _, cands, _ = generated
    sal_means: dict[str, np.ndarray] = {}
    for c in cands:
        plan = syn.plan_video(TINY, int(c.video_id[5:]), c.labels[0])
        frames = _decode(c.path).astype(np.float32)
        assert frames.shape == (plan.num_frames, TINY.size, TINY.size, 3)
        codes = plan.codes
        sal = frames[codes == plan.label].mean(axis=(1, 2))  # [n, 3] mean colour per frame
        gen = frames[codes == GT_GENERIC].mean(axis=(1, 2))
        # generic frames are neutral grey (no tint, no class colour); salient ones are not
        assert np.abs(gen - gen.mean(axis=1, keepdims=True)).max() < 6.0
        assert np.linalg.norm(sal.mean(0) - gen.mean(0)) > 15.0
        sal_means[c.video_id] = sal.mean(0)
    # the same class's salient frames in two videos are closer than another class's
    for label in range(3):
        a, b = sal_means[f"c{label:02d}_v0000"], sal_means[f"c{label:02d}_v0001"]
        same = np.linalg.norm(a - b)
        others = [np.linalg.norm(a - v) for k, v in sal_means.items() if not k.startswith(f"c{label:02d}")]
        assert same < min(others), (label, same, others)


def test_render_frames_deterministic():
    plan = syn.plan_video(TINY, 0, 2)
    a = np.stack(list(syn.render_frames(TINY, plan)))
    b = np.stack(list(syn.render_frames(TINY, plan)))
    assert a.dtype == np.uint8 and a.shape == (plan.num_frames, 64, 64, 3) and np.array_equal(a, b)


def test_audio_as_planned(generated):
    import av
    _, cands, _ = generated
    seen = set()
    for c in cands:
        plan = syn.plan_video(TINY, int(c.video_id[5:]), c.labels[0])
        with av.open(c.path) as f:
            assert len(f.streams.audio) == int(plan.has_audio)
        seen.add(plan.has_audio)
        if not plan.has_audio:
            continue
        import decord
        ar = decord.AudioReader(c.path, sample_rate=16000, mono=True)
        wav = ar[:].asnumpy().reshape(-1)
        duration = plan.num_frames / TINY.fps
        assert abs(wav.size / 16000 - duration) < 0.1
        # the class tone dominates the spectrum of the salient frames
        frame = np.minimum((np.arange(wav.size) * TINY.fps / 16000).astype(int), plan.num_frames - 1)
        x = wav[plan.codes[frame] == plan.label]
        spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        peak = np.fft.rfftfreq(x.size, 1 / 16000)[int(np.argmax(spec))]
        sig = syn.class_signature(plan.label)
        assert min(abs(peak - sig.tone_hz), abs(peak - sig.tone2_hz)) < 0.05 * sig.tone_hz
    assert seen == {True, False}  # 3 of 9 videos without audio


def test_keyframe_interval(generated):
    import av
    _, cands, _ = generated
    for c in cands[:4]:
        with av.open(c.path) as f:
            vs = f.streams.video[0]
            n = 0
            key = []
            for pk in f.demux(vs):
                if pk.size == 0:
                    continue
                n += 1
                if pk.is_keyframe:
                    key.append(int(round(float(pk.pts * vs.time_base) * TINY.fps)))
        assert sorted(key) == list(range(0, n, TINY.keyframe_interval))


def test_deterministic_and_resume(generated, tmp_path):
    out, cands, _ = generated
    # a second generation (inline) elsewhere gives the same ground truth and the same bytes
    other = tmp_path / "other"
    cands2, _ = syn.generate(TINY, other, workers=1)
    assert [c.gt for c in cands2] == [c.gt for c in cands]
    assert [c.video_id for c in cands2] == [c.video_id for c in cands]
    for a, b in zip(cands, cands2):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    # resume: only the deleted video is rewritten; a leftover temp file is never a candidate
    vdir = other / "videos"
    victim = vdir / "c01_v0002.mp4"
    before = {p.name: p.stat().st_mtime_ns for p in vdir.glob("*.mp4")}
    original = victim.read_bytes()
    victim.unlink()
    (vdir / "c02_v0001.mp4.tmp99999").write_bytes(b"partial")
    cands3, _ = syn.generate(TINY, other, workers=2)
    after = {p.name: p.stat().st_mtime_ns for p in vdir.glob("*.mp4")}
    assert set(after) == set(before)
    assert [k for k in before if before[k] != after[k]] == ["c01_v0002.mp4"]
    assert victim.read_bytes() == original
    assert [c.path for c in cands3] == [c.path for c in cands2]
    assert not any(".tmp" in c.path for c in cands3)


def test_fine_classes_share_the_coarse_signature_and_differ_in_the_grating():
    """fine_classes=3: classes 3q..3q+2 share colour, shape, motion, tint and sound; only the grating's
    orientation differs, measured here as the peak of the sprite's 2-D spectrum."""
    from components.data.synthetic import _class_sprite, class_signature

    for c in range(6):
        a, b = class_signature(c, 3), class_signature(c // 3)  # the coarse signature of group c // 3
        assert (a.rgb, a.shape, a.motion, a.tint, a.tone_hz, a.beep_hz) == (b.rgb, b.shape, b.motion, b.tint,
                                                                          b.tone_hz, b.beep_hz)
        assert a.fine_index == c % 3 and a.grating_deg == 60 * (c % 3)
        alpha, rgb = _class_sprite(c, 24, 0, 3, 3.0)
        lum = rgb[..., 0] * alpha[..., 0]
        spec = np.abs(np.fft.fftshift(np.fft.fft2(lum - lum.mean())))
        h, w = spec.shape
        yy, xx = np.mgrid[:h, :w]
        r = np.hypot(yy - h // 2, xx - w // 2)
        spec[r < h / 6] = 0  # the object's outline lives at low frequencies; the grating near h / period
        ky, kx = np.unravel_index(spec.argmax(), spec.shape)
        deg = np.degrees(np.arctan2(ky - h // 2, kx - w // 2)) % 180
        assert min(abs(deg - a.grating_deg), 180 - abs(deg - a.grating_deg)) < 8, (c, deg)
        assert abs(r[ky, kx] - h / 3.0) < 2  # period 3 px


def test_fine_grating_is_resolved_at_full_size_and_gone_at_half():
    """The regime's premise: the grating survives at the rendered size and an antialiased resize to half
    of it flattens it (period 1.5 px < 2), so a light encoder at half resolution cannot read it."""
    from components.data.synthetic import _class_sprite
    from components.data.video import resize_center

    alpha, rgb = _class_sprite(4, 40, 0, 3, 3.0)
    img = np.clip(rgb * alpha, 0, 255).astype(np.uint8)[None]  # [1,h,w,3]
    full = resize_center(img, img.shape[1])[0, 0].numpy()
    half = resize_center(img, img.shape[1] // 2)[0, 0].numpy()
    inner = lambda x: x[x.shape[0] // 3: 2 * x.shape[0] // 3, x.shape[1] // 3: 2 * x.shape[1] // 3]  # noqa: E731
    assert inner(full).std() > 4 * inner(half).std(), (inner(full).std(), inner(half).std())


def test_fine_classes_must_divide_the_classes():
    from components.core.params import ParamsError, load_params

    with pytest.raises(ParamsError, match="fine_classes: 5 must divide num_classes=12"):
        load_params("params.yaml", ["data.synthetic.fine_classes=5"])
