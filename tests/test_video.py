"""Tests of components/data/video/ against hand-computed answers and tiny real videos."""
from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch

from components.data import video as V
from components.data.video import VideoError, VideoInfo
from components.data.video import audio as V_audio
from components.data.video import frames as V_frames
from components.data.video import plan as V_plan
from components.data.video import probing as V_probing
from components.data.video import pyav as V_pyav

LOG_FLOOR = float(np.log(0.01))  # log_mel of silence


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vids(tmp_path_factory, make_video):
    """A set of good and bad files shared by the module's tests."""
    d = tmp_path_factory.mktemp("vids")
    out = {
        "good": make_video(d / "good.mp4"),
        "noaudio": make_video(d / "noaudio.mp4", audio=False),
        "one": make_video(d / "one.mp4", num_frames=1),
        "three": make_video(d / "three.mp4", num_frames=3, audio=False),
        "audio_only": make_video(d / "audio_only.mp4", video=False),
        "faststart": make_video(d / "faststart.mp4", faststart=True),
        "mkv": make_video(d / "good.mkv"),
        "avi": make_video(d / "good.avi"),  # H.264 with B-frames in AVI: no usable timestamps
        "open_gop": make_video(d / "open_gop.mp4", open_gop=True),  # decord's random access is off here
    }
    out["missing"] = d / "missing.mp4"
    (d / "empty.mp4").write_bytes(b"")
    out["empty"] = d / "empty.mp4"
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    out["random"] = d / "random.mp4"
    (d / "text.mp4").write_text("this is a text file, not a video\n" * 40)
    out["text"] = d / "text.mp4"
    for key in ("good", "faststart", "mkv", "avi"):
        data = out[key].read_bytes()
        cut = d / f"truncated_{out[key].name}"
        cut.write_bytes(data[: int(len(data) * 0.4)])
        out[f"truncated_{key}"] = cut
    return out


