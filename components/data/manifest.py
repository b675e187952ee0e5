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

Spatial ground truth (synthetic benchmark only) lives in a sidecar beside the videos, not in the
manifest, so manifests and adapters without it are unchanged: ``boxes.npz`` (:data:`BOXES_FILE`,
written by the generator into the folder that holds ``videos/``), one :class:`FrameBoxes` per video
id (per-frame key-object boxes in pixels of the file, NaN where none, and the class each frame's
objects belong to), read with :func:`read_boxes` (an empty dict when there is no sidecar).
"""
from __future__ import annotations

import csv
import zipfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from components.core.atomic import atomic_path, atomic_write_text
from components.data.video.info import StreamInfo

GT_GENERIC = -1
GT_LOWQ = -2
GT_UNKNOWN = -3  # used in the feature store where a dataset has no per-frame ground truth
SPLITS = ("train", "val", "test")
BOXES_FILE = "boxes.npz"


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


# ------------------------------------------------------------------------------ spatial ground truth
@dataclass(frozen=True, eq=False)
class FrameBoxes:
    """Per-frame key-object boxes of one video (spatial ground truth).

    ``boxes`` float32 ``[L, O, 4]``: object ``o`` of frame ``t`` as ``(x0, y0, x1, y1)`` in pixels of
    the video file (``size = (width, height)``), half-open: it covers the pixel columns ``x0 .. x1-1``
    and rows ``y0 .. y1-1``, so ``x1 - x0`` is its width; NaN where the object is not in the frame.
    For the synthetic benchmark ``O = 2``: 0 = the class's large key object, 1 = the small one.
    ``codes`` int16 ``[L]``: the class whose objects frame ``t`` shows (the ``gt`` code: ``>= 0`` a
    class, salient when it is one of the video's labels and a distractor otherwise; < 0 none).
    """
    boxes: np.ndarray  # float32 [L, O, 4]
    codes: np.ndarray  # int16 [L]
    size: tuple[int, int]  # (width, height) of the frames the boxes are in

    def target(self, labels: Iterable[int], obj: int = 0) -> np.ndarray:
        """``[L, 4]``: box of object ``obj`` (0 = large) in the frames that show one of ``labels`` (the
        video's own classes); NaN elsewhere, distractor frames included (their objects are another
        class's, so a patch on them is no hit)."""
        own = np.isin(self.codes, np.asarray(list(labels)))
        return np.where(own[:, None], self.boxes[:, obj], np.nan).astype(np.float32)

    def distractor(self, labels: Iterable[int], obj: int = 0) -> np.ndarray:
        """``[L, 4]``: box of object ``obj`` in the frames showing another class than ``labels``; NaN elsewhere."""
        other = (self.codes >= 0) & ~np.isin(self.codes, np.asarray(list(labels)))
        return np.where(other[:, None], self.boxes[:, obj], np.nan).astype(np.float32)

    def resized(self, width: int, height: int) -> FrameBoxes:
        """The boxes in frames resized to ``width x height`` (``(1, 1)``: normalised to [0, 1])."""
        w, h = self.size
        scale = np.array([width / w, height / h, width / w, height / h], dtype=np.float32)
        return FrameBoxes(self.boxes * scale, self.codes, (width, height))


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` without its clock: every member stamped 1980-01-01, so the same arrays give the
    same bytes (docs/design.md §3); written atomically."""
    with atomic_path(path, suffix=".npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w",
                         force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    return path


def write_boxes(path: Path, boxes: Mapping[str, FrameBoxes]) -> Path:
    """Write the spatial ground truth of many videos to one ``.npz`` (byte-deterministic, atomic).

    Layout (ragged, one archive however many videos): ``video_ids [N]``, ``sizes [N, 2]`` (width,
    height), ``offsets [N+1]`` (video i's frames are rows ``offsets[i]:offsets[i+1]``), ``boxes
    [F, O, 4]`` float32 and ``codes [F]`` int16 over all F frames.
    """
    ids = list(boxes)
    vals = [boxes[i] for i in ids]
    O = {v.boxes.shape[1] for v in vals}
    if len(O) > 1:
        raise ValueError(f"videos with different numbers of objects per frame: {sorted(O)}")
    for i, v in zip(ids, vals):
        if v.boxes.shape[0] != v.codes.shape[0] or v.boxes.shape[2:] != (4,):
            raise ValueError(f"video {i!r}: boxes {v.boxes.shape} do not match codes {v.codes.shape} as [L, O, 4]")
    lengths = [len(v.codes) for v in vals]
    return _write_npz(Path(path), {
        "video_ids": np.array(ids, dtype=str),
        "sizes": np.array([v.size for v in vals], dtype=np.int32).reshape(-1, 2),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "boxes": (np.concatenate([v.boxes for v in vals]) if vals else np.zeros((0, 0, 4))).astype(np.float32),
        "codes": (np.concatenate([v.codes for v in vals]) if vals else np.zeros(0)).astype(np.int16),
    })


def read_boxes(path: Path) -> dict[str, FrameBoxes]:
    """The spatial ground truth written by :func:`write_boxes`, by video id.

    ``path`` is the ``.npz`` or a folder: ``<folder>/boxes.npz``, else ``<folder>/videos/boxes.npz``
    (the prepare stage's layout: manifest in ``data/prepared``, the generator's folder
    ``data/prepared/videos``). No sidecar -> ``{}`` (a dataset without spatial ground truth).
    """
    path = Path(path)
    if path.is_dir():
        path = next((c for c in (path / BOXES_FILE, path / "videos" / BOXES_FILE) if c.is_file()), path / BOXES_FILE)
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        ids, sizes, off, boxes, codes = (z[k] for k in ("video_ids", "sizes", "offsets", "boxes", "codes"))
    return {str(v): FrameBoxes(boxes[off[i]:off[i + 1]], codes[off[i]:off[i + 1]], (int(sizes[i, 0]), int(sizes[i, 1])))
            for i, v in enumerate(ids)}
