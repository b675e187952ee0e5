"""Benchmarks (``salient bench extract`` / ``make bench``) -> ``reports/bench_extract.json``.

* sparse vs full decoding of a 300-frame H.264 video (keyframe every 16 frames): T=16 uniform
  frames through :func:`read_frames` vs decoding every frame, median of repeats, as a ratio;
* extraction throughput on the demo set (needs ``data/prepared`` and ``data/s0/encoders`` from
  ``make demo``): decode-only; each encoder in isolation; the models-only rate inside the extraction
  loop (decode workers running) and its ratio to the isolated rate; end-to-end frames/s;
* peak RSS of end-to-end extraction of N and 4N videos, each in a fresh process;
* the demo pipeline's wall time as recorded by ``salient demo`` (``reports/demo_timing.json``).

``salient bench shards`` -> ``reports/bench_shards.json``: the wall time of extracting the demo's
prepared videos (``data/prepared``, ``data/s0/encoders``) as 1 shard process and as 2 in parallel
(each with cores / shards torch threads), merge included, in one invocation; per-shard videos/s and
frames/s; and whether the two stores are byte-identical (plus 2 shards at the 1-shard thread count,
the configuration that is). On 2 cores the ceiling is 2x, less since decoding workers and torch
threads already use both cores in the 1-shard run.

``salient bench samplers`` -> ``reports/bench_samplers.json``: one training epoch of TSQNet and
NSNet (default params) on a 1,000-video, T=50 store of the demo's feature shapes, written to disk
and read back memory-mapped, i.e. the sampler experiment loop the feature store exists for.

``salient bench predict`` -> ``reports/bench_predict.json``: the evaluation grid from a cache, and
``salient predict``'s videos/s at batch 1 and 32 on the demo's test videos, with the params' ``compute``
section (device, autocast, channels-last, pinned memory). ``--synthetic DIR`` runs it instead on
random-weight models at the params' architectures and resolutions and on synthetic videos made there
(throughput does not depend on the weights), plus the frame encoders' extraction rate:
``benchmarks/gpu_predict.sh`` uses it for the papers' setting on a GPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from components.core.atomic import atomic_torch_save, atomic_write_json
from components.core.integrity import save_checkpoint
from components.data.clips import Clip, iter_clips
from components.data.manifest import VideoRecord, read_manifest
from components.data.synthetic import plan_video, render_video
from components.data.video import probe, read_frames, uniform_indices
from components.evaluation.sampler_eval import SamplerRun, evaluate_grid, softmax
from components.store.extraction import run_shards_locally, write_params
from components.core.paths import Paths
from components.ops.processes import venv_env
from components.store.features import FrameEncoders, stream_split
from components.evaluation.metrics import salient_mask
from components.models.encoders import create_encoder
from components.models.samplers import SamplerOutput, create_sampler
from components.core.params import SyntheticParams, load_params
from components.app.predict import Predictor
from components.store.sampler_data import batches, load_split
from components.training.sampler_training import sampler_checkpoint
from components.store.feature_store import ArraySpec, FeatureStore, StoreWriter


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_sparse(size: int = 224, frames: int = 300, T: int = 16, gop: int = 16, repeats: int = 5) -> dict:
    import decord

    sp = SyntheticParams(num_classes=4, size=size, min_frames=frames, max_frames=frames, keyframe_interval=gop)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.mp4"
        render_video(sp, plan_video(sp, 0, 0), path)
        idx = uniform_indices(frames, T)

        def full():
            vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            n = 0
            for i in range(len(vr)):
                vr.next()
                n += 1
            assert n == frames

        sparse_s = _median_time(lambda: read_frames(path, idx), repeats)
        full_s = _median_time(full, repeats)
    return {"video": f"{frames} frames {size}x{size} H.264, keyframe every {gop}", "T": T,
            "sparse_ms": 1000 * sparse_s, "full_ms": 1000 * full_s, "ratio_sparse_over_full": sparse_s / full_s,
            "target_ratio": 0.6}


def _extract_subset(n: int, params: str) -> dict:
    """End-to-end extraction of the first n videos into a temp store; run in a fresh process."""
    code = f"""
