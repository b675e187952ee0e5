"""The fast sparse reader (skip non-reference frames) returns exactly the requested frames, pixel-equal
to decord's random access, on every container/GOP it accepts; otherwise it steps aside."""
import decord
import numpy as np
import pytest

from components.data import video as V
from components.data.video import frames as V_frames
from components.data.video import pyav as V_pyav
from components.data.video import read_frames, uniform_indices
from tests.conftest import decode_frame_index, write_video


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("gop", [1, 8, 16, 250])
def test_exact_frames_any_gop(tmp_path, suffix, gop):
    path = write_video(tmp_path / f"v{suffix}", num_frames=120, size=64, audio=False, gop=gop)
    rng = np.random.default_rng(gop)
    for wanted in (uniform_indices(120, 16), [0], [119], [0, 1, 2, 3], sorted(rng.choice(120, 25, replace=False)),
                   list(range(120))):
        got = V_pyav._pyav_sparse_read(str(path), [int(i) for i in wanted])
        assert got is not None
        assert decode_frame_index(np.stack([got[int(i)] for i in wanted])).tolist() == [int(i) for i in wanted]


def test_pixel_equal_to_decord_on_synthetic_video(tmp_path):
    from components.data.synthetic import plan_video, render_video
    from components.core.params import SyntheticParams

    sp = SyntheticParams(num_classes=3, size=64, min_frames=90, max_frames=90, keyframe_interval=16)
    path = tmp_path / "s.mp4"
    render_video(sp, plan_video(sp, 0, 1), path)
    idx = uniform_indices(90, 16)
    vr = decord.VideoReader(str(path), num_threads=1)
    ref = vr.get_batch(idx.tolist()).asnumpy()
    assert np.array_equal(read_frames(path, idx), ref)


def test_avi_and_out_of_range_step_aside(tmp_path):
    avi = write_video(tmp_path / "v.avi", num_frames=20, size=64, audio=False)
    assert V_pyav._pyav_sparse_read(str(avi), [1, 5]) is None  # AVI has no presentation timestamps
    mp4 = write_video(tmp_path / "v.mp4", num_frames=20, size=64, audio=False)
    assert V_pyav._pyav_sparse_read(str(mp4), [3, 20]) is None
    with pytest.raises(V.VideoError):
        read_frames(mp4, [3, 20])  # the fallbacks still refuse to invent frame 20


def test_decord_path_when_sparse_reader_declines(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mp4", num_frames=60, size=64, audio=False, gop=8)
    idx = [5, 5, 40, 2]
    fast = read_frames(path, idx)
    monkeypatch.setattr(V_frames, "_pyav_sparse_read", lambda *a, **k: None)
    assert np.array_equal(read_frames(path, idx), fast)
    assert decode_frame_index(fast).tolist() == idx
