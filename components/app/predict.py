"""The online inference path on video files (``salient predict``), not on the feature store.

Per batch of files: probe → decode the T uniformly pre-sampled observation frames at the light /
object resolutions → light encoder (+ object recognizer for the TQM) → sampler → fusion → decode
**only the K selected frames** at recognizer resolution → recognizer (per-frame: mean softmax over
the K frames; TSI: one clip) → top classes. It uses the same frame indices, resizing and models as
``extract`` + ``evaluate``, so for a video of the test split it returns the cached evaluation's
selection and prediction (tested). Wall time is split into decode / light / sampler / recognizer.

With an AVGN checkpoint (``components.models.samplers.avgn``) the frames are also decoded at
``frames.full_size`` (its frame cache) and the audio track into log-mel windows (its audio encoder);
the glance's saliency selects the K frames as for any sampler, and AVGN's own head (spatial glance →
one P×P patch per selected frame → classifier) adds :class:`AVGNHead`: its top classes and each
patch as a box in the video's pixels (:func:`patch_box`). :func:`plot_selection` draws the T observed
frames with the sampler's per-frame scores and the picks marked (and those boxes) for ``salient predict --figure``.

The params' ``compute`` section says where and how the models run (:meth:`Predictor.set_compute`):
the device (``--device`` wins), autocast around the frame encoders and the recognizer only (the
sampler, fusion and softmax stay float32), channels-last for the 2-D frame CNNs and page-locked host
batches for a CUDA device. With its CPU defaults nothing changes: the outputs are byte-identical.
"""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from components.core.atomic import atomic_savefig
from components.data.clips import Clip, iter_clips
from components.data.manifest import VideoRecord
from components.data.video import VideoError, probe, read_frames, resize_center, uniform_indices
from components.evaluation.avgn_eval import avgn_gmacs, is_avgn
from components.store.features import ENCODER_FIX, load_frame_model
from components.evaluation.cost import FrameModel, count_macs, frame_calls, frame_model_gmacs, sampler_gmacs
from components.evaluation.fusion import params_fusion, select
from components.core.integrity import load_checkpoint
from components.models.encoders import create_encoder
from components.models.recognizers import load_recognizer
from components.models.samplers import Sampler
from components.core.params import ComputeParams, Params
from components.core.runtime import host_to_device, resolve_device
from components.training.sampler_training import CheckpointError, load_sampler
from components.core.selection import check_k

log = logging.getLogger(__name__)
#: Store arrays a sampler may read that ``predict`` can compute from pixels (and the audio track).
COMPUTABLE = {"frame_indices", "light_feats", "light_logits", "light_maps", "object_scores", "audio_emb", "has_audio"}
#: decode_light: every frame the sampler looks at (+ AVGN's frame cache and audio); light: the encoders on
#: them; head: AVGN's own head (0 for other samplers)
STAGES = ("probe", "decode_light", "light", "sampler", "head", "decode_rec", "recognizer")
#: How :func:`components.models.samplers.avgn.load_local`'s errors (f_L missing or changed) begin.
LOCAL_ENCODER_ERROR = "AVGN's local encoder"
STRIP_THUMB = 160  # px: longer side of the T observed frames kept for --figure


def patch_box(centre: Sequence[float], patch: int, full: int, width: int, height: int
              ) -> tuple[float, float, float, float]:
    """AVGN's P×P patch (``patch`` px of its frame cache) centred at ``centre`` = (x_c, y_c) in [0,1] of
    the cache -> ``(x0, y0, x1, y1)`` in the pixels of the ``width`` × ``height`` video frame. The cache
    is the frame with its shorter side resized to S = ``full`` and the centre S×S square cut out
    (:func:`resize_center`), so a square video's box is ``P·W/S`` wide and a wide one's lies in its
    central square."""
    scale = full / min(height, width)
    nh, nw = max(full, round(height * scale)), max(full, round(width * scale))  # as resize_center
    top, left = (nh - full) // 2, (nw - full) // 2
    cx, cy = float(centre[0]) * full + left, float(centre[1]) * full + top  # px of the resized frame
    sx, sy, h = width / nw, height / nh, patch / 2
    return (cx - h) * sx, (cy - h) * sy, (cx + h) * sx, (cy + h) * sy


