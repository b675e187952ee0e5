"""Issue 15 item 4: an MLflow tracking server on a PostgreSQL backend with a proxied artifact store
(components/ops/servers.py), a real process on loopback, used the way a team would use it: real pipeline
stages (subprocesses, tracking on) and a sweep trial log through it; runs, metrics and artifacts are read
back over plain REST; two processes logging at once lose nothing; a stage stopped by SIGTERM leaves its run
KILLED and no process that ended leaves a run RUNNING. No mocks: a throwaway PostgreSQL 15 cluster
(components/ops/pgcluster.py), ``mlflow server``, the project's own stages."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.ops import servers
from components.core.params import load_params, to_dict

try:
    from tests.conftest import ROOT, TINY
except ModuleNotFoundError:  # `pytest` rather than `python -m pytest`
    from conftest import ROOT, TINY

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------ REST helpers
def rest(base: str, path: str, body: dict | None = None, timeout: float = 30.0, raw: bool = False):
    """GET (``body`` None) or POST JSON to ``base + path``; the decoded JSON (or bytes with ``raw``)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = r.read()
    return out if raw else json.loads(out or b"{}")


def experiment_ids(base: str) -> list[str]:
    return [e["experiment_id"] for e in rest(base, "/api/2.0/mlflow/experiments/search", {"max_results": 1000})
            .get("experiments", [])]


def search_runs(base: str, filter_: str = "", experiments: list[str] | None = None) -> list[dict]:
    """Every run matching ``filter_`` (all experiments by default), following page tokens."""
    out, token = [], None
    while True:
        body = {"experiment_ids": experiments or experiment_ids(base), "filter": filter_, "max_results": 1000}
        if token:
            body["page_token"] = token
        page = rest(base, "/api/2.0/mlflow/runs/search", body)
        out += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return out


