"""`salient benchmark`: a profile merged over params.yaml and validated, run by real `dvc repro` in a
workspace of its own (the checkout's outputs untouched), recorded whole only when the run finished."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.app.profile_run import merge, profile_params, record, run_benchmark
from components.core.params import ParamsError
from tests.conftest import copy_tiny_project

BIN = Path(sys.executable).parent


def test_merge_replaces_leaves_and_ablations_whole():
    base = {"a": {"b": 1, "c": 2}, "ablations": {"x": {"sampler": "nsnet"}, "y": {"sampler": "tsqnet"}}}
    got = merge(base, {"a": {"c": 3}, "ablations": {"z": {"sampler": "nsnet"}}})
    assert got == {"a": {"b": 1, "c": 3}, "ablations": {"z": {"sampler": "nsnet"}}}
    assert base["a"]["c"] == 2  # not modified in place


def test_the_shipped_profile_is_valid_and_big_enough(tmp_path):
    """profiles/benchmark.yaml: >= 1,000 videos, >= 360 test videos, >= 3 pipeline seeds, the fine regime."""
    from components.data.synthetic import split_counts

    root = Path(__file__).resolve().parents[1]
    t = profile_params(root, root / "profiles/benchmark.yaml")
    s = t["data"]["synthetic"]
    per_class = split_counts(s["videos_per_class"], tuple(s["split"]))
    assert s["num_classes"] * s["videos_per_class"] >= 1000 and s["num_classes"] * per_class[2] >= 360
    assert len(t["pipeline"]["seeds"]) >= 3 and s["fine_classes"] > 1
    assert t["frames"]["light_size"] * 2 <= t["frames"]["recognizer_size"]


def test_a_bad_profile_names_the_key(tmp_path):
    root = Path(__file__).resolve().parents[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_sampler: {epochz: 3}\n")
    with pytest.raises(ParamsError, match="epochz"):
        profile_params(root, bad)


def test_a_profile_extends_another(tmp_path):
    """``extends:`` merges the profile over its parent (nested keys merged, ablations replaced);
    the shipped ablations profile is the benchmark's data and schedule with the 16 papers' ablations."""
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "parent.yaml").write_text("data: {synthetic: {noise: 5.0, jitter: 1}}\n"
                                          "ablations: {a: {sampler: nsnet, set: [nsnet.fem=mlp]}}\n")
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\ndata: {synthetic: {jitter: 2}}\n"
                                         "ablations: {b: {sampler: tsqnet, set: [tsqnet.init=random]}}\n")
    t = profile_params(root, tmp_path / "child.yaml")
    assert t["data"]["synthetic"]["noise"] == 5.0 and t["data"]["synthetic"]["jitter"] == 2
    assert list(t["ablations"]) == ["b"]
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ParamsError, match="loops back"):
        profile_params(root, tmp_path / "loop.yaml")
    bench = profile_params(root, root / "profiles/benchmark.yaml")
    abl = profile_params(root, root / "profiles/ablations.yaml")
    assert {k: v for k, v in abl.items() if k != "ablations"} == {k: v for k, v in bench.items() if k != "ablations"}
    assert len(abl["ablations"]) == 17 and {a["sampler"] for a in abl["ablations"].values()} == {"tsqnet", "nsnet", "avgn"}


def test_partial_run_in_its_own_workspace_records_nothing(tmp_path, monkeypatch):
    """A real `dvc repro prepare` in the workspace: the merged params are there, the project's own
    params.yaml and outputs are untouched, and a partial run records nothing."""
    project = copy_tiny_project(tmp_path / "proj")
    before = (project / "params.yaml").read_text()
    (project / "profiles").mkdir(exist_ok=True)
    (project / "profiles/mini.yaml").write_text("pipeline: {seeds: [0, 1]}\ndata: {synthetic: {noise: 5.0}}\n")
    monkeypatch.setenv("SALIENT_TRACKING", "0")
    monkeypatch.setenv("PATH", f"{BIN}:{__import__('os').environ['PATH']}")
    rc = run_benchmark(project, project / "profiles/mini.yaml", targets=["prepare"])
    assert rc == 0
    ws = project / ".salient/bench/mini"
    p = yaml.safe_load((ws / "params.yaml").read_text())
    assert p["pipeline"]["seeds"] == [0, 1] and p["data"]["synthetic"]["noise"] == 5.0
    assert p["data"]["synthetic"]["num_classes"] == 3  # the project's (tiny) value, kept
    assert (ws / "data/prepared/manifest.csv").exists() and not (project / "data/prepared").exists()
    assert (project / "params.yaml").read_text() == before
    assert not (project / "benchmarks").exists()
    stages = subprocess.run([str(BIN / "dvc"), "stage", "list", "--name-only"], cwd=ws, capture_output=True,
                            text=True, check=True).stdout.split()
    assert {"train_encoders@0", "train_encoders@1", "summary"} <= set(stages)


def test_record_swaps_the_folder_whole(tmp_path):
    ws, dest = tmp_path / "ws", tmp_path / "benchmarks/b"
    (ws / "reports/s0").mkdir(parents=True)
    (ws / "dvc.lock").write_text("lock")
    (ws / "params.yaml").write_text("p")
    (ws / "reports/s0/x.json").write_text("{}")
    (ws / "results/s0").mkdir(parents=True)
    (ws / "results/s0/curves.csv").write_text("sampler\n")
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("old run")
    record(ws, dest, 12.3, Path("profiles/b.yaml"))
    assert sorted(f.name for f in dest.iterdir()) == ["dvc.lock", "params.yaml", "reports", "results", "timing.json"]
    assert (dest / "results/s0/curves.csv").read_text() == "sampler\n"
    assert json.loads((dest / "timing.json").read_text())["wall_seconds"] == 12.3
    assert not any(f.name.endswith((".tmp", ".old")) for f in dest.parent.iterdir())
