"""Which reader a file needs: :func:`_decode_plan` (checked once per file, cached).

decord's random access silently returns *wrong frames* on two kinds of files: AVI with B-frames
(AVI has no presentation timestamps, the packet "pts" is the decode order) and open-GOP H.264
(frames shifted by a few indices). The plan routes those to PyAV's readers (see
:mod:`components.data.video.pyav`) and everything else to the fast path.
"""
from __future__ import annotations

import logging
import os

from components.data.video.decoders import _import_av
from components.data.video.errors import _short

log = logging.getLogger(__name__)

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
