"""Stages on real files: bad input through `prepare`, the feature store `extract` writes, resume,
rows that fail to decode, and the `salient validate` command."""
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import pytest

from components.data.manifest import read_manifest
from components.store.features import FrameEncoders
from components.core.params import load_params
from components.core.paths import Paths
from components.stages import extract, headroom, prepare
from components.store.feature_store import FeatureStore
from tests.conftest import ROOT, TINY, write_video


def _bad_inputs(folder: Path) -> dict[str, str]:
    """name -> expected quarantine reason; good videos are written too."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_video(folder / f"good{i}.mp4", num_frames=20, audio=i % 2 == 0)
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    full = write_video(folder / "full.mp4", num_frames=40).read_bytes()
    (folder / "cut.mp4").write_bytes(full[: int(len(full) * 0.4)])
    (folder / "full.mp4").unlink()
    write_video(folder / "one.mp4", num_frames=1)
    write_video(folder / "audio_only.mp4", video=False)
    return {"zero.mp4": "empty_file", "noise.mp4": "not_a_video", "text.mp4": "not_a_video", "cut.mp4": "truncated",
            "one.mp4": "too_few_frames", "audio_only.mp4": "no_video_stream", "gone.mp4": "missing"}


def test_prepare_quarantines_bad_input_and_keeps_going(tmp_path):
    vids = tmp_path / "videos"
    expected = _bad_inputs(vids)
    names = [f"good{i}.mp4" for i in range(4)] + list(expected)
    lines = ["path,label,split"] + [f"{n},{'a' if i % 2 else 'b'},{['train', 'val', 'test'][i % 3]}" for i, n in enumerate(names)]
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    p = load_params(ROOT / "params.yaml", ["data.dataset=csv", f"data.root={vids}", f"data.annotations={tmp_path / 'ann.csv'}",
                                           "data.workers=1"])
    paths = Paths().under(tmp_path / "proj")
    prepare.run(p, paths)
    recs, classes = read_manifest(paths.prepared)
    assert sorted(Path(r.path).name for r in recs) == [f"good{i}.mp4" for i in range(4)]
    assert classes == ["a", "b"]
    assert [r.has_audio for r in sorted(recs, key=lambda r: r.path)] == [True, False, True, False]
    import csv
    rows = list(csv.DictReader(open(paths.reports / "quarantine.csv")))
    got = {Path(r["path"]).name: r["reason"] for r in rows}
    assert got == expected
    assert all(r["detail"] for r in rows)
    summary = json.loads((paths.reports / "prepare.json").read_text())
    assert summary["videos"] == 4 and summary["quarantined"] == len(expected)


def test_salient_validate_command(tmp_path):
    expected = _bad_inputs(tmp_path / "v")
    exe = Path(sys.executable).with_name("salient")
    out = subprocess.run([str(exe), "validate", str(tmp_path / "v"), str(tmp_path / "v" / "gone.mp4"), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stderr  # some files are unusable
    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)}
    assert {k: v["reason"] for k, v in rows.items() if not v["ok"]} == expected
    assert all(rows[f"good{i}.mp4"]["ok"] for i in range(4))
    table = subprocess.run([str(exe), "validate", str(tmp_path / "v" / "good0.mp4")], capture_output=True, text=True)
    assert table.returncode == 0 and "1 files, 1 ok, 0 unusable" in table.stdout


def test_feature_store_contents(tiny_pipeline, tiny_params):
    store = FeatureStore(tiny_pipeline.features)
    recs, classes = read_manifest(tiny_pipeline.prepared)
    T, C = tiny_params.frames.T, len(classes)
    assert store.T == T and store.classes == classes
    test = [r for r in recs if r.split == "test"]
    assert store.ids("test") == [r.video_id for r in test]
    shapes = {k: store.array("test", k).shape for k in ("light_feats", "object_scores", "rec_feats", "rec_logits",
                                                        "audio_emb", "gt", "labels")}
    N = len(test)
    assert shapes["rec_logits"] == (N, T, C) and shapes["object_scores"] == (N, T, 1000)
    assert shapes["light_feats"][:2] == (N, T) and shapes["audio_emb"] == (N, T, 16)
    obj = np.asarray(store.array("test", "object_scores"))
    assert np.allclose(obj.sum(-1), 1, atol=1e-4)  # softmax over ImageNet classes
    fi = np.asarray(store.array("test", "frame_indices"))
    from components.data.video import uniform_indices
    for r, row in zip(test, fi):
        assert row.tolist() == uniform_indices(r.num_frames, T).tolist()
        assert np.asarray(store.array("test", "gt"))[test.index(r)].tolist() == r.gt_codes()[row].tolist()
    ha = np.asarray(store.array("test", "has_audio"))
    assert ha.tolist() == [r.has_audio for r in test]
    emb = np.asarray(store.array("test", "audio_emb"))
    assert (emb[~ha] == 0).all()  # no audio -> masked, never invented
    assert store.load("text_objects").shape == (1000, 384) and store.load("text_classes").shape == (C, 384)


def test_train_encoders_fine_tunes_pretrained_encoders_at_their_own_lr(tiny_pipeline, tiny_params):
    """The ImageNet light encoder trains at pretrained_lr, the from-scratch ones at lr (written to the report)."""
    import json

    rep = json.loads((tiny_pipeline.reports / "train_encoders.json").read_text())
    t = tiny_params.train_encoders
    assert tiny_params.encoders.light_weights != "none" and t.pretrained_lr != t.lr
    assert rep["light"]["lr"] == t.pretrained_lr
    assert rep["recognizer"]["lr"] == rep["audio"]["lr"] == t.lr
    ck = torch.load(tiny_pipeline.encoders / "light.pt", map_location="cpu", weights_only=False)
    assert ck["history"][0]["lr"] == t.pretrained_lr  # the engine's first epoch ran at it


def test_extract_resume_equals_uninterrupted_and_failed_video_is_marked(tiny_pipeline, tiny_params, tmp_path):
    """Kill extraction mid-way (an exception after some checkpoints), rerun: same store as one clean run.
    A video that stops decoding after `prepare` gets valid=False, zeros, and a failures.csv row."""
    paths = replace(tiny_pipeline, features=tmp_path / "features")
    recs, _ = read_manifest(paths.prepared)
    victim = [r for r in recs if r.split == "val"][0]
    work = tmp_path / "prepared"
    shutil.copytree(paths.prepared, work)
    paths = replace(paths, prepared=work)
    Path(read_manifest(work)[0][recs.index(victim)].path).write_bytes(b"\0" * 100)  # corrupt after prepare

    calls = {"n": 0}
    original = FrameEncoders.encode

    def dying(self, clips):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # like a SIGINT in the middle of the train split
        return original(self, clips)

    FrameEncoders.encode = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            extract.run(tiny_params, paths)
    finally:
        FrameEncoders.encode = original
    partial = paths.features.with_name("features.partial")
    assert partial.exists() and not (paths.features / "meta.json").exists()
    done = json.loads((partial / "train" / "progress.json").read_text())["done"]
    assert 0 < done < 8
    extract.run(tiny_params, paths)
    store, ref = FeatureStore(paths.features), FeatureStore(tiny_pipeline.features)
    assert not partial.exists()
    for split in ("train", "test"):
        for k in ("rec_logits", "light_feats", "object_scores", "audio_emb"):
            assert np.allclose(store.array(split, k), ref.array(split, k), atol=1e-5), (split, k)
    valid = np.asarray(store.array("val", "valid"))
    vi = store.ids("val").index(victim.video_id)
    assert not valid[vi] and valid.sum() == len(valid) - 1
    assert (np.asarray(store.array("val", "rec_logits"))[vi] == 0).all()
    assert victim.video_id in (paths.features / "failures.csv").read_text()
    assert store.meta["failures"] == 1


def test_headroom_stage_reports_oracle_vs_uniform(tiny_pipeline, tiny_params, tmp_path):
    paths = replace(tiny_pipeline, reports=tmp_path)
    res = headroom.run(tiny_params, paths)
    assert set(res["by_k"]) == {"1", "2", "3"}
    # recall@K divides by min(K, #salient): the oracle takes every salient frame it can, so it is exactly 1
    assert res["by_k"]["3"]["oracle"]["salient_recall"] == 1.0
    assert (tmp_path / "headroom.md").read_text().startswith("# Headroom")
    assert set(res["light_frame_acc"]) == set(res["frame_acc"]) == {"salient", "distractor", "generic", "lowq"}
    assert "light encoder's classifier" in (tmp_path / "headroom.md").read_text()


def test_frame_accuracy_by_kind_hand_computed():
    logits = np.array([[[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]])  # one video, 3 frames: argmax 0, 1, 1
    labels = np.array([[1, 0]])  # class 0
    kinds = {"salient": np.array([[True, True, False]]), "generic": np.array([[False, False, True]]),
             "lowq": np.zeros((1, 3), bool)}
    assert headroom.frame_accuracy(logits, labels, kinds) == {"salient": 0.5, "generic": 0.0, "lowq": None}


def _copy_inputs(src, dst, *names):
    import shutil

    for n in names:
        shutil.copytree(getattr(src, n), getattr(dst, n))


def test_train_encoders_does_not_depend_on_the_generator_state_it_finds(tiny_pipeline, tiny_params, tmp_path):
    """The light encoder's new classifier head used to be drawn before training seeded the generator:
    two processes whose generators had moved differently (a resumed bank, another import order) wrote
    different encoders. Now the stage seeds before it builds any module."""
    from components.core.paths import Paths
    from components.stages import train_encoders

    p = load_params(ROOT / "params.yaml", [*TINY, "train_encoders.epochs=1"])
    out = {}
    for i, state in enumerate((1, 12345)):
        paths = Paths().under(tmp_path / str(i))
        _copy_inputs(tiny_pipeline, paths, "prepared")
        torch.manual_seed(state)  # what ran before the stage in this process
        torch.rand(state % 97)
        train_encoders.run(p, paths)
        out[i] = {r: (paths.encoders / f"{r}.pt").read_bytes() for r in ("light", "recognizer", "audio")}
        assert not any((paths.work / "train_encoders").glob("*/last.pt"))  # outputs written: checkpoints gone
    assert out[0] == out[1]


def test_a_finished_sampler_is_retrained_not_resumed(tiny_samplers, tiny_params, tmp_path, monkeypatch):
    """A rerun of a finished stage (dvc repro -f, or a code change DVC saw) trains again: the resume
    checkpoints are deleted with the outputs written, and they are keyed by the training code."""
    from components.training import engine, sampler_training
    from components.stages import train_sampler

    calls = []
    real_fit = engine.fit
    monkeypatch.setattr(sampler_training, "fit", lambda *a, **k: calls.append(a[5]) or real_fit(*a, **k))
    train_sampler.run(tiny_params, tiny_samplers, "nsnet")
    assert calls and not any(d.exists() for d in calls)  # trained; its checkpoint folders are gone
    first = (tiny_samplers.data / "samplers" / "nsnet" / "seed0.pt").read_bytes()
    calls.clear()
    train_sampler.run(tiny_params, tiny_samplers, "nsnet")
    assert calls and (tiny_samplers.data / "samplers" / "nsnet" / "seed0.pt").read_bytes() == first  # retrained, same bytes


def test_code_fingerprint_follows_the_imported_files(tmp_path, monkeypatch):
    from components.core import hashing

    for rel, src in {"components/__init__.py": "", "components/a.py": "from components import b\n",
                     "components/b.py": "X = 1\n", "components/c.py": "Y = 2\n", "flows/__init__.py": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(src)
    monkeypatch.setattr(hashing, "PROJECT_ROOT", tmp_path)
    fp = lambda: (hashing.code_fingerprint.cache_clear(), hashing.code_fingerprint("components.a"))[1]  # noqa: E731
    a = fp()
    (tmp_path / "components/c.py").write_text("Y = 3\n")  # not imported by a
    assert fp() == a
    (tmp_path / "components/b.py").write_text("X = 2\n")  # imported by a
    assert fp() != a
    hashing.code_fingerprint.cache_clear()


LAUNCHED = """
import time
from components.core.runtime import end_with_launcher
from components.tracking import mlflow_tracking as tracking
print("watching" if end_with_launcher(interval=0.2) else "no launcher", flush=True)
with tracking.stage_run("extract", {"a": 1}):
    time.sleep(600)
