"""The dataset manifest: one row per usable video, one schema for every adapter.

Every dataset adapter (synthetic, activitynet, kinetics, ucf101, fcvid, csv) writes the same two
files into its output folder:

* ``manifest.csv`` with the columns of :data:`COLUMNS` (one row per usable video), and
* ``classes.txt`` with one class name per line (row i = class index i).

Videos that cannot be used never reach the manifest: they go to a quarantine table
(``reports/quarantine.csv``, columns :data:`QUARANTINE_COLUMNS`) with the reason.

Per-frame ground-truth saliency (known for the synthetic benchmark only) is stored in the ``gt``
column as a run-length code over *all* frames of the file: ``"code:len;code:len;..."`` where
``code >= 0`` means "the frame shows the signature of class ``code``" (salient when ``code`` is one
of the video's labels, a distractor otherwise), :data:`GT_GENERIC` a generic frame shared by all
classes and :data:`GT_LOWQ` a low-quality frame (blur, dark, transition). An empty string means
"unknown".
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from components.atomic import atomic_path, atomic_write_text
from components.data.video.info import StreamInfo

GT_GENERIC = -1
GT_LOWQ = -2
GT_UNKNOWN = -3  # used in the feature store where a dataset has no per-frame ground truth
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class _Entry:
    """Which video, where, labelled how, in which split: the dataset's side of a manifest row."""
    video_id: str
    path: str  # absolute, or relative to the manifest's folder
    labels: tuple[int, ...]  # class indices; several for multi-label sets (ActivityNet, FCVID)
    split: str  # train | val | test


@dataclass(frozen=True)
class VideoRecord(StreamInfo, _Entry):
    """One manifest row: the :class:`_Entry` fields, the probed :class:`StreamInfo` fields, ``gt``.

    Field order (= positional order and the CSV column order of :data:`COLUMNS`): dataclasses
    collect the fields of the bases from the last in the MRO to the first, so ``video_id, path,
    labels, split`` come first, then ``num_frames, fps, duration, width, height, has_audio``, then
    ``gt``.
    """
    gt: str = ""  # run-length per-frame ground truth, see module docstring

    @classmethod
    def from_info(cls, info: StreamInfo, *, video_id: str, path: str, labels: tuple[int, ...], split: str,
                  gt: str = "") -> VideoRecord:
        """The record of a probed video: its :class:`StreamInfo` fields taken from ``info``."""
        return cls(video_id=video_id, path=path, labels=labels, split=split, gt=gt,
                   **{f.name: getattr(info, f.name) for f in fields(StreamInfo)})

    @property
    def label(self) -> int:
        """The first (primary) label."""
        return self.labels[0]

    def gt_codes(self) -> np.ndarray | None:
        """Per-frame ground-truth codes [num_frames] (int16), or None when unknown."""
        return decode_gt(self.gt) if self.gt else None

    def salient_mask(self) -> np.ndarray | None:
        """Boolean [num_frames]: frame shows one of this video's own classes."""
        codes = self.gt_codes()
        if codes is None:
            return None
        return np.isin(codes, np.asarray(self.labels))


COLUMNS = tuple(f.name for f in fields(VideoRecord))
QUARANTINE_COLUMNS = ("path", "video_id", "split", "reason", "detail")


def encode_gt(codes: Sequence[int] | np.ndarray) -> str:
    """Run-length encode per-frame codes: ``[3,3,-1] -> "3:2;-1:1"``."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size == 0:
        return ""
    change = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [codes.size]])
    return ";".join(f"{int(codes[s])}:{int(e - s)}" for s, e in zip(starts, ends))


def decode_gt(text: str) -> np.ndarray:
    """Inverse of :func:`encode_gt`."""
    if not text:
        return np.zeros(0, dtype=np.int16)
    parts = []
    for item in text.split(";"):
        code, length = item.split(":")
        parts.append(np.full(int(length), int(code), dtype=np.int16))
    return np.concatenate(parts)


def _to_row(rec: VideoRecord) -> dict:
    row = asdict(rec)
    row["labels"] = ";".join(str(i) for i in rec.labels)
    row["has_audio"] = int(rec.has_audio)
    return row


def _from_row(row: dict) -> VideoRecord:
    return VideoRecord(
        video_id=row["video_id"],
        path=row["path"],
        labels=tuple(int(x) for x in row["labels"].split(";") if x != ""),
        split=row["split"],
        num_frames=int(row["num_frames"]),
        fps=float(row["fps"]),
        duration=float(row["duration"]),
        width=int(row["width"]),
        height=int(row["height"]),
        has_audio=bool(int(row["has_audio"])),
        gt=row.get("gt", "") or "",
    )


def _atomic_write_csv(path: Path, header: Sequence[str], rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(header))
        w.writeheader()
        for r in rows:
            w.writerow(r)


def write_manifest(folder: Path, records: Sequence[VideoRecord], classes: Sequence[str]) -> Path:
    """Write ``manifest.csv`` + ``classes.txt`` atomically (temp file + rename)."""
    folder = Path(folder)
    for rec in records:
        if rec.split not in SPLITS:
            raise ValueError(f"video {rec.video_id!r}: split {rec.split!r} not in {SPLITS}")
        bad = [c for c in rec.labels if not 0 <= c < len(classes)]
        if bad or not rec.labels:
            raise ValueError(f"video {rec.video_id!r}: labels {rec.labels} outside [0, {len(classes)})")
    ids = [r.video_id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate video ids in manifest: {dup}")
    atomic_write_text(folder / "classes.txt", "".join(f"{c}\n" for c in classes))
    _atomic_write_csv(folder / "manifest.csv", COLUMNS, (_to_row(r) for r in records))
    return folder / "manifest.csv"


def read_manifest(folder: Path) -> tuple[list[VideoRecord], list[str]]:
    """Read ``manifest.csv`` and ``classes.txt`` from ``folder``; paths become absolute."""
    folder = Path(folder)
    classes = [line.rstrip("\n") for line in (folder / "classes.txt").read_text().splitlines()]
    records = []
    with open(folder / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            rec = _from_row(row)
            p = Path(rec.path)
            if not p.is_absolute():
                rec = replace(rec, path=str((folder / p).resolve()))
            records.append(rec)
    return records, classes


def write_quarantine(path: Path, rows: Sequence[dict]) -> Path:
    """Write the quarantine table (always written, header only when nothing was quarantined)."""
    _atomic_write_csv(Path(path), QUARANTINE_COLUMNS,
                      ({k: r.get(k, "") for k in QUARANTINE_COLUMNS} for r in rows))
    return Path(path)
