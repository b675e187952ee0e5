"""Stage ``prepare``: a dataset adapter -> probed, validated manifest + quarantine table.

The adapter (``data.dataset``) lists candidate videos with labels and splits (the synthetic one
generates them first, into ``<prepared>/videos``). Every candidate is probed in parallel
(:func:`components.data.video.probe`); unusable ones go to ``reports/quarantine.csv`` with their
reason and the run goes on. Writes ``manifest.csv`` + ``classes.txt`` and ``reports/prepare.json``, and
for a real dataset ``sources.json``, the size and mtime of every file it read
(:mod:`components.data.source_listing`): a replaced video changes this stage's output, so what decodes reruns.
"""
from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from components.data.adapters import Candidate, get_adapter
from components.data.manifest import VideoRecord, decode_gt, write_manifest, write_quarantine
from components.data.source_listing import source_listing, write_listing
from components.data.video import VideoError, probe
from components.core.params import Params
from components.core.paths import Paths, write_report
from components.ops.stage_runner import stage_main

log = logging.getLogger(__name__)


def _probe_one(c: Candidate, min_frames: int, max_frames: int) -> VideoRecord | dict:
    try:
        info = probe(c.path, min_frames=min_frames, max_frames=max_frames)
    except VideoError as e:
        return {"path": c.path, "video_id": c.video_id, "split": c.split, "reason": e.reason, "detail": e.detail}
    if c.gt and len(decode_gt(c.gt)) != info.num_frames:
        return {"path": c.path, "video_id": c.video_id, "split": c.split,
                "reason": "gt_length_mismatch",
                "detail": f"ground truth covers {len(decode_gt(c.gt))} frames, file has {info.num_frames}"}
    return VideoRecord(video_id=c.video_id, path=c.path, labels=tuple(c.labels), split=c.split,
                       num_frames=info.num_frames, fps=info.fps, duration=info.duration, width=info.width,
                       height=info.height, has_audio=info.has_audio, gt=c.gt)


def run(p: Params, paths: Paths) -> Path:
    d = p.data
    listing = source_listing(d)  # before reading them: a file replaced meanwhile shows up in the next run
    if d.dataset == "synthetic":
        d = replace(d, root=str(paths.prepared / "videos"))
    result = get_adapter(d.dataset)(d)
    quarantine = list(result.missing)
    fn = partial(_probe_one, min_frames=d.min_frames, max_frames=d.max_frames)
    records: list[VideoRecord] = []
    cands = result.candidates
    if d.workers > 1 and len(cands) > 1:
        with ProcessPoolExecutor(d.workers) as ex:
            outs = list(tqdm(ex.map(fn, cands, chunksize=8), total=len(cands), desc="probe", unit="video", disable=None))
    else:
        outs = [fn(c) for c in tqdm(cands, desc="probe", unit="video", disable=None)]
    for out in outs:
        (records if isinstance(out, VideoRecord) else quarantine).append(out)

    # store paths relative to the manifest when the videos live under it (relocatable, DVC-cacheable)
    base = paths.prepared.resolve()
    rel = []
    for r in records:
        pth = Path(r.path).resolve()
        rel.append(replace(r, path=str(pth.relative_to(base)) if pth.is_relative_to(base) else str(pth)))
    write_manifest(paths.prepared, rel, result.classes)
    if p.data.dataset != "synthetic":  # the files it read: a replaced video changes this output too
        write_listing(listing, paths.prepared / "sources.json")
    write_quarantine(paths.reports / "quarantine.csv", quarantine)

    per_split = Counter(r.split for r in records)
    per_class = Counter(c for r in records if r.split == "train" for c in r.labels)
    empty = [result.classes[i] for i in range(len(result.classes)) if per_class[i] == 0]
    if empty:
        log.warning("classes without a train video: %s", empty[:10])
    if quarantine:
        log.warning("quarantined %d of %d videos (see %s): %s", len(quarantine), len(cands) + len(result.missing),
                    paths.reports / "quarantine.csv",
                    dict(Counter(q["reason"] for q in quarantine)))
    summary = {"dataset": p.data.dataset, "videos": len(records), "quarantined": len(quarantine),
               "classes": len(result.classes), "splits": dict(per_split),
               "frames_mean": sum(r.num_frames for r in records) / max(len(records), 1),
               "with_audio": sum(r.has_audio for r in records), "classes_without_train_video": len(empty)}
    write_report(paths, "prepare.json", summary)
    log.info("manifest: %s", summary)
    return paths.prepared / "manifest.csv"


def main(argv: list[str] | None = None) -> int:
    return stage_main("prepare", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