# -------------------------------------------------------------------------- uniform_indices
def test_uniform_indices_hand_examples():
    assert V.uniform_indices(10, 4).tolist() == [1, 3, 6, 8]  # floor(1.25), floor(3.75), floor(6.25), floor(8.75)
    assert V.uniform_indices(3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert V.uniform_indices(4, 4).tolist() == [0, 1, 2, 3]
    assert V.uniform_indices(1, 3).tolist() == [0, 0, 0]
    assert V.uniform_indices(300, 1).tolist() == [150]
    assert V.uniform_indices(10, 4).dtype == np.int64


@pytest.mark.parametrize("n,T", [(16, 16), (17, 16), (1000, 16), (31, 30), (10**6, 7)])
def test_uniform_indices_strictly_increasing_in_range(n, T):
    idx = V.uniform_indices(n, T)
    assert idx.shape == (T,) and idx.min() >= 0 and idx.max() < n
    assert np.all(np.diff(idx) > 0)
    assert idx.tolist() == [int(np.floor((i + 0.5) * n / T)) for i in range(T)]


@pytest.mark.parametrize("n,T", [(0, 4), (5, 0), (-1, 3)])
def test_uniform_indices_rejects_empty(n, T):
    with pytest.raises(ValueError):
        V.uniform_indices(n, T)


# ------------------------------------------------------------------------------------ probe
def test_probe_healthy(vids):
    info = V.probe(vids["good"])
    assert isinstance(info, VideoInfo)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (30, 64, 64, True)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(1.2, abs=0.05)
    assert info.backend in ("decord", "pyav")


def test_probe_no_audio_is_ok(vids):
    info = V.probe(vids["noaudio"])
    assert info.has_audio is False and info.num_frames == 30
    row = V.validate_paths([vids["noaudio"]])[0]
    assert row["ok"] is True and row["has_audio"] is False and row["reason"] == ""


@pytest.mark.parametrize("key", ["mkv", "avi", "faststart"])
def test_probe_other_containers(vids, key):
    info = V.probe(vids[key])
    assert (info.num_frames, info.width, info.height) == (30, 64, 64)


BAD = [  # (file key, probe kwargs, expected reason)
    ("missing", {}, "missing"),
    ("empty", {}, "empty_file"),
    ("random", {}, "not_a_video"),
    ("text", {}, "not_a_video"),
    ("truncated_good", {}, "truncated"),       # moov index at the end: cut off
    ("truncated_faststart", {}, "truncated"),  # moov first: the mdat box runs past the end
    ("truncated_mkv", {}, "truncated"),
    ("truncated_avi", {}, "truncated"),
    ("one", {"min_frames": 2}, "too_few_frames"),
    ("audio_only", {}, "no_video_stream"),
    ("good", {"max_frames": 5}, "absurd_frame_count"),
]


@pytest.mark.parametrize("key,kw,reason", BAD, ids=[f"{k}-{r}" for k, _, r in BAD])
def test_probe_bad_inputs(vids, key, kw, reason):
    with pytest.raises(VideoError) as err:
        V.probe(vids[key], **kw)
    assert err.value.reason == reason
    assert str(err.value).startswith(f"{reason}: ")
    rows = V.validate_paths([vids[key]], **kw)  # must not raise
    assert len(rows) == 1
    assert rows[0]["ok"] is False and rows[0]["reason"] == reason and rows[0]["detail"]
    assert rows[0]["num_frames"] is None


def test_probe_truncation_found_by_decoding_when_structure_check_is_off(vids, monkeypatch):
    """Without the container size check the count / last-frame decode still catches the cut."""
    monkeypatch.setattr(V_probing, "_structure_problem", lambda *a: None)
    with pytest.raises(VideoError) as err:
        V.probe(vids["truncated_faststart"])
    assert err.value.reason == "truncated"


def test_probe_decord_overreport_trusts_pyav(vids, monkeypatch, caplog):
    class Liar:
        def __init__(self, real):
            self.real = real

        def __len__(self):
            return len(self.real) + 5

        def get_batch(self, idx):
            return self.real.get_batch(idx)

    real_open = V_probing._open_decord
    monkeypatch.setattr(V_probing, "_open_decord", lambda p: Liar(real_open(p)))
    with caplog.at_level("WARNING", logger=V_probing.__name__):
        info = V.probe(vids["good"])
    assert info.num_frames == 30 and info.backend == "pyav"
    assert "decord reports 35" in caplog.text


def test_probe_without_decord(vids, monkeypatch):
    def boom(path):
        raise RuntimeError("decord unavailable")
    monkeypatch.setattr(V_probing, "_open_decord", boom)
    info = V.probe(vids["good"])
    assert info.num_frames == 30 and info.backend == "pyav"


def test_probe_is_fast_on_healthy_video(tmp_path, make_video):
    path = make_video(tmp_path / "v300.mp4", num_frames=300, size=112, gop=16)
    V.probe(path)  # warm-up (imports, codec init)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        info = V.probe(path)
        times.append(time.perf_counter() - t)
    assert info.num_frames == 300
    assert min(times) < 0.1, times


def test_video_error_roundtrip():
    e = VideoError("truncated", "x.mp4: cut")
    assert (e.reason, e.detail, str(e)) == ("truncated", "x.mp4: cut", "truncated: x.mp4: cut")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.reason, e2.detail) == (e.reason, e.detail)