@dataclass
class AVGNHead:
    """AVGN's own prediction for one video: its head's top classes (``p_K``, after the K most salient
    frames) and, per selected frame (temporal order), the patch it classified."""
    top: list[tuple[str, float]]  # (class, probability), best first
    patches: list[tuple[int, int, tuple[float, float, float, float]]]  # (frame, saliency rank 1.., box)
    saliency: list[float]  # [T] the glance's s_t
    observed: list[int]  # [T] the frame indices it was computed on
    has_audio: bool
    frame_size: tuple[int, int]  # (W, H): the boxes' pixel coordinates
    patch_px: int  # P, in pixels of the frame cache
    glance_frames: int  # T_G: frames whose light maps the glance reads (eq. 14)
    gmacs: float  # GMACs of one prediction through the head (:func:`components.evaluation.avgn_eval.avgn_gmacs`)

    def as_dict(self) -> dict:
        return {"classes": [{"class": c, "prob": round(p, 6)} for c, p in self.top],
                "patches": [{"frame": n, "rank": r, "box": [round(v, 2) for v in box]} for n, r, box in self.patches],
                "frame_size": list(self.frame_size), "patch_px": self.patch_px, "has_audio": self.has_audio,
                **({} if self.has_audio else {"note": "no audio track: AVGN used its learned missing-audio token"}),
                "glance_frames": self.glance_frames, "saliency": [round(v, 6) for v in self.saliency],
                "observed_frames": self.observed, "gmacs": round(self.gmacs, 4)}


