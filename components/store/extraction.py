"""Writing the feature store: in one process, or as S shards merged into the same bytes (docs/design.md §5).

* :func:`extract_store` - every split in this process, into ``<features>.partial``, published by
  :meth:`components.store.feature_store.StoreWriter.finalize` (``extract.shards: 1``).
* :func:`plan_shards` - per shard and split, a contiguous row range ``[a, b)``.
* :func:`run_shard` - shard ``i`` of ``S``: its rows of every split into a part of its own,
  ``<features>.shards/<i>-of-<S>/`` (built in ``<i>-of-<S>.partial``, resumable, with its own
  ``failures.csv``; a finished part is a complete store of its rows, fingerprinted). One process per
  part at a time (an ``flock`` on ``<i>-of-<S>.lock``).
* :func:`merge_shards` - checks every part (complete, the fingerprint this code and these params give
  shard i, its row range and ids), copies the rows into ``<features>.partial``, adds the text
  embeddings, and only then publishes the store by rename; a crash anywhere before leaves no store.
* :func:`run_shards_locally` - the S shard processes (a command per shard from the caller), at most
  ``parallel`` at a time, each retried alone up to ``extract.shard_retries`` times, then the merge.

**Byte identity.** :func:`components.store.features.stream_split` flushes its pending model batch at every
multiple of ``extract.flush_every`` (its checkpoint), whether or not videos failed to decode before. Shard
boundaries are put on those multiples within each split, so every model batch of a shard is the batch
the one-process run forms, and the merged store is byte-identical to it (arrays, ``meta.json``,
``failures.csv``; tested). The price: shards balance only to ``flush_every`` videos. The encoders'
float results can depend on torch's thread count (tiny batches here: 1 vs 2 threads differ in the last
bits of a few rows), so every shard runs with the one-process run's thread count by default
(:func:`run_shards_locally`); ``salient bench shards`` measures the alternative.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import fcntl
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml

from components.core.atomic import atomic_write_text
from components.data.clips import ClipError
from components.data.manifest import VideoRecord, read_manifest
from components.store.features import FrameEncoders, stream_split
from components.core.hashing import code_fingerprint, fingerprint
from components.models.encoders import create_encoder, imagenet_class_names, readable_class_name
from components.core.params import Params, to_dict
from components.core.paths import Paths
from components.ops.processes import Proc, start_group, stop_group
from components.core.scratch import ScratchKey
from components.store.feature_store import ArraySpec, FeatureStore, SplitWriter, StoreError, StoreWriter

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: The module whose import closure is the code that computes the store (its code fingerprint keys
#: every partial store and shard part: one written by other code is never resumed or merged).
CODE_MODULE = "components.stages.extract"


class ShardError(RuntimeError):
    """A shard failed after its retries; the message names it and ends with its log's tail."""


# ------------------------------------------------------------------------------ shared pieces
@dataclass(frozen=True)
class Job:
    """What every way of extracting shares: the manifest, its splits, the store's fingerprint."""
    records: dict[str, list[VideoRecord]]  # split -> its videos, manifest order
    classes: list[str]
    fingerprint: str

    @classmethod
    def of(cls, p: Params, paths: Paths) -> "Job":
        records, classes = read_manifest(paths.prepared)
        fp = fingerprint(*scratch_key(paths).input_parts(), p.frames, p.audio, p.encoders, p.compute,
                         code_fingerprint(CODE_MODULE))  # a partial store by other code is not resumed
        return cls({s: [r for r in records if r.split == s] for s in SPLITS}, classes, fp)


def scratch_key(paths: Paths) -> ScratchKey:
    """What keys a partial store (its ``resume.json``, :mod:`components.core.scratch`): the inputs and params
    sections of :class:`Job`'s fingerprint and, for a shard, its batching; the code of :data:`CODE_MODULE`."""
    return ScratchKey(CODE_MODULE, ("frames", "audio", "encoders", "compute", "extract.shards", "extract.batch_videos",
                                    "extract.flush_every"),
                      (paths.prepared / "manifest.csv", paths.prepared / "sources.json",
                       *(paths.encoders / f"{r}.pt" for r in ("light", "recognizer", "audio"))))


