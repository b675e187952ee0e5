"""Frame-exact PyAV readers: count packets / decodable frames, and decode wanted frames by index.

Frame ``i`` of a video is the packet with the ``i``-th smallest presentation timestamp. Three
readers decode a sorted list of wanted indices, none of which ever substitutes a neighbouring frame:

* :func:`_pyav_sparse_read` - the fast path: feeds packets in decode order from each target's
  keyframe, skipping non-reference frames (MP4/MOV/Matroska with unique timestamps only; returns
  None when it cannot vouch for a file).
* :func:`_pyav_read` - seeks to the keyframe before each target (:func:`_pyav_seek_read`, which
  verifies the indices of the frames after each seek) and falls back to decoding from the start,
  counting frames (:func:`_pyav_sequential`); raises :class:`VideoError` for a frame that cannot
  be decoded.

:func:`_pyav_count_packets` and :func:`_pyav_count_decodable` give the frame counts
:func:`~components.data.video.probing.probe` relies on.
"""
from __future__ import annotations

import bisect
import logging

import numpy as np

from components.data.video.decoders import _import_av
from components.data.video.errors import VideoError, _short

log = logging.getLogger(__name__)


def _pyav_frame_pts(container, stream) -> tuple[list[int], list[int]] | None:
    """Demux the video packets: (sorted presentation timestamps, sorted keyframe frame indices).

    Frame i is the packet with the i-th smallest pts. None when timestamps are unusable (missing
    or duplicated), in which case frames can only be identified by decoding from the start.
    """
    pts, key_pts = [], []
    for pkt in container.demux(stream):
        if pkt.size == 0:
            continue  # flush packet
        if pkt.pts is None:
            return None
        pts.append(int(pkt.pts))
        if pkt.is_keyframe:
            key_pts.append(int(pkt.pts))
    pts.sort()
    if len(set(pts)) != len(pts):
        return None
    index = {p: i for i, p in enumerate(pts)}
    return pts, sorted(index[p] for p in key_pts)


def _pyav_count_packets(path: str, limit: int) -> int:
    """Number of (non-empty) video packets, stopping once above ``limit``."""
    av = _import_av()
    with av.open(path) as c:
        vs = c.streams.video[0]
        n = 0
        for pkt in c.demux(vs):
            if pkt.size:
                n += 1
                if n > limit:
                    break
        return n


def _pyav_count_decodable(path: str, limit: int) -> int:
    """Frames PyAV actually decodes (sequentially, stopping at the first error or ``limit``)."""
    av = _import_av()
    n = 0
    try:
        with av.open(path) as c:
            for _ in c.decode(c.streams.video[0]):
                n += 1
                if n >= limit:
                    break
    except Exception as e:  # noqa: BLE001 - any decoder error ends the count
        log.debug("%s: decoding stopped after %d frames: %s", path, n, _short(e))
    return n


