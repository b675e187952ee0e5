"""Issue 15 item 7: shared servers let in only who belongs. A real MLflow server with its basic-auth app and a
real Prefect server (+ a worker) with an API auth string, on loopback (components/ops/servers.py,
flows/serve.py): an unauthenticated request to each is refused (401), an authenticated one works, clients
read their credentials from secret files (``*_FILE``), and no secret reaches a command line, a server or
client log, or any param or tag of the runs created. Binding beyond loopback without authentication is
refused."""
from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from components.ops import servers

from components.tracking import mlflow_tracking as tracking
from components.ops.processes import free_port

try:
    from tests.conftest import ROOT
except ModuleNotFoundError:  # `pytest` rather than `python -m pytest`
    from conftest import ROOT


def secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def call(url: str, body: dict | None = None, auth: str | None = None, timeout: float = 30.0) -> tuple[int, object]:
    """(HTTP status, decoded JSON or text) of a GET (``body`` None) or JSON POST, with Basic ``auth``."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"{}")
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def cmdlines(pids) -> str:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return "\n".join(out)


def assert_no_secret(text: str, secret_values: list[str], where: str) -> None:
    for s in secret_values:
        assert s not in text, f"a secret ({len(s)} characters) appears in {where}"


# ------------------------------------------------------------------------------ no processes
def test_secret_files_urls_and_binding(tmp_path, caplog):
    f = secret_file(tmp_path / "pw", "from-the-file")
    env = servers.secret_env({"MLFLOW_TRACKING_PASSWORD_FILE": str(f), "PGPASSWORD": "set",
                              "PGPASSWORD_FILE": str(f)})
    assert env["MLFLOW_TRACKING_PASSWORD"] == "from-the-file" and env["PGPASSWORD"] == "set"  # the variable wins
    open_file = tmp_path / "open"
    open_file.write_text("x\n")
    open_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="components.ops.servers"):
        assert servers.secret_env({"PGPASSWORD_FILE": str(open_file)})["PGPASSWORD"] == "x"
    assert "readable by group or others" in caplog.text and "x\n" not in caplog.text
    (tmp_path / "empty").write_text("\n")
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(servers.SecretError, match="PGPASSWORD_FILE"):
            servers.secret_env({"PGPASSWORD_FILE": str(bad)})
    assert servers.secret_values({"PREFECT_API_AUTH_STRING": "u:p4ss"}) == ["p4ss", "u:p4ss"]

    assert servers.split_password("postgresql://u:p%40ss@h:5432/db?x=1") == ("postgresql://u@h:5432/db?x=1", "p@ss")
    assert servers.split_password("postgresql://u@h/db") == ("postgresql://u@h/db", None)
    assert servers.sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    with pytest.raises(servers.SecretError):  # a password never goes on a command line
        servers.mlflow_server_command("postgresql://u:pw@h/db", tmp_path)
    cmd = servers.mlflow_server_command("postgresql://u@h/db", tmp_path, port=5001, auth=True)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[-2:] == ["--app-name", "basic-auth"]
    # a server whose URI carries a password gets it as PGPASSWORD, not in its command
    srv = servers.MlflowServer("postgresql://u:pw-in-url@h/db", tmp_path / "a", env={})
    assert srv.env["PGPASSWORD"] == "pw-in-url" and "pw-in-url" not in " ".join(srv.cmd)

    # beyond loopback only with authentication (or an explicit override)
    with pytest.raises(servers.InsecureBindError):
        servers.mlflow_server_command("sqlite:///x.db", tmp_path, host="0.0.0.0")
    assert "--app-name" in servers.mlflow_server_command("sqlite:///x.db", tmp_path, host="0.0.0.0", auth=True)
    with pytest.raises(servers.SecretError, match="MLFLOW_AUTH_ADMIN_PASSWORD"):
        servers.MlflowServer("sqlite:///x.db", tmp_path / "a", auth=servers.MlflowAuth("sqlite:///u.db"), env={})

    from flows.serve import LocalPrefect, serve

    stack = LocalPrefect(tmp_path, host="0.0.0.0", port=free_port(), home=tmp_path / "ph", ui=False)
    with pytest.raises(servers.InsecureBindError):
        stack.start_server()
    assert stack.server is None  # refused before anything started
    assert serve("0.0.0.0", free_port(), project_dir=tmp_path, home=tmp_path / "ph") == 2

    # the log line naming the tracking URI hides a password in it
    assert tracking.redact("http://bob:hunter22@10.0.0.5:5000") == "http://bob:***@10.0.0.5:5000"


# ------------------------------------------------------------------------------ MLflow basic auth
STAGE = """
import sys
from components.tracking import mlflow_tracking as tracking
from components.ops.stage_runner import setup_logging
setup_logging()
db_pw, token = sys.argv[1], sys.argv[2]
params = {"sweep": {"storage": f"postgresql://optuna:{db_pw}@10.0.0.9:5432/optuna"},
          "dsn": f"host=10.0.0.9 user=optuna password={db_pw}", "epochs": 2}