@dataclass
class Prediction:
    """One video's prediction. ``observed`` / ``saliency``: the T pre-sampled frames the sampler scored
    and its per-frame score of each (``SamplerOutput.saliency``: for a two-branch sampler the first
    branch's; every branch's in ``branch_saliency``, the picks being their fusion; all 0 for uniform,
    which scores nothing)."""
    path: str
    top: list[tuple[str, float]]  # (class, probability), best first
    frames: list[int]  # selected frame indices, temporal order
    timestamps: list[float]  # seconds
    gmacs: float
    avgn: AVGNHead | None = None  # with an AVGN checkpoint
    strip: np.ndarray | None = field(default=None, repr=False)  # uint8 [T,h,w,3] of ``observed`` (keep_frames)
    frame_size: tuple[int, int] | None = None  # (W, H) of the video's frames
    observed: list[int] = field(default_factory=list)  # [T] frame indices the sampler scored
    saliency: list[float] = field(default_factory=list)  # [T] the sampler's score of each
    branch_saliency: dict[str, list[float]] = field(default_factory=dict)  # branch -> [T] (two-branch samplers)
    fps: float = 0.0

    def as_dict(self) -> dict:
        return {"path": self.path, "top": [{"class": c, "prob": round(p, 6)} for c, p in self.top],
                "frames": self.frames, "timestamps": [round(t, 3) for t in self.timestamps],
                "gmacs": round(self.gmacs, 4), "observed_frames": self.observed,
                "saliency": [round(v, 6) for v in self.saliency],
                **({"branch_saliency": {b: [round(v, 6) for v in x] for b, x in self.branch_saliency.items()}}
                   if self.branch_saliency else {}),
                **({"avgn": self.avgn.as_dict()} if self.avgn else {})}


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
    audio: torch.nn.Module | None = None  # the audio encoder (AVGN)
    device: str = "cpu"
    gmacs: float = 0.0
    head_gmacs: float = 0.0  # AVGN: one prediction through its own head
    # frames per light / object encoder call. On the 2-core CPU 16 was fastest (TSQNet, batch 32: 4.6
    # videos/s vs 1.6 with all 512 frames in one call, which thrashes the caches); raise it on a GPU.
    frame_chunk: int = 16
    amp_dtype: torch.dtype | None = None  # autocast dtype of the encoders and recognizer; None: float32
    pin_memory: bool = False  # page-locked host batches, copied without blocking (CUDA only)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    #: the sampler's inference-time fusion settings, passed to its ``select`` (never set on the model)
    fusion: dict = field(default_factory=dict)

    @classmethod
    def load(cls, p: Params, checkpoint: Path, encoders_dir: Path, K: int, recognizer: str = "frame",
             recognizer_path: Path | None = None, device: str | None = None,
             fusion: dict[str, dict] | None = None) -> "Predictor":
        """Validate everything before any video is touched: K, class lists, sampler inputs.
        ``fusion``: inference-time fusion settings per sampler name (default: the params' ``fusion``
        section; the CLI passes ``components.evaluation.fusion.fusion_values`` so predict selects as evaluate).
        ``device``: None = the params' ``compute.device``; the rest of ``compute`` applies either way."""
        T = p.frames.T
        check_k(K, T)
        sampler = _load_sampler(checkpoint)  # first: it names a damaged file (or AVGN's missing f_L)
        ck = sampler.checkpoint_info
        name = ck["name"]
        values = dict((fusion if fusion is not None else params_fusion(p)).get(name) or {})
        sampler.check_fusion(values)  # an unknown setting is refused here, before any video is read
        missing = set(sampler.inputs) - COMPUTABLE
        if missing:
            raise ValueError(f"sampler {name!r} reads {sorted(missing)}, which predict cannot compute from a video "
                             f"({'ground truth' if 'gt' in missing else 'recognizer on every frame'}); "
                             f"use it on the feature store (evaluate) instead")
        classes = list(ck["classes"])
        if recognizer == "frame":
            rec = load_frame_model(encoders_dir / "recognizer.pt")
            rec_classes = load_checkpoint(encoders_dir / "recognizer.pt", "encoder checkpoint", ENCODER_FIX)["classes"]
        elif recognizer == "tsi":
            path = recognizer_path or encoders_dir.parent / "recognizers" / "tsi.pt"
            rec = load_recognizer(path)
            rec_classes = load_checkpoint(path, "recognizer checkpoint")["classes"]
        else:
            raise ValueError(f"unknown recognizer {recognizer!r}: choose 'frame' or 'tsi'")
        if list(rec_classes) != classes:
            raise ValueError(f"the {recognizer} recognizer was trained on another class list ({len(rec_classes)} "
                             f"classes) than sampler {name!r} ({len(classes)}); retrain one of them on the same data")
        light = objects = audio = None
        if {"light_feats", "light_logits", "light_maps"} & set(sampler.inputs):
            light = load_frame_model(encoders_dir / "light.pt")
            if light.num_classes != len(classes):
                raise ValueError(f"light encoder has {light.num_classes} classes, sampler {name!r} {len(classes)}")
        if "object_scores" in sampler.inputs:
            objects = create_encoder("object", arch=p.encoders.object_arch, weights=p.encoders.object_weights).eval()
        if "audio_emb" in sampler.inputs:
            audio = load_frame_model(encoders_dir / "audio.pt")
        if is_avgn(sampler):
            c = sampler.config
            if light.num_features != c.d_g or audio.num_features != c.d_a:
                raise ValueError(f"AVGN was trained on {c.d_g}-d light maps and {c.d_a}-d audio, the encoders in "
                                 f"{encoders_dir} give {light.num_features} and {audio.num_features}: another "
                                 "pipeline seed's encoders? pass its --checkpoint-dir")
            if c.patch_size > p.frames.full_size:
                raise ValueError(f"AVGN's patch ({c.patch_size} px) exceeds frames.full_size={p.frames.full_size}: "
                                 "predict with the params it was trained with")
        pred = cls(p, sampler, name, classes, K, rec.eval(), recognizer, light, objects, audio, fusion=values)
        pred.gmacs = pred.measure_gmacs()  # counted on CPU in float32, before the move and autocast
        return pred.set_compute(p.compute).to(resolve_device(device or p.compute.device))

    def set_compute(self, c: ComputeParams) -> "Predictor":
        """``compute.amp`` / ``amp_dtype``: autocast the light / object / audio encoders and the
        recognizer (their outputs are cast back to float32 before the sampler); ``channels_last``:
        NHWC for every 2-D frame CNN (False keeps each model's own layout: the frame classifiers are
        NHWC already, as extract ran them); ``pin_memory``: page-locked batches on a CUDA device."""
        self.amp_dtype = getattr(torch, c.amp_dtype) if c.amp else None
        self.pin_memory = c.pin_memory
        if c.channels_last:
            for m in self._frame_cnns():
                m.set_channels_last(True)
        return self

    def _frame_cnns(self) -> list[torch.nn.Module]:
        """The 2-D frame classifiers that can run channels-last (not TSI, which views frames as time)."""
        cands = [self.light, self.objects.inner if self.objects is not None else None,
                 self.recognizer if self.recognizer_kind == "frame" else None]
        return [m for m in cands if m is not None and hasattr(m, "set_channels_last")]

    def _amp(self):
        """Autocast for the encoders and the recognizer when ``compute.amp``; else nothing."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A host batch onto the model device (:func:`components.core.runtime.host_to_device`)."""
        return host_to_device(x, self.device, self.pin_memory)

    def to(self, device: str) -> "Predictor":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        for m in (self.sampler, self.recognizer, self.light, self.objects, self.audio):
            if m is not None:
                m.to(dev)
        self.device = str(dev)
        return self

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    @property
    def avgn(self) -> bool:
        """The sampler is AVGN: its own head runs too (:class:`AVGNHead`)."""
        return is_avgn(self.sampler)

    def measure_gmacs(self) -> float:
        """GMACs of one prediction, counted on these modules at their resolutions (docs/design.md §3); for
        AVGN also :attr:`head_gmacs` (the rule of evaluate's ``avgn`` recognizer rows)."""
        f, T, K = self.p.frames, self.p.frames.T, self.K
        calls = frame_calls(self.sampler_name, self.sampler, T, K)  # the same rule as evaluate and the flops table
        enc = {"light": frame_model_gmacs(self.light, f.light_size) if self.light is not None else 0.0,
               "audio": FrameModel(self.audio, (self.p.audio.window_frames, self.p.audio.n_mels)).gmacs()
               if self.audio is not None else 0.0}
        g = calls["light"] * enc["light"] + calls["audio"] * enc["audio"]
        if calls["object"]:
            g += calls["object"] * frame_model_gmacs(self.objects, f.object_size)
        px = {"light": torch.zeros(1, T, 3, f.light_size, f.light_size),
              "object": torch.zeros(1, T, 3, f.object_size, f.object_size)}
        mel = [np.zeros((T, self.p.audio.window_frames, self.p.audio.n_mels), np.float32)]  # a video with audio
        dummy = self._features(torch.zeros(1, T, dtype=torch.int64), px, mel)
        g += sampler_gmacs(self.sampler, dummy)
        n = calls["recognizer"]
        if self.recognizer_kind == "frame":
            enc["recognizer"] = frame_model_gmacs(self.recognizer, f.recognizer_size)
            g += n * enc["recognizer"]
        else:
            s = f.recognizer_size
            g += count_macs(lambda: self.recognizer(torch.zeros(1, n, 3, s, s))) / 1e9
        if self.avgn:
            S = f.full_size
            self.head_gmacs = avgn_gmacs(self.sampler, enc, {**dummy, "frames_full": torch.zeros(
                1, T, 3, S, S, dtype=torch.uint8)}, K)
        return g

    @torch.no_grad()
    def _features(self, frame_indices: torch.Tensor, px: dict[str, torch.Tensor],
                  audio: Sequence[np.ndarray | None] = ()) -> dict[str, torch.Tensor]:
        """Pixels ``px[consumer]`` [B,T,3,s,s] float in [0,1] and each video's log-mel windows [T,F,M]
        (None: no audio track) -> the sampler's input batch: the arrays ``extract`` stores, computed as
        :meth:`components.store.features.FrameEncoders.encode` computes them (light maps as float16)."""
        B, T = frame_indices.shape
        batch = {"frame_indices": frame_indices}
        if self.light is not None:
            maps = "light_maps" in self.sampler.inputs
            fn = self.light.forward_maps if maps else self.light
            with self._amp():
                outs = [fn(x) for x in px["light"].flatten(0, 1).split(self.frame_chunk)]
            batch["light_feats"] = torch.cat([o[0] for o in outs]).float().view(B, T, -1)  # float32 for the sampler
            batch["light_logits"] = torch.cat([o[1] for o in outs]).float().view(B, T, -1)
            if maps:
                m = torch.cat([o[2] for o in outs])  # [B*T,D,h,w]
                batch["light_maps"] = m.view(B, T, *m.shape[1:]).half()  # AVGN's e^G, stored as float16
        if self.objects is not None:
            with self._amp():
                scores = [self.objects(x) for x in px["object"].flatten(0, 1).split(self.frame_chunk)]
            batch["object_scores"] = torch.cat(scores).float().view(B, T, -1)
        if self.audio is not None:
            dev = torch.device(self.device)
            emb = torch.zeros(B, T, self.audio.num_features, device=dev)  # audio-less videos: zeros, has_audio False
            have = [i for i, a in enumerate(audio) if a is not None]
            if have:
                mel = self._to_device(torch.from_numpy(np.concatenate([audio[i] for i in have])).float())  # [n*T,F,M]
                with self._amp():
                    emb[have] = self.audio.features(mel).float().view(len(have), T, -1)
            batch["audio_emb"] = emb
            batch["has_audio"] = torch.tensor([a is not None for a in audio], device=dev)  # [B]
        return batch

    def _tick(self, stage: str, t0: float) -> float:
        self._sync()  # GPU work is asynchronous: time it where it happens
        t = time.perf_counter()
        self.timings[stage] += t - t0
        return t

    @torch.no_grad()
    def _head(self, batch: dict[str, torch.Tensor], frames_full: torch.Tensor, ranked: np.ndarray
              ) -> dict[str, np.ndarray]:
        """AVGN's head on the selected frames ``ranked [B,K]`` (most salient first) with the frame cache
        ``frames_full`` uint8 [B,T,3,S,S]: idx, probs [B,K,C], centre [B,K,2], saliency [B,T]."""
        dev = frames_full.device
        out = self.sampler.head({**batch, "frames_full": frames_full}, self.K,
                                idx=torch.from_numpy(ranked).to(dev))
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    def _avgn_result(self, head: dict[str, np.ndarray], j: int, has_audio: bool, observed: np.ndarray,
                     size: tuple[int, int], top: int) -> AVGNHead:
        """Video ``j`` of :meth:`_head`'s output as an :class:`AVGNHead` (patches in temporal order)."""
        p_k = head["probs"][j, self.K - 1].astype(np.float64)  # p_K: after all K frames
        order = np.argsort(-p_k, kind="stable")[:top]
        P, S = self.sampler.config.patch_size, self.p.frames.full_size
        patches = sorted((int(observed[t]), rank + 1, patch_box(head["centre"][j, rank], P, S, *size))
                         for rank, t in enumerate(head["idx"][j]))
        return AVGNHead([(self.classes[c], float(p_k[c])) for c in order], patches, head["saliency"][j].tolist(),
                        observed.tolist(), has_audio, size, P, int(self.sampler.glance_frames), self.head_gmacs)

    @torch.no_grad()
    def predict(self, paths: Sequence[str | Path], top: int = 5, workers: int = 0,
                keep_frames: bool = False) -> list[Prediction | PredictError]:
        """One result per path, in order; unreadable files become :class:`PredictError` and the rest go on.
        ``keep_frames``: each prediction keeps thumbnails of its T observed frames (``strip``, for
        :func:`plot_selection`; decoded once more, at :data:`STRIP_THUMB` px)."""
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
        if self.avgn:
            sizes["full"] = f.full_size  # AVGN's frame cache: its patches are cut from it
        indices = [uniform_indices(r.num_frames, T) for r in recs]
        clips: list[Clip] = []
        if sizes:
            audio = self.p.audio if self.audio is not None else None
            for item in iter_clips(recs, indices, sizes, audio, workers=workers):
                if isinstance(item, Clip):
                    clips.append(item)
                else:
                    results[where[item.index]] = PredictError(item.path, *_split_reason(item.reason))
        else:  # uniform / random / dense: nothing to look at before the recognizer
            clips = [Clip(j, idx, {}, None) for j, idx in enumerate(indices)]
        t0 = self._tick("decode_light", t0)
        if not clips:
            return results  # type: ignore[return-value]
        fidx = torch.from_numpy(np.stack([c.frame_indices for c in clips]))  # [B,T]
        px = {k: self._to_device(torch.stack([c.frames[k] for c in clips])).float().div_(255.0)
              for k in sizes if k != "full"}  # uint8 host -> float [B,T,3,s,s] on the device
        batch = self._features(fidx, px, [c.audio for c in clips])
        t0 = self._tick("light", t0)
        scored = self.sampler(batch)
        ranked = select(self.sampler, scored, self.K, self.fusion)  # [B,K]; AVGN: most salient first
        sel = np.sort(ranked, axis=1)
        saliency = scored.saliency.detach().float().cpu().numpy()  # [B,T]
        branches = ({b: v.detach().float().cpu().numpy() for b, v in scored.branches.items()}
                    if len(scored.branches) > 1 else {})  # name -> [B,T]
        t0 = self._tick("sampler", t0)
        head = None
        if self.avgn:
            head = self._head(batch, self._to_device(torch.stack([c.frames["full"] for c in clips])), ranked)
            has_audio = batch["has_audio"].cpu().numpy()
        t0 = self._tick("head", t0)
        s = f.recognizer_size
        keep, rec_px = [], []
        for j, (c, row) in enumerate(zip(clips, sel)):
            r = recs[c.index]
            try:
                frames = read_frames(r.path, c.frame_indices[row])  # only the K selected frames, [K,H,W,3]
                rec_px.append(resize_center(frames, s))  # [K,3,s,s] float
                strip = _thumbs(read_frames(r.path, c.frame_indices), STRIP_THUMB) if keep_frames else None  # [T,...]
                keep.append((j, c, row, (frames.shape[2], frames.shape[1]), strip))
            except VideoError as e:
                results[where[c.index]] = PredictError(r.path, e.reason, e.detail)
        t0 = self._tick("decode_rec", t0)
        if keep:
            # uint8 round trip: the feature store's frames went through the same quantisation
            x = self._to_device(torch.stack(rec_px).mul_(255.0).round_().clamp_(0, 255).div_(255.0))  # [B,K,3,s,s]
            with self._amp():  # the recognizer only; its softmax and the mean over frames in float64
                out = self.recognizer(x.flatten(0, 1))[1] if self.recognizer_kind == "frame" else self.recognizer(x)
            if self.recognizer_kind == "frame":
                probs = out.view(len(keep), x.shape[1], -1).double().softmax(-1).mean(1).cpu()  # [B,C]
            else:
                probs = out.double().softmax(-1).cpu()
            for (j, c, row, size, strip), pr in zip(keep, probs.numpy()):
                r = recs[c.index]
                order = np.argsort(-pr, kind="stable")[:top]
                fr = c.frame_indices[row]
                avgn = (self._avgn_result(head, j, bool(has_audio[j]), c.frame_indices, size, top)
                        if head is not None else None)
                results[where[c.index]] = Prediction(
                    r.path, [(self.classes[i], float(pr[i])) for i in order], fr.tolist(),
                    (fr / max(r.fps, 1e-6)).tolist(), self.gmacs, avgn, strip, size, c.frame_indices.tolist(),
                    saliency[j].tolist(), {b: v[j].tolist() for b, v in branches.items()}, float(r.fps))
        self._tick("recognizer", t0)
        return results  # type: ignore[return-value]