def _relative(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when it lies under it: no machine's absolute path in the store."""
    pth, base = Path(path).resolve(), Path(base).resolve()
    return str(pth.relative_to(base)) if pth.is_relative_to(base) else str(path)


def _set_threads(p: Params, threads: int | None) -> None:
    n = threads or p.extract.threads or p.train_encoders.threads
    if n:
        torch.set_num_threads(n)


def _extract_rows(p: Params, job: Job, writer: StoreWriter, enc: FrameEncoders,
                  ranges: dict[str, tuple[int, int]], desc: str = "extract") -> list[tuple[str, ClipError]]:
    """Rows ``ranges[split]`` of every split into ``writer`` (resumable); the decode failures, in order."""
    specs = enc.specs(p.frames.T, len(job.classes))
    failures = []
    for split in SPLITS:
        a, b = ranges[split]
        if a == b:
            continue
        recs = job.records[split][a:b]
        sw = writer.split(split, [r.video_id for r in recs], specs)
        errors = stream_split(sw, recs, p.frames.T, enc.sizes, p.audio, enc.encode, len(job.classes),
                              batch=p.extract.batch_videos, flush_every=p.extract.flush_every,
                              workers=p.extract.decode_workers, desc=f"{desc} {split}")
        failures += [(split, e) for e in errors]
        sw.close()
    return failures


def _failure_rows(failures: Sequence[tuple[str, ClipError]], prepared: Path) -> list[list[str]]:
    return [[split, e.video_id, _relative(e.path, prepared), e.reason] for split, e in failures]


def _publish(p: Params, job: Job, writer: StoreWriter, failures: list[list[str]], sizes: dict) -> Path:
    """Text embeddings, object names, ``failures.csv`` (split, video_id, path, reason rows in), then
    :meth:`StoreWriter.finalize`: the store appears only now, by rename."""
    text = create_encoder("text", model=p.encoders.text_model)
    objects = imagenet_class_names()
    writer.save_array("text_objects", text(objects).numpy())
    writer.save_array("text_classes", text([readable_class_name(c) for c in job.classes]).numpy())
    writer.save_text("object_names.txt", objects)
    with open(writer.partial / "failures.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "path", "reason"])
        w.writerows([row[1:] for row in failures])
    if failures:
        log.warning("%d videos failed to decode; their rows have valid=False (see failures.csv)", len(failures))
    out = writer.finalize({"T": p.frames.T, "classes": job.classes, "sizes": sizes,
                           "text_model": text.name, "failures": len(failures)})
    log.info("feature store written to %s", out)
    return out


# ------------------------------------------------------------------------------ one process
def extract_store(p: Params, paths: Paths, threads: int | None = None) -> Path:
    """The whole store in this process (resumable in ``<features>.partial``)."""
    _set_threads(p, threads)
    job = Job.of(p, paths)
    enc = FrameEncoders.load(p, paths.encoders)
    writer = StoreWriter(paths.features, job.fingerprint)
    scratch_key(paths).stamp(writer.partial, p)
    everything = {s: (0, len(job.records[s])) for s in SPLITS}
    failures = _extract_rows(p, job, writer, enc, everything)
    return _publish(p, job, writer, _failure_rows(failures, paths.prepared), enc.sizes)


# ------------------------------------------------------------------------------ shards
def shards_dir(paths: Paths) -> Path:
    """``<features>.shards/``: the parts, their logs and the launcher's params file (never a DVC output)."""
    f = Path(paths.features)
    return f.with_name(f.name + ".shards")


def part_dir(paths: Paths, i: int, S: int) -> Path:
    return shards_dir(paths) / f"{i}-of-{S}"


def plan_shards(sizes: dict[str, int], S: int, flush_every: int) -> list[dict[str, tuple[int, int]]]:
    """Per shard, per split, a contiguous row range ``[a, b)`` (``a == b``: none of that split).

    Each split is cut into chunks at the multiples of ``flush_every`` (where the one-process loop
    flushes its batch); the chunks of all splits, in split order, are dealt out as S contiguous runs
    whose video counts are as even as the chunks allow (shard ``k`` starts at the chunk boundary
    nearest ``k * total / S``). The ranges tile every split, in shard order."""
    chunks = [(split, a, min(a + flush_every, n)) for split, n in sizes.items() for a in range(0, n, flush_every)]
    cum = [0]
    for _, a, b in chunks:
        cum.append(cum[-1] + b - a)
    bounds = [0]
    for k in range(1, S):
        target = k * cum[-1] / S
        bounds.append(min(range(bounds[-1], len(chunks) + 1), key=lambda j: (abs(cum[j] - target), j)))
    bounds.append(len(chunks))
    plan: list[dict[str, tuple[int, int]]] = []
    for i in range(S):
        mine = chunks[bounds[i]:bounds[i + 1]]
        ranges = {}
        for split, n in sizes.items():
            own = [(a, b) for s, a, b in mine if s == split]
            if own:
                ranges[split] = (own[0][0], own[-1][1])
            else:  # empty: placed where the split's rows before it end, so the ranges still tile
                before = [b for s, _, b in chunks[:bounds[i]] if s == split]
                ranges[split] = (before[-1],) * 2 if before else (0, 0)
        plan.append(ranges)
    return plan


def _plan(p: Params, job: Job, S: int) -> list[dict[str, tuple[int, int]]]:
    return plan_shards({s: len(job.records[s]) for s in SPLITS}, S, p.extract.flush_every)


def shard_fingerprint(job: Job, p: Params, i: int, S: int, ranges: dict[str, tuple[int, int]]) -> str:
    """Shard ``i`` of ``S``: the store's fingerprint (inputs, params, code) + its rows and batching."""
    return fingerprint(job.fingerprint, {"shard": i, "of": S, "ranges": {k: list(v) for k, v in ranges.items()},
                                         "batch_videos": p.extract.batch_videos,
                                         "flush_every": p.extract.flush_every})


def _part_state(folder: Path, want: str) -> str:
    """``done`` (a complete part of fingerprint ``want``), ``missing`` or ``stale`` (another fingerprint)."""
    meta = folder / "meta.json"
    if not meta.exists():
        return "missing"
    try:
        m = json.loads(meta.read_text())
    except ValueError:
        return "stale"
    return "done" if m.get("complete") and m.get("fingerprint") == want else "stale"


def shard_done(p: Params, paths: Paths, i: int, S: int, job: Job | None = None) -> bool:
    job = job or Job.of(p, paths)
    ranges = _plan(p, job, S)[i]
    return _part_state(part_dir(paths, i, S), shard_fingerprint(job, p, i, S, ranges)) == "done"


@contextlib.contextmanager
def _part_lock(folder: Path):
    """One process per part: a second one (a retry racing a still-running attempt, two workers given
    the same shard) fails at once instead of writing the same rows."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ShardError(f"{folder.name}: another process is extracting this shard (pid {f.read().strip()})") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def run_shard(p: Params, paths: Paths, i: int, S: int, threads: int | None = None) -> Path:
    """Shard ``i`` of ``S`` (0-based): its rows of every split into ``<features>.shards/<i>-of-<S>/``.
    A finished part of the same fingerprint is kept (nothing to do); one of another is redone."""
    if not 0 <= i < S:
        raise ValueError(f"shard {i} of {S}: want 0 <= i < S")
    _set_threads(p, threads)
    job = Job.of(p, paths)
    ranges = _plan(p, job, S)[i]
    fp = shard_fingerprint(job, p, i, S, ranges)
    folder = part_dir(paths, i, S)
    with _part_lock(folder):
        state = _part_state(folder, fp)
        if state == "done":
            log.info("shard %d/%d: %s is complete, nothing to do", i, S, folder)
            return folder
        if state == "stale":
            log.warning("shard %d/%d: %s was written by other code or params: redoing it", i, S, folder)
            shutil.rmtree(folder)
        t0 = time.perf_counter()
        enc = FrameEncoders.load(p, paths.encoders)
        writer = StoreWriter(folder, fp)
        scratch_key(paths).stamp(writer.partial, p)
        failures = _extract_rows(p, job, writer, enc, ranges, desc=f"shard {i}/{S}")
        with open(writer.partial / "failures.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["split", "video_id", "path", "reason"])
            w.writerows(_failure_rows(failures, paths.prepared))
        specs = enc.specs(p.frames.T, len(job.classes))
        videos = sum(b - a for a, b in ranges.values())
        seconds = time.perf_counter() - t0
        writer.finalize({"shard": i, "of": S, "ranges": {k: list(v) for k, v in ranges.items()},
                         "store_fingerprint": job.fingerprint, "sizes": enc.sizes, "failures": len(failures),
                         "specs": {k: {"shape": list(s.shape), "dtype": s.dtype} for k, s in specs.items()},
                         "videos": videos, "seconds": seconds})
        log.info("shard %d/%d: %d videos in %.1f s (%.2f videos/s)", i, S, videos, seconds, videos / max(seconds, 1e-9))
    return folder


def _copy_part(dst: SplitWriter, part: FeatureStore, split: str, start: int) -> int:
    """The rows of one part's split into the merged split at ``start``; returns how many."""
    return dst.write_rows(start, {name: part.array(split, name) for name in dst.specs})


def merge_shards(p: Params, paths: Paths, S: int) -> Path:
    """Check every part, copy their rows into ``<features>.partial`` (started over), publish it.

    A part is merged only when it is complete and carries the fingerprint these params, inputs and
    this code give shard i (else :class:`StoreError` names it: rerun that shard); its ids must be the
    manifest's ids of its range and the ranges must tile every split. The store appears only by the
    final rename (:meth:`StoreWriter.finalize`), so a merge killed midway publishes nothing and the
    next one starts over; the parts are removed after publishing."""
    job = Job.of(p, paths)
    plan = _plan(p, job, S)
    parts = []
    for i, ranges in enumerate(plan):
        folder = part_dir(paths, i, S)
        state = _part_state(folder, shard_fingerprint(job, p, i, S, ranges))
        if state != "done":
            why = "is not finished" if state == "missing" else "was written by other code or params"
            raise StoreError(f"shard {i}/{S}: {folder} {why}; run it (`python -m components.stages.extract "
                             f"--shard {i}/{S}`) before merging")
        parts.append(FeatureStore(folder))
    specs = {k: ArraySpec(tuple(v["shape"]), v["dtype"]) for k, v in parts[0].meta["specs"].items()}
    if any(part.meta["specs"] != parts[0].meta["specs"] for part in parts):
        raise StoreError("shard parts disagree on the arrays' shapes: rerun the shards")
    writer = StoreWriter(paths.features, job.fingerprint, fresh=True)
    scratch_key(paths).stamp(writer.partial, p)
    failures: list[list[str]] = []
    for split in SPLITS:
        ids = [r.video_id for r in job.records[split]]
        sw = writer.split(split, ids, specs)
        row = 0
        for i, part in enumerate(parts):
            a, b = plan[i][split]
            if a == b:
                continue
            if row != a or part.ids(split) != ids[a:b]:
                raise StoreError(f"shard {i}/{S}: {split} rows {a}:{b} do not continue the merge at row {row} "
                                 "or hold other videos")
            row += _copy_part(sw, part, split, a)
        if row != len(ids):
            raise StoreError(f"{split}: the shards hold {row} of {len(ids)} rows")
        sw.checkpoint(row)
        sw.close()
        for part in parts:
            with open(part.folder / "failures.csv", newline="") as f:
                failures += [r for r in csv.reader(f) if r and r[0] == split]
    if sum(int(part.meta["failures"]) for part in parts) != len(failures):
        raise StoreError("the parts' failures.csv do not match their meta.json: rerun the shards")
    out = _publish(p, job, writer, failures, parts[0].meta["sizes"])
    shutil.rmtree(shards_dir(paths), ignore_errors=True)  # the parts, their logs and locks
    return out


# ------------------------------------------------------------------------------ local launcher
def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_shards_locally(p: Params, paths: Paths, command: Callable[[int, int, int], list[str]], *,
                       parallel: int | None = None, threads: int | None = None,
                       env: dict[str, str] | None = None) -> dict:
    """Run the ``S = extract.shards`` shards as processes on this machine, then :func:`merge_shards`.

    ``command(i, S, threads)`` is the shard's command line. At most ``parallel`` (default
    ``min(S, cores)``) run at once, each with ``threads`` torch threads: by default those of the
    one-process run (``train_encoders.threads``, else this process's count), because the encoders'
    float results depend on torch's thread count (measured: 1 vs 2 threads differ in the last bits of
    a few rows) and the merged store must be byte-identical to that run's. That oversubscribes the
    cores when the shards share one CPU machine (2 cores, 2 shards x 2 threads: 0.72x the one-process
    speed); ``threads = cores // S`` does not (1.42x; on the demo that store was byte-identical too, but
    this is not guaranteed). ``extract.threads: cores // S`` gives both, for the one-process run too. Finished parts are not rerun. A shard that exits non-zero is
    started again, alone (the others keep their work), up to ``extract.shard_retries`` times; after
    that the launcher waits for the running ones and raises :class:`ShardError` naming the shard, its
    exit status and the tail of its log (``<features>.shards/<i>-of-<S>.log``), before any merge.
    Interrupted, it stops its shard processes. Returns attempts and process seconds per shard, each
    part's videos and extraction seconds (without the process's start), and the merge's seconds."""
    S = p.extract.shards
    cores = os.cpu_count() or 1
    parallel = max(1, min(S, parallel or cores))
    threads = threads or p.extract.threads or p.train_encoders.threads or torch.get_num_threads()
    job = Job.of(p, paths)
    folder = shards_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    todo = collections.deque(i for i in range(S) if not shard_done(p, paths, i, S, job))
    attempts = {i: 0 for i in range(S)}
    seconds: dict[int, float] = {}
    running: dict[int, tuple[Proc, float]] = {}
    failed: list[str] = []
    log.info("extract: %d shards (%d to run), %d at a time, %d torch threads each", S, len(todo), parallel, threads)
    try:
        while todo or running:
            while todo and len(running) < parallel and not failed:
                i = todo.popleft()
                attempts[i] += 1
                logf = folder / f"{i}-of-{S}.log"
                with open(logf, "a") as f:
                    f.write(f"=== shard {i}/{S} attempt {attempts[i]} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
                running[i] = (start_group(command(i, S, threads), name=f"shard {i}/{S}", env=env, log_path=logf),
                              time.perf_counter())
            if failed and not running:
                break
            time.sleep(0.2)
            for i, (proc, t0) in list(running.items()):
                rc = proc.popen.poll()
                if rc is None:
                    continue
                del running[i]
                if rc == 0:
                    seconds[i] = time.perf_counter() - t0
                    log.info("shard %d/%d done in %.1f s (attempt %d)", i, S, seconds[i], attempts[i])
                    continue
                tail = _tail(proc.log_path)
                if attempts[i] <= p.extract.shard_retries:
                    log.warning("shard %d/%d failed (exit %d, attempt %d of %d): running it again alone; "
                                "last lines of %s:\n%s", i, S, rc, attempts[i], p.extract.shard_retries + 1,
                                proc.log_path, tail)
                    todo.appendleft(i)
                else:
                    failed.append(f"shard {i}/{S} failed {attempts[i]} times (last exit {rc}); last lines of "
                                  f"{proc.log_path}:\n{tail}")
    finally:
        for proc, _ in running.values():  # interrupted (Ctrl-C, SIGTERM): no shard left writing
            stop_group(proc, signals=(signal.SIGTERM,), grace=10)
    if failed:
        raise ShardError("\n".join(failed))
    parts = {i: json.loads((part_dir(paths, i, S) / "meta.json").read_text()) for i in range(S)}
    t0 = time.perf_counter()
    merge_shards(p, paths, S)
    return {"attempts": attempts, "shard_seconds": seconds, "merge_seconds": time.perf_counter() - t0,
            "threads": threads, "parallel": parallel,
            "parts": {i: {"videos": m["videos"], "seconds": m["seconds"]} for i, m in parts.items()}}


def write_params(p: Params, paths: Paths) -> Path:
    """The params a launcher hands its shard processes (``<features>.shards/params.yaml``)."""
    return atomic_write_text(shards_dir(paths) / "params.yaml", yaml.safe_dump(to_dict(p), sort_keys=False))


__all__ = ["Job", "ShardError", "extract_store", "plan_shards", "run_shard", "merge_shards", "run_shards_locally",
           "shard_done", "shards_dir", "part_dir", "write_params"]
