"""What is known about a usable video: :class:`StreamInfo` and the probe's :class:`VideoInfo`.

:class:`StreamInfo` holds the measurements of a file's streams (frame count, rate, duration, frame
size, audio or not). :func:`~components.data.video.probing.probe` returns them as a
:class:`VideoInfo` (plus the backend that agreed on the count); the dataset manifest's
:class:`~components.data.manifest.VideoRecord` stores the same fields next to the video's labels.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamInfo:
    """The measured properties of a video file (the same six fields in a probe result and a manifest row)."""
    num_frames: int
    fps: float
    duration: float  # seconds
    width: int
    height: int
    has_audio: bool


@dataclass(frozen=True)
class VideoInfo(StreamInfo):
    """What :func:`~components.data.video.probing.probe` established about a usable video."""
    backend: str  # which decoder agreed on the count / decoded the last frame: "decord" or "pyav"
