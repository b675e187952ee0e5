"""DDP in the one engine (components.core.distributed, components.training.engine) with real torchrun processes on gloo.

* the batch sharding against hand-computed parts;
* 2 and 3 CPU ranks train the tiny trainer (tests/ddp_tiny.py, the real engine) to the same loss
  curve and weights as one process with the same global batch (float64: to 1e-9), including uneven
  parts and a rank with no sample in the last batch;
* a run stopped after epoch 2 under 2 ranks resumes under 1 process and ends where an
  uninterrupted 1-process run ends;
* SIGKILL of one rank ends the whole run with an error naming the rank, well inside the timeout;
* the real ``train_sampler`` stage re-launches itself under torchrun from params
  (``distributed.launcher: torchrun``), and only rank 0 writes outputs and tracks one MLflow run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from components.core import distributed
from components.ops.processes import venv_env

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "ddp_tiny.py"


def _env(**extra) -> dict:
    env = venv_env()
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in extra.items()}})
    return env


def _script(out: Path, nproc: int, **kw) -> list[str]:
    """The launcher's torchrun command, running the tiny trainer script instead of ``-m module``."""
    cmd = distributed.torchrun_command("unused", [], nproc, **kw)
    return cmd[:len(cmd) - 1 - cmd[::-1].index("-m")] + [str(TINY), str(out)]


def _torchrun(nproc: int, out: Path, timeout: float = 240, **extra) -> subprocess.CompletedProcess:
    cmd = _script(out, nproc)
    return subprocess.run(cmd, env=_env(**extra), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _single(out: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TINY), str(out)], env=_env(**extra), capture_output=True, text=True,
                          timeout=240, cwd=ROOT)


def _history(out: Path) -> dict:
    return json.loads((out / "history.json").read_text())


