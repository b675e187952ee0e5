"""Sharded extraction (components/store/extraction.py, the extract stage's --shard / launcher, flows/extract_shards.py):
the plan tiles every split on the one-process loop's flush points; 2 shard processes + merge give a
store byte-identical (every file's sha256) to the one-process store of the tiny pipeline, with a shard
killed on its first attempt retried alone; a merge that crashes midway publishes nothing and the next
one completes; a part written with other params is refused by the merge and redone by its shard; the
Prefect flow (2 shard tasks + the merge task) in this process gives the same bytes."""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from components.store import extraction
from components.store.extraction import merge_shards, part_dir, plan_shards, run_shard, shards_dir
from components.store.feature_store import FeatureStore, StoreError


def _digests(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def threads():
    """Torch's default thread count in a fresh process (what a stage and a shard run with): the
    encoders' last bits depend on it, so the reference and the shards use the same."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.fixture(autouse=True)
def _torch_threads(threads):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the launcher hands its own count to the shard processes
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(tiny_pipeline, tmp_path_factory):
    """The tiny pipeline's paths with a copy of its prepared data in which one train and one val video
    stop decoding (so failures.csv and the valid masks are part of what must be identical)."""
    from components.data.manifest import read_manifest

    work = tmp_path_factory.mktemp("prepared") / "prepared"
    shutil.copytree(tiny_pipeline.prepared, work)
    recs, _ = read_manifest(work)
    for split in ("train", "val"):
        Path(next(r for r in recs if r.split == split).path).write_bytes(b"\0" * 100)
    return replace(tiny_pipeline, prepared=work)


@pytest.fixture(scope="module")
def reference(base, tiny_params, tmp_path_factory, threads):
    """sha256 of every file of the one-process store (extracted in this process)."""
    import torch

    from components.store.extraction import extract_store

    before = torch.get_num_threads()
    paths = replace(base, features=tmp_path_factory.mktemp("ref") / "features")
    extract_store(tiny_params, paths, threads=threads)
    torch.set_num_threads(before)
    d = _digests(paths.features)
    assert {"meta.json", "failures.csv", "text_objects.npy", "train/rec_feats.npy", "test/ids.txt"} <= set(d)
    assert len((paths.features / "failures.csv").read_text().splitlines()) == 3  # header + 2 videos
    return d


def _sharded(tiny_params, S: int = 2, **extract):
    return replace(tiny_params, extract=replace(tiny_params.extract, shards=S, **extract))


# ------------------------------------------------------------------------------ the plan (fast)
def test_plan_tiles_each_split_on_flush_points():
    sizes = {"train": 10, "val": 3, "test": 0}
    for S in (1, 2, 3, 7):
        plan = plan_shards(sizes, S, flush_every=4)
        for split, n in sizes.items():
            ranges = [plan[i][split] for i in range(S)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a <= b and b == c for (a, b), (c, _) in zip(ranges, ranges[1:] + [(n, n)]))
            assert all(a % 4 == 0 for a, b in ranges if a < b), ranges  # every non-empty part starts on a flush point
    # chunks 4, 4, 2 (train) and 3 (val): 13 videos, shard 1 starts at the boundary nearest 6.5
    assert plan_shards(sizes, 2, 4) == [{"train": (0, 8), "val": (0, 0), "test": (0, 0)},
                                        {"train": (8, 10), "val": (0, 3), "test": (0, 0)}]
    assert plan_shards({"train": 168}, 3, 64) == [{"train": (0, 64)}, {"train": (64, 128)}, {"train": (128, 168)}]
    assert [r["train"] for r in plan_shards({"train": 5}, 3, 4)] == [(0, 0), (0, 4), (4, 5)]  # an empty shard is allowed


# ------------------------------------------------------------------------------ the stage's launcher
def _kill_first(pattern: str, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first process of ours whose command line contains ``pattern`` (a real crash)."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for c in me.children(recursive=True):
            try:
                if pattern in " ".join(c.cmdline()):
                    c.kill()
                    killed.append(c.pid)
                    return
            except psutil.Error:
                pass
        time.sleep(0.02)


def test_two_shards_byte_identical_and_a_killed_shard_is_retried_alone(tmp_path, base, tiny_params,
                                                                       reference, caplog):
    from components.stages import extract

    p = _sharded(tiny_params, shard_retries=1)
    paths = replace(base, features=tmp_path / "features")
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_first, args=("--shard 1/2", stop, killed), daemon=True)
    watcher.start()
    caplog.set_level(logging.INFO)
    try:
        assert extract.run(p, paths) == paths.features
    finally:
        stop.set()
        watcher.join(5)
    assert killed, "shard 1 was never seen running"
    starts = _count(r"started shard (\d)/2", caplog.text)
    assert starts == {"0": 1, "1": 2}, caplog.text[-3000:]  # shard 0 ran once; shard 1 again, alone
    assert re.search(r"shard 1/2 failed \(exit -9, attempt 1 of 2\)", caplog.text)
    assert _digests(paths.features) == reference
    assert not shards_dir(paths).exists() and not paths.features.with_name("features.partial").exists()


def _count(pattern: str, text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in re.finditer(pattern, text):
        out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def test_a_shard_failing_every_attempt_names_itself_and_nothing_is_published(tmp_path, base, tiny_params):
    from components.store.extraction import ShardError, run_shards_locally

    p = _sharded(tiny_params, shard_retries=1)
    paths = replace(base, features=tmp_path / "features")

    def command(i, S, threads):  # shard 1 cannot start: a bad interpreter argument
        return ["python3", "-c", f"import sys; print('boom from shard {i}'); sys.exit({3 if i == 1 else 0})"]

    with pytest.raises(ShardError, match=r"(?s)shard 1/2 failed 2 times \(last exit 3\).*boom from shard 1"):
        run_shards_locally(p, paths, command)
    assert not paths.features.exists()


# ------------------------------------------------------------------------------ the merge
def test_a_crashed_merge_publishes_nothing_a_stale_part_is_refused_and_redone(tmp_path, base, tiny_params,
                                                                             reference, monkeypatch):
    p = _sharded(tiny_params)
    paths = replace(base, features=tmp_path / "features")
    for i in range(2):
        run_shard(p, paths, i, 2)
    copy, calls = extraction._copy_part, []

    def crash_on_second(*a, **k):  # a fault in the middle of the merge: after the first part's rows
        calls.append(1)
        if len(calls) == 2:
            raise OSError("injected: disk gone")
        return copy(*a, **k)

    monkeypatch.setattr(extraction, "_copy_part", crash_on_second)
    with pytest.raises(OSError, match="injected"):
        merge_shards(p, paths, 2)
    assert not paths.features.exists() and paths.features.with_name("features.partial").exists()
    with pytest.raises(StoreError, match="no complete feature store"):
        FeatureStore(paths.features)
    monkeypatch.setattr(extraction, "_copy_part", copy)

    # a part written with other params (here: another batch size) is refused, then redone by its shard
    other = replace(p, extract=replace(p.extract, batch_videos=1))
    t_part1 = (part_dir(paths, 1, 2) / "meta.json").stat().st_mtime_ns
    shutil.rmtree(part_dir(paths, 0, 2))
    run_shard(other, paths, 0, 2)
    with pytest.raises(StoreError, match=r"shard 0/2: .* was written by other code or params"):
        merge_shards(p, paths, 2)
    run_shard(p, paths, 0, 2)  # redoes part 0
    run_shard(p, paths, 1, 2)  # part 1 is complete: nothing to do
    assert (part_dir(paths, 1, 2) / "meta.json").stat().st_mtime_ns == t_part1
    merge_shards(p, paths, 2)
    assert _digests(paths.features) == reference


# ------------------------------------------------------------------------------ the Prefect flow
@pytest.mark.slow  # the temporary Prefect server's start: 30-80 s here
def test_extract_flow_two_shard_tasks_and_merge(tmp_path, base, tiny_params, reference):
    """flows/extract_shards.py in this process (temporary Prefect database): 2 shard tasks, then the merge."""
    import yaml
    from prefect.testing.utilities import prefect_test_harness

    from components.core.params import to_dict
    from flows.extract_shards import extract_flow

    project = tmp_path / "proj"
    paths = replace(base, features=project / "data" / "features")
    (project / "data").mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(to_dict(_sharded(tiny_params)), sort_keys=False))
    with prefect_test_harness(server_startup_timeout=180):
        out = extract_flow(project=str(project), prepared=str(paths.prepared), encoders=str(paths.encoders))
    assert out["shards"] == 2 and Path(out["store"]) == paths.features.resolve()
    assert _digests(paths.features) == reference