with tracking.stage_run("prepare", params, tags={"note": f"token={token}"}) as run:
    tracking.log_metrics({"val/mAP": 0.5}, step=1)
    tracking.log_artifacts([sys.argv[3]])
print(run.run_id)
"""


@pytest.fixture(scope="module")
def mlflow_auth(tmp_path_factory):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (mlflow[auth]): "
                                            "add it to requirements.txt")
    root = tmp_path_factory.mktemp("mlflow_auth")
    admin_pw = secrets.token_urlsafe(16)
    srv = servers.MlflowServer(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", log_path=root / "server.log",
                               auth=servers.MlflowAuth(f"sqlite:///{root / 'users.db'}"),
                               env={**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD_FILE":
                                    str(secret_file(root / "admin.pw", admin_pw))})
    srv.start(timeout=240)
    try:
        yield srv, root, admin_pw
    finally:
        assert srv.stop() == []


def test_mlflow_lets_in_only_who_belongs(mlflow_auth, tmp_path):
    srv, root, admin_pw = mlflow_auth
    base = srv.url
    worker_pw, db_pw, token = (secrets.token_urlsafe(16) for _ in range(3))
    admin = f"admin:{admin_pw}"
    # the admin makes a user for the workers (MLflow's users API)
    status, _ = call(f"{base}/api/2.0/mlflow/users/create", {"username": "worker", "password": worker_pw}, auth=admin)
    assert status == 200
    search = f"{base}/api/2.0/mlflow/experiments/search?max_results=10"
    assert call(search)[0] == 401  # nobody
    assert call(search, auth=f"worker:{admin_pw}")[0] == 401  # a wrong password
    assert call(search, auth=f"worker:{worker_pw}")[0] == 200
    assert call(f"{base}/health")[0] == 200  # the health probe stays open

    # a stage as a worker elsewhere would run it: password from a secret file
    artifact = tmp_path / "notes.txt"
    artifact.write_text("checkpoint")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "SALIENT_PARENT"))}
    env.update({"SALIENT_TRACKING": "1", "MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_USERNAME": "worker",
                "MLFLOW_TRACKING_PASSWORD_FILE": str(secret_file(tmp_path / "worker.pw", worker_pw))})
    ok = subprocess.run([sys.executable, "-c", STAGE, db_pw, token, str(artifact)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    run_id = ok.stdout.strip().splitlines()[-1]
    # ... and without credentials: refused at its first request, the stage fails
    anon = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD_FILE")}
    refused = subprocess.run([sys.executable, "-c", STAGE, db_pw, token, str(artifact)], cwd=ROOT, env=anon,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and ("401" in refused.stderr or "Unauthorized" in refused.stderr), \
        refused.stderr[-2000:]

    # what the run recorded, read back as the worker; artifacts need credentials too
    status, got = call(f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}", auth=f"worker:{worker_pw}")
    assert status == 200 and got["run"]["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in got["run"]["data"]["params"]}
    assert params["sweep.storage"] == "postgresql://optuna:***@10.0.0.9:5432/optuna"
    assert params["dsn"].endswith("password=***") and params["epochs"] == "2"
    art = f"{base}/get-artifact?path=notes.txt&run_uuid={run_id}"
    assert call(art)[0] == 401 and call(art, auth=f"worker:{worker_pw}") == (200, "checkpoint")
    assert call(f"{base}/api/2.0/mlflow-artifacts/artifacts")[0] == 401

    # no secret in any param or tag of any run, in the logs, in a command line or in the auth config
    never = [admin_pw, worker_pw, db_pw, token]
    status, exps = call(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 1000}, auth=admin)
    status, runs = call(f"{base}/api/2.0/mlflow/runs/search", auth=admin,
                        body={"experiment_ids": [e["experiment_id"] for e in exps["experiments"]], "max_results": 1000})
    assert status == 200 and len(runs["runs"]) >= 1
    for r in runs["runs"]:
        for kv in (*r["data"].get("params", []), *r["data"].get("tags", [])):
            assert_no_secret(f"{kv['key']}={kv['value']}", never, f"param/tag {kv['key']} of run {r['info']['run_id']}")
    assert_no_secret(ok.stdout + ok.stderr + refused.stdout + refused.stderr, never, "the stage's output")
    assert "MLflow run" in ok.stderr  # the log line with the tracking URI is there, and clean
    srv.proc.remember_children()
    assert_no_secret(cmdlines({srv.proc.pid, *srv.proc.seen}), never, "the server's command lines")
    assert_no_secret((root / "server.log").read_text(errors="replace"), never, "the MLflow server log")
    assert_no_secret((root / "mlflow-auth.ini").read_text(), never, "the auth config")


# ------------------------------------------------------------------------------ Prefect API auth string
@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory):
    """The LocalPrefect of `salient serve` (server + process pool + one worker, no UI) whose auth string
    comes from a secret file named in PREFECT_API_AUTH_STRING_FILE."""
    from flows.serve import LocalPrefect

    root = tmp_path_factory.mktemp("prefect_auth")
    auth = f"salient:{secrets.token_urlsafe(16)}"
    stack = LocalPrefect(root, port=free_port(), pool="auth-test", home=root / "home", ui=False,
                         env={"PREFECT_API_AUTH_STRING_FILE": str(secret_file(root / "prefect.auth", auth))})
    assert stack.auth
    try:
        stack.start_server(timeout=240)
        stack.create_pool()
        stack.start_workers()
        yield stack, auth
    finally:
        assert stack.stop() == []


def test_prefect_lets_in_only_who_belongs(prefect_stack):
    from flows.serve import PREFECT, prefect_env

    stack, auth = prefect_stack
    pools = f"{stack.api_url}/work_pools/filter"
    assert call(pools, {})[0] == 401  # nobody
    assert call(pools, {}, auth="salient:wrong")[0] == 401
    status, found = call(pools, {}, auth=auth)
    assert status == 200 and "auth-test" in [p["name"] for p in found]  # made by the authenticated CLI
    assert call(f"{stack.api_url}/health")[0] == 200  # the health probe stays open

    # the worker authenticates: it registers with the pool and keeps sending heartbeats
    workers, t0 = [], time.monotonic()
    while not workers and time.monotonic() - t0 < 120:
        assert not stack.check_alive(), stack.workers[0].tail()
        status, workers = call(f"{stack.api_url}/work_pools/auth-test/workers/filter", {}, auth=auth)
        assert status == 200
        if not workers:
            time.sleep(1)
    assert [w["name"] for w in workers] == ["auth-test-worker-1"] and workers[0]["status"] == "ONLINE"

    # the CLI without the auth string (a client nobody gave it) is refused
    out = subprocess.run([*PREFECT, "work-pool", "ls"], cwd=stack.project_dir, capture_output=True, text=True,
                         timeout=120, env=prefect_env(stack.api_url, home=stack.home))
    assert out.returncode != 0 and "401" in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    ok = stack.cli("work-pool", "ls")
    assert "auth-test" in ok.stdout

    never = servers.secret_values({"PREFECT_API_AUTH_STRING": auth})
    assert_no_secret(cmdlines(stack.pids()), never, "the command lines of the server and the worker")
    for p in stack.processes():
        assert_no_secret(p.tail(10**7), never, f"the log of {p.name}")
    assert_no_secret(ok.stdout + ok.stderr + out.stdout + out.stderr, never, "the CLI's output")
