"""Decoding frames by index: :func:`read_frames` and :func:`resize_center`.

:func:`read_frames` returns exactly the requested frames (presentation order, repeats and any order
allowed) or raises :class:`VideoError`; a frame that cannot be decoded is never replaced by a
neighbour. The sorted unique indices go to the fastest reader that is exact for the file (see
:func:`~components.data.video.plan._decode_plan`): PyAV's sparse reader, else decord's random
access, else PyAV's seek-based / sequential reader (:mod:`components.data.video.pyav`).
:func:`resize_center` turns frames into the float tensors the models take (torch is imported on
first use).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.data.video.decoders import _open_decord, _to_numpy
from components.data.video.errors import VideoError, _short
from components.data.video.plan import _decode_plan
from components.data.video.pyav import _pyav_read, _pyav_sparse_read

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def _read_unique(spath: str, uniq: np.ndarray, plan: str) -> np.ndarray | None:
    """Sorted unique frames via the fast exact PyAV reader, else decord; None = use the PyAV fallback."""
    decoded = _pyav_sparse_read(spath, uniq.tolist())
    if decoded is not None:
        return np.stack([decoded[int(i)] for i in uniq])
    try:
        vr = _open_decord(spath)
        if int(uniq[-1]) >= len(vr):
            raise IndexError(f"frame {int(uniq[-1])} >= decord length {len(vr)}")
        got = _to_numpy(vr.get_batch(uniq.tolist()))
        if got.ndim != 4 or got.shape[0] != len(uniq) or got.shape[-1] != 3 or 0 in got.shape:
            raise ValueError(f"decord returned shape {got.shape} for {len(uniq)} frames")
        return np.ascontiguousarray(got, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - any decord problem -> PyAV
        log.debug("%s: decord failed (%s), falling back to PyAV", spath, _short(e))
        return None


def read_frames(path, indices, size: int | None = None) -> np.ndarray:
    """Decode the frames ``indices`` (presentation order, 0-based; repeats and any order allowed).

    Returns uint8 ``[len(indices), H, W, 3]`` RGB at native resolution, or, when ``size`` is given,
    ``[len(indices), size, size, 3]`` after :func:`resize_center` (shorter side to ``size``, centre
    crop; rounded back to uint8), which is what a frame cache wants.

    The sorted unique indices are decoded by :func:`_pyav_sparse_read` (exact, skips non-reference
    frames) where the container has presentation timestamps, else by decord; if that raises or
    returns the wrong number / shape of frames, PyAV's seek-based reader decodes them instead.
    Files on which decord's random access is known to return wrong frames go straight to PyAV
    (see :func:`_decode_plan`: AVI with B-frames is decoded sequentially, counting frames;
    open-GOP streams use PyAV's keyframe-anchored seek). A frame
    that cannot be decoded is never replaced by a neighbour: :class:`VideoError` (``truncated`` /
    ``decode_failed``) names the index. Empty ``indices`` give an empty array (``[0, 0, 0, 3]``, or
    ``[0, size, size, 3]``).
    """
    spath = str(path)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and idx.min() < 0:
        raise ValueError(f"read_frames: negative frame index {int(idx.min())}")
    if not Path(spath).exists():
        raise VideoError("missing", f"{spath}: no such file")
    if idx.size == 0:
        frames = np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return np.zeros((0, size, size, 3), np.uint8) if size else frames
    uniq = np.unique(idx)
    plan = _decode_plan(spath)
    batch = _read_unique(spath, uniq, plan) if plan == "decord" else None
    if batch is None:
        decoded = _pyav_read(spath, uniq.tolist(), sequential=plan == "sequential")
        batch = np.stack([decoded[int(i)] for i in uniq])
    frames = batch[np.searchsorted(uniq, idx)]
    if size:
        import torch  # noqa: PLC0415 (lazy: only resizing needs torch)

        t = resize_center(frames, size)
        frames = (t * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return frames


def resize_center(frames, size: int) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` (numpy or torch) -> float32 ``[n, 3, size, size]`` in [0, 1].

    The shorter side is resized to ``size`` (bilinear with antialiasing), then the centre
    ``size x size`` square is cropped.
    """
    import torch  # noqa: PLC0415 (lazy: keep `import components.data.video` free of torch)

    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"resize_center: expected [n, H, W, 3], got {tuple(x.shape)}")
    size = int(size)
    x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    n, _, h, w = x.shape
    if n == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.float32)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False,
                                            antialias=True).clamp_(0.0, 1.0)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, :, top:top + size, left:left + size].contiguous()
