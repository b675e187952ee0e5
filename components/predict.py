"""The online inference path on video files (``salient predict``), not on the feature store.

Per batch of files: probe → decode the T uniformly pre-sampled observation frames at the light /
object resolutions → light encoder (+ object recognizer for the TQM) → sampler → fusion → decode
**only the K selected frames** at recognizer resolution → recognizer (per-frame: mean softmax over
the K frames; TSI: one clip) → top classes. It uses the same frame indices, resizing and models as
``extract`` + ``evaluate``, so for a video of the test split it returns the cached evaluation's
selection and prediction (tested). Wall time is split into decode / light / sampler / recognizer.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from components.data.clips import Clip, iter_clips
from components.data.manifest import VideoRecord
from components.data.video import VideoError, probe, read_frames, resize_center, uniform_indices
from components.features import load_frame_model
from components.flops import count_macs, frame_calls, frame_model_gmacs, sampler_gmacs
from components.fusion import params_fusion, set_fusion
from components.models.encoders import create_encoder
from components.models.recognizers import load_recognizer
from components.models.samplers import Sampler
from components.params import Params
from components.sampler_training import load_sampler
from components.selection import check_k

log = logging.getLogger(__name__)
#: Store arrays a sampler may read that ``predict`` can compute from pixels.
COMPUTABLE = {"frame_indices", "light_feats", "light_logits", "object_scores"}
STAGES = ("probe", "decode_light", "light", "sampler", "decode_rec", "recognizer")


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability), best first
    frames: list[int]  # selected frame indices, temporal order
    timestamps: list[float]  # seconds
    gflops: float

    def as_dict(self) -> dict:
        return {"path": self.path, "top": [{"class": c, "prob": round(p, 6)} for c, p in self.top],
                "frames": self.frames, "timestamps": [round(t, 3) for t in self.timestamps],
                "gflops": round(self.gflops, 4)}


@dataclass
class PredictError:
    path: str
    reason: str
    detail: str = ""

    def as_dict(self) -> dict:
        return {"path": self.path, "error": self.reason, "detail": self.detail}


@dataclass
class Predictor:
    """Everything one prediction needs, loaded once; :meth:`predict` runs batches of files."""
    p: Params
    sampler: Sampler
    sampler_name: str
    classes: list[str]
    K: int
    recognizer: torch.nn.Module  # per-frame FrameClassifier, or a clip recognizer [B,K,3,s,s] -> [B,C]
    recognizer_kind: str  # "frame" | "tsi"
    light: torch.nn.Module | None = None
    objects: torch.nn.Module | None = None
    device: str = "cpu"
    gflops: float = 0.0
    # frames per light / object encoder call. On the 2-core CPU 16 was fastest (TSQNet, batch 32: 4.6
    # videos/s vs 1.6 with all 512 frames in one call, which thrashes the caches); raise it on a GPU.
    frame_chunk: int = 16
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @classmethod
    def load(cls, p: Params, checkpoint: Path, encoders_dir: Path, K: int, recognizer: str = "frame",
             recognizer_path: Path | None = None, device: str = "cpu",
             fusion: dict[str, dict] | None = None) -> "Predictor":
        """Validate everything before any video is touched: K, class lists, sampler inputs.
        ``fusion``: inference-time fusion settings per sampler name (default: the params' ``fusion``
        section; the CLI passes ``components.fusion.fusion_values`` so predict selects as evaluate)."""
        T = p.frames.T
        check_k(K, T)
        sampler = load_sampler(checkpoint).eval()  # first: it names a damaged file
        ck = sampler.checkpoint_info
        name = ck["name"]
        set_fusion(sampler, (fusion if fusion is not None else params_fusion(p)).get(name))
        missing = set(sampler.inputs) - COMPUTABLE
        if missing:
            raise ValueError(f"sampler {name!r} reads {sorted(missing)}, which predict cannot compute from a video "
                             f"({'ground truth' if 'gt' in missing else 'recognizer on every frame'}); "
                             f"use it on the feature store (evaluate) instead")
        classes = list(ck["classes"])
        if recognizer == "frame":
            rec = load_frame_model(encoders_dir / "recognizer.pt")
            rec_classes = torch.load(encoders_dir / "recognizer.pt", map_location="cpu", weights_only=False)["classes"]
        elif recognizer == "tsi":
            path = recognizer_path or encoders_dir.parent / "recognizers" / "tsi.pt"
            rec = load_recognizer(path)
            rec_classes = torch.load(path, map_location="cpu", weights_only=False)["classes"]
        else:
            raise ValueError(f"unknown recognizer {recognizer!r}: choose 'frame' or 'tsi'")
        if list(rec_classes) != classes:
            raise ValueError(f"the {recognizer} recognizer was trained on another class list ({len(rec_classes)} "
                             f"classes) than sampler {name!r} ({len(classes)}); retrain one of them on the same data")
        light = objects = None
        if {"light_feats", "light_logits"} & set(sampler.inputs):
            light = load_frame_model(encoders_dir / "light.pt")
            if light.num_classes != len(classes):
                raise ValueError(f"light encoder has {light.num_classes} classes, sampler {name!r} {len(classes)}")
        if "object_scores" in sampler.inputs:
            objects = create_encoder("object", arch=p.encoders.object_arch, weights=p.encoders.object_weights).eval()
        pred = cls(p, sampler, name, classes, K, rec.eval(), recognizer, light, objects)
        pred.gflops = pred.measure_gflops()  # counted on CPU, before the move
        return pred.to(device)

    def to(self, device: str) -> "Predictor":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        for m in (self.sampler, self.recognizer, self.light, self.objects):
            if m is not None:
                m.to(dev)
        self.device = str(dev)
        return self

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def measure_gflops(self) -> float:
        """GMACs of one prediction, counted on these modules at their resolutions (DESIGN.md §3)."""
        f, T, K = self.p.frames, self.p.frames.T, self.K
        calls = frame_calls(self.sampler_name, self.sampler, T, K)  # the same rule as evaluate and the flops table
        g = 0.0
        if calls["light"]:
            g += calls["light"] * frame_model_gmacs(self.light, f.light_size)
        if calls["object"]:
            g += calls["object"] * frame_model_gmacs(self.objects, f.object_size)
        dummy = self._features(torch.zeros(1, T, dtype=torch.int64), torch.zeros(1, T, 3, f.light_size, f.light_size),
                               torch.zeros(1, T, 3, f.object_size, f.object_size))
        g += sampler_gmacs(self.sampler, dummy)
        n = calls["recognizer"]
        if self.recognizer_kind == "frame":
            g += n * frame_model_gmacs(self.recognizer, f.recognizer_size)
        else:
            s = f.recognizer_size
            g += count_macs(lambda: self.recognizer(torch.zeros(1, n, 3, s, s))) / 1e9
        return g

    @torch.no_grad()
    def _features(self, frame_indices: torch.Tensor, light_px: torch.Tensor | None,
                  object_px: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Pixels [B,T,3,s,s] float in [0,1] -> the sampler's input batch."""
        B, T = frame_indices.shape
        batch = {"frame_indices": frame_indices}
        if self.light is not None:
            outs = [self.light(x) for x in light_px.flatten(0, 1).split(self.frame_chunk)]
            batch["light_feats"] = torch.cat([f for f, _ in outs]).view(B, T, -1)
            batch["light_logits"] = torch.cat([lg for _, lg in outs]).view(B, T, -1)
        if self.objects is not None:
            batch["object_scores"] = torch.cat([self.objects(x) for x in object_px.flatten(0, 1).split(
                self.frame_chunk)]).view(B, T, -1)
        return batch

    def _tick(self, stage: str, t0: float) -> float:
        self._sync()  # GPU work is asynchronous: time it where it happens
        t = time.perf_counter()
        self.timings[stage] += t - t0
        return t

    @torch.no_grad()
    def predict(self, paths: Sequence[str | Path], top: int = 5, workers: int = 0) -> list[Prediction | PredictError]:
        """One result per path, in order; unreadable files become :class:`PredictError` and the rest go on."""
        f, T = self.p.frames, self.p.frames.T
        t0 = time.perf_counter()
        results: list[Prediction | PredictError | None] = [None] * len(paths)
        recs, where = [], []
        for i, path in enumerate(paths):
            try:
                info = probe(path, min_frames=1, check_decode=False)
            except VideoError as e:
                results[i] = PredictError(str(path), e.reason, e.detail)
                continue
            recs.append(VideoRecord(Path(path).stem, str(path), (), "predict", info.num_frames, info.fps,
                                    info.duration, info.width, info.height, info.has_audio))
            where.append(i)
        t0 = self._tick("probe", t0)
        sizes = {}
        if self.light is not None:
            sizes["light"] = f.light_size
        if self.objects is not None:
            sizes["object"] = f.object_size
        indices = [uniform_indices(r.num_frames, T) for r in recs]
        clips: list[Clip] = []
        if sizes:
            for item in iter_clips(recs, indices, sizes, workers=workers):
                if isinstance(item, Clip):
                    clips.append(item)
                else:
                    results[where[item.index]] = PredictError(item.path, *_split_reason(item.reason))
        else:  # uniform / random / dense: nothing to look at before the recognizer
            clips = [Clip(j, idx, {}, None) for j, idx in enumerate(indices)]
        t0 = self._tick("decode_light", t0)
        if not clips:
            return results  # type: ignore[return-value]
        dev = torch.device(self.device)
        fidx = torch.from_numpy(np.stack([c.frame_indices for c in clips]))  # [B,T]
        px = {k: torch.stack([c.frames[k] for c in clips]).to(dev).float().div_(255.0) for k in sizes}  # [B,T,3,s,s]
        batch = self._features(fidx, px.get("light"), px.get("object"))
        t0 = self._tick("light", t0)
        sel = self.sampler.select(self.sampler(batch), self.K)  # [B,K]
        sel = np.sort(sel, axis=1)
        t0 = self._tick("sampler", t0)
        s = f.recognizer_size
        keep, rec_px = [], []
        for c, row in zip(clips, sel):
            r = recs[c.index]
            try:
                frames = read_frames(r.path, c.frame_indices[row])  # only the K selected frames
                rec_px.append(resize_center(frames, s))  # [K,3,s,s] float
                keep.append((c, row))
            except VideoError as e:
                results[where[c.index]] = PredictError(r.path, e.reason, e.detail)
        t0 = self._tick("decode_rec", t0)
        if keep:
            # uint8 round trip: the feature store's frames went through the same quantisation
            x = torch.stack(rec_px).mul_(255.0).round_().clamp_(0, 255).div_(255.0).to(dev)  # [B,K,3,s,s]
            if self.recognizer_kind == "frame":
                logits = self.recognizer(x.flatten(0, 1))[1].view(len(keep), x.shape[1], -1)
                probs = logits.double().softmax(-1).mean(1).cpu()  # [B,C]
            else:
                probs = self.recognizer(x).double().softmax(-1).cpu()
            for (c, row), pr in zip(keep, probs.numpy()):
                r = recs[c.index]
                order = np.argsort(-pr, kind="stable")[:top]
                fr = c.frame_indices[row]
                results[where[c.index]] = Prediction(r.path, [(self.classes[j], float(pr[j])) for j in order],
                                                     fr.tolist(), (fr / max(r.fps, 1e-6)).tolist(), self.gflops)
        self._tick("recognizer", t0)
        return results  # type: ignore[return-value]


def _split_reason(text: str) -> tuple[str, str]:
    """``ClipError.reason`` is ``str(VideoError)`` = "reason: detail"."""
    reason, _, detail = text.partition(": ")
    return reason, detail