"""


def test_a_stage_ends_when_its_dvc_launcher_is_killed(tmp_path):
    """Issue 12 item 4: SIGTERM to `dvc repro` left the stage running after dvc exited. A stand-in
    launcher named `dvc` runs the stage through `sh -c`, as DVC does; killing it ends the stage."""
    import os
    import signal
    import stat
    import sys

    import psutil

    fake = tmp_path / "dvc"
    fake.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                    f"subprocess.run(['sh', '-c', {repr(sys.executable)} + ' -c \"$0\"', sys.argv[1]])\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "SALIENT_TRACKING": "0"}
    launcher = subprocess.Popen([str(fake), LAUNCHED], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline().strip() == "watching"
        stage = [p for p in psutil.Process(launcher.pid).children(recursive=True)
                 if p.cmdline()[:2] == [sys.executable, "-c"]]  # not the shell between them
        assert len(stage) == 1
        os.kill(launcher.pid, signal.SIGTERM)
        launcher.wait(timeout=30)
        gone, alive = psutil.wait_procs(stage, timeout=15)
        for p in alive:
            p.kill()
        assert not alive, "the stage outlived its launcher"
    finally:
        launcher.kill()


def test_stage_times_are_read_back_slowest_first_with_their_shares(tmp_path):
    """Each stage process leaves its times; the demo's table lists those after its start, slowest first."""
    import time as _time

    from components.ops.stage_runner import record_stage_time, stage_time_table, stage_times

    folder = tmp_path / "times"
    (folder).mkdir()
    (folder / "old.json").write_text(json.dumps({"stage": "old", "run_seconds": 9.0, "process_seconds": 99.0,
                                                 "finished": 1.0}))  # before this run: not listed
    (folder / "broken.json").write_text("{")  # a damaged file is skipped, never a crash
    since = _time.time()
    record_stage_time("fast", 1.0, folder)
    record_stage_time("slow", 2.0, folder)
    for name, run_s, proc_s in (("fast", 1.0, 1.0), ("slow", 2.0, 3.0)):  # fixed values, hand-checkable
        (folder / f"{name}.json").write_text(json.dumps({"stage": name, "run_seconds": run_s,
                                                         "process_seconds": proc_s, "finished": since + 1}))
    rows = stage_times(since, folder)
    assert [r["stage"] for r in rows] == ["slow", "fast"]
    table = stage_time_table(rows, wall=5.0).splitlines()
    assert table[2] == "| slow | 3.0 | 2.0 | 75.0% |" and table[3] == "| fast | 1.0 | 1.0 | 25.0% |"
    assert "**4.0**" in table[4] and "5.0" in table[5]