# ----------------------------------------------------------------------------- validate_paths
def test_validate_paths_walks_folders_and_never_raises(vids, tmp_path, make_video):
    root = tmp_path / "root"
    make_video(root / "a" / "x.mp4", audio=False)
    make_video(root / "b" / "c" / "y.mkv", audio=False)
    (root / "notes.txt").write_text("not a video and not an extension we walk")
    (root / "b" / "bad.mp4").write_text("junk")
    rows = V.validate_paths([root, vids["missing"], vids["good"]])
    by_name = {r["path"].split("/")[-1]: r for r in rows}
    assert set(by_name) == {"x.mp4", "y.mkv", "bad.mp4", "missing.mp4", "good.mp4"}
    assert by_name["x.mp4"]["ok"] and by_name["y.mkv"]["ok"] and by_name["good.mp4"]["ok"]
    assert by_name["bad.mp4"]["reason"] == "not_a_video"
    assert by_name["missing.mp4"]["reason"] == "missing"
    good = by_name["good.mp4"]
    assert set(good) == {"path", "ok", "reason", "detail", "num_frames", "fps", "duration", "width",
                         "height", "has_audio"}
    assert (good["num_frames"], good["width"], good["height"], good["has_audio"]) == (30, 64, 64, True)


def test_validate_paths_turns_unexpected_errors_into_rows(vids, monkeypatch):
    def explode(*a, **k):
        raise MemoryError("boom")
    monkeypatch.setattr(V_probing, "probe", explode)
    rows = V.validate_paths([vids["good"]])
    assert rows[0]["ok"] is False and rows[0]["reason"] == "decode_failed" and "boom" in rows[0]["detail"]


# -------------------------------------------------------------------------------- read_frames
REQUEST = [5, 3, 3, 29, 0, 17, 8, 8, 1]


@pytest.mark.parametrize("key", ["good", "mkv", "avi", "faststart", "open_gop"])
def test_read_frames_exact_frames_order_and_repeats(vids, frame_index, key):
    frames = V.read_frames(vids[key], REQUEST)
    assert frames.dtype == np.uint8 and frames.shape == (len(REQUEST), 64, 64, 3)
    assert frame_index(frames).tolist() == REQUEST


def _no_decord(path):
    raise RuntimeError("decord disabled by the test")


@pytest.mark.parametrize("key", ["good", "mkv", "avi", "open_gop"])
def test_read_frames_pyav_fallback_identical(vids, frame_index, monkeypatch, key):
    with_decord = V.read_frames(vids[key], REQUEST)
    monkeypatch.setattr(V_frames, "_open_decord", _no_decord)
    with_pyav = V.read_frames(vids[key], REQUEST)
    assert frame_index(with_pyav).tolist() == REQUEST
    np.testing.assert_array_equal(with_pyav, with_decord)


@pytest.mark.parametrize("key", ["good", "avi", "open_gop"])
def test_read_frames_pyav_fallback_every_frame(vids, frame_index, monkeypatch, key):
    monkeypatch.setattr(V_frames, "_open_decord", _no_decord)
    idx = list(range(29, -1, -1))
    assert frame_index(V.read_frames(vids[key], idx)).tolist() == idx


@pytest.mark.parametrize("key,plan", [("good", "decord"), ("mkv", "decord"), ("faststart", "decord"),
                                      ("avi", "sequential"), ("open_gop", "pyav")])
def test_decode_plan(vids, key, plan):
    """Files where decord's random access returns wrong frames are routed to PyAV."""
    assert V_plan._decode_plan(str(vids[key])) == plan


def test_pyav_seek_path_does_not_fall_back_on_healthy_files(vids, frame_index, monkeypatch):
    def no_sequential(*a):
        raise AssertionError("sequential fallback used")
    monkeypatch.setattr(V_pyav, "_pyav_sequential", no_sequential)
    for key in ("good", "mkv", "open_gop"):
        out = V_pyav._pyav_read(str(vids[key]), [0, 7, 8, 9, 15, 16, 29])
        assert frame_index(np.stack([out[i] for i in sorted(out)])).tolist() == [0, 7, 8, 9, 15, 16, 29]


def test_read_frames_falls_back_when_decord_returns_wrong_shape(vids, frame_index, monkeypatch):
    class Short:
        def __len__(self):
            return 30

        def get_batch(self, idx):
            return np.zeros((len(idx) - 1, 64, 64, 3), np.uint8)  # one frame short
    monkeypatch.setattr(V_frames, "_open_decord", lambda p: Short())
    assert frame_index(V.read_frames(vids["good"], [2, 7, 21])).tolist() == [2, 7, 21]


