"""MLflow tracking (components/tracking/mlflow_tracking.py) against real stores: a SQLite file and a real
``mlflow server`` on loopback. No mocks: runs are read back through MlflowClient or plain REST."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from components.tracking import mlflow_tracking as tracking
from components.core.params import load_params, to_dict
from components.ops.processes import ProcessError, free_port, start_group, stop_group, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    """One database for the module: creating MLflow's schema takes seconds here."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracked(monkeypatch, sqlite_uri):
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    monkeypatch.delenv("SALIENT_PARENT_RUN_ID", raising=False)
    return sqlite_uri


CHILD = """
import sys
from components.tracking import mlflow_tracking as tracking
from components.core.params import load_params, to_dict
evaluate = to_dict(load_params("params.yaml").evaluate)
slice_ = {"evaluate": evaluate, "tsqnet": {"alpha": 0.6, "dims": (1, 2)}, "flag": True}
with tracking.stage_run("prepare", slice_) as run:
    tracking.log_curve("train/loss", [0.9, 0.5, 0.25], start_step=1)
    tracking.log_budget_curve("test/tsqnet", [1, 2, 4], {"mAP": [0.3, 0.5, 0.6], "gmacs": [1.0, 2.0, 4.0]})
    tracking.log_metrics({"val": {"top1": 0.75}}, step=2)
print(run.run_id)
"""


