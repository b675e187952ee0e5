"""Checking files: :func:`probe` one video (-> :class:`VideoInfo` or :class:`VideoError`) and
:func:`validate_paths` for many files / folders (one row per file, never raises).

How a *truncated* file is detected (cheap first, decoding last):

1. **Container structure** (:func:`~components.data.video.container._structure_problem`): box /
   element / chunk sizes that run past the end of the file, or an MP4 without its ``moov`` index,
   are ``truncated`` without decoding anything.
2. **Counting packets.** The video packets are counted with PyAV (demux only, no decoding); a
   header promising more frames than there are packets -> ``truncated``. decord's count is compared
   with it (decord over-reports on some files: logged, the PyAV count wins).
3. **Decoding the last frame** (``check_decode=True``), with PyAV: decord can spin forever on a
   frame past the real end of a file (dmlc/decord#373). If it cannot be decoded the decodable
   frames are counted: none -> ``decode_failed``, fewer -> ``truncated``.

A healthy file costs one PyAV open + demux, one decord open and one last-GOP decode (~5-10 ms
for a 300-frame 112x112 mp4).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from components.data.video.container import _structure_problem
from components.data.video.decoders import _import_av, _open_decord
from components.data.video.errors import VideoError, _short
from components.data.video.info import VideoInfo
from components.data.video.pyav import _pyav_count_decodable, _pyav_count_packets, _pyav_read

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


@dataclass(frozen=True)
class _Header:
    """What the container says about its first video stream (nothing decoded)."""
    frames: int  # the header's frame count (0 = not stated)
    fps: float  # 0.0 = unknown
    width: int  # 0 = unknown
    height: int
    has_audio: bool
    stream_duration: float | None  # seconds
    container_duration: float | None  # seconds


def _check_file(path: Path) -> None:
    """``missing`` / ``not_a_video`` (a folder) / ``empty_file`` / ``truncated`` (container structure)."""
    spath = str(path)
    if not path.exists():
        raise VideoError("missing", f"{spath}: no such file")
    if path.is_dir():
        raise VideoError("not_a_video", f"{spath}: is a directory")
    size = path.stat().st_size
    if size == 0:
        raise VideoError("empty_file", f"{spath}: 0 bytes")
    problem = _structure_problem(path, size)
    if problem:
        raise VideoError("truncated", f"{spath}: {problem}")


def _read_header(spath: str) -> _Header:
    """Open the container with PyAV: ``not_a_video`` / ``no_video_stream``, else its :class:`_Header`."""
    av = _import_av()
    try:
        container = av.open(spath)
    except Exception as e:  # noqa: BLE001 - any failure to open = not a (readable) media file
        raise VideoError("not_a_video", f"{spath}: {_short(e)}") from e
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            if not kinds:
                raise VideoError("not_a_video", f"{spath}: container {container.format.name!r} has no streams")
            raise VideoError("no_video_stream", f"{spath}: streams {kinds}, no video")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        if vs.duration is not None and vs.time_base is not None:
            stream_dur = float(vs.duration * vs.time_base)
        else:
            stream_dur = None
        return _Header(frames=int(vs.frames or 0), fps=float(rate) if rate else 0.0,
                       width=int(vs.codec_context.width or 0), height=int(vs.codec_context.height or 0),
                       has_audio=len(container.streams.audio) > 0, stream_duration=stream_dur,
                       container_duration=container.duration / 1e6 if container.duration else None)


def _count_frames(spath: str, header_frames: int, max_frames: int) -> tuple[int, str]:
    """The frame count (video packets demuxed by PyAV) and the backend that agrees with it.

    ``absurd_frame_count`` above ``max_frames``, ``truncated`` when the header promises more frames
    than there are packets. decord's count is only compared (and logged when it differs): the
    backend is ``"decord"`` when it agrees, else ``"pyav"``.
    """
    n_decord = None
    try:
        n_decord = len(_open_decord(spath))
    except Exception as e:  # noqa: BLE001
        log.debug("%s: decord cannot open: %s", spath, _short(e))

    try:  # the reference count: video packets, demuxed by PyAV (no decoding)
        n = _pyav_count_packets(spath, max_frames)
    except Exception as e:  # noqa: BLE001
        raise VideoError("decode_failed", f"{spath}: cannot read the video packets: {_short(e)}") from e
    if n > max_frames:
        raise VideoError("absurd_frame_count", f"{spath}: more than max_frames={max_frames} video packets")
    if header_frames > n:  # the container's own index promises frames whose data is not there
        raise VideoError("truncated", f"{spath}: header claims {header_frames} frames, only {n} video packets present")
    if n_decord is not None and n_decord > n:
        log.warning("%s: decord reports %d frames but PyAV finds %d; using %d", spath, n_decord, n, n)
    elif n_decord is not None and n_decord < n:
        log.warning("%s: decord reports %d frames, PyAV finds %d; using %d (PyAV reads)", spath, n_decord, n, n)
    return n, "decord" if n_decord == n else "pyav"


def _check_last_frame(spath: str, n: int, width: int, height: int) -> tuple[int, int]:
    """Decode frame ``n - 1`` with PyAV; returns (width, height), taken from it when still unknown.

    When it does not decode, the decodable frames are counted: none -> ``decode_failed``, fewer ->
    ``truncated``.
    """
    try:
        last = _pyav_read(spath, [n - 1])[n - 1]
        if not (width and height):
            height, width = int(last.shape[0]), int(last.shape[1])
    except VideoError as e:
        log.debug("%s: cannot decode frame %d: %s", spath, n - 1, e)
        m = _pyav_count_decodable(spath, n)
        if m == 0:
            raise VideoError("decode_failed", f"{spath}: no frame decodes (the stream has {n})") from None
        raise VideoError("truncated", f"{spath}: the stream has {n} frames, only {m} decode "
                                      f"(frame {n - 1} does not)") from None
    return width, height


def _duration_and_fps(n: int, h: _Header) -> tuple[float, float]:
    """Duration: the stream's, else ``n / fps``, else the container's (else 0); fps from it when unknown."""
    fps = h.fps
    if h.stream_duration and h.stream_duration > 0:
        duration = h.stream_duration
    elif fps > 0:
        duration = n / fps
    else:
        duration = h.container_duration or 0.0
    if fps <= 0 and duration > 0:
        fps = n / duration
    return duration, fps


def probe(path, *, min_frames: int = 2, max_frames: int = 500_000, check_decode: bool = True) -> VideoInfo:
    """Check that ``path`` is a usable video and return its :class:`VideoInfo`.

    Raises :class:`VideoError` with ``reason``:

    * ``missing`` (no such file), ``empty_file`` (0 bytes),
    * ``not_a_video`` (no container format recognises it, or a container without any stream),
    * ``no_video_stream`` (a media file, e.g. audio-only, without a video stream),
    * ``truncated`` (container size fields run past the end of the file, an MP4 without its
      ``moov`` index, or - with ``check_decode`` - fewer frames decode than the stream claims),
    * ``absurd_frame_count`` (more than ``max_frames`` frames, or a negative count),
    * ``too_few_frames`` (fewer than ``min_frames`` frames),
    * ``decode_failed`` (the stream is there but nothing decodes).

    The frame count is the number of video packets PyAV demuxes (no decoding); the container header
    must not claim more (else ``truncated``) and decord's count is compared with it: when decord
    over-reports (a known decord bug) a warning is logged and the PyAV count is used. ``backend``
    is ``"decord"`` when decord agrees on the count, else ``"pyav"`` (read_frames then falls back).
    With ``check_decode`` the last frame is decoded with PyAV (decord can loop forever on a frame
    past the real end of a file, dmlc/decord#373).
    """
    path = Path(path)
    spath = str(path)
    _check_file(path)
    h = _read_header(spath)
    if h.frames < 0 or h.frames > max_frames:
        raise VideoError("absurd_frame_count", f"{spath}: header claims {h.frames} frames (max_frames={max_frames})")
    n, backend = _count_frames(spath, h.frames, max_frames)
    if n < min_frames:
        raise VideoError("too_few_frames", f"{spath}: {n} frames (min_frames={min_frames})")
    width, height = h.width, h.height
    if check_decode:  # PyAV, not decord: decord can spin forever past the real end (decord#373)
        width, height = _check_last_frame(spath, n, width, height)
    if not (width and height):
        raise VideoError("decode_failed", f"{spath}: unknown frame size")
    duration, fps = _duration_and_fps(n, h)
    return VideoInfo(num_frames=int(n), fps=float(fps), duration=float(duration), width=int(width),
                     height=int(height), has_audio=bool(h.has_audio), backend=backend)


def _iter_video_files(paths: Iterable, extensions: tuple[str, ...]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                found += [Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in exts]
            out += sorted(found)
        else:
            out.append(p)  # explicit files are probed whatever their extension (or existence)
    return out


def validate_paths(paths: Iterable, *, min_frames: int = 2, max_frames: int = 500_000,
                   extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[dict]:
    """Probe every file (folders are walked recursively for ``extensions``); never raises.

    Returns one dict per file, in order (folder contents sorted): ``path, ok, reason, detail,
    num_frames, fps, duration, width, height, has_audio``. For a usable file ``reason`` and
    ``detail`` are ``""``; for an unusable one ``reason`` is a :data:`REASONS` word and the
    measurements are ``None``. Unexpected errors become ``decode_failed``.
    """
    rows = []
    for path in _iter_video_files(paths, tuple(extensions)):
        row = {"path": str(path), "ok": False, "reason": "", "detail": "", "num_frames": None, "fps": None,
               "duration": None, "width": None, "height": None, "has_audio": None}
        try:
            info = probe(path, min_frames=min_frames, max_frames=max_frames)
        except VideoError as e:
            row.update(reason=e.reason, detail=e.detail)
        except Exception as e:  # noqa: BLE001 - a validator must not die on one bad file
            log.exception("%s: unexpected error while probing", path)
            row.update(reason="decode_failed", detail=f"{path}: unexpected {_short(e)}")
        else:
            row.update(ok=True, num_frames=info.num_frames, fps=info.fps, duration=info.duration,
                       width=info.width, height=info.height, has_audio=info.has_audio)
        if not row["ok"]:
            log.info("quarantine %s: %s", path, row["reason"])
        rows.append(row)
    return rows
