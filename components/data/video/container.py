"""Truncation check from a container's own size fields, without decoding anything.

MP4/MOV (ISO BMFF), Matroska/WebM and AVI (RIFF) carry the size of their top-level boxes /
elements / chunks. :func:`_structure_problem` reports a file whose last box runs past the end of
the file, or an MP4 without its ``moov`` index box (the usual result of an interrupted download,
since most muxers write the index last), at the cost of a handful of small reads; any other layout
is left to the decoders to judge.
"""
from __future__ import annotations

from pathlib import Path

from components.data.video.errors import VideoError, _short

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