def test_read_frames_never_substitutes_missing_frames(vids, monkeypatch):
    with pytest.raises(VideoError) as err:
        V.read_frames(vids["good"], [3, 30])
    assert err.value.reason in ("truncated", "decode_failed") and "30" in err.value.detail
    monkeypatch.setattr(V_frames, "_open_decord", _no_decord)
    with pytest.raises(VideoError) as err:
        V.read_frames(vids["good"], [3, 31])
    assert err.value.reason in ("truncated", "decode_failed") and "31" in err.value.detail


def test_read_frames_loop_padding(vids, frame_index):
    idx = V.uniform_indices(3, 7)
    frames = V.read_frames(vids["three"], idx)
    assert frame_index(frames).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_read_frames_size_returns_uint8_squares(vids, frame_index):
    frames = V.read_frames(vids["good"], [4, 9], size=32)
    assert frames.dtype == np.uint8 and frames.shape == (2, 32, 32, 3)
    assert frame_index(frames).tolist() == [4, 9]  # downscaled blocks still readable
    ref = V.resize_center(V.read_frames(vids["good"], [4, 9]), 32)
    np.testing.assert_allclose(frames.transpose(0, 3, 1, 2) / 255.0, ref.numpy(), atol=0.5 / 255 + 1e-6)


def test_read_frames_missing_file(vids):
    with pytest.raises(VideoError) as err:
        V.read_frames(vids["missing"], [0])
    assert err.value.reason == "missing"


# ------------------------------------------------------------------------------- resize_center
def test_resize_center_crop_only_by_hand():
    frames = np.arange(2 * 4 * 8 * 3, dtype=np.uint8).reshape(2, 4, 8, 3)
    out = V.resize_center(frames, 4)  # shorter side already 4: no resize, crop columns 2..5
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    expected = frames[:, :, 2:6, :].transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-7)


def test_resize_center_downscale_constant_and_halves():
    frames = np.zeros((1, 40, 80, 3), np.uint8)
    frames[:, :, :40] = 200  # left half bright, right half dark
    out = V.resize_center(torch.from_numpy(frames), 20)  # -> 20x40, crop columns 10..29
    assert out.shape == (1, 3, 20, 20)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    np.testing.assert_allclose(out[0, :, :, :8].numpy(), 200 / 255, atol=1e-5)  # well inside the bright half
    np.testing.assert_allclose(out[0, :, :, 12:].numpy(), 0.0, atol=1e-5)
    tall = V.resize_center(np.full((3, 90, 30, 3), 255, np.uint8), 10)  # portrait: width is the short side
    assert tall.shape == (3, 3, 10, 10) and torch.allclose(tall, torch.ones_like(tall))


def test_resize_center_rejects_bad_shape():
    with pytest.raises(ValueError):
        V.resize_center(np.zeros((4, 4, 3), np.uint8), 2)


# -------------------------------------------------------------------------------------- audio
def _mel_bin_of(freq, n_mels=64, lo=125.0, hi=7500.0):
    """Hand computation: the HTK-mel band whose centre is nearest to ``freq``."""
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    centres = np.linspace(mel(lo), mel(hi), n_mels + 2)[1:-1]
    return int(np.argmin(np.abs(centres - mel(freq))))


