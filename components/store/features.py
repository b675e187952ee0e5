"""Frame features for the store: the encoders applied to decoded clips, streamed split by split.

:class:`FrameEncoders` bundles the trained light encoder, the ImageNet object recognizer, the frame
recognizer and the audio encoder and turns a batch of clips into store rows; :func:`stream_split`
drives decoding (background workers), batching, writing and resumable checkpoints for one split.
The same two pieces serve the ``extract`` stage and the online ``predict`` path, so cached features
and live features come from one code path.

Where the encoders run follows the ``compute`` params (:meth:`FrameEncoders.to_compute`): ``device``
(cpu | cuda | auto), ``amp`` (autocast in ``amp_dtype``; outputs are cast back to float32, the light
maps to float16 as always), ``channels_last`` (true: NHWC for every 2-D CNN; false keeps each
:class:`FrameClassifier`'s own setting, which is already NHWC, so the CPU defaults compute exactly what
they did before the section existed) and ``pin_memory`` (page-locked host batches, copied to the GPU
without blocking). With the CPU defaults nothing is moved, autocast or pinned: byte-identical stores.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from components.data.clips import Clip, ClipError, iter_clips
from components.data.manifest import GT_UNKNOWN, VideoRecord
from components.data.video import uniform_indices
from components.core.integrity import load_checkpoint
from components.models.encoders import AudioCNN, FrameClassifier, ObjectRecognizer, create_encoder
from components.core.params import AudioParams, ComputeParams, Params
from components.core.runtime import host_to_device
from components.core.runtime import resolve_device as runtime_device
from components.store.feature_store import ArraySpec, SplitWriter

log = logging.getLogger(__name__)
ENCODER_FIX = "retrain the encoders (`dvc repro -f train_encoders@<seed>`)"


def resolve_device(device: str) -> torch.device:
    """``compute.device`` as a torch device: ``auto`` is cuda when available, else cpu; ``cuda``
    without a GPU is an error naming the param, not a crash deep inside a model."""
    device = runtime_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("compute.device=cuda but torch sees no CUDA device (set compute.device: cpu or auto)")
    return torch.device(device)


def load_frame_model(path: Path) -> FrameClassifier | AudioCNN:
    """Rebuild a model saved by ``train_encoders`` (``{"role", "cfg", "state_dict", ...}``); a file that
    does not load or whose weights changed since then is refused naming it (:func:`load_checkpoint`)."""
    ck = load_checkpoint(path, "encoder checkpoint", ENCODER_FIX)
    model = create_encoder(ck["role"], **ck["cfg"])
    model.load_state_dict(ck["state_dict"])
    return model.eval()


@dataclass
class FrameEncoders:
    light: FrameClassifier
    objects: ObjectRecognizer
    recognizer: FrameClassifier
    audio: AudioCNN
    sizes: dict[str, int]  # consumer -> resolution
    device: torch.device = torch.device("cpu")
    amp_dtype: torch.dtype | None = None  # autocast dtype; None = no autocast
    pin_memory: bool = False

    @classmethod
    def load(cls, p: Params, encoders_dir: Path) -> "FrameEncoders":
        return cls(light=load_frame_model(encoders_dir / "light.pt"),
                   objects=create_encoder("object", arch=p.encoders.object_arch, weights=p.encoders.object_weights),
                   recognizer=load_frame_model(encoders_dir / "recognizer.pt"),
                   audio=load_frame_model(encoders_dir / "audio.pt"),
                   sizes=consumer_sizes(p)).to_compute(p.compute)

    def to_compute(self, c: ComputeParams) -> "FrameEncoders":
        """Honour the ``compute`` params (see the module docstring); the CPU defaults change nothing."""
        self.device = resolve_device(c.device)
        if c.channels_last:
            for m in (self.light, self.objects.inner, self.recognizer):
                m.set_channels_last(True)
        if self.device.type != "cpu":
            for m in (self.light, self.objects, self.recognizer, self.audio):
                m.to(self.device)
        self.amp_dtype = getattr(torch, c.amp_dtype) if c.amp else None
        self.pin_memory = bool(c.pin_memory) and self.device.type == "cuda"
        return self

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return host_to_device(x, self.device, self.pin_memory)

    def specs(self, T: int, num_classes: int) -> dict[str, ArraySpec]:
        return store_specs(T, num_classes, self.light.num_features, self.recognizer.num_features,
                           self.audio.num_features, self.map_grid(), self.sizes["full"])

    def map_grid(self) -> tuple[int, int]:
        """(h, w) of the light encoder's spatial map at its resolution (AVGN's H_G x W_G)."""
        s = self.sizes["light"]
        with torch.inference_mode():
            return tuple(self.light.forward_maps(torch.zeros(1, 3, s, s, device=self.device))[2].shape[-2:])

    @torch.inference_mode()
    def encode(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        """Clips of T frames each -> per-video feature dicts (see :func:`store_specs`)."""
        B, T = len(clips), len(clips[0].frame_indices)

        def stack(name):  # -> float [B*T,3,s,s] in [0,1], on the device
            return self._to_device(torch.cat([c.frames[name] for c in clips])).float().div_(255.0)

        def host(x):  # -> float32 on the CPU (a no-op with the CPU defaults)
            return x if self.device.type == "cpu" and x.dtype == torch.float32 else x.float().cpu()

        amp = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with amp:
            lf, ll, maps = self.light.forward_maps(stack("light"))
            obj = self.objects(stack("object"))
            rf, rl = self.recognizer(stack("recognizer"))
            emb = torch.zeros(B, T, self.audio.num_features)
            with_audio = [i for i, c in enumerate(clips) if c.audio is not None]
            if with_audio:
                mel = self._to_device(torch.from_numpy(np.concatenate([clips[i].audio for i in with_audio]))).float()
                emb[with_audio] = host(self.audio.features(mel)).view(len(with_audio), T, -1)
        out = {"light_feats": lf, "light_logits": ll, "object_scores": obj, "rec_feats": rf, "rec_logits": rl}
        out = {k: host(v).reshape(B, T, -1).numpy() for k, v in out.items()}
        out["light_maps"] = maps.reshape(B, T, *maps.shape[1:]).to(torch.float16).cpu().numpy()  # AVGN's e^G
        out["frames_full"] = torch.stack([c.frames["full"] for c in clips]).numpy()  # uint8 [B,T,3,S,S]
        return [{**{k: v[i] for k, v in out.items()}, "audio_emb": emb[i].numpy(),
                 "has_audio": np.bool_(clips[i].audio is not None)} for i in range(B)]


def consumer_sizes(p: Params) -> dict[str, int]:
    return {"light": p.frames.light_size, "object": p.frames.object_size, "recognizer": p.frames.recognizer_size,
            "full": p.frames.full_size}


def store_specs(T: int, C: int, d: int, D: int, a: int, grid: tuple[int, int], full: int) -> dict[str, ArraySpec]:
    """The store's arrays per video. ``light_maps`` (float16, the light encoder's map before pooling:
    AVGN's e^G) and ``frames_full`` (uint8 frame cache at ``frames.full_size``: AVGN's spatial glance
    crops its patches from it) are read only by AVGN."""
    f32 = "float32"
    return {
        "light_feats": ArraySpec((T, d), f32), "light_logits": ArraySpec((T, C), f32),
        "light_maps": ArraySpec((T, d, *grid), "float16"), "frames_full": ArraySpec((T, 3, full, full), "uint8"),
        "object_scores": ArraySpec((T, 1000), f32),
        "rec_feats": ArraySpec((T, D), f32), "rec_logits": ArraySpec((T, C), f32),
        "audio_emb": ArraySpec((T, a), f32), "has_audio": ArraySpec((), "bool"),
        "frame_indices": ArraySpec((T,), "int64"), "timestamps": ArraySpec((T,), f32),
        "gt": ArraySpec((T,), "int16"), "labels": ArraySpec((C,), "uint8"), "valid": ArraySpec((), "bool"),
    }


def video_rows(rec: VideoRecord, idx: np.ndarray, C: int) -> dict[str, np.ndarray]:
    """The per-video bookkeeping columns: frame indices, timestamps, ground truth, labels."""
    codes = rec.gt_codes()
    gt = codes[idx] if codes is not None and len(codes) == rec.num_frames else np.full(len(idx), GT_UNKNOWN)
    labels = np.zeros(C, dtype=np.uint8)
    labels[list(rec.labels)] = 1
    return {"frame_indices": idx.astype(np.int64), "timestamps": (idx / max(rec.fps, 1e-6)).astype(np.float32),
            "gt": gt.astype(np.int16), "labels": labels}


def stream_split(writer: SplitWriter, records: Sequence[VideoRecord], T: int, sizes: Mapping[str, int],
                 audio: AudioParams | None, encode: Callable[[list[Clip]], list[dict[str, np.ndarray]]],
                 num_classes: int, batch: int, flush_every: int, workers: int,
                 desc: str = "") -> list[ClipError]:
    """Decode T uniform frames per video, ``encode`` them in batches, write rows, checkpoint.

    Resumes at ``writer.done``. A video that fails to decode gets ``valid=False`` and zeros, is
    returned in the error list, and is never filled with another video's or frame's data.
    """
    indices = [uniform_indices(r.num_frames, T) for r in records]
    errors: list[ClipError] = []
    pending: list[Clip] = []
    zeros = {k: np.zeros(s.shape, np.dtype(s.dtype)) for k, s in writer.specs.items()}

    def flush_pending():
        if not pending:
            return
        for clip, row in zip(pending, encode(pending)):
            rec = records[clip.index]
            writer.write(clip.index, {**row, **video_rows(rec, clip.frame_indices, num_classes), "valid": np.bool_(True)})
        pending.clear()

    done = writer.done
    bar = tqdm(total=len(records), initial=done, desc=desc or writer.folder.name, unit="video", disable=None)
    for item in iter_clips(records, indices, sizes, audio, workers=workers, start=done):
        if isinstance(item, ClipError):
            log.warning("%s: cannot decode %s (%s): row marked invalid", desc, item.path, item.reason)
            errors.append(item)
            rec = records[item.index]
            writer.write(item.index, {**zeros, **video_rows(rec, indices[item.index], num_classes),
                                      "valid": np.bool_(False)})
        else:
            pending.append(item)
        if len(pending) >= batch:
            flush_pending()
        if (item.index + 1) % flush_every == 0:
            flush_pending()
            writer.checkpoint(item.index + 1)
        bar.update(1)
    flush_pending()
    writer.checkpoint(len(records))
    bar.close()
    return errors