def _load_sampler(path: Path) -> Sampler:
    """:func:`load_sampler`, except that an AVGN checkpoint whose local encoder f_L is missing or changed
    gets load_local's own error (it names that file and how to make it), not "retrain the sampler"."""
    try:
        return load_sampler(path).eval()
    except CheckpointError as e:
        cause = e.__cause__
        if isinstance(cause, (FileNotFoundError, ValueError)) and str(cause).startswith(LOCAL_ENCODER_ERROR):
            raise type(cause)(f"{path}: {cause}") from None
        raise


def _thumbs(frames: np.ndarray, longest: int) -> np.ndarray:
    """uint8 [n,H,W,3] -> the same frames with their longer side at most ``longest`` px."""
    from PIL import Image  # deferred: only --figure keeps frames

    H, W = frames.shape[1:3]
    scale = min(1.0, longest / max(H, W))
    if scale == 1.0:
        return frames.copy()
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


PICK = "#ff7f0e"  # the picked frames' colour in --figure


def _strip_row(axes, r: Prediction) -> None:
    """The T observed frames of ``r`` on ``axes`` (one each): picked ones framed in :data:`PICK` with their
    time, AVGN's patch as a red box."""
    from matplotlib.patches import Rectangle

    W, H = r.frame_size
    boxes = {n: (rank, box) for n, rank, box in r.avgn.patches} if r.avgn else {}
    picked = set(r.frames)
    for t, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= len(r.observed):
            ax.axis("off")
            continue
        n = r.observed[t]
        ax.imshow(r.strip[t], extent=(0, W, H, 0))  # axes in the video's pixels, as the boxes
        title = f"{n}"
        if n in picked:
            for side in ax.spines.values():
                side.set_edgecolor(PICK)
                side.set_linewidth(3.5)
            title += f" · {n / max(r.fps, 1e-6):.1f} s"
        if n in boxes:
            rank, (x0, y0, x1, y1) = boxes[n]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#d62728", linewidth=1.5))
        ax.set_title(title, fontsize=7.5, pad=2, color=PICK if n in picked else "black",
                     fontweight="bold" if n in picked else "normal")


