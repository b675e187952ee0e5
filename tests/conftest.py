"""Shared pytest fixtures.

``make_video(path, num_frames=30, size=64, audio=True, gop=8, ...)`` writes a tiny real video with
PyAV (H.264 yuv420p with B-frames, optional AAC mono 16 kHz 440 Hz sine) whose frame ``i`` shows the
bits of ``i`` as a 4x4 grid of black / white blocks (bit 0 top-left, row-major); ``frame_index``
reads the indices back from decoded RGB frames, so tests can check *which* frames were returned.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from components.ops.processes import dvc_command

os.environ.setdefault("DO_NOT_TRACK", "1")
# MLflow tracking is off unless a test turns it on (tests/test_tracking.py points it at a tmp store);
# otherwise every stage a test runs would log to ./mlflow.db.
os.environ["SALIENT_TRACKING"] = "0"

GRID = 4  # 4x4 blocks = 16 bits of frame index


def index_frame(i: int, size: int) -> np.ndarray:
    """uint8 [size, size, 3] RGB frame encoding ``i`` as black / white blocks."""
    block = size // GRID
    bits = [(i >> b) & 1 for b in range(GRID * GRID)]
    img = np.zeros((size, size, 3), np.uint8)
    for b, on in enumerate(bits):
        if on:
            r, c = divmod(b, GRID)
            img[r * block:(r + 1) * block, c * block:(c + 1) * block] = 255
    return img


def decode_frame_index(frames: np.ndarray) -> np.ndarray:
    """Frame indices [n] encoded by :func:`index_frame` in uint8 [n, H, W, 3] frames."""
    frames = np.asarray(frames)
    n, h, w, _ = frames.shape
    bh, bw = h // GRID, w // GRID
    out = np.zeros(n, np.int64)
    for b in range(GRID * GRID):
        r, c = divmod(b, GRID)
        # the inner half of each block: away from compression ringing at the edges
        patch = frames[:, r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        out |= (patch.reshape(n, -1).mean(axis=1) > 127).astype(np.int64) << b
    return out


def write_video(path, num_frames: int = 30, size: int = 64, audio: bool = True, gop: int = 8, *,
                fps: int = 25, video: bool = True, faststart: bool = False, tone_hz: float = 440.0,
                sample_rate: int = 16000, open_gop: bool = False) -> Path:
    """Write the test video (see module docstring).

    ``video=False`` gives an audio-only file, ``faststart=True`` puts the mp4 index first,
    ``open_gop=True`` makes an open-GOP H.264 stream (keyframes followed by pictures shown before them).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"movflags": "+faststart"} if faststart and path.suffix in (".mp4", ".m4v", ".mov") else {}
    c = av.open(str(path), "w", options=opts)
    vs = a = None
    if video:
        vs = c.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.gop_size = gop
        vs.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "2", "crf": "18",
                      "preset": "veryfast"}
        if open_gop:
            vs.options = {**vs.options, "bf": "1", "x264-params": "open-gop=1:bframes=1"}
    if audio:
        codec = "pcm_s16le" if path.suffix == ".avi" else "aac"
        a = c.add_stream(codec, rate=sample_rate, layout="mono")
    if video:
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size), format="rgb24")
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    if audio:
        n = int(round(sample_rate * num_frames / fps))
        t = np.arange(n) / sample_rate
        x = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        fmt = "s16" if path.suffix == ".avi" else "fltp"
        pts = 0
        for s in range(0, n, 1024):
            chunk = x[s:s + 1024][None]
            if fmt == "s16":
                chunk = (chunk * 32767).astype(np.int16)
            fr = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
            fr.sample_rate = sample_rate
            fr.pts = pts
            pts += chunk.shape[1]
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    c.close()
    return path


@pytest.fixture(scope="session")
def make_video():
    """Factory ``make_video(path, num_frames=30, size=64, audio=True, gop=8, **kw) -> Path``."""
    return write_video


@pytest.fixture(scope="session")
def frame_index():
    """``frame_index(frames uint8 [n,H,W,3]) -> int64 [n]``: the indices encoded by make_video."""
    return decode_frame_index


# ----------------------------------------------------------------------------- tiny pipeline
ROOT = Path(__file__).resolve().parents[1]