@pytest.mark.parametrize("freq", [250.0, 440.0, 1000.0, 3000.0, 6000.0])
def test_log_mel_sine_peaks_in_its_bin(freq):
    sr = 16000
    x = np.sin(2 * np.pi * freq * np.arange(sr) / sr)
    m = V.log_mel(x, sample_rate=sr, n_mels=64)
    assert m.dtype == np.float32 and m.shape == (1 + (sr - 400) // 160, 64)  # 98 hops of 10 ms
    assert int(m.mean(axis=0).argmax()) == _mel_bin_of(freq)


def test_log_mel_silence_and_short_input():
    m = V.log_mel(np.zeros(16000), n_mels=32)
    assert m.shape == (98, 32)
    np.testing.assert_allclose(m, LOG_FLOOR, atol=1e-6)
    assert V.log_mel(np.zeros(399)).shape == (0, 64)  # shorter than one 25 ms window
    assert V.log_mel(np.zeros((2, 800))).shape == (3, 64)  # channels averaged


def test_read_audio_windows_shape_and_tone(vids):
    times = np.array([0.0, 0.6, 1.19, 5.0])  # start, middle, end, far beyond the 1.2 s track
    w = V.read_audio_windows(vids["good"], times, sample_rate=16000, n_mels=64, window_frames=96)
    assert w.dtype == np.float32 and w.shape == (4, 96, 64)
    # the middle window sits on the 440 Hz tone
    mid = w[1, 40:56]
    assert int(mid.mean(axis=0).argmax()) == _mel_bin_of(440.0)
    # the first window starts 0.48 s before 0: zero-padded waveform -> silence floor on its left
    np.testing.assert_allclose(w[0, :40], LOG_FLOOR, atol=1e-4)
    assert w[0, 60:].max() > LOG_FLOOR + 1.0
    # far beyond the end: all padding
    np.testing.assert_allclose(w[3], LOG_FLOOR, atol=1e-4)


def test_read_audio_windows_none_without_audio(vids):
    assert V.read_audio_windows(vids["noaudio"], np.array([0.1, 0.5])) is None


def test_read_audio_windows_pyav_fallback_matches(vids, monkeypatch):
    times = np.array([0.3, 0.9])
    ref = V.read_audio_windows(vids["good"], times, window_frames=32)

    def boom(path, sr):
        raise RuntimeError("decord audio disabled by the test")
    monkeypatch.setattr(V_audio, "_open_decord_audio", boom)
    alt = V.read_audio_windows(vids["good"], times, window_frames=32)
    assert alt.shape == ref.shape == (2, 32, 64)
    np.testing.assert_allclose(alt, ref, atol=1e-3)


def test_read_audio_windows_other_rate_and_mels(vids):
    w = V.read_audio_windows(vids["avi"], np.array([0.5]), sample_rate=8000, n_mels=40, window_frames=20)
    assert w.shape == (1, 20, 40)
    assert int(w[0].mean(axis=0).argmax()) == _mel_bin_of(440.0, n_mels=40, hi=4000.0)


ORPHAN = """
import sys, time
import numpy as np
from pathlib import Path
from components.data.clips import iter_clips
from components.data.manifest import VideoRecord
from components.data.video import probe
paths = sys.argv[1:]
recs = [VideoRecord.from_info(probe(p), video_id=str(i), path=p, labels=(0,), split="train") for i, p in enumerate(paths)]
from components.core.params import AudioParams
# with audio, each item carries ~400 KB of numpy log-mels through the pipe (tensors go by shared memory):
# more than a pipe holds, so the worker's queue feeder blocks once the reader stops, as in a real extract
it = iter_clips(recs, [np.arange(16)] * len(recs), {"light": 32}, AudioParams(), workers=1)
next(it)
print("READY", flush=True)
time.sleep(600)  # stops reading: the worker fills its queue and blocks, as under a killed extract
"""


def test_a_killed_reader_takes_its_decode_worker_with_it(make_video, tmp_path):
    """Issue 12 item 4: kill -9 the process iterating clips; its DataLoader decode worker (blocked on a
    queue nobody reads) must die with it instead of living on reparented to PID 1."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import psutil

    paths = [str(make_video(tmp_path / f"v{i}.mp4", num_frames=16)) for i in range(12)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, *paths], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()[-2000:]
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "no decode worker started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=15)
        for w in alive:  # leave nothing behind, also when the check fails
            w.kill()
        assert not alive, f"decode worker(s) {[w.pid for w in alive]} outlived their killed parent"
    finally:
        proc.kill()
