"""Which frames of a video to look at: :func:`uniform_indices` (T observation frames, loop-padded)."""
from __future__ import annotations

import numpy as np


def uniform_indices(num_frames: int, T: int) -> np.ndarray:
    """T frame indices of a ``num_frames`` video, int64 [T].

    ``num_frames >= T``: segment centres ``floor((i + 0.5) * num_frames / T)`` (TSN test-time
    sampling, strictly increasing). ``num_frames < T``: the video is looped and spliced to T frames
    (NSNet): ``tile(arange(num_frames))[:T]``. Examples: (10, 4) -> [1, 3, 6, 8];
    (3, 7) -> [0, 1, 2, 0, 1, 2, 0].
    """
    num_frames, T = int(num_frames), int(T)
    if num_frames < 1 or T < 1:
        raise ValueError(f"uniform_indices: need num_frames >= 1 and T >= 1, got num_frames={num_frames}, T={T}")
    if num_frames >= T:
        i = np.arange(T, dtype=np.int64)
        return ((2 * i + 1) * num_frames) // (2 * T)  # exact integer floor((i + 0.5) * n / T)
    return np.tile(np.arange(num_frames, dtype=np.int64), -(-T // num_frames))[:T]