def _score_row(ax, r: Prediction, name: str, scores: Sequence[float]) -> None:
    """Bars of one per-frame score over the T observed frames, the picked frames' bars in :data:`PICK`."""
    picked = set(r.frames)
    T = len(scores)
    ax.bar(range(T), scores, width=0.8, color=[PICK if n in picked else "#9e9e9e" for n in r.observed])
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_xticks(range(T))
    ax.set_xticklabels([str(n) for n in r.observed], fontsize=6.5)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel(f"score\n({name})" if name != "saliency" else "saliency", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)
    for sp in ("top", "right"):
        ax.spines[sp].set_visible(False)


def plot_selection(results: Sequence[Prediction | PredictError], out: Path) -> int:
    """One block per prediction made with ``keep_frames``: a strip of its T observed frames (frame index
    above each; the K picks framed and titled in orange with their time; AVGN: the patch its head
    classified as a red box), then the sampler's per-frame score of each frame as bars (one row per
    branch for a two-branch sampler, whose picks are the fusion of both), picks in orange; the
    recognizer's top class (and AVGN's) on the left. Saved to ``out`` (PNG, atomically); returns the
    blocks drawn."""
    import matplotlib  # deferred: only --figure draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    rows = [r for r in results if isinstance(r, Prediction) and r.strip is not None]
    if not rows:
        raise ValueError("no prediction to draw (every file failed, or none kept its frames)")
    T = max(len(r.observed) for r in rows)
    scores = [dict(r.branch_saliency) or {"saliency": r.saliency} for r in rows]
    heights = [h for sc in scores for h in (1.0, *[0.55] * len(sc))]
    cell = 1.0  # inches per frame
    fig = plt.figure(figsize=(T * cell + 2.8, sum(heights) * (cell + 0.25) + 0.6))
    gs = GridSpec(len(heights), T, figure=fig, height_ratios=heights, hspace=0.55, wspace=0.06)
    g = 0
    for r, sc in zip(rows, scores):
        strip = [fig.add_subplot(gs[g, t]) for t in range(T)]
        _strip_row(strip, r)
        cls, prob = r.top[0]
        text = f"{Path(r.path).name}\nrecognizer: {cls} {prob:.2f}\nK={len(r.frames)} of T={len(r.observed)}"
        if r.avgn:
            c2, p2 = r.avgn.top[0]
            text += f"\nAVGN head: {c2} {p2:.2f}" + ("" if r.avgn.has_audio else "\nno audio track")
        strip[0].set_ylabel(text, fontsize=8.5, rotation=0, ha="right", va="center", labelpad=8)
        for i, (name, v) in enumerate(sc.items()):
            _score_row(fig.add_subplot(gs[g + 1 + i, :]), r, name, v)
        g += 1 + len(sc)
    head = ("The T observed frames (frame index above) and the sampler's per-frame scores; orange: the K frames "
            "picked" + ("; red box: the patch AVGN's head classified" if any(r.avgn for r in rows) else ""))
    fig.suptitle(head, fontsize=10, x=0.02, y=1.0 + 0.3 / fig.get_figheight(), ha="left")
    atomic_savefig(fig, out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return len(rows)


def _split_reason(text: str) -> tuple[str, str]:
    """``ClipError.reason`` is ``str(VideoError)`` = "reason: detail"."""
    reason, _, detail = text.partition(": ")
    return reason, detail
