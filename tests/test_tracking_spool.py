"""Issue 27 item 1: tracking never holds results hostage. A real ``mlflow server`` on loopback
(components/ops/servers.py) is SIGKILLed while a real process logs a run through components/tracking/mlflow_tracking.py; the
work goes on with its outputs in at most twice its normal time, the run is buffered in the spool, and once the
server is back ``salient tracking sync`` (or the next tracked run) replays it: FINISHED, every param, metric
step, tag and artifact as if it had logged live. No mocks: the server process, the kill and the CLI are real.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.ops import servers
from components.ops.processes import free_port, stop_group

try:
    from tests.conftest import ROOT
except ModuleNotFoundError:  # `pytest` rather than `python -m pytest`
    from conftest import ROOT

pytestmark = pytest.mark.slow

# A stage's shape: params, a metric per epoch, an output file and its artifact, the end status. The server
# dies after epoch 4 (the test touches `go` once it has killed it); both halves do the same work.
WORKER = """
import sys, time
from pathlib import Path
from components.tracking import mlflow_tracking as tracking
go, out, epochs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
T = {"experiment": "offline", "timeout_s": 2, "retries": 1}
with tracking.stage_run("spooled", {"a": 1, "b": [1, 2]}, tracking=T, tags={"dvc.stage": "spooled"}) as run:
    print("RUN", run.run_id, flush=True)
    t0, online = time.monotonic(), None
    for epoch in range(epochs):
        if epoch == epochs // 2 and online is None:
            online = time.monotonic() - t0
            print("HALF", flush=True)
            while not go.exists():
                time.sleep(0.05)
            t0 = time.monotonic()
        time.sleep(0.4)  # the epoch's work
        run.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
    out.write_text("the stage's output")
    run.log_artifacts([out], artifact_path="outputs")
    run.set_tags({"result": "written"})
    offline = time.monotonic() - t0
print("TIMES", online, offline, flush=True)
"""

# A whole pipeline while the server is down: a parent run and a stage run under it.
OFFLINE = """
from components.tracking import mlflow_tracking as tracking
T = {"experiment": "offline", "timeout_s": 2, "retries": 1}
with tracking.parent_run("pipeline", {"p": 1}, tracking=T) as parent:
    with tracking.stage_run("child", {"c": 2}, tracking=T) as child:
        child.log_curve("acc", [0.1, 0.2, 0.3])
print("IDS", parent.run_id, child.run_id, flush=True)
"""

NEXT = """
from components.tracking import mlflow_tracking as tracking
with tracking.stage_run("next", {}, tracking={"experiment": "offline"}) as run:
    print("IDS", run.run_id, flush=True)
"""


class Server:
    """``mlflow server`` on a SQLite store at a fixed port, killed with SIGKILL and restarted on the same
    store and port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.srv = root, free_port(), None

    def start(self) -> "Server":
        self.srv = servers.MlflowServer(f"sqlite:///{self.root / 'mlflow.db'}", self.root / "artifacts", port=self.port,
                                        log_path=self.root / "server.log")
        self.srv.start(timeout=240)
        return self

    def kill(self) -> None:
        assert stop_group(self.srv.proc, signals=(signal.SIGKILL,), grace=10) == []
        self.srv.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server").start()
    try:
        yield srv
    finally:
        if srv.srv is not None and srv.srv.proc is not None:
            srv.srv.stop()


def client_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SALIENT_PARENT_RUN_ID", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "SALIENT_MLFLOW_HTTP_SET")}
    return {**env, "SALIENT_TRACKING": "1", "MLFLOW_TRACKING_URI": url, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT)}


