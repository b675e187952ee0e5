"""Decode clips (frames at several consumer resolutions + log-mel audio windows) for many videos.

Used by ``train_encoders`` (the frame bank) and ``extract`` (the feature store): one decode per video,
frames resized once per consumer (light encoder / object recognizer / recognizer), decoding in
background worker processes (``torch.utils.data.DataLoader``) while the main process runs models.
A video that fails to decode yields a :class:`ClipError` item naming the cause; nothing is
substituted for it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from components.data.manifest import VideoRecord
from components.data.video import VideoError, read_audio_windows, read_frames, resize_center
from components.core.params import AudioParams
from components.core.runtime import die_with_parent

log = logging.getLogger(__name__)


@dataclass
class Clip:
    index: int  # position in the request list
    frame_indices: np.ndarray  # int64 [T]
    frames: dict[str, torch.Tensor]  # consumer -> uint8 [T, 3, s, s]
    audio: np.ndarray | None  # float32 [T, F, M] log-mel windows, None without an audio track


@dataclass
class ClipError:
    index: int
    video_id: str
    path: str
    reason: str


class _ClipDataset(Dataset):
    def __init__(self, records: Sequence[VideoRecord], indices: Sequence[np.ndarray],
                 sizes: Mapping[str, int], audio: AudioParams | None):
        self.records, self.indices, self.sizes, self.audio = records, indices, dict(sizes), audio

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec, idx = self.records[i], np.asarray(self.indices[i], dtype=np.int64)
        try:
            raw = read_frames(rec.path, idx)  # uint8 [T,H,W,3], exactly the requested frames
            frames = {name: (resize_center(raw, s) * 255.0).round().clamp(0, 255).to(torch.uint8)
                      for name, s in self.sizes.items()}
            audio = None
            if self.audio is not None and rec.has_audio:
                times = (idx.astype(np.float64) + 0.5) / max(rec.fps, 1e-6)
                audio = read_audio_windows(rec.path, times, sample_rate=self.audio.sample_rate,
                                           n_mels=self.audio.n_mels, window_frames=self.audio.window_frames)
            return Clip(i, idx, frames, audio)
        except VideoError as e:
            return ClipError(i, rec.video_id, rec.path, str(e))


def _worker_init(_: int) -> None:
    die_with_parent()  # a killed extract must not leave its decode worker behind (issue 12 item 4)


def iter_clips(records: Sequence[VideoRecord], indices: Sequence[np.ndarray], sizes: Mapping[str, int],
               audio: AudioParams | None = None, workers: int = 0, start: int = 0) -> Iterator[Clip | ClipError]:
    """Yield one :class:`Clip` (or :class:`ClipError`) per record, in order, from ``start``."""
    ds = _ClipDataset(records[start:], indices[start:], sizes, audio)
    loader = DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=False,
                        worker_init_fn=_worker_init if workers else None)
    for item in loader:
        item.index += start
        yield item