def _pyav_sequential(container, stream, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode from the start, counting frames; keep the wanted ones."""
    container.seek(0, stream=stream, backward=True, any_frame=False)
    want, last, out = set(wanted), max(wanted), {}
    for i, frame in enumerate(container.decode(stream)):
        if i in want:
            out[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    return out


def _pyav_read(path: str, wanted: list[int], sequential: bool = False) -> dict[int, np.ndarray]:
    """Decode the frames ``wanted`` (sorted, unique) with PyAV, by presentation index.

    Seeks to the keyframe before each wanted frame and decodes forward, identifying frames by their
    pts (frame i = i-th smallest packet pts); consecutive wanted frames in the same GOP are decoded
    in one pass. Falls back to decoding from the start (counting frames) when timestamps are
    unusable or a seek misses (``sequential=True`` skips seeking). Never substitutes a neighbouring
    frame: raises :class:`VideoError` naming the first index that cannot be decoded.
    """
    av = _import_av()
    out: dict[int, np.ndarray] = {}
    try:
        with av.open(path) as c:
            if not c.streams.video:
                raise VideoError("no_video_stream", f"{path}: no video stream")
            vs = c.streams.video[0]
            table = _pyav_frame_pts(c, vs)
            if table is not None:
                n = len(table[0])
                if wanted[-1] >= n:
                    raise VideoError("truncated", f"{path}: frame {wanted[-1]} requested, "
                                                  f"the stream has {n} frames")
                if not sequential:
                    got = _pyav_seek_read(c, vs, table[0], table[1], wanted)
                    if got is None:
                        log.debug("%s: timestamps contradict the packet table; decoding sequentially", path)
                    out = got or {}
            rest = [i for i in wanted if i not in out]
            if rest:
                if table is not None:
                    log.debug("%s: seek-based decode missed %d frames, decoding from the start", path, len(rest))
                out.update(_pyav_sequential(c, vs, rest))
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001
        missing = [i for i in wanted if i not in out]
        raise VideoError("decode_failed", f"{path}: PyAV failed before frame {missing[0] if missing else '?'}: "
                                          f"{_short(e)}") from e
    missing = [i for i in wanted if i not in out]
    if missing:
        raise VideoError("truncated", f"{path}: frame {missing[0]} could not be decoded "
                                      f"({len(missing)} of {len(wanted)} requested frames missing)")
    return out


def _pyav_sparse_read(spath: str, wanted: list[int]) -> dict[int, np.ndarray] | None:
    """Exact sparse decoding that skips work nothing depends on; None when it cannot vouch for a file.

    Demuxes the packet table once (frame i = the packet with the i-th smallest pts, as
    :func:`_pyav_frame_pts`), then for each wanted frame feeds packets in decode order from its
    keyframe - or onwards from the previous target when that is closer - with FFmpeg's
    ``skip_frame = NONREF`` on every packet except the wanted ones: non-reference frames are by
    definition never used to reconstruct another frame, so skipping them cannot change the wanted
    pixels, and the decoder is not flushed and re-primed per target as a seek-based reader does.
    On the demo's 300-frame H.264 videos (keyframe every 16) this is ~2x faster than decord's
    ``get_batch`` (see ``reports/bench_extract.json``). Only for MP4/MOV/Matroska streams with unique
    timestamps (AVI stores no presentation timestamps); any surprise returns None and the caller
    falls back to decord / the seek-based PyAV reader.
    """
    av = _import_av()
    try:
        with av.open(spath) as c:
            if not c.streams.video or not any(k in c.format.name for k in ("mp4", "mov", "matroska", "webm")):
                return None
            s = c.streams.video[0]
            s.thread_count = 1
            pkts = [p for p in c.demux(s) if p.size]
            if not pkts or any(p.pts is None for p in pkts):
                return None
            pts_sorted = sorted(p.pts for p in pkts)
            if len(set(pts_sorted)) != len(pts_sorted) or wanted[-1] >= len(pts_sorted):
                return None
            index = {p: i for i, p in enumerate(pts_sorted)}
            pos = {p.pts: j for j, p in enumerate(pkts)}  # pts -> decode-order position
            keys = [j for j, p in enumerate(pkts) if p.is_keyframe]
            if not keys or keys[0] != 0:
                return None
            cc = s.codec_context
            pending = {pts_sorted[i] for i in wanted}
            out: dict[int, np.ndarray] = {}
            fed = -1  # decode-order position of the last packet sent
            for t in [pts_sorted[i] for i in wanted]:
                if t not in pending:
                    continue
                jt = pos[t]
                k = keys[bisect.bisect_right(keys, jt) - 1]
                if not (k <= fed < jt):  # cheaper to restart at the keyframe than to decode on
                    cc.flush_buffers()
                    fed = k - 1
                while t in pending:
                    if fed + 1 < len(pkts):
                        fed += 1
                        p = pkts[fed]
                        cc.skip_frame = "DEFAULT" if p.pts in pending else "NONREF"
                        frames = cc.decode(p)
                    else:
                        cc.skip_frame = "DEFAULT"
                        frames = cc.decode(None)
                        if not frames:
                            return None
                    for f in frames:
                        if f.pts in pending:
                            out[index[f.pts]] = f.to_ndarray(format="rgb24")
                            pending.discard(f.pts)
            return out if len(out) == len(wanted) else None
    except Exception as e:  # noqa: BLE001 - any problem: let the established readers decide
        log.debug("%s: sparse PyAV read gave up: %s", spath, _short(e))
        return None


def _pyav_seek_read(c, vs, pts: list[int], keyframes: list[int], wanted: list[int]) -> dict | None:
    """Seek + decode by timestamp.

    Returns the frames it could identify with certainty (possibly not all: the caller decodes the
    rest sequentially), or None when the decoded timestamps contradict the packet table (frames
    would be misidentified, e.g. AVI with B-frames), in which case everything must be decoded
    sequentially. After each seek the first frame at or past the target must be a keyframe and
    every later frame the next index.
    """
    index = {p: i for i, p in enumerate(pts)}
    keyset = set(keyframes)
    want = set(wanted)
    out: dict[int, np.ndarray] = {}
    pos = 0
    while pos < len(wanted):
        target = wanted[pos]
        k = bisect.bisect_right(keyframes, target) - 1
        c.seek(pts[keyframes[k]] if k >= 0 else pts[0], stream=vs, backward=True, any_frame=False)
        prev = None
        for frame in c.decode(vs):
            i = index.get(frame.pts) if frame.pts is not None else None
            if i is None:
                return None  # timestamps do not match the packet table
            if prev is None:
                if i not in keyset:
                    if i < target:
                        continue  # leading frames of an open GOP
                    return None
            elif i != prev + 1:
                return None
            prev = i
            if i in want and i not in out:
                out[i] = frame.to_ndarray(format="rgb24")
            if i < target:
                continue
            if target not in out:
                return out  # the target was skipped (seek landed past it): the caller goes sequential
            while pos < len(wanted) and wanted[pos] in out:
                pos += 1
            if pos == len(wanted):
                return out
            target = wanted[pos]
            k = bisect.bisect_right(keyframes, target) - 1
            if k >= 0 and keyframes[k] > i:
                break  # a keyframe lies between here and the next target: seek instead of decoding on
        else:
            return out  # end of stream before the target: the caller tries sequentially
    return out