def params_of(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def history(base: str, run_id: str, key: str) -> list[tuple[int, float]]:
    q = urllib.parse.urlencode({"run_id": run_id, "metric_key": key, "max_results": 25000})
    return sorted((int(m["step"]), float(m["value"])) for m in
                  rest(base, f"/api/2.0/mlflow/metrics/get-history?{q}")["metrics"])


def artifact_files(base: str, run_id: str, path: str = "") -> dict[str, int]:
    """artifact path -> size, recursively, through the tracking API (``artifacts/list``)."""
    q = urllib.parse.urlencode({"run_id": run_id, **({"path": path} if path else {})})
    out = {}
    for f in rest(base, f"/api/2.0/mlflow/artifacts/list?{q}").get("files", []):
        if f.get("is_dir"):
            out.update(artifact_files(base, run_id, f["path"]))
        else:
            out[f["path"]] = int(f.get("file_size", -1))
    return out


def get_artifact(base: str, run_id: str, path: str) -> bytes:
    """The bytes of one artifact, through the server's artifact proxy (``/get-artifact``)."""
    q = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    return rest(base, f"/get-artifact?{q}", raw=True)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pg():
    from components.ops.pgcluster import PostgresCluster, PostgresError, pg_bindir

    try:
        pg_bindir()
    except PostgresError as e:
        pytest.skip(str(e))
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(pg, tmp_path_factory):
    """``mlflow server --backend-store-uri postgresql://mlflow@127.0.0.1:P/mlflow --artifacts-destination DIR``;
    the role's password reaches it as PGPASSWORD in its environment only."""
    root = tmp_path_factory.mktemp("mlflow_pg")
    password = secrets.token_urlsafe(16)
    pg.create_role("mlflow", password)
    pg.create_database("mlflow", "mlflow")
    srv = servers.MlflowServer(pg.url("mlflow", "mlflow"), root / "artifacts", log_path=root / "server.log",
                               env={**os.environ, "PGPASSWORD": password})
    assert "--backend-store-uri" in srv.cmd and password not in " ".join(srv.cmd)
    srv.start(timeout=240)
    try:
        yield srv
    finally:
        assert srv.stop() == [], "mlflow server processes left alive"
    assert password not in (root / "server.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def client_env(server):
    env = {k: v for k, v in os.environ.items() if k != "SALIENT_PARENT_RUN_ID"}
    env.update({"SALIENT_TRACKING": "1", "MLFLOW_TRACKING_URI": server.url, "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory, client_env):
    """A folder with the tiny params.yaml and the real dvc.yaml (each stage's declared params slice), where
    the real ``prepare`` stage has run as a subprocess logging to the server (what item (a) checks)."""
    proj = tmp_path_factory.mktemp("proj")
    (proj / "params.yaml").write_text(yaml.safe_dump(to_dict(load_params(ROOT / "params.yaml", TINY)), sort_keys=False))
    (proj / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "components.stages.prepare"], cwd=proj, env=client_env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return proj


# ------------------------------------------------------------------------------ tests
def test_a_stage_logs_its_run_params_and_metrics_through_the_server(server, project):
    """(a) + (c): the real `prepare` stage (run above as a subprocess), read back over REST: a FINISHED run
    with the stage's declared params slice, its metric, and its artifact root in the server's store."""
    base = server.url
    runs = [r for r in search_runs(base, "tags.`dvc.stage` = 'prepare'")]
    assert len(runs) == 1
    prep = runs[0]
    assert prep["info"]["status"] == "FINISHED" and prep["info"]["end_time"] >= prep["info"]["start_time"]
    assert prep["info"]["artifact_uri"].startswith("mlflow-artifacts:/")  # proxied by the server
    p = params_of(prep)
    assert p["data.synthetic.num_classes"] == "3" and p["data.synthetic.videos_per_class"] == "4"  # tiny params
    assert not any(k.startswith("tsqnet.") for k in p)  # only the slice dvc.yaml declares for prepare
    assert tags_of(prep)["salient.kind"] == "stage" and tags_of(prep)["host"]
    [(step, seconds)] = history(base, prep["info"]["run_id"], "stage_seconds")
    assert step == 0 and seconds > 0
    assert not (project / "mlruns").exists() and not (project / "mlflow.db").exists()  # nothing beside the client


def test_a_sweep_trial_logs_through_the_server(server, tiny_pipeline, tiny_params, tmp_path, monkeypatch):
    """(b): one loss-sweep trial (1 epoch, SQLite Optuna storage) of flows/sweep.py: a parent run and a
    trial run with its loss weights, per-epoch val mAP and final score."""
    from components.stages import prototypes, pseudo_labels
    from flows.sweep import sweep_flow

    if not (Path(tiny_pipeline.features.parent) / "prototypes.npz").exists():
        prototypes.run(tiny_params, tiny_pipeline)
        pseudo_labels.run(tiny_params, tiny_pipeline)
    proj = tmp_path / "proj"  # a project whose pipeline seed 0 is the fixture's data
    (proj / "data").mkdir(parents=True)
    (proj / "data/s0").symlink_to(Path(tiny_pipeline.features.parent).resolve(), target_is_directory=True)
    (proj / "data/prepared").symlink_to(Path(tiny_pipeline.prepared).resolve(), target_is_directory=True)
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.delenv("SALIENT_PARENT_RUN_ID", raising=False)
    study = f"srv{secrets.token_hex(3)}"
    over = [*TINY, "sweep.epochs=1", f"sweep.study={study}", f"sweep.storage=sqlite:///{tmp_path / 'optuna.db'}",
            "sweep.sampler=tsqnet", "tracking.experiment=sweeps"]
    sweep_flow.fn(n_trials=1, workers=1, overrides=over, params_file=str(ROOT / "params.yaml"), project=str(proj))

    base = server.url
    runs = search_runs(base, f"tags.`optuna.study` = '{study}-tsqnet'")
    assert len(runs) == 1
    trial = runs[0]
    assert trial["info"]["status"] == "FINISHED" and tags_of(trial)["optuna.state"] == "COMPLETE"
    p = params_of(trial)
    assert {"tsqnet.alpha", "tsqnet.beta"} <= set(p) and p["epochs"] == "1" and p["trial"] == "0"
    assert len(history(base, trial["info"]["run_id"], "val_map")) == 1
    parent = rest(base, f"/api/2.0/mlflow/runs/get?run_id={tags_of(trial)['mlflow.parentRunId']}")["run"]
    assert parent["info"]["run_name"] == f"sweep {study}-tsqnet" and parent["info"]["status"] == "FINISHED"
    exp = rest(base, f"/api/2.0/mlflow/experiments/get?experiment_id={trial['info']['experiment_id']}")
    assert exp["experiment"]["name"] == "sweeps"


WRITER = """
import os, sys, time
from pathlib import Path
from components.tracking import mlflow_tracking as tracking
i, n, go, blob = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
# both create the experiment at once, then each logs to its own run, one request per point
with tracking.stage_run(f"writer-{i}", {f"p{j}": j * 10 + i for j in range(25)},
                        tracking={"experiment": sys.argv[5]}, tags={"writer": i}) as run:
    for s in range(n):
        run.log_metrics({"m": s * 1000 + i}, step=s)
    run.log_curve("curve", [float(i + k) for k in range(n)])  # and one batch of n points
    run.log_artifacts([blob], artifact_path="blobs")
print(run.run_id, flush=True)
"""


def test_two_processes_logging_at_once_lose_nothing(server, client_env, tmp_path):
    """(d) + (c): two processes start together (one create-experiment race), each logs N single-point
    requests, a batch of N points, 25 params and a 300 kB artifact (through the server's artifact proxy into
    its store); every count and byte comes back exactly, over REST."""
    n, exp, go = 120, f"concurrent-{secrets.token_hex(3)}", tmp_path / "go"
    blobs = []
    for i in range(2):
        blobs.append(tmp_path / f"blob{i}.bin")
        blobs[-1].write_bytes(os.urandom(300_000))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i), str(n), str(go), str(blobs[i]), exp], cwd=ROOT,
                              env=client_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()[-3000:]
        go.touch()
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    run_ids = [o.strip().splitlines()[-1] for o, _ in outs]

    base = server.url
    found = rest(base, "/api/2.0/mlflow/experiments/search", {"max_results": 1000, "filter": f"name = '{exp}'"})
    assert len(found["experiments"]) == 1  # one experiment, though both processes raced to create it
    runs = search_runs(base, "", [found["experiments"][0]["experiment_id"]])
    assert sorted(r["info"]["run_id"] for r in runs) == sorted(run_ids)
    for r in runs:
        i, rid = int(tags_of(r)["writer"]), r["info"]["run_id"]
        assert r["info"]["status"] == "FINISHED"
        assert params_of(r) == {f"p{j}": str(j * 10 + i) for j in range(25)}
        assert history(base, rid, "m") == [(s, float(s * 1000 + i)) for s in range(n)]
        assert history(base, rid, "curve") == [(k, float(i + k)) for k in range(n)]
        assert artifact_files(base, rid) == {f"blobs/blob{i}.bin": 300_000}
        assert get_artifact(base, rid, f"blobs/blob{i}.bin") == blobs[i].read_bytes()
        [stored] = Path(server.artifacts_destination).rglob(f"blob{i}.bin")  # in the server's store
        assert stored.read_bytes() == blobs[i].read_bytes() and rid in stored.parts


def test_sigterm_leaves_the_stage_run_killed_and_nothing_stays_running(server, client_env, project):
    """A real stage (`train_encoders`) stopped by SIGTERM mid-run (a cancelled flow run, `kill`) exits 143
    and its run ends KILLED with an end time; then no run on the server is RUNNING: every process that
    logged here (stages, the sweep, the writers) ended its runs."""
    proc = subprocess.Popen([sys.executable, "-m", "components.stages.train_encoders"], cwd=project, env=client_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    base, run = server.url, None
    try:
        t0 = time.monotonic()
        while run is None and time.monotonic() - t0 < 180 and proc.poll() is None:
            running = search_runs(base, "tags.`dvc.stage` = 'train_encoders' and attributes.status = 'RUNNING'")
            run = running[0] if running else None
            time.sleep(0.5)
        assert run is not None, f"no RUNNING train_encoders run (exit {proc.poll()})"
        assert tags_of(run)["salient.pid"] == str(proc.pid)
        time.sleep(1.0)  # inside its training now
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 143, err[-3000:]
    got = rest(base, f"/api/2.0/mlflow/runs/get?run_id={run['info']['run_id']}")["run"]["info"]
    assert got["status"] == "KILLED" and got["end_time"] >= got["start_time"]

    left = search_runs(base, "attributes.status = 'RUNNING'")
    assert left == [], [(r["info"]["run_name"], tags_of(r).get("salient.pid")) for r in left]
    statuses = {r["info"]["status"] for r in search_runs(base)}
    assert statuses <= {"FINISHED", "KILLED"} and "FINISHED" in statuses