def test_child_run_in_subprocess_nests_under_parent(tracked, tmp_path):
    from mlflow.tracking import MlflowClient

    with tracking.parent_run("pipeline", {"seed": 0}) as parent:
        assert os.environ["SALIENT_PARENT_RUN_ID"] == parent.run_id
        env = {**os.environ, "SALIENT_PARENT_RUN_ID": parent.run_id}
        out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        child_id = out.stdout.strip().splitlines()[-1]
    assert "SALIENT_PARENT_RUN_ID" not in os.environ  # restored on exit

    c = MlflowClient(tracked)
    child, par = c.get_run(child_id), c.get_run(parent.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.run_id
    assert child.info.status == "FINISHED" and par.info.status == "FINISHED"
    assert child.info.experiment_id == par.info.experiment_id
    assert c.get_experiment(child.info.experiment_id).name == "salient"

    # params: the slice flattened to dotted keys, lists as JSON text
    p = child.data.params
    budgets = load_params(ROOT / "params.yaml").evaluate.budgets
    assert p["evaluate.budgets"] == json.dumps(list(budgets))
    assert json.loads(p["evaluate.budgets"]) == list(budgets)
    assert p["tsqnet.alpha"] == "0.6" and p["tsqnet.dims"] == "[1, 2]" and p["flag"] == "true"
    assert par.data.params == {"seed": "0"}

    # provenance tags: git (the repo is the subprocess's working directory), DVC stage, host, version
    t = child.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert t["git.commit"] == head.stdout.strip() and t["git.dirty"] in ("true", "false")
    assert t["dvc.stage"] == "prepare"
    assert t.get("dvc.stage_hash") == tracking.dvc_stage_hash("prepare", ROOT / "dvc.lock")
    assert t["host"] == socket.gethostname() and t["salient.version"]

    # curves: epochs as steps, budgets K as steps
    hist = c.get_metric_history(child_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [(1, 0.9), (2, 0.5), (3, 0.25)]
    gmacs = c.get_metric_history(child_id, "test/tsqnet/gmacs")
    assert sorted((m.step, m.value) for m in gmacs) == [(1, 1.0), (2, 2.0), (4, 4.0)]
    assert [(m.step, m.value) for m in c.get_metric_history(child_id, "val/top1")] == [(2, 0.75)]


def test_exception_marks_run_failed(tracked):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracked)
    with pytest.raises(ZeroDivisionError):
        with tracking.stage_run("train_sampler@tsqnet", {"epochs": 2}) as run:
            run_id = run.run_id
            tracking.log_metrics({"loss": 1.0}, step=0)
            1 / 0
    assert c.get_run(run_id).info.status == "FAILED"
    assert tracking.active_run() is None

    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("train_sampler@nsnet", {"epochs": 2}) as run:
            run_id = run.run_id
            raise KeyboardInterrupt
    assert c.get_run(run_id).info.status == "KILLED"
    tracking.log_metrics({"after": 1.0})  # outside any run: a no-op

    # SIGTERM (a cancelled Prefect flow run, `kill`) in another process: KILLED, exit status 143
    code = ("import os, signal, time\nfrom components.tracking import mlflow_tracking as tracking\n"
            "with tracking.stage_run('extract', {'a': 1}) as run:\n    print(run.run_id, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 143, out.stderr
    assert c.get_run(out.stdout.split()[0]).info.status == "KILLED"

    # a second SIGTERM while the runs are being closed (torchrun forwards its own on shutdown; under load it
    # lands mid-close): both the variant run and the stage run still end KILLED, none stays RUNNING
    code = ("import os, signal, time\nfrom components.tracking import mlflow_tracking as tracking\n"
            "close = tracking.TrackedRun.terminate\n"
            "def twice(self, status):\n    os.kill(os.getpid(), signal.SIGTERM)\n    return close(self, status)\n"
            "tracking.TrackedRun.terminate = twice\n"
            "with tracking.stage_run('train_sampler@avgn', {'a': 1}) as run:\n"
            "    with tracking.variant_run('avgn · train · seed 0') as child:\n"
            "        print(run.run_id, child.run_id, flush=True)\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n        time.sleep(30)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 143, out.stderr
    assert [c.get_run(r).info.status for r in out.stdout.split()] == ["KILLED", "KILLED"], out.stderr[-2000:]


MID_WRITE = """
import os, signal, sys
import mlflow
from components.tracking import mlflow_tracking as tracking
write = mlflow.tracking.MlflowClient.log_batch
def interrupted(self, run_id, *args, **kwargs):
    if kwargs.get("metrics"):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the write is in flight
        sum(range(100000))                    # bytecode runs: a handler that raises does so here
    return write(self, run_id, *args, **kwargs)
mlflow.tracking.MlflowClient.log_batch = interrupted
with tracking.stage_run("train_sampler@nsnet", {"a": 1}) as run:
    with tracking.variant_run("nsnet · train · seed 0") as child:
        print(run.run_id, child.run_id, flush=True)
        child.log_metrics({"loss": 0.5}, step=3)
        print("not reached", flush=True)
"""

LOOP = """
import sys
from components.tracking import mlflow_tracking as tracking
with tracking.stage_run("train_sampler@nsnet", {"a": 1}) as run:
    with tracking.variant_run("nsnet · train · seed 0") as child:
        print(run.run_id, child.run_id, flush=True)
        i = 0
        while True:
            child.log_metrics({"loss": 1.0 / (i + 1), "acc": i}, step=i)
            i += 1
"""


def test_a_sigterm_during_a_write_waits_for_it_and_ends_the_runs_killed(tracked):
    """A SIGTERM raised half-way through a SQL transaction left SQLite's write lock held, so marking the
    runs KILLED failed with "database is locked" and they stayed RUNNING (CI, a torchrun stage stopped
    mid-epoch). The write in flight now completes, then the runs end KILLED with status 143."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracked)
    out = subprocess.run([sys.executable, "-c", MID_WRITE], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 143, out.stderr[-2000:]
    ids = out.stdout.split()
    assert len(ids) == 2, out.stdout  # "not reached" is not printed
    assert [c.get_run(r).info.status for r in ids] == ["KILLED", "KILLED"], out.stderr[-2000:]
    assert [(m.step, m.value) for m in c.get_metric_history(ids[1], "loss")] == [(3, 0.5)]  # the write landed


@pytest.mark.slow
def test_sigterms_at_random_moments_of_a_metric_loop_never_leave_a_run_running(tmp_path):
    """The real race, no patching: a process logs metrics to its own SQLite store as fast as it can and
    gets SIGTERM at six moments; every time it exits 143 within seconds and both runs end KILLED (before
    the fix 4 of 12 such stops left a run RUNNING or hung)."""
    import random
    import time

    from mlflow.tracking import MlflowClient

    rng = random.Random(0)
    for trial in range(6):
        uri = f"sqlite:///{tmp_path / f'loop{trial}.db'}"
        env = {**os.environ, "SALIENT_TRACKING": "1", "MLFLOW_TRACKING_URI": uri}
        env.pop("SALIENT_PARENT_RUN_ID", None)
        proc = subprocess.Popen([sys.executable, "-c", LOOP], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            ids = proc.stdout.readline().split()
            time.sleep(rng.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        c = MlflowClient(uri)
        assert proc.returncode == 143, err[-2000:]
        assert [c.get_run(r).info.status for r in ids] == ["KILLED", "KILLED"], (trial, err[-2000:])


def test_a_sigkilled_stage_run_is_marked_killed_by_the_next_run(tracked):
    """Issue 12 item 1: kill -9 leaves a run RUNNING with no end time; the next run opened on this host
    finds its process gone and marks it KILLED. A live process's run is left alone."""
    import time

    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracked)
    code = ("import time\nfrom components.tracking import mlflow_tracking as tracking\n"
            "with tracking.stage_run('extract', {'a': 1}) as run:\n    print(run.run_id, flush=True)\n"
            "    time.sleep(600)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        killed_id, alive_id = (p.stdout.readline().strip() for p in procs)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(timeout=30)
        assert c.get_run(killed_id).info.status == "RUNNING"  # what SIGKILL leaves behind
        with tracking.stage_run("prepare", {"b": 2}):
            pass
        killed = c.get_run(killed_id)
        assert killed.info.status == "KILLED" and killed.info.end_time is not None
        assert "was gone" in killed.data.tags["salient.reaped"]
        assert c.get_run(alive_id).info.status == "RUNNING"  # still working: left alone
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
        time.sleep(0.1)


def test_disabled_tracking_is_a_noop(monkeypatch, tmp_path):
    db = tmp_path / "off.db"
    monkeypatch.setenv("SALIENT_TRACKING", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.delenv("SALIENT_PARENT_RUN_ID", raising=False)
    with tracking.parent_run("pipeline", {"seed": 0}) as parent:
        assert parent.run_id is None and "SALIENT_PARENT_RUN_ID" not in os.environ
        with tracking.stage_run("prepare", {"a": 1}) as run:
            assert run.run_id is None and not run
            tracking.log_metrics({"x": 1.0}, step=1)
            tracking.log_curve("loss", [1.0, 0.5])
            tracking.log_budget_curve("acc", [1, 2], [0.1, 0.2])
            tracking.log_artifacts([tmp_path])
            run.log_metrics({"y": 2.0})
    assert tracking.register_model("0" * 32, "sampler", "m", "best") is None
    assert not db.exists() and not (tmp_path / "mlartifacts").exists()
    # off means cheap: mlflow is never imported
    code = ("import sys\nfrom components.tracking import mlflow_tracking as tracking\n"
            "with tracking.parent_run('p'):\n    with tracking.stage_run('s', {'a': 1}):\n"
            "        tracking.log_metrics({'x': 1})\nassert 'mlflow' not in sys.modules, 'mlflow imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert not db.exists()


def test_helpers(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(ROOT / "params.yaml")
    assert tracking.tracking_uri(params) == params.tracking.mlflow_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri(params) == "http://127.0.0.1:1"  # the environment wins
    with pytest.raises(ValueError):
        tracking.ui_command(params)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cmd = tracking.ui_command(params)
    assert cmd[cmd.index("--backend-store-uri") + 1] == params.tracking.mlflow_uri
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"

    flat = tracking.flatten_params(to_dict(params.data))
    assert flat["synthetic.split"] == json.dumps(list(params.data.synthetic.split))
    assert flat["synthetic.num_classes"] == str(params.data.synthetic.num_classes)
    assert tracking.flatten_params({"s": "x" * 7000})["s"] == "x" * 6000

    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  a:\n    cmd: x\n    deps:\n    - path: f\n      md5: 1\n"
                    "  b@x:\n    cmd: y\n    outs:\n    - path: g\n      md5: 2\n")
    ha, hb = tracking.dvc_stage_hash("a", lock), tracking.dvc_stage_hash("b@x", lock)
    assert ha and hb and ha != hb and len(ha) == 32
    assert tracking.dvc_stage_hash("missing", lock) is None
    assert tracking.dvc_stage_hash("a", tmp_path / "nope.lock") is None
    lock.write_text(lock.read_text().replace("cmd: x", "cmd: z"))
    assert tracking.dvc_stage_hash("a", lock) == ha  # deps + params + outs only


# ------------------------------------------------------------------------------ real server
def _get(url: str, timeout: float = 10.0) -> dict | str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read().decode()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body


@pytest.mark.slow
def test_real_mlflow_server(tmp_path, monkeypatch):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = tracking.server_env({k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")})
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}", "--serve-artifacts",
           "--artifacts-destination", str(tmp_path / "art"), "--workers", "1"]
    server = start_group(cmd, name="mlflow server", env=env, cwd=tmp_path, log_path=tmp_path / "server.log")
    try:  # its own process group: stopped with its workers
        try:
            wait_healthy(f"{base}/health", proc=server, timeout=90)
        except ProcessError as e:
            pytest.fail(str(e))

        monkeypatch.setenv("SALIENT_TRACKING", "1")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        monkeypatch.delenv("SALIENT_PARENT_RUN_ID", raising=False)
        ckpt = tmp_path / "sampler"
        ckpt.mkdir()
        (ckpt / "tsqnet.pt").write_bytes(b"checkpoint-bytes")
        with tracking.parent_run("sweep") as parent:
            trial_tags = {"dvc.stage": "train_sampler@tsqnet"}
            with tracking.stage_run("trial-0", {"tsqnet": {"alpha": 0.5}}, tags=trial_tags) as run:
                tracking.log_metrics({"val/mAP": 0.42}, step=3)
                tracking.log_budget_curve("test/mAP", [1, 2], [0.2, 0.4])
                assert tracking.log_artifacts([ckpt, tmp_path / "missing.pt"]) == ["sampler"]

        got = _get(f"{base}/api/2.0/mlflow/runs/get?run_id={run.run_id}")["run"]
        assert got["info"]["status"] == "FINISHED"
        assert {p["key"]: p["value"] for p in got["data"]["params"]} == {"tsqnet.alpha": "0.5"}
        tags = {t["key"]: t["value"] for t in got["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent.run_id and tags["dvc.stage"] == "train_sampler@tsqnet"
        metrics = {m["key"]: (m["value"], m["step"]) for m in got["data"]["metrics"]}  # latest value per key
        assert metrics["val/mAP"] == (0.42, 3) and metrics["test/mAP"] == (0.4, 2)
        q = urllib.parse.urlencode({"run_id": run.run_id, "metric_key": "test/mAP"})
        hist = _get(f"{base}/api/2.0/mlflow/metrics/get-history?{q}")["metrics"]
        assert sorted((m["step"], m["value"]) for m in hist) == [(1, 0.2), (2, 0.4)]
        q = urllib.parse.urlencode({"run_id": run.run_id, "path": "sampler"})
        files = _get(f"{base}/api/2.0/mlflow/artifacts/list?{q}")["files"]
        assert [f["path"] for f in files] == ["sampler/tsqnet.pt"]

        mv = tracking.register_model(run.run_id, "sampler", "tsqnet-sampler", "best")
        assert int(mv.version) == 1
        local = tracking.resolve_model_uri("models:/tsqnet-sampler@best", tmp_path / "dl")
        assert (local / "tsqnet.pt").read_bytes() == b"checkpoint-bytes"
        assert local.resolve().is_relative_to((tmp_path / "dl").resolve())
        found = _get(f"{base}/api/2.0/mlflow/registered-models/alias?name=tsqnet-sampler&alias=best")
        assert found["model_version"]["run_id"] == run.run_id
    finally:
        assert stop_group(server, signals=(signal.SIGTERM,), grace=20) == []  # the whole group is gone (workers too)


def test_metric_names_are_made_valid(tracked):
    """Branch rows are named like ``tsqnet[vqm]``; MLflow refuses brackets, so names are sanitised."""
    from mlflow.tracking import MlflowClient

    with tracking.stage_run("names", {}) as run:
        tracking.log_budget_curve("tsqnet[vqm]/frame", [1, 2], {"map": [0.5, 0.6]})
    hist = MlflowClient(tracked).get_metric_history(run.run_id, "tsqnet_vqm_/frame/map")
    assert [(m.step, m.value) for m in hist] == [(1, 0.5), (2, 0.6)]


def test_demo_keeps_a_parent_run_only_when_a_stage_ran(tracked, tmp_path, monkeypatch):
    """Issue 13: `salient demo` (dvc repro under a parent run) run again with everything up to date leaves
    no empty parent run behind: it is tagged salient.empty and deleted (restorable), the first one kept."""
    import shutil

    import yaml
    from mlflow.tracking import MlflowClient

    from components.app.cli import main

    proj = tmp_path / "demo_proj"
    proj.mkdir()
    shutil.copy(ROOT / "params.yaml", proj / "params.yaml")
    stage = ("python -c \"from components.tracking import mlflow_tracking as tracking; "
             "exec('with tracking.stage_run(\\'s\\', {}): open(\\'out.txt\\', \\'w\\').write(\\'x\\')')\"")
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": stage, "outs": ["out.txt"]}}}))
    monkeypatch.chdir(proj)
    c = MlflowClient(tracked)
    exp = c.get_experiment_by_name(tracking.experiment_name(load_params(proj / "params.yaml")))
    before = {r.info.run_id for r in c.search_runs([exp.experiment_id])} if exp else set()
    assert main(["demo"]) == 0 and main(["demo"]) == 0  # the stage runs, then is up to date
    exp = c.get_experiment_by_name(tracking.experiment_name(load_params(proj / "params.yaml")))
    from mlflow.entities import ViewType

    new = [r for r in c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL) if r.info.run_id not in before]
    parents = sorted((r for r in new if r.data.tags.get("salient.kind") == "parent"), key=lambda r: r.info.start_time)
    assert len(parents) == 2
    first, second = parents
    assert first.info.lifecycle_stage == "active" and "salient.empty" not in first.data.tags
    assert [r.data.tags["dvc.stage"] for r in new if r.data.tags.get(tracking.PARENT_TAG) == first.info.run_id] == ["s"]
    assert second.info.lifecycle_stage == "deleted" and "up to date" in second.data.tags["salient.empty"]


def _commit_all(repo: Path) -> None:
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "c"]):
        subprocess.run(args, cwd=repo, capture_output=True, text=True, check=True)


def test_git_dirty_ignores_the_pipelines_own_outputs(tmp_path, monkeypatch):
    """Issue 26: a clean clone after `make demo` has dvc.lock and reports/ rewritten by the demo; that is
    not a change of source, so git.dirty stays false; an edited source file makes it true and is named."""
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "src.py").write_text("x = 1\n")
    (repo / "reports/summary.json").write_text("{}")
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages:\n  summary:\n    cmd: x\n    outs:\n"
                                   "    - path: reports/summary.json\n      md5: a\n    - path: results\n      md5: b\n")
    (repo / "results").mkdir()
    (repo / "results/curves.csv").write_text("a\n")
    _commit_all(repo)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert tracking.git_info(cwd=repo)["git.dirty"] == "false"
    (repo / "reports/summary.json").write_text('{"new": 1}')  # what `make demo` does
    (repo / "results/curves.csv").write_text("b\n")
    (repo / "dvc.lock").write_text((repo / "dvc.lock").read_text() + "# rerun\n")
    (repo / "reports/demo_timing.json").write_text("{}")  # written by `salient demo`, declared by no stage
    subprocess.run(["git", "add", "reports/demo_timing.json"], cwd=repo, check=True)
    info = tracking.git_info(cwd=repo)
    assert info["git.dirty"] == "false" and "git.dirty_files" not in info
    (repo / "src.py").write_text("x = 2\n")  # tracked source: dirty, and named
    (repo / "params.yaml").write_text("a: 1\n")  # untracked: not a change of the commit
    info = tracking.git_info(cwd=repo)
    assert info["git.dirty"] == "true" and info["git.dirty_files"] == "src.py"
    (repo / "src.py").write_text("x = 1\n")
    (repo / "reports/check.py").write_text("print(1)\n")  # code kept under reports/ is source
    subprocess.run(["git", "add", "reports/check.py"], cwd=repo, check=True)
    assert tracking.git_info(cwd=repo)["git.dirty_files"] == "reports/check.py"


def test_experiment_tags_from_dvc_environment_and_a_flow(tmp_path, monkeypatch):
    """Inside `dvc exp run` (DVC sets DVC_EXP_NAME and DVC_EXP_BASELINE_REV for every stage) the tags name
    the experiment and the params that differ from the baseline commit, one filterable tag per key; a flow
    run passes its own; a plain run is the workspace with no overrides."""
    repo = tmp_path / "exp"
    repo.mkdir()
    (repo / "params.yaml").write_text("a:\n  b: 1\n  c: [1, 2]\nd: x\n")
    _commit_all(repo)
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "params.yaml").write_text("a:\n  b: 5\n  c: [1, 2]\nd: y\n")
    for k in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", tracking.ENV_EXPERIMENT, tracking.ENV_OVERRIDES):
        monkeypatch.delenv(k, raising=False)
    assert tracking.experiment_tags() == {"salient.experiment": "workspace", "salient.overrides": "none"}
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DVC_EXP_NAME", "witty-fox")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", base)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # DVC names the workspace here, not the experiment's checkout
    assert tracking.experiment_tags() == {"salient.experiment": "witty-fox", "salient.overrides": "a.b=5; d=y",
                                          "salient.override.a.b": "5", "salient.override.d": "y"}
    assert tracking.git_info(cwd=repo)["git.dirty"] == "false"  # the -S values are the overrides, not a dirty tree
    assert tracking.experiment_tags("run-7", {"fusion.lambda_v": 0.4})["salient.overrides"] == "fusion.lambda_v=0.4"