def run_py(code: str, cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_server_killed_mid_run_holds_nothing_hostage(server, tmp_path):
    from mlflow.tracking import MlflowClient

    work = tmp_path / "proj"
    work.mkdir()
    (work / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    env, go, out = client_env(server.url), tmp_path / "go", work / "result.txt"
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(go), str(out), "10"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().split()[-1]
        assert proc.stdout.readline().strip() == "HALF", proc.stderr.read()[-3000:]
        server.kill()  # SIGKILL after epoch 4: no goodbye to the client
        go.touch()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert out.read_text() == "the stage's output"  # the work finished and wrote its output
    online, offline = map(float, stdout.split("TIMES")[1].split())
    print(f"5 epochs online {online:.2f} s, 5 epochs with the server dead {offline:.2f} s")
    assert offline <= 2 * online  # before: ~4 min of urllib3 retries per MLflow call
    warnings = [line for line in stderr.splitlines() if "unreachable" in line]
    assert len(warnings) == 1 and server.url in warnings[0] and run_id in warnings[0], stderr[-3000:]
    spool = work / ".salient" / "tracking_spool" / run_id
    assert (spool / "events.jsonl").exists()

    # ... a whole parent + child while it is down: buffered from their start
    r = run_py(OFFLINE, work, env)
    assert r.returncode == 0, r.stderr[-3000:]
    parent_key, child_key = r.stdout.split("IDS")[1].split()
    assert parent_key.startswith("spool-") and child_key.startswith("spool-")

    server.start()  # same store, same port
    sync = subprocess.run([sys.executable, "-m", "components.app.cli", "tracking", "sync"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stderr[-3000:]
    assert "3 buffered run(s) replayed" in sync.stderr, sync.stderr[-3000:]
    assert not [d for d in (work / ".salient" / "tracking_spool").iterdir() if d.is_dir()]

    c = MlflowClient(server.url)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time >= run.info.start_time
    assert run.data.params == {"a": "1", "b": "[1, 2]"}
    assert run.data.tags["result"] == "written" and run.data.tags["dvc.stage"] == "spooled"
    hist = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "loss"))
    assert hist == [(e, 1.0 / (e + 1)) for e in range(10)]  # every epoch once, online and buffered alike
    assert [f.path for f in c.list_artifacts(run_id, "outputs")] == ["outputs/result.txt"]
    local = c.download_artifacts(run_id, "outputs/result.txt", str(tmp_path))
    assert Path(local).read_text() == "the stage's output"

    ids = json.loads((work / ".salient" / "tracking_spool" / "ids.json").read_text())
    parent, child = c.get_run(ids[parent_key]), c.get_run(ids[child_key])
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id  # the link, with real ids
    assert parent.data.params == {"p": "1"} and child.data.params == {"c": "2"}
    assert sorted((m.step, m.value) for m in c.get_metric_history(child.info.run_id, "acc")) == [
        (0, 0.1), (1, 0.2), (2, 0.3)]
    assert c.search_runs([run.info.experiment_id], "attributes.status = 'RUNNING'") == []


def test_the_next_tracked_run_replays_the_spool(server, tmp_path):
    """A run made while the server is down is replayed by the next run that reaches the server."""
    from mlflow.tracking import MlflowClient

    work = tmp_path / "proj"
    work.mkdir()
    env = client_env(server.url)
    server.kill()
    t0 = time.monotonic()
    r = run_py(OFFLINE, work, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert time.monotonic() - t0 < 60  # one failed call, then offline: no minutes of retries
    parent_key, child_key = r.stdout.split("IDS")[1].split()
    server.start()
    r = run_py(NEXT, work, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [d for d in (work / ".salient" / "tracking_spool").iterdir() if d.is_dir()]
    ids = json.loads((work / ".salient" / "tracking_spool" / "ids.json").read_text())
    c = MlflowClient(server.url)
    parent, child = c.get_run(ids[parent_key]), c.get_run(ids[child_key])
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id


@pytest.mark.parametrize("text,outage", [
    ("API request to endpoint /api/2.0/mlflow/runs/create failed with exception "
     "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded", True),
    ("API request to endpoint /api/2.0/mlflow/runs/get failed with error code 503 != 200", True),
    ("API request to endpoint /api/2.0/mlflow/runs/get failed with error code 429 != 200", True),
    ("API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed with error code 401 != 200", False),
    ("API request to endpoint /api/2.0/mlflow/runs/get failed with error code 403 != 200", False),
    ("RESOURCE_DOES_NOT_EXIST: Run 'x' not found", False),
])
def test_a_refusal_is_not_an_outage(text, outage):
    """A server that answers 401/403 refused the request: the stage must fail loudly, not go offline."""
    from components.tracking.mlflow_tracking import unreachable
    assert unreachable(RuntimeError(text)) is outage
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = RuntimeError(text)
    assert unreachable(wrapped) is outage