import json, resource, time, tempfile
from pathlib import Path
from components.core.params import load_params
from components.data.manifest import read_manifest
from components.store.features import FrameEncoders, stream_split
from components.store.feature_store import StoreWriter
p = load_params({params!r})
recs, classes = read_manifest(Path('data/prepared'))
recs = recs[:{n}]
enc = FrameEncoders.load(p, Path('data/s0/encoders'))
with tempfile.TemporaryDirectory() as d:
    w = StoreWriter(Path(d) / 'f', 'bench')
    sw = w.split('all', [r.video_id for r in recs], enc.specs(p.frames.T, len(classes)))
    t0 = time.perf_counter()
    stream_split(sw, recs, p.frames.T, enc.sizes, p.audio, enc.encode, len(classes), p.extract.batch_videos,
                 p.extract.flush_every, p.extract.decode_workers, desc='bench')
    dt = time.perf_counter() - t0
print(json.dumps({{'videos': len(recs), 'seconds': dt, 'frames_per_s': len(recs) * p.frames.T / dt,
                  'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  'peak_rss_decode_worker_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  'rss_after_stream_mb': int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _isolated_rates(enc: FrameEncoders, clips: list[Clip], repeats: int = 3) -> dict:
    """Each encoder alone on a batch of already decoded frames (inference mode, the pipeline's own
    modules and memory format): frames/s per encoder and for the four in sequence."""
    seconds = {}
    with torch.inference_mode():
        for name, model in (("light", enc.light), ("object", enc.objects), ("recognizer", enc.recognizer)):
            x = torch.cat([c.frames[name] for c in clips]).float().div_(255.0)
            model(x[:2])  # warm-up (oneDNN primitive creation)
            seconds[name] = _median_time(lambda: model(x), repeats)
        with_audio = [c for c in clips if c.audio is not None]
        if with_audio:
            mel = torch.from_numpy(np.concatenate([c.audio for c in with_audio])).float()
            enc.audio.features(mel[:2])
            seconds["audio"] = _median_time(lambda: enc.audio.features(mel), repeats) * len(clips) / len(with_audio)
    frames = sum(len(c.frame_indices) for c in clips)
    return {"frames_per_s": {k: frames / v for k, v in seconds.items()},
            "all_encoders_frames_per_s": frames / sum(seconds.values())}


def bench_extract_throughput(params: str, n: int, repeats: int = 3) -> dict:
    """Extraction's rates in one run: decoding alone; the encoders in isolation on decoded frames; and
    the extraction loop itself (:func:`stream_split` with the configured decode workers) with the
    time spent inside its model calls measured, i.e. the models-only rate *inside the pipeline*, whose
    ratio to the isolated rate (target >= 0.70) shows what decoding / batching / writing cost the models.
    The isolated and in-pipeline measurements alternate ``repeats`` times and the ratio is the median of
    the per-round ratios: one round is noisy on a shared 2-core machine (isolated rates of 72.6-90.4
    frames/s were seen for the same code)."""
    p = load_params(params)
    recs, classes = read_manifest(Path("data/prepared"))
    recs = recs[:n]
    T = p.frames.T
    enc = FrameEncoders.load(p, Path("data/s0/encoders"))
    idx = [uniform_indices(r.num_frames, T) for r in recs]
    t0 = time.perf_counter()
    clips = [c for c in iter_clips(recs, idx, enc.sizes, p.audio, workers=0) if isinstance(c, Clip)]
    decode_s = time.perf_counter() - t0
    B = p.extract.batch_videos
    frames = len(clips) * T
    rounds = []
    for _ in range(max(1, repeats)):
        isolated = _isolated_rates(enc, clips[:B])
        model_s = 0.0

        def timed_encode(batch):
            nonlocal model_s
            t = time.perf_counter()
            out = enc.encode(batch)
            model_s += time.perf_counter() - t
            return out

        with tempfile.TemporaryDirectory() as d:
            sw = StoreWriter(Path(d) / "f", "bench").split("all", [r.video_id for r in recs],
                                                            enc.specs(T, len(classes)))
            t0 = time.perf_counter()
            stream_split(sw, recs, T, enc.sizes, p.audio, timed_encode, len(classes), B, p.extract.flush_every,
                         p.extract.decode_workers, desc="bench")
            e2e_s = time.perf_counter() - t0
        rounds.append({"isolated": isolated, "models_only_in_pipeline_frames_per_s": frames / model_s,
                       "models_only_over_isolated": frames / model_s / isolated["all_encoders_frames_per_s"],
                       "end_to_end_frames_per_s": frames / e2e_s})
    ratios = [r["models_only_over_isolated"] for r in rounds]
    return {"videos": len(clips), "T": T, "sizes": enc.sizes, "batch_videos": B,
            "decode_workers": p.extract.decode_workers, "decode_frames_per_s": frames / decode_s,
            "rounds": rounds, "models_only_over_isolated_median": statistics.median(ratios),
            "models_only_over_isolated_range": [min(ratios), max(ratios)],
            "end_to_end_frames_per_s_median": statistics.median(r["end_to_end_frames_per_s"] for r in rounds),
            "target_models_only_over_isolated": 0.70}


def _train_store(n: int, T: int, C: int, specs: dict, row) -> tuple[dict, float]:
    """Write an ``n``-video train split of ``specs`` (``row(i)``'s arrays, plus one-hot labels of class
    ``i % C`` and ``valid``) to a temporary store, read it back memory-mapped as tensors (every array
    but ``valid``): (tensors, seconds the read took)."""
    with tempfile.TemporaryDirectory() as tmp:
        w = StoreWriter(Path(tmp) / "f", "bench")
        sw = w.split("train", [f"v{i}" for i in range(n)], specs)
        for i in range(n):
            lab = np.zeros(C, np.uint8)
            lab[i % C] = 1
            sw.write(i, {**row(i), "labels": lab, "valid": np.bool_(True)})
        sw.checkpoint(n)
        sw.close()
        store = FeatureStore(w.finalize({"T": T, "classes": [str(c) for c in range(C)]}))
        t0 = time.perf_counter()
        data, _ = load_split(store, "train", keys=tuple(k for k in specs if k != "valid"))
        return data, time.perf_counter() - t0


def bench_samplers(params: str, n: int = 1000, T: int = 50, C: int = 12, d: int = 1280, e: int = 384,
                   repeats: int = 2) -> dict:
    """Seconds per training epoch of TSQNet / NSNet on an n x T store (features from a fixed seed)."""
    p = load_params(params)
    rng = np.random.default_rng(0)
    specs = {"light_feats": ArraySpec((T, d), "float32"), "object_scores": ArraySpec((T, 1000), "float32"),
             "labels": ArraySpec((C,), "uint8"), "valid": ArraySpec((), "bool")}
    out = {"videos": n, "T": T, "C": C, "light_dim": d, "batch_size": p.train_sampler.batch_size,
           "threads": torch.get_num_threads()}
    data, out["load_s"] = _train_store(n, T, C, specs, lambda i: {
        "light_feats": rng.random((T, d), dtype=np.float32),
        "object_scores": rng.dirichlet(np.ones(1000), T).astype(np.float32)})
    g = torch.from_numpy(rng.random((n, T), dtype=np.float32))
    y = data["labels"]
    data["ns_labels"] = torch.cat([g[..., None] * y[:, None, :], (1 - g)[..., None]], -1)
    kwargs = {"tsqnet": {"num_classes": C, "light_dim": d, "params": p.tsqnet, "visual_prototypes": torch.randn(C, d),
                         "object_text": torch.randn(1000, e), "class_text": torch.randn(C, e)},
              "nsnet": {"num_classes": C, "light_dim": d, "params": p.nsnet}}
    for name, kw in kwargs.items():
        m = create_sampler(name, **kw).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)

        def epoch():
            for b in batches(data, p.train_sampler.batch_size, 0, 0):
                loss, _ = m.loss(b, m(b))
                opt.zero_grad()
                loss.backward()
                opt.step()

        out[f"{name}_epoch_s"] = _median_time(epoch, repeats)
        out[f"{name}_params"] = sum(q.numel() for q in m.parameters())
    out["target_tsqnet_epoch_s"] = 15.0
    return out


def bench_eval_grid(params: str, n: int = 1000, T: int = 16, C: int = 200, seeds: int = 3) -> dict:
    """The whole evaluation grid (every sampler × ``evaluate.budgets`` × seeds, frame recognizer) from a
    cache of n test videos: samplers with random weights, saliency / branch scores and logits drawn
    from a fixed seed (selection, fusion and metrics run exactly as in ``evaluate``)."""
    p = load_params(params)
    rng = np.random.default_rng(0)
    labels = np.zeros((n, C), np.int64)
    labels[np.arange(n), rng.integers(0, C, n)] = 1
    gt = np.where(rng.random((n, T)) < 0.3, labels.argmax(1)[:, None], -1).astype(np.int16)
    probs = softmax(rng.normal(size=(n, T, C)))
    salient = salient_mask(gt, labels)
    branch = {"tsqnet": ("vqm", "tqm"), "nsnet": ("fsm", "vgm")}
    kw = {"tsqnet": {"num_classes": C, "light_dim": 8, "params": p.tsqnet, "visual_prototypes": torch.randn(C, 8),
                     "object_text": torch.randn(1000, 4), "class_text": torch.randn(C, 4)},
          "nsnet": {"num_classes": C, "light_dim": 8, "params": p.nsnet}, "random": {"seed": 0}}
    runs = []
    for name in p.evaluate.samplers:
        for seed in range(seeds):
            model = create_sampler(name, **kw.get(name, {}))
            sal = torch.from_numpy(salient.astype(np.float32)) if name == "oracle" else torch.rand(n, T)
            out = SamplerOutput(sal, {b: torch.rand(n, T) for b in branch.get(name, ())})
            runs.append(SamplerRun(name, seed, model, out))
    t0 = time.perf_counter()
    rows, _ = evaluate_grid(runs, p.evaluate.budgets, labels, salient, lambda r, rec, k: 0.0, probs,
                            map_variant=p.evaluate.map_variant)
    dt = time.perf_counter() - t0
    return {"videos": n, "T": T, "classes": C, "samplers": len(p.evaluate.samplers), "budgets": len(p.evaluate.budgets),
            "seeds": seeds, "cells": len(rows), "seconds": dt, "cells_per_s": len(rows) / dt, "target_s": 30.0}


def bench_predict(params: str, ckpt_dir: str = "data/s0", K: int = 5, batches=(1, 32), n_videos: int = 32,
                  samplers=("tsqnet", "uniform"), device: str | None = None, workers: int = 0,
                  overrides: tuple[str, ...] = (), files: list[str] | None = None, frame_chunk: int = 16) -> dict:
    """``salient predict`` throughput on the demo's test videos (or ``files``): videos/s at each batch
    size and the share of wall time per phase (probe + decode, light encoder(s), sampler + fusion,
    recognizer). ``device`` None: the params' ``compute.device``; the rest of ``compute`` applies."""
    p = load_params(params, overrides)
    if files is None:
        files = [r.path for r in read_manifest(Path("data/prepared"))[0] if r.split == "test"][:n_videos]
    files = (files * (-(-n_videos // max(len(files), 1))))[:n_videos]
    c = p.compute
    out: dict = {"K": K, "videos": len(files), "threads": torch.get_num_threads(), "decode_workers": workers,
                 "frame_chunk": frame_chunk, "compute": {"amp": c.amp, "amp_dtype": c.amp_dtype if c.amp else None,
                                                         "channels_last": c.channels_last, "pin_memory": c.pin_memory},
                 "resolution": {"T": p.frames.T, "light": p.frames.light_size, "object": p.frames.object_size,
                                "recognizer": p.frames.recognizer_size},
                 "arch": {"light": p.encoders.light_arch, "object": p.encoders.object_arch,
                          "recognizer": p.encoders.recognizer_arch}, "runs": {}}
    for name in samplers:
        pred = Predictor.load(p, Path(ckpt_dir) / "samplers" / name / "seed0.pt", Path(ckpt_dir) / "encoders", K,
                              device=device)
        pred.frame_chunk = max(1, frame_chunk)
        dev_name = torch.cuda.get_device_name(pred.device) if pred.device.startswith("cuda") else \
            platform.processor() or "cpu"
        out["device"] = f"{pred.device} ({dev_name})"
        pred.predict(files[:2], workers=workers)  # warm-up
        for b in batches:
            pred.timings = dict.fromkeys(pred.timings, 0.0)
            t0 = time.perf_counter()
            for i in range(0, len(files), b):
                res = pred.predict(files[i:i + b], workers=workers)
                assert all(hasattr(r, "top") for r in res), res
            wall = time.perf_counter() - t0
            tm = pred.timings
            share = {"decode": (tm["probe"] + tm["decode_light"] + tm["decode_rec"]) / wall,
                     "light_encoder": tm["light"] / wall, "sampler_fusion": tm["sampler"] / wall,
                     "recognizer": tm["recognizer"] / wall}
            out["runs"][f"{name}_batch{b}"] = {"videos_per_s": len(files) / wall, "wall_s": wall,
                                               "gmacs_per_video": pred.gmacs, "share": share}
    out["target_sampler_share"] = 0.05
    out["paper_videos_per_s"] = {"batch1": 17.7, "batch32": 121.1, "device": "RTX 3090 (TSQNet paper)"}
    return out


def synthetic_predict_setup(params: str, root: Path, n_videos: int, frames: int = 96,
                            overrides: tuple[str, ...] = ()) -> tuple[Path, list[str]]:
    """What :func:`bench_predict` needs, without a trained pipeline: in ``root``, ``encoders/`` (light
    encoder and frame recognizer at the params' architectures, random weights, as ``train_encoders``
    saves them), ``samplers/{tsqnet,uniform}/seed0.pt`` (TSQNet with random weights, prototypes and
    text embeddings; the object recognizer is the params' own) and ``n_videos`` synthetic videos of
    ``frames`` frames at ``data.synthetic.size``. Throughput does not depend on the weights. Reused when
    present. Returns (checkpoint dir, video paths)."""
    p = load_params(params, overrides)
    e, C = p.encoders, p.data.synthetic.num_classes
    classes = [f"class{i}" for i in range(C)]
    enc = root / "encoders"
    enc.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfgs = {"light": {"arch": e.light_arch, "num_classes": C, "weights": "none"},
            "recognizer": {"arch": e.recognizer_arch, "num_classes": C, "pretrained": False, "weights": "none"}}
    models = {}
    for role, cfg in cfgs.items():
        ck = torch.load(enc / f"{role}.pt", weights_only=False) if (enc / f"{role}.pt").exists() else None
        if ck is None or ck["cfg"] != cfg:
            models[role] = create_encoder(role, **cfg)
            save_checkpoint({"role": role, "cfg": cfg, "state_dict": models[role].state_dict(), "classes": classes},
                            enc / f"{role}.pt")
    d = (models.get("light") or create_encoder("light", **cfgs["light"])).num_features
    text = 384  # all-MiniLM-L6-v2's width
    samplers = {"tsqnet": {"num_classes": C, "light_dim": d, "params": p.tsqnet,
                           "visual_prototypes": torch.randn(C, d), "object_text": torch.randn(1000, text),
                           "class_text": torch.randn(C, text)}, "uniform": {}}
    for name, kw in samplers.items():
        path = root / "samplers" / name / "seed0.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(sampler_checkpoint(create_sampler(name, **kw), name, kw, 0, classes), path)
    sp = replace(p.data.synthetic, videos_per_class=-(-n_videos // C), min_frames=frames, max_frames=frames)
    vids = root / f"videos_{sp.size}px_{frames}f"
    vids.mkdir(exist_ok=True)
    files = []
    for i in range(n_videos):
        path = vids / f"v{i:04d}.mp4"
        if not path.exists():
            render_video(sp, plan_video(sp, i // C, i % C), path)
        files.append(str(path))
    return root, files


def bench_extract_rate(params: str, ckpt_dir: Path, files: list[str], device: str | None = None,
                       batch_videos: int = 8, overrides: tuple[str, ...] = (), repeats: int = 3) -> dict:
    """Extraction's rates at the params' resolutions on ``device`` with the params' ``compute``: T
    frames per video decoded at the light / object / recognizer sizes (frames/s), and the three frame
    models on them in batches of ``batch_videos`` videos (frames/s each and in sequence: what
    ``extract`` runs per frame, the audio CNN aside), with autocast and channels-last as predict."""
    p = load_params(params, overrides)
    pred = Predictor.load(p, ckpt_dir / "samplers" / "tsqnet" / "seed0.pt", ckpt_dir / "encoders", 1, device=device)
    T, f = p.frames.T, p.frames
    sizes = {"light": f.light_size, "object": f.object_size, "recognizer": f.recognizer_size}
    recs = [_probe_record(path) for path in files]
    idx = [uniform_indices(r.num_frames, T) for r in recs]
    t0 = time.perf_counter()
    clips = [c for c in iter_clips(recs, idx, sizes, None, workers=0) if isinstance(c, Clip)]
    decode_s = time.perf_counter() - t0
    models = {"light": pred.light, "object": pred.objects, "recognizer": pred.recognizer}
    batch = clips[:batch_videos]
    seconds = {}
    with torch.inference_mode():
        for name, model in models.items():
            x = pred._to_device(torch.cat([c.frames[name] for c in batch])).float().div_(255.0)  # [B*T,3,s,s]

            def run(model=model, x=x):
                with pred._amp():
                    model(x)
                pred._sync()

            run()  # warm-up (cuDNN / oneDNN algorithm choice)
            seconds[name] = _median_time(run, repeats)
    n = len(batch) * T
    return {"videos": len(clips), "T": T, "sizes": sizes, "batch_videos": len(batch), "device": pred.device,
            "decode_frames_per_s": len(clips) * T / decode_s,
            "models_frames_per_s": {k: n / v for k, v in seconds.items()},
            "models_in_sequence_frames_per_s": n / sum(seconds.values())}


def _probe_record(path: str):
    """A :class:`VideoRecord` of a video file found by probing it (no manifest)."""
    info = probe(path, min_frames=1, check_decode=False)
    return VideoRecord(Path(path).stem, str(path), (), "bench", info.num_frames, info.fps, info.duration,
                       info.width, info.height, info.has_audio)


def bench_avgn(params: str, n: int = 1000, T: int = 16, C: int = 12, d: int = 1280, grid: tuple[int, int] = (2, 2),
               a: int = 128, repeats: int = 1) -> dict:
    """Seconds per AVGN training epoch on an n x T store of the demo's shapes (light maps float16
    [T,1280,2,2], audio [T,128], frame cache uint8 [T,3,S,S] at ``frames.full_size``), written to disk and
    read back memory-mapped, with f_L = the configured recognizer architecture (random weights: same
    cost) frozen at P x P, as ``train_sampler@avgn`` trains it. What dominates: the same epoch with a
    zero-cost f_L (the difference is f_L's forward + backward to the patch) and the load time."""
    from components.models.samplers.avgn import AVGNSampler, FrozenRecognizer, StageMap  # deferred: only this benchmark
    from components.models.encoders import create_encoder  # deferred: only this benchmark

    p = load_params(params)
    S, av = p.frames.full_size, p.avgn
    rng = np.random.default_rng(0)
    specs = {"light_maps": ArraySpec((T, d, *grid), "float16"), "audio_emb": ArraySpec((T, a), "float32"),
             "has_audio": ArraySpec((), "bool"), "frames_full": ArraySpec((T, 3, S, S), "uint8"),
             "labels": ArraySpec((C,), "uint8"), "valid": ArraySpec((), "bool")}
    out = {"videos": n, "T": T, "C": C, "map": [d, *grid], "full_size": S, "patch_size": av.patch_size,
           "train_frames": av.train_frames, "batch_size": av.batch_size, "local": p.encoders.recognizer_arch,
           "threads": torch.get_num_threads()}
    data, out["load_s"] = _train_store(n, T, C, specs, lambda i: {
        "light_maps": rng.random((T, d, *grid), dtype=np.float32).astype(np.float16),
        "audio_emb": rng.standard_normal((T, a), dtype=np.float32), "has_audio": np.bool_(i % 20),
        "frames_full": rng.integers(0, 256, (T, 3, S, S), dtype=np.uint8)})

    class Free(torch.nn.Module):  # f_L at zero cost: the pooled patch, linearly mapped (same output width)
        frozen, patch_size = True, av.patch_size

        def __init__(self, out_dim):
            super().__init__()
            self.out_dim = out_dim
            self.w = torch.zeros(3, out_dim)

        def forward(self, x):
            return x.mean((2, 3)) @ self.w

    rec = create_encoder("recognizer", arch=p.encoders.recognizer_arch, num_classes=C)
    for label, local in (("epoch_s", None), ("epoch_free_local_s", Free(rec.num_features))):
        torch.manual_seed(0)
        if local is None:
            local = FrozenRecognizer(rec, av.patch_size)
        pi = (StageMap(create_encoder("light", arch=p.encoders.light_arch, num_classes=C), p.frames.light_size,
                       av.pi_stride) if av.pi_map == "fine" else None)
        m = AVGNSampler(C, d, grid, a, T, av, local_module=local, pi_module=pi).train()
        opt = torch.optim.AdamW(m.parameters(), lr=av.lr)

        def epoch():
            for b in batches(data, av.batch_size, 0, 0):
                loss, _ = m.loss(b, m(b))
                opt.zero_grad()
                loss.backward()
                opt.step()

        out[label] = _median_time(epoch, repeats)
        out["params"] = sum(q.numel() for q in m.parameters())
    out["local_share"] = 1 - out["epoch_free_local_s"] / out["epoch_s"]
    out["target_epoch_s"] = 60.0
    return out


def _store_compare(a: Path, b: Path) -> dict:
    """Are two stores byte-identical (every file)? Else which files differ and by how much at most."""
    import hashlib

    files = sorted(str(f.relative_to(a)) for f in a.rglob("*") if f.is_file())
    differ = [f for f in files if not (b / f).is_file()
              or hashlib.sha256((a / f).read_bytes()).digest() != hashlib.sha256((b / f).read_bytes()).digest()]
    worst = 0.0
    for f in differ:
        if f.endswith(".npy") and (b / f).is_file():
            x, y = np.load(a / f), np.load(b / f)
            if x.shape == y.shape and x.size:
                worst = max(worst, float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()))
    return {"byte_identical": not differ, "files": len(files), "differing_files": differ,
            "max_abs_diff": worst}


def bench_shards(params: str, prepared: Path = Path("data/prepared"), encoders: Path = Path("data/s0/encoders"),
                 shards: int = 2) -> dict:
    """Extraction of the same input as 1 shard and as ``shards`` shards (processes), each shard with
    ``cores // shards`` torch threads, merge included; then ``shards`` shards at the 1-shard thread
    count (byte-identical to it). Wall times, their ratio, per-shard throughput, store comparisons."""
    import os
    from dataclasses import replace

    p = load_params(params)
    cores = os.cpu_count() or 1
    T = p.frames.T
    work = Path(".salient/bench/shards")
    if work.exists():
        import shutil

        shutil.rmtree(work)
    runs: dict[str, dict] = {}
    for name, S, threads in (("1_shard", 1, cores), (f"{shards}_shards", shards, max(1, cores // shards)),
                             (f"{shards}_shards_same_threads", shards, cores)):
        q = replace(p, extract=replace(p.extract, shards=S, shard_retries=0))
        paths = Paths(prepared=prepared.resolve(), encoders=encoders.resolve(),
                      features=(work / name / "features").resolve())
        params_file = write_params(q, paths)

        def command(i: int, n: int, t: int, paths=paths, params_file=params_file) -> list[str]:
            return [sys.executable, "-m", "components.stages.extract", "--shard", f"{i}/{n}", "--params",
                    str(params_file), "--threads", str(t), "--die-with-parent",
                    *(a for k in ("prepared", "encoders", "features") for a in (f"--{k}", str(getattr(paths, k))))]

        t0 = time.perf_counter()
        stats = run_shards_locally(q, paths, command, threads=threads, env={**venv_env(), "SALIENT_TRACKING": "0"})
        wall = time.perf_counter() - t0
        per = {str(i): {"videos": m["videos"], "extract_seconds": m["seconds"],
                        "process_seconds": stats["shard_seconds"][i],
                        "videos_per_s": m["videos"] / m["seconds"], "frames_per_s": m["videos"] * T / m["seconds"]}
               for i, m in stats["parts"].items()}
        videos = sum(m["videos"] for m in stats["parts"].values())
        runs[name] = {"shards": S, "torch_threads_per_shard": threads, "wall_s": wall,
                      "merge_s": stats["merge_seconds"], "videos": videos, "frames": videos * T,
                      "videos_per_s": videos / wall, "frames_per_s": videos * T / wall, "per_shard": per}
        print(json.dumps({name: runs[name]}, indent=1), flush=True)
    one, many, same = (work / n / "features" for n in runs)
    return {"input": {"prepared": str(prepared), "encoders": str(encoders), "T": T,
                      "decode_workers_per_shard": p.extract.decode_workers, "batch_videos": p.extract.batch_videos,
                      "flush_every": p.extract.flush_every},
            "cores": cores, "runs": runs,
            "speedup_wall_1_over_n": runs["1_shard"]["wall_s"] / runs[f"{shards}_shards"]["wall_s"],
            "speedup_wall_1_over_n_same_threads": runs["1_shard"]["wall_s"] / runs[f"{shards}_shards_same_threads"]["wall_s"],
            "ceiling": f"at most {min(shards, cores)}x on {cores} cores; less, because the 1-shard run's decode "
                       "workers and torch threads already use every core",
            f"store_1_vs_{shards}_shards": _store_compare(one, many),
            f"store_1_vs_{shards}_shards_same_threads": _store_compare(one, same)}


def build_parser() -> argparse.ArgumentParser:
    """``salient bench WHAT``'s options (``loop`` and ``ddp`` have their own parsers)."""
    ap = argparse.ArgumentParser(prog="salient bench", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 description="Time one part of the project on this machine and record it in "
                                             "reports/bench_<what>.json (the demo must have run: `make demo`).")
    ap.add_argument("what", choices=["extract", "samplers", "predict", "avgn", "shards", "ddp"],
                    help="extract: the extraction rate and memory; samplers: each sampler's forward pass; predict: "
                         "`salient predict` per batch size; avgn: AVGN's glance and head; shards: 1 vs S extraction "
                         "shards; ddp: DDP training (its own options: `salient bench ddp --help`)")
    ap.add_argument("--params", default="params.yaml", help="the params file")
    ap.add_argument("--n", type=int, default=40, help="N for the RSS check (4N is also run)")
    ap.add_argument("--out", default="reports/bench_extract.json",
                    help="where the result goes (the other benchmarks replace bench_extract by their own name)")
    ap.add_argument("--device", help="predict: torch device (default: the params' compute.device)")
    ap.add_argument("--ckpt-dir", default="data/s0", help="predict: one pipeline seed's folder (encoders/, samplers/)")
    ap.add_argument("--workers", type=int, default=0, help="predict: decoding processes")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="predict: params override")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="predict: batch sizes")
    ap.add_argument("--videos", type=int, default=32, help="predict: videos per batch-size run")
    ap.add_argument("--frame-chunk", type=int, default=16, help="predict: frames per encoder call")
    ap.add_argument("--synthetic", metavar="DIR", help="predict: random-weight models at the params' architectures "
                    "and synthetic videos in DIR instead of the demo's (+ the extraction rate); no eval grid")
    ap.add_argument("--shards", type=int, default=2, help="shards: the S compared with 1 shard")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    if argv and argv[0] == "ddp":  # its own options: components/app/bench_ddp.py
        from components.app import bench_ddp  # deferred: torchrun workers import it on their own

        return bench_ddp.main(list(argv[1:]))
    args = ap.parse_args(argv)
    machine = {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__}
    if args.what == "shards":
        if not Path("data/s0/encoders/recognizer.pt").exists():
            print("data/prepared or data/s0/encoders missing: run `make demo` first", file=sys.stderr)
            return 1
        res = {"machine": machine, "params": args.params,
               "command": f"salient bench shards --shards {args.shards}", **bench_shards(args.params, shards=args.shards)}
        out = Path(args.out.replace("bench_extract", "bench_shards"))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, res)
        print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1))
        return 0
    if args.what == "predict" and args.synthetic:
        sets = tuple(args.set)
        ck, files = synthetic_predict_setup(args.params, Path(args.synthetic), args.videos, overrides=sets)
        res = {"machine": machine, "params": args.params, "set": list(sets),
               "predict": bench_predict(args.params, str(ck), batches=tuple(args.batches), n_videos=args.videos,
                                        device=args.device, workers=args.workers, overrides=sets, files=files,
                                        frame_chunk=args.frame_chunk),
               "extract": bench_extract_rate(args.params, ck, files, args.device, overrides=sets)}
        print(json.dumps(res, indent=1))
        out = Path(args.out.replace("bench_extract", "bench_predict"))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, res)
        return 0
    if args.what == "predict":
        res = {"machine": machine, "eval_grid": bench_eval_grid(args.params)}
        print(json.dumps(res["eval_grid"], indent=1))
        if Path(args.ckpt_dir, "samplers/tsqnet/seed0.pt").exists():
            res["predict"] = bench_predict(args.params, args.ckpt_dir, batches=tuple(args.batches),
                                           n_videos=args.videos, device=args.device, workers=args.workers,
                                           overrides=tuple(args.set), frame_chunk=args.frame_chunk)
            print(json.dumps(res["predict"], indent=1))
        else:
            print("data/samplers missing: run `make demo` first for the predict numbers", file=sys.stderr)
        out = Path(args.out.replace("bench_extract", "bench_predict"))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, res)
        return 0
    if args.what == "avgn":
        res = {"machine": machine, **bench_avgn(args.params, n=args.n if args.n != 40 else 1000)}
        out = Path(args.out.replace("bench_extract", "bench_avgn"))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, res)
        print(json.dumps(res, indent=1))
        return 0
    if args.what == "samplers":
        res = {"machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                           "torch": torch.__version__}, **bench_samplers(args.params)}
        out = Path(args.out.replace("bench_extract", "bench_samplers"))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, res)
        print(json.dumps(res, indent=1))
        return 0
    res: dict = {"machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                             "torch": torch.__version__}, "params": args.params}
    res["sparse_decoding"] = bench_sparse()
    print(json.dumps(res["sparse_decoding"], indent=1))
    if Path("data/s0/encoders/recognizer.pt").exists():
        res["throughput"] = bench_extract_throughput(args.params, 2 * args.n)
        print(json.dumps(res["throughput"], indent=1))
        small, big = _extract_subset(args.n, args.params), _extract_subset(4 * args.n, args.params)
        res["end_to_end"] = {"N": small, "4N": big, "rss_growth": big["peak_rss_mb"] / small["peak_rss_mb"] - 1,
                             "rss_after_stream_growth": big["rss_after_stream_mb"] / small["rss_after_stream_mb"] - 1,
                             "decode_worker_rss_growth": big["peak_rss_decode_worker_mb"] / small["peak_rss_decode_worker_mb"] - 1,
                             "target_rss_growth": 0.10}
        print(json.dumps(res["end_to_end"], indent=1))
    else:
        print("data/s0/encoders missing: run `make demo` first for the extraction numbers", file=sys.stderr)
    timing = Path("reports/demo_timing.json")
    if timing.exists():
        res["demo_pipeline"] = json.loads(timing.read_text())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
