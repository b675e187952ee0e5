"""Video decoding and validation: the only module that touches video files.

* :func:`probe` checks one file and returns a :class:`VideoInfo`, or raises :class:`VideoError`
  whose ``reason`` is one short machine-friendly word (see :data:`REASONS`); the dataset stage
  writes that reason into the quarantine table.
* :func:`validate_paths` probes many files / folders and never raises: one dict per file.
* :func:`uniform_indices` + :func:`read_frames` + :func:`resize_center` give the T observation
  frames of a video as a float tensor.
* :func:`log_mel` + :func:`read_audio_windows` give VGGish-style log-mel windows centred on those
  frames (``None`` when the file has no audio; audio is never faked).

Decoding goes through decord first (fast random access) and falls back to PyAV, which also serves
as the reference for frame counts: decord is known to over-report the frame count of some files, so
when decord and the container disagree the frames are counted with PyAV.

How a *truncated* file is detected (cheap first, decoding last):

1. **Container structure.** MP4/MOV (ISO BMFF), Matroska/WebM and AVI (RIFF) carry the size of
   their top-level boxes / elements / chunks. A file whose last box runs past the end of the file,
   or an MP4 without its ``moov`` index box (the usual result of an interrupted download, since most
   muxers write the index last), is reported as ``truncated`` without decoding anything. This
   costs a handful of small reads.
2. **Counting packets.** The video packets are counted with PyAV (demux only, no decoding); a
   header promising more frames than there are packets -> ``truncated``. decord's count is compared
   with it (decord over-reports on some files: logged, the PyAV count wins).
3. **Decoding the last frame** (``check_decode=True``), with PyAV: decord can spin forever on a
   frame past the real end of a file (dmlc/decord#373). If it cannot be decoded the decodable
   frames are counted: none -> ``decode_failed``, fewer -> ``truncated``.

A healthy file costs one PyAV open + demux, one decord open and one last-GOP decode (~5-10 ms
for a 300-frame 112x112 mp4).

decord's random access silently returns *wrong frames* on two kinds of files (found by the tests
here): AVI with B-frames (AVI has no presentation timestamps, the packet "pts" is the decode
order) and open-GOP H.264 (frames shifted by a few indices). :func:`read_frames` checks each file
once (cached) and decodes those with PyAV: sequentially, counting frames, for such AVIs, with a
keyframe-anchored seek for open GOPs. PyAV's seek path itself verifies that the frames after each
seek carry consecutive indices from a keyframe on, and falls back to sequential decoding if not.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

log = logging.getLogger(__name__)

REASONS = ("missing", "empty_file", "not_a_video", "no_video_stream", "too_few_frames",
           "absurd_frame_count", "truncated", "decode_failed")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


class VideoError(Exception):
    """A video that cannot be used.

    ``reason`` is one of :data:`REASONS` (short, machine-friendly, goes into the quarantine table);
    ``detail`` is human-readable text. ``str(err) == f"{reason}: {detail}"``.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.reason, self.detail))


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` established about a usable video."""
    num_frames: int
    fps: float
    duration: float  # seconds
    width: int
    height: int
    has_audio: bool
    backend: str  # which decoder agreed on the count / decoded the last frame: "decord" or "pyav"


# ------------------------------------------------------------------------------------- helpers
def _import_av():
    import av  # noqa: PLC0415 (lazy: keep `import components.data.video` cheap)
    return av


def _open_decord(path: str):
    """``decord.VideoReader`` on CPU with one thread (monkeypatched by the tests)."""
    import decord  # noqa: PLC0415
    return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)


def _open_decord_audio(path: str, sample_rate: int):
    """``decord.AudioReader`` (mono, resampled to ``sample_rate``)."""
    import decord  # noqa: PLC0415
    return decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)


def _to_numpy(x) -> np.ndarray:
    """decord NDArray / torch tensor (when a decord bridge is set globally) / array -> numpy."""
    if hasattr(x, "asnumpy"):
        return x.asnumpy()
    if isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    return np.asarray(x)


def _short(e: BaseException, n: int = 200) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:n]}"


# ------------------------------------------------------------------ container structure checks
_ISOBMFF_FIRST = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp"}


def _check_isobmff(f, size: int) -> str | None:
    off, seen_moov, boxes = 0, False, 0
    while off + 8 <= size and boxes < 100_000:
        f.seek(off)
        hdr = f.read(8)
        box, typ, hlen = int.from_bytes(hdr[:4], "big"), hdr[4:8], 8
        if not all(32 <= b < 127 for b in typ):
            return None  # not a box header: trailing junk, let the decoders judge
        if box == 1:
            large = f.read(8)
            if len(large) < 8:
                return f"mp4 box {typ.decode()!r} at byte {off}: file ends inside its header"
            box, hlen = int.from_bytes(large, "big"), 16
        elif box == 0:
            box = size - off  # "extends to the end of the file"
        if box < hlen:
            return None  # corrupt size field: not a clean truncation, let the decoders judge
        if typ == b"moov":
            seen_moov = True
        if off + box > size:
            return (f"mp4 box {typ.decode()!r} at byte {off} declares {box} bytes, "
                    f"the file ends {off + box - size} bytes early ({size} bytes)")
        off += box
        boxes += 1
    if not seen_moov:
        return f"mp4 has no 'moov' index box ({size} bytes; cut short before the index was written)"
    return None


def _read_vint(f, keep_marker: bool) -> tuple[int, int, bool] | None:
    """EBML variable-length integer -> (value, length, all_ones) or None at EOF / invalid."""
    first = f.read(1)
    if not first:
        return None
    b = first[0]
    length = 1
    while length <= 8 and not b & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        return None
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = b if keep_marker else b & (0xFF >> length)
    for c in rest:
        value = (value << 8) | c
    all_ones = (b & (0xFF >> length)) == (0xFF >> length) and all(c == 0xFF for c in rest)
    return value, length, all_ones


def _check_ebml(f, size: int) -> str | None:
    f.seek(0)
    head_id = _read_vint(f, keep_marker=True)
    head_size = _read_vint(f, keep_marker=False)
    if head_id is None or head_size is None:
        return "matroska file ends inside its EBML header"
    f.seek(f.tell() + head_size[0])
    seg_id = _read_vint(f, keep_marker=True)
    seg_size = _read_vint(f, keep_marker=False)
    if seg_id is None or seg_size is None:
        return "matroska file ends before its Segment"
    if seg_id[0] != 0x18538067 or seg_size[2]:
        return None  # unexpected layout or unknown (live-stream) size: cannot tell
    end = f.tell() + seg_size[0]
    if end > size:
        return f"matroska Segment declares {end} bytes, the file has {size} ({end - size} missing)"
    return None


def _check_riff(f, size: int) -> str | None:
    off = 0
    while off + 12 <= size:
        f.seek(off)
        hdr = f.read(12)
        if hdr[:4] != b"RIFF":
            return None
        chunk = int.from_bytes(hdr[4:8], "little")
        end = off + 8 + chunk + (chunk & 1)
        if off + 8 + chunk > size:
            return (f"AVI RIFF chunk {hdr[8:12].decode('latin-1')!r} at byte {off} declares {chunk} bytes, "
                    f"the file ends {off + 8 + chunk - size} bytes early")
        off = end
    return None


def _structure_problem(path: Path, size: int) -> str | None:
    """Cheap truncation check from the container's own size fields; None = looks complete / unknown."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) >= 8 and head[4:8] in _ISOBMFF_FIRST:
                return _check_isobmff(f, size)
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return _check_ebml(f, size)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                return _check_riff(f, size)
    except OSError as e:  # pragma: no cover - unreadable file
        raise VideoError("decode_failed", f"cannot read {path}: {_short(e)}") from e
    return None


# ------------------------------------------------------------------------------------ PyAV side
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
    import bisect  # noqa: PLC0415

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
    import bisect  # noqa: PLC0415

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


_PLAN_CACHE: dict[tuple[str, int, int], str] = {}


def _decode_plan(spath: str) -> str:
    """How frames of this file can be identified reliably (cached per path, size and mtime).

    * ``"sequential"``: AVI whose decoded frames come out with non-increasing timestamps. AVI stores
      no presentation timestamps; with B-frames the packet "pts" is the decode order, so
      timestamp-based seeking (decord's random access included) returns the wrong frames. Decode
      from the start, counting frames (checked on the first 48 frames).
    * ``"pyav"``: open-GOP streams (a keyframe followed, in decode order, by pictures shown before
      it). decord's random access returns frames shifted by a few indices on these; PyAV's
      keyframe-anchored seek is exact. Found by demuxing the packets (no decoding).
    * ``"decord"``: everything else.
    """
    try:
        with open(spath, "rb") as f:
            head = f.read(12)
        st = os.stat(spath)
    except OSError:
        return "decord"  # let the real read report the problem
    key = (spath, st.st_size, st.st_mtime_ns)
    plan = _PLAN_CACHE.get(key)
    if plan is not None:
        return plan
    plan = "decord"
    try:
        av = _import_av()
        with av.open(spath) as c:
            vs = c.streams.video[0]
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                last = None
                for k, frame in enumerate(c.decode(vs)):
                    if frame.pts is None or (last is not None and frame.pts <= last):
                        plan = "sequential"
                        break
                    last = frame.pts
                    if k >= 47:
                        break
            else:
                key_pts, first = None, True
                for pkt in c.demux(vs):
                    if pkt.size == 0 or pkt.pts is None:
                        continue
                    if pkt.is_keyframe:
                        key_pts, first = (None if first else pkt.pts), False
                    elif key_pts is not None and pkt.pts < key_pts:
                        plan = "pyav"
                        break
    except Exception as e:  # noqa: BLE001 - decoding errors are reported by the real read
        log.debug("%s: decode-plan check failed: %s", spath, _short(e))
    if len(_PLAN_CACHE) > 4096:
        _PLAN_CACHE.clear()
    _PLAN_CACHE[key] = plan
    if plan != "decord":
        log.info("%s: %s; decoding with PyAV (%s)", spath,
                 "AVI with reordered frames" if plan == "sequential" else "open-GOP stream", plan)
    return plan


# ------------------------------------------------------------------------------------- probing
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
        has_audio = len(container.streams.audio) > 0
        width, height = int(vs.codec_context.width or 0), int(vs.codec_context.height or 0)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        header = int(vs.frames or 0)
        if vs.duration is not None and vs.time_base is not None:
            stream_dur = float(vs.duration * vs.time_base)
        else:
            stream_dur = None
        container_dur = container.duration / 1e6 if container.duration else None
    if header < 0 or header > max_frames:
        raise VideoError("absurd_frame_count", f"{spath}: header claims {header} frames (max_frames={max_frames})")

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
    if header > n:  # the container's own index promises frames whose data is not there
        raise VideoError("truncated", f"{spath}: header claims {header} frames, only {n} video packets present")
    if n_decord is not None and n_decord > n:
        log.warning("%s: decord reports %d frames but PyAV finds %d; using %d", spath, n_decord, n, n)
    elif n_decord is not None and n_decord < n:
        log.warning("%s: decord reports %d frames, PyAV finds %d; using %d (PyAV reads)", spath, n_decord, n, n)
    backend = "decord" if n_decord == n else "pyav"
    if n < min_frames:
        raise VideoError("too_few_frames", f"{spath}: {n} frames (min_frames={min_frames})")

    if check_decode:  # PyAV, not decord: decord can spin forever past the real end (decord#373)
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
    if not (width and height):
        raise VideoError("decode_failed", f"{spath}: unknown frame size")

    if stream_dur and stream_dur > 0:
        duration = stream_dur
    elif fps > 0:
        duration = n / fps
    else:
        duration = container_dur or 0.0
    if fps <= 0 and duration > 0:
        fps = n / duration
    return VideoInfo(num_frames=int(n), fps=float(fps), duration=float(duration), width=int(width),
                     height=int(height), has_audio=bool(has_audio), backend=backend)


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


# ------------------------------------------------------------------------------------- frames
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
    returns the wrong number / shape of frames, PyAV's seek-based reader decodes them instead. Files on which decord's random access is known to return
    wrong frames go straight to PyAV (see :func:`_decode_plan`: AVI with B-frames is decoded
    sequentially, counting frames; open-GOP streams use PyAV's keyframe-anchored seek). A frame
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
        t = resize_center(frames, size)
        frames = (t * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return frames


def resize_center(frames, size: int) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` (numpy or torch) -> float32 ``[n, 3, size, size]`` in [0, 1].

    The shorter side is resized to ``size`` (bilinear with antialiasing), then the centre
    ``size x size`` square is cropped.
    """
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


# -------------------------------------------------------------------------------------- audio
def _hz_to_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(n_mels: int, n_bins: int, sample_rate: int, lower_hz: float = 125.0,
               upper_hz: float = 7500.0) -> np.ndarray:
    """VGGish mel filterbank ``[n_bins, n_mels]``: triangles evenly spaced on the HTK mel scale.

    ``upper_hz`` is clipped to the Nyquist frequency (VGGish raises instead).
    """
    nyquist = sample_rate / 2.0
    upper_hz = min(upper_hz, nyquist)
    if not 0.0 <= lower_hz < upper_hz:
        raise ValueError(f"mel_matrix: need 0 <= lower ({lower_hz}) < upper ({upper_hz}) Hz")
    bins_mel = _hz_to_mel(np.linspace(0.0, nyquist, n_bins))
    edges = np.linspace(_hz_to_mel(lower_hz), _hz_to_mel(upper_hz), n_mels + 2)
    lo, ce, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (bins_mel[:, None] - lo) / (ce - lo)
    down = (hi - bins_mel[:, None]) / (hi - ce)
    w = np.maximum(0.0, np.minimum(up, down))
    w[0, :] = 0.0  # no DC
    return w


def log_mel(audio: np.ndarray, sample_rate: int = 16000, n_mels: int = 64) -> np.ndarray:
    """VGGish-style log-mel spectrogram, pure numpy: float32 ``[n_hops, n_mels]``.

    25 ms periodic-Hann window, 10 ms hop, FFT length = next power of two, magnitude spectrum, mel
    filterbank 125-7500 Hz (HTK mel), ``log(mel + 0.01)``. Frames are taken without padding, so
    ``n_hops = 1 + (len - win) // hop`` (0 when the signal is shorter than a window). Multi-channel
    input ``[channels, samples]`` is averaged to mono.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"log_mel: expected [samples] or [channels, samples], got {x.shape}")
    win = int(round(0.025 * sample_rate))
    hop = int(round(0.010 * sample_rate))
    nfft = 1 << int(math.ceil(math.log2(win)))
    w = mel_matrix(n_mels, nfft // 2 + 1, sample_rate)
    n_hops = 1 + (len(x) - win) // hop if len(x) >= win else 0
    out = np.empty((n_hops, n_mels), dtype=np.float32)
    if n_hops == 0:
        return out
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    frames = np.lib.stride_tricks.as_strided(x, shape=(n_hops, win), strides=(x.strides[0] * hop, x.strides[0]),
                                             writeable=False)
    chunk = 8192  # bound memory on long tracks
    for s in range(0, n_hops, chunk):
        spec = np.abs(np.fft.rfft(frames[s:s + chunk] * window, n=nfft))
        out[s:s + chunk] = np.log(spec @ w + 0.01)
    return out


def _has_audio_stream(spath: str) -> bool:
    av = _import_av()
    try:
        with av.open(spath) as c:
            return len(c.streams.audio) > 0
    except Exception as e:  # noqa: BLE001
        raise VideoError("not_a_video", f"{spath}: {_short(e)}") from e


def _decode_audio(spath: str, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform at ``sample_rate`` (decord, then PyAV)."""
    try:
        ar = _open_decord_audio(spath, sample_rate)
        wav = _to_numpy(ar[:]).astype(np.float32).reshape(-1)
        if wav.size:
            return wav
        raise ValueError("decord returned no samples")
    except Exception as e:  # noqa: BLE001
        log.debug("%s: decord audio failed (%s), falling back to PyAV", spath, _short(e))
    av = _import_av()
    try:
        with av.open(spath) as c:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            parts = []
            for frame in c.decode(c.streams.audio[0]):
                frame.pts = None  # let the resampler run on sample counts (avoids pts gaps/jitter errors)
                parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
            parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    except Exception as e:  # noqa: BLE001
        raise VideoError("decode_failed", f"{spath}: audio decode failed: {_short(e)}") from e
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def read_audio_windows(path, times: np.ndarray, *, sample_rate: int = 16000, n_mels: int = 64,
                       window_frames: int = 96) -> np.ndarray | None:
    """Log-mel windows centred on ``times`` (seconds): float32 ``[len(times), window_frames, n_mels]``.

    The whole track is decoded (mono, resampled to ``sample_rate``; decord then PyAV), zero-padded
    in the waveform on both sides (so windows reaching past either end, or times beyond the end of
    the track, see silence) and turned into :func:`log_mel` once; each window is the
    ``window_frames`` consecutive hops whose middle hop is centred at the requested time.

    Returns ``None`` when the file has no audio stream (audio is never faked). Raises
    :class:`VideoError` (``missing``, ``not_a_video``, ``decode_failed``) otherwise.
    """
    spath = str(path)
    if not Path(spath).exists():
        raise VideoError("missing", f"{spath}: no such file")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if not _has_audio_stream(spath):
        return None
    wav = _decode_audio(spath, sample_rate)
    win = int(round(0.025 * sample_rate))
    hop = int(round(0.010 * sample_rate))
    half = window_frames // 2
    # hop j (in the padded signal) covers samples [j*hop, j*hop + win) and is centred at j*hop + win/2
    pad_left = (half + 1) * hop + win
    t_max = float(times.max()) if times.size else 0.0
    end_needed = int(math.ceil(max(t_max, 0.0) * sample_rate)) + (window_frames + 2) * hop + win
    pad_right = max(pad_left, end_needed - len(wav))
    padded = np.concatenate([np.zeros(pad_left, np.float32), wav, np.zeros(pad_right, np.float32)])
    mel = log_mel(padded, sample_rate=sample_rate, n_mels=n_mels)
    centres = np.clip(times, 0.0, None) * sample_rate + pad_left  # sample positions in the padded signal
    j_mid = np.rint((centres - win / 2.0) / hop).astype(np.int64)
    starts = np.clip(j_mid - half, 0, max(0, len(mel) - window_frames))
    out = np.stack([mel[s:s + window_frames] for s in starts]) if times.size else \
        np.zeros((0, window_frames, n_mels), np.float32)
    return out.astype(np.float32, copy=False)