# The real params.yaml, shrunk: the whole prepare -> train_encoders -> extract chain in seconds.
TINY = [
    "data.synthetic.num_classes=3", "data.synthetic.videos_per_class=4", "data.synthetic.min_frames=24",
    "data.synthetic.max_frames=48", "data.synthetic.size=64", "data.workers=1",
    "frames.T=8", "frames.light_size=32", "frames.object_size=64", "frames.recognizer_size=64",
    "encoders.recognizer_arch=resnet10t", "encoders.audio_dim=16",
    "train_encoders.epochs=2", "train_encoders.bank_frames=4", "train_encoders.epoch_repeats=1",
    "extract.decode_workers=0", "extract.flush_every=2", "evaluate.budgets=[1,2,3]",
    "train_sampler.seeds=[0]", "train_sampler.epochs=2", "tsqnet.dim=32", "nsnet.dim=32",
    "tsi.budgets=[2,4]", "tsi.epochs=1", "tsi.frames=2", "tsi.batch_size=4", "evaluate.bootstrap=50",
    "fusion.source=params", "frames.full_size=48", "avgn.dim=16", "avgn.heads=2", "avgn.cls_hidden=16",
    "avgn.patch_size=24", "avgn.epochs=1", "avgn.train_frames=3", "avgn.t_g=6", "avgn.t_g_eval=[2,8]",
    "avgn.exit_thresholds=[0.5,0.9]", "ablations={nsnet_mlp: {sampler: nsnet, set: [nsnet.fem=mlp, train_sampler.epochs=1]}}",
]


def copy_tiny_project(dst: Path, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """A git + DVC project at ``dst``: this checkout's files (no reports/, results/, benchmarks/ or dvc.lock) with the TINY
    params.yaml (plus ``overrides``), committed; for tests that run the real `dvc repro` / Prefect flows on it."""
    import subprocess

    import yaml

    from components.app.profile_run import copy_checkout
    from components.core.params import load_params, to_dict

    copy_checkout(ROOT, dst, ("reports/", "dvc.lock", "results/", "benchmarks/"))  # code, not recorded outputs
    (dst / "params.yaml").write_text(yaml.safe_dump(to_dict(load_params(ROOT / "params.yaml", [*TINY, *overrides])), sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "init"]):
        subprocess.run(args, cwd=dst, capture_output=True, text=True, check=True)
    if not (dst / ".dvc").exists():
        subprocess.run([*dvc_command(), "init", "-q"], cwd=dst, check=True)
    return dst


@pytest.fixture(scope="session")
def tiny_params():
    from components.core.params import load_params

    return load_params(ROOT / "params.yaml", TINY)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_params):
    """prepare -> train_encoders -> extract on the tiny synthetic set, once per session."""
    from components.core.paths import Paths
    from components.stages import extract, prepare, train_encoders

    paths = Paths().under(tmp_path_factory.mktemp("tiny"))
    for stage in (prepare, train_encoders, extract):
        stage.run(tiny_params, paths)
    return paths


@pytest.fixture(scope="session")
def tiny_samplers(tiny_pipeline, tiny_params):
    """+ prototypes -> pseudo_labels -> train_sampler@every sampler, once per session (same paths)."""
    from components.core.params import evaluated_samplers
    from components.stages import prototypes, pseudo_labels, train_sampler

    prototypes.run(tiny_params, tiny_pipeline)
    pseudo_labels.run(tiny_params, tiny_pipeline)
    for name in evaluated_samplers(tiny_params):
        train_sampler.run(tiny_params, tiny_pipeline, name)
    return tiny_pipeline


def stop_local_prefect(stack, started: set, timings: dict, t_start: float) -> tuple[list, list]:
    """Stop a ``flows.serve.LocalPrefect`` stack, print the test's timings, and return (processes
    ``stack.stop()`` left, pids of ``started`` still alive) for the caller to assert empty."""
    import time

    import psutil

    started |= stack.pids()
    t0 = time.time()
    left = stack.stop()
    timings["stop"] = time.time() - t0
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()}, "total", round(time.time() - t_start, 1))
    alive = [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    return left, alive


#: The longest test files (seconds of their own at 2 workers), started first: `make test` runs the suite in
#: two xdist workers that take whole files (``--dist loadfile``), and a long file picked up last would run
#: alone at the end while the other worker idles.
LONGEST_FIRST = ("test_dvc_pipeline.py", "test_prefect.py", "test_browser.py", "test_extract_pool.py", "test_tuning.py",
                 "test_extract_shards.py", "test_postgres_optuna.py", "test_distributed.py")


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(Path(str(it.fspath)).name, len(rank)))  # stable: file order kept otherwise