def _assert_same_run(a: dict, b: dict, tol: float = 1e-9) -> None:
    assert len(a["history"]) == len(b["history"])
    for ra, rb in zip(a["history"], b["history"]):
        for k in ("train_loss", "val_loss", "steps", "lr"):
            assert ra[k] == pytest.approx(rb[k], rel=tol, abs=tol), (k, ra, rb)
    np.testing.assert_allclose(a["weights"], b["weights"], rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------- sharding
def test_shard_bounds_split_contiguously_first_ranks_take_the_rest():
    assert [distributed.shard_bounds(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [distributed.shard_bounds(1, r, 3) for r in range(3)] == [(0, 1), (1, 1), (1, 1)]
    assert [distributed.shard_bounds(6, r, 2) for r in range(2)] == [(0, 3), (3, 6)]


def test_shard_batch_slices_every_tensor_of_nested_batches():
    batch = ({"a": torch.arange(5), "b": np.arange(10).reshape(5, 2)}, [torch.ones(5, 3)], "name")
    part, n_local, n_global = distributed.shard_batch(batch, rank=1, world=2)
    assert (n_local, n_global) == (2, 5)
    assert part[0]["a"].tolist() == [3, 4] and part[0]["b"].tolist() == [[6, 7], [8, 9]]
    assert part[1][0].shape == (2, 3) and part[2] == "name"
    with pytest.raises(ValueError, match="differ in length"):
        distributed.shard_batch((torch.zeros(4), torch.zeros(3)), rank=0, world=2)


def test_torchrun_command_is_standalone_on_one_node_and_rendezvous_across_nodes():
    one = distributed.torchrun_command("components.stages.train_sampler", ["--sampler", "nsnet"], 4)
    assert one[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in one
    assert one[one.index("--nproc-per-node") + 1] == "4" and one[-3:] == ["components.stages.train_sampler", "--sampler", "nsnet"][-3:]
    two = distributed.torchrun_command("m", [], 8, nnodes=2, rdzv_endpoint="node0:29400")
    assert "--standalone" not in two and two[two.index("--rdzv-endpoint") + 1] == "node0:29400"
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        distributed.torchrun_command("m", [], 8, nnodes=2)


# ----------------------------------------------------------------------------- real processes
@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "one"
    r = _single(out)
    assert r.returncode == 0, r.stderr[-3000:]
    return _history(out)


def test_two_ranks_give_the_one_process_loss_curve(one_process, tmp_path):
    r = _torchrun(2, tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    two = _history(tmp_path / "two")
    assert two["world"] == 2 and one_process["world"] == 1
    _assert_same_run(one_process, two)
    # rank 1 wrote nothing through components.core.atomic: one history, no temp file left behind
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["ckpt", "history.json", "rank0.pid", "rank1.pid"]
    assert [p.name for p in (tmp_path / "two" / "ckpt").iterdir()] == ["last.pt"]


def test_three_ranks_with_uneven_and_empty_parts_match_one_process(tmp_path):
    # 21 samples in global batches of 10: parts 4/3/3, then a last batch of 1 that ranks 1 and 2 have no share of
    knobs = {"TINY_N": 21, "TINY_BATCH": 10, "TINY_EPOCHS": 3}
    r1 = _single(tmp_path / "one", **knobs)
    r3 = _torchrun(3, tmp_path / "three", **knobs)
    assert r1.returncode == 0 and r3.returncode == 0, (r1.stderr[-2000:], r3.stderr[-2000:])
    _assert_same_run(_history(tmp_path / "one"), _history(tmp_path / "three"))


def test_two_nodes_meet_at_a_c10d_rendezvous_on_loopback(one_process, tmp_path):
    """``distributed.nnodes: 2`` with ``rdzv_endpoint``: two torchrun agents (two "nodes" on this box,
    one process each) meet at node 0's c10d store and train the one-process curve."""
    from components.ops.processes import free_port

    endpoint = f"127.0.0.1:{free_port()}"
    cmd = _script(tmp_path, 1, nnodes=2, rdzv_endpoint=endpoint)
    procs = [subprocess.Popen(cmd, env=_env(SALIENT_RDZV_ID="test"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    two = _history(tmp_path)
    assert two["world"] == 2
    _assert_same_run(one_process, two)


def test_a_two_rank_run_resumes_under_one_process(one_process, tmp_path):
    out = tmp_path / "run"
    r = _torchrun(2, out, TINY_STOP_AFTER=2)  # every rank exits after epoch 2: the checkpoint holds epochs 0-1
    assert r.returncode != 0 and not (out / "history.json").exists()
    r = _single(out)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = _history(out)
    assert resumed["resumed_from"] == 2 and resumed["world"] == 1
    _assert_same_run(one_process, resumed)


def test_a_killed_rank_ends_the_run_with_an_error_not_a_hang(tmp_path):
    out = tmp_path / "kill"
    cmd = _script(out, 2)
    env = _env(TINY_EPOCHS=500, TINY_SLEEP=0.05, TINY_TIMEOUT=30)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        t0 = time.monotonic()
        while not (out / "ckpt" / "last.pt").exists():  # both ranks are inside fit, past epoch 0
            assert proc.poll() is None and time.monotonic() - t0 < 120, "the run did not start"
            time.sleep(0.2)
        victim = int((out / "rank1.pid").read_text())
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
        ended = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert ended < 30 + 20, f"the surviving rank took {ended:.0f} s to stop"
    assert "SIGKILL" in output and "rank" in output.lower(), output[-3000:]
    assert not (out / "history.json").exists()
    rank0 = int((out / "rank0.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(rank0, 0)


@pytest.mark.slow
def test_train_sampler_stage_runs_under_torchrun_from_params(tiny_samplers, tiny_params, tmp_path):
    """The real stage: params choose the launcher; rank 0 alone writes the sampler and one MLflow run."""
    import yaml

    from components.core.params import to_dict

    work = tmp_path / "proj"
    shutil.copytree(Path(tiny_samplers.prepared).parents[1], work, ignore=shutil.ignore_patterns("samplers", "work"))
    params = to_dict(tiny_params)
    params["distributed"].update({"launcher": "torchrun", "nproc": 2, "timeout": 120})
    params["train_sampler"]["seeds"] = [0]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env(SALIENT_TRACKING="1", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = subprocess.run([sys.executable, "-m", "components.stages.train_sampler", "--sampler", "nsnet"], cwd=work,
                       env=env, capture_output=True, text=True, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "torch.distributed.run" in log and "rank 0 of 2 joined" in log and "rank 1 of 2 joined" in log
    assert log.count("stage train_sampler@nsnet finished") == 1  # rank 1 logs warnings only
    out = work / "data" / "samplers" / "nsnet"
    assert (out / "seed0.pt").exists() and (out / "saliency_seed0.npz").exists()
    assert not list(out.glob("*.tmp*"))
    from components.training.sampler_training import load_sampler

    assert load_sampler(out / "seed0.pt").checkpoint_info["name"] == "nsnet"
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    stage_runs = [r for r in runs if r.data.tags.get("dvc.stage") == "train_sampler@nsnet"]
    assert len(stage_runs) == 1 and stage_runs[0].info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" for r in runs)
    history = json.loads((work / "reports" / "samplers" / "nsnet_history.json").read_text())
    assert history and all(np.isfinite(row["train_loss"]) for h in history.values() for row in h)


@pytest.mark.slow
def test_sigterm_to_a_torchrun_stage_ends_every_rank_and_leaves_no_run_running(tiny_samplers, tiny_params, tmp_path):
    """SIGTERM to the stage's process (what `dvc repro` sends when stopped; the stage has become torchrun
    by execv) reaches both ranks: the process exits non-zero, no rank is left alive, and rank 0's MLflow
    run ends KILLED, not RUNNING."""
    import psutil
    import yaml

    from components.core.params import to_dict

    work = tmp_path / "proj"
    shutil.copytree(Path(tiny_samplers.prepared).parents[1], work, ignore=shutil.ignore_patterns("samplers", "work"))
    params = to_dict(tiny_params)
    params["distributed"].update({"launcher": "torchrun", "nproc": 2, "timeout": 60})
    params["train_sampler"].update({"seeds": [0], "epochs": 2000, "patience": 2000})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    db = tmp_path / "mlflow.db"
    env = _env(SALIENT_TRACKING="1", MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    log = tmp_path / "stage.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "components.stages.train_sampler", "--sampler", "nsnet"], cwd=work,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ranks: list = []
    try:
        t0 = time.monotonic()
        while "epoch 1:" not in log.read_text(errors="replace"):  # both ranks are training
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() - t0 < 300, "training did not start"
            time.sleep(0.5)
        ranks = psutil.Process(proc.pid).children(recursive=True)
        assert len([r for r in ranks if "components.stages.train_sampler" in " ".join(r.cmdline())]) == 2
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc != 0
    gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, f"ranks still running after SIGTERM: {[p.pid for p in alive]}"
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    stage = [r for r in runs if r.data.tags.get("dvc.stage") == "train_sampler@nsnet"]
    assert len(stage) == 1 and stage[0].info.status in ("KILLED", "FAILED"), (
        [(r.info.run_name, r.info.status) for r in runs], log.read_text(errors="replace")[-4000:])
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
