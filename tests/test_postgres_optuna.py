"""Optuna sweeps on a real PostgreSQL server (issue 15 items 3 and 7), no mocks.

One throwaway cluster for the module (:class:`components.ops.pgcluster.PostgresCluster`: loopback,
password-only auth); every test gets a fresh database owned by the login role ``worker``:

* ``python -m flows.sweep --workers 2`` (the real worker processes) fills one PostgreSQL study
  with exactly the trials asked for: numbers 0..n-1 once each, no duplicated proposals, one MLflow
  child run per trial; the password reaches the workers only through ``PGPASSWORD``;
* a worker SIGKILLed mid-trial: its trial is failed by the heartbeat and retried once by another
  of two new workers, and the study completes;
* the database stopped (``pg_ctl stop -m fast``) and restarted under 2 workers: they reconnect and the
  study ends with exactly the trials asked for; a database gone for good stops a worker naming the cause;
  ``kill -9`` of one of 2 workers filling a study: the other makes up its trials (issue 27 item 2; cheap
  objectives, real storage writes, no training);
* workers opening a *new* database at once (Optuna's schema creation raced without a lock);
* auth: no password and a wrong one are refused, the right one (``PGPASSWORD`` or a ``PGPASSFILE``)
  works, and no password reaches an MLflow param, tag, log line or ``tuned_losses.json`` even
  when the storage URL holds one.

Skipped only when no PostgreSQL server is installed (``make postgres`` installs it; CI runs it). The
three tests that train in worker processes are ``slow`` (about 90 s together on 2 cores).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml

from components.tracking import mlflow_tracking as tracking
from components.core.params import load_params, to_dict
from components.core.paths import Paths
from components.ops.pgcluster import PostgresCluster, PostgresError, pg_bindir
from components.tuning import run_sweep, storage_from_url

try:
    from tests.conftest import ROOT, TINY
except ModuleNotFoundError:  # `pytest` without the project root on sys.path
    from conftest import ROOT, TINY


def _server_missing() -> str:
    try:
        pg_bindir()
    except PostgresError as e:
        return str(e)
    return ""


pytestmark = pytest.mark.skipif(bool(_server_missing()),
                                reason=f"no PostgreSQL server binaries: {_server_missing()} (`make postgres`)")

PW = "pw-" + secrets.token_hex(12)  # the role's password: must never show up in a log, param or tag
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """The cluster, the login role ``worker`` and a PGPASSFILE for this test process (which itself
    never has PGPASSWORD: that goes only to the worker processes)."""
    with PostgresCluster() as cluster, pytest.MonkeyPatch.context() as mp:
        cluster.create_role("worker", PW)
        passfile = tmp_path_factory.mktemp("pgpass") / "pgpass"
        passfile.write_text(f"{cluster.host}:{cluster.port}:*:worker:{PW}\n")
        passfile.chmod(0o600)
        mp.delenv("PGPASSWORD", raising=False)
        mp.setenv("PGPASSFILE", str(passfile))
        yield cluster


def new_db(pg: PostgresCluster, name: str) -> str:
    pg.create_database(name, "worker")
    return pg.url(name, "worker")


@pytest.fixture(scope="module")
def project(tiny_samplers, tmp_path_factory) -> Path:
    """A project folder for ``python -m flows.sweep``: the TINY params.yaml and, as pipeline seed 0,
    a private copy of the tiny pipeline's store, encoders, pseudo labels and samplers."""
    root = tmp_path_factory.mktemp("pgproject")
    src, dst = tiny_samplers.features.parent, root / "data" / "s0"
    for d in ("features", "encoders", "pseudo_labels", "samplers/tsqnet"):
        shutil.copytree(src / d, dst / d)
    shutil.copy2(src / "prototypes.npz", dst / "prototypes.npz")
    (root / "data" / "prepared").symlink_to(Path(tiny_samplers.prepared).resolve(), target_is_directory=True)
    p = load_params(ROOT / "params.yaml", [*TINY, "sweep.epochs=1", "sweep.heartbeat=2", "sweep.study=pg"])
    (root / "params.yaml").write_text(yaml.safe_dump(to_dict(p), sort_keys=False))
    return root


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.sweep", "--params", "params.yaml", *args]


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSFILE", "SALIENT_PARENT_RUN_ID")}
    return {**env, "PGPASSWORD": PW, "SALIENT_TRACKING": "0", "PYTHONUNBUFFERED": "1", **extra}


def trials_of(url: str, study: str = "pg-tsqnet") -> list[optuna.trial.FrozenTrial]:
    return sorted(optuna.load_study(study_name=study, storage=storage_from_url(url)).get_trials(),
                  key=lambda t: t.number)


def proposal(t: optuna.trial.FrozenTrial) -> tuple:
    return tuple(sorted(t.params.items()))


# ------------------------------------------------------------------------ 2 workers, one study
@pytest.fixture(scope="module")
def pg_sweep(pg, project, tmp_path_factory):
    """``python -m flows.sweep --workers 2 --trials 4`` on a new database, MLflow on (a SQLite store)."""
    url = new_db(pg, "sweep_a")
    mlflow_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    t0 = time.monotonic()
    r = subprocess.run(sweep_cmd("--workers", "2", "--trials", "4", "--set", f"sweep.storage={url}"), cwd=project,
                       env=worker_env(SALIENT_TRACKING="1", MLFLOW_TRACKING_URI=mlflow_uri),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    best = json.loads((project / "data" / "s0" / "tuned_losses.json").read_text()) if r.returncode == 0 else None
    return {"url": url, "run": r, "mlflow": mlflow_uri, "best": best, "seconds": time.monotonic() - t0}


@pytest.mark.slow
def test_two_worker_processes_fill_one_postgres_study(pg_sweep):
    r = pg_sweep["run"]
    print(f"python -m flows.sweep --workers 2 --trials 4: {pg_sweep['seconds']:.1f} s")
    assert r.returncode == 0, r.stdout[-4000:]
    for w in (0, 1):  # the workers' own log lines (INFO), the URL as given
        assert f"sweep pg-tsqnet (worker {w}): trials until it holds 4 into {pg_sweep['url']}" in r.stdout
    trials = trials_of(pg_sweep["url"])  # read through PGPASSFILE
    assert [t.number for t in trials] == list(range(4))  # none lost, none doubled
    assert all(t.state in DONE for t in trials), [t.state.name for t in trials]
    assert len({proposal(t) for t in trials}) == 4  # no proposal evaluated twice
    assert all(set(t.params) == {"tsqnet.alpha", "tsqnet.beta"} for t in trials)
    best = pg_sweep["best"]
    assert best["storage"] == pg_sweep["url"] and best["trial"] in range(4)
    assert sum(best["trials"].values()) == 4 and set(best["trials"]) <= {"COMPLETE", "PRUNED"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(pg_sweep["mlflow"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [x for x in runs if x.info.run_name == "sweep pg-tsqnet"]
    children = sorted(x.info.run_name for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    assert children == [f"pg-tsqnet trial {i}" for i in range(4)]  # one run per trial, every trial once


# ------------------------------------------------------------------------ a worker killed mid-trial
@pytest.mark.slow
def test_a_sigkilled_worker_trial_is_failed_and_retried_by_another(pg, project):
    """kill -9 a real worker while it trains; two new workers fail the silent trial (heartbeat 2 s,
    grace 4 s), exactly one of them retries its parameters, and the study reaches its count. The new
    workers are what ``--workers 2`` starts, minus the launcher (the study exists already)."""
    url = new_db(pg, "sweep_b")
    slow = subprocess.Popen(sweep_cmd("--trials", "1", "--no-best", "--no-parent", "--set", f"sweep.storage={url}",
                                      "--set", "sweep.epochs=500"), cwd=project, env=worker_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    storage, running = storage_from_url(url), []  # one connection pool for the polling
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and slow.poll() is None:  # until it has reported an epoch
            studies = storage.get_all_studies()
            running = studies and [t for t in storage.get_all_trials(studies[0]._study_id) if t.intermediate_values]
            if running:
                break
            time.sleep(0.2)
        assert slow.poll() is None and running, (slow.stdout.read() if slow.poll() is not None else "no epoch")[-3000:]
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait(timeout=30)
    finally:
        slow.kill()
    (killed,) = trials_of(url)
    assert killed.state.name == "RUNNING"  # what SIGKILL leaves: nobody said otherwise
    time.sleep(4.5)  # past the grace period (2 x sweep.heartbeat = 4 s)

    workers = [subprocess.Popen(sweep_cmd("--trials", "1", "--worker-id", str(w), "--no-parent", "--no-best",
                                          "--set", f"sweep.storage={url}"), cwd=project, env=worker_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for w in (0, 1)]
    for proc in workers:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
    trials = trials_of(url)
    assert [t.number for t in trials] == list(range(3))
    assert trials[0].state.name == "FAIL"
    assert [t.state.name for t in trials if t.state not in DONE] == ["FAIL"]  # nothing RUNNING / WAITING
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == killed.params  # retried once, same weights
    assert len({proposal(t) for t in trials[1:]}) == 2  # the retry popped by one worker only


# ------------------------------------------------------------------------ the database or a worker lost mid-sweep
FAULT_WORKER = """
import sys, time
from components import tuning
from components.core.params import load_params
from components.core.paths import Paths
from components.tuning.loss_sweep import suggest_losses
from components.tuning.storage import StorageUnavailable
from tests.conftest import ROOT, TINY
url, root, until, wid, secs, reconnect = sys.argv[1:7]
p = load_params(ROOT / "params.yaml", [*TINY, f"sweep.storage={url}", "sweep.study=fault", "sweep.heartbeat=1",
                                       f"sweep.reconnect={reconnect}"])
def cheap(objective):  # the real search space and storage writes (a report every 0.25 s), no training
    def trial_fn(trial):
        x = sum(suggest_losses(trial, "tsqnet").values())
        print("RUNNING", trial.number, flush=True)
        for step in range(int(float(secs) / 0.25)):
            time.sleep(0.25)
            trial.report(x, step)
        return x
    return trial_fn
try:
    tuning.run_sweep(p, Paths().under(root), worker_id=int(wid), parent=False, write_best=False, until=int(until),
                     objective_wrapper=cheap)
except StorageUnavailable as e:
    print("STOPPED", e, flush=True)
    sys.exit(3)
"""


def fault_workers(url: str, root: Path, until: int, secs: float = 1.0, reconnect: int = 60, n: int = 2) -> list:
    return [subprocess.Popen([sys.executable, "-c", FAULT_WORKER, url, str(root), str(until), str(w), str(secs),
                              str(reconnect)], cwd=ROOT, env=worker_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for w in range(n)]


def wait_running(proc: subprocess.Popen) -> str:
    """Lines of ``proc`` up to its first RUNNING line (a trial in progress)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("RUNNING"):
            return "".join(seen)
    raise AssertionError("".join(seen)[-3000:])


def test_a_database_restart_mid_sweep_loses_and_doubles_nothing(pg, tmp_path):
    """Issue 27 item 2: ``pg_ctl stop -m fast`` while 2 workers are mid-trial, back 4 s later. Both workers
    retry their connection (sweep.reconnect), neither exits, and the study ends with exactly the 6 trials
    asked for, all COMPLETE: none lost, none failed, none run twice. (Before, both exited within seconds
    with Optuna's ``UnboundLocalError: ... 'updated_state'`` and left their trials RUNNING.)"""
    url = new_db(pg, "fault_restart")
    procs = fault_workers(url, tmp_path, until=6)
    try:
        for proc in procs:
            wait_running(proc)
        pg.halt("fast")
        time.sleep(4)
        assert all(proc.poll() is None for proc in procs)  # still waiting for the database
        pg.resume()
        outs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], [o[-3000:] for o in outs]
    assert any("connection lost" in o and "Connection refused" in o for o in outs), outs[0][-3000:]
    trials = trials_of(url, "fault-tsqnet")
    assert [t.number for t in trials] == list(range(6))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert len({proposal(t) for t in trials}) == 6
    assert all(len(t.intermediate_values) == 4 for t in trials)  # every report of every trial stored


def test_a_database_gone_for_good_stops_workers_naming_the_cause(pg, tmp_path):
    """Past ``sweep.reconnect`` seconds the worker stops with an error that names the storage and the
    driver's cause (``Connection refused``), not Optuna's follow-up ``UnboundLocalError``."""
    url = new_db(pg, "fault_gone")
    (proc,) = fault_workers(url, tmp_path, until=3, secs=2.0, reconnect=3, n=1)
    try:
        wait_running(proc)
        pg.halt("fast")
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
        pg.resume()
    assert proc.returncode == 3, out[-3000:]
    assert f"STOPPED Optuna storage {url} unreachable for" in out and "Connection refused" in out, out[-3000:]
    assert "UnboundLocalError" not in out


def test_a_killed_worker_trials_are_made_up_by_the_other(pg, tmp_path):
    """Issue 27 item 2: ``kill -9`` one of 2 workers filling a study to 4 trials. Its trial is failed by the
    heartbeat and retried by the survivor, which also runs the trials the dead one would have run: the study
    reaches 4 COMPLETE trials (before: 3 trials, 2 COMPLETE), and nothing stays RUNNING."""
    url = new_db(pg, "fault_kill")
    procs = fault_workers(url, tmp_path, until=4, secs=1.5)
    try:
        wait_running(procs[1])
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait(timeout=30)
        out = procs[0].communicate(timeout=240)[0]
    finally:
        for proc in procs:
            proc.kill()
    assert procs[0].returncode == 0, out[-3000:]
    trials = trials_of(url, "fault-tsqnet")
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1 and len(states) == 5, states
    (dead,) = [t for t in trials if t.state.name == "FAIL"]
    (retry,) = [t for t in trials if dead.number in t.system_attrs.get("retry_history", ())]
    assert retry.state.name == "COMPLETE" and retry.params == dead.params
    assert len({proposal(t) for t in trials if t is not dead}) == 4  # no proposal run twice to completion


# ------------------------------------------------------------------------ opening a new database at once
OPENER = """
import sys, time
from components.tuning.storage import _study, storage_from_url
go = float(sys.argv[2])
time.sleep(max(0.0, go - time.time()))
print(_study("race", storage_from_url(sys.argv[1], 1), None)._study_id, flush=True)
"""


def test_workers_opening_a_new_database_at_once(pg):
    """Optuna creates its tables and stamps its schema version unlocked; processes opening one new
    database together failed now and then (duplicate type / alembic rows). storage.py serialises
    that under a PostgreSQL advisory lock."""
    import psycopg2

    url = new_db(pg, "race")
    go = str(time.time() + 5)  # imports done by then, even on a busy 2-core machine
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, url, go], cwd=ROOT, env=worker_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [(proc.communicate(timeout=300), proc.returncode) for proc in procs]
    assert all(rc == 0 for _, rc in outs), [err[-1500:] for (_, err), rc in outs if rc]
    assert {out.strip() for (out, _), _ in outs} == {"1"}  # one study, found by all
    con = psycopg2.connect(pg.dsn("race", "worker"))  # password from PGPASSFILE
    try:
        with con.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM alembic_version), (SELECT count(*) FROM version_info)")
            assert cur.fetchone() == (1, 1)
    finally:
        con.close()


# ------------------------------------------------------------------------ authentication and secrets
def test_postgres_refuses_missing_or_wrong_passwords(pg, monkeypatch, tmp_path):
    import psycopg2
    import sqlalchemy

    url = new_db(pg, "auth")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # libpq finds no password anywhere
    with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
        psycopg2.connect(pg.dsn("auth", "worker"))
    with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "worker"'):
        psycopg2.connect(pg.dsn("auth", "worker", "not-" + PW))
    with pytest.raises(sqlalchemy.exc.OperationalError, match="no password supplied"):
        storage_from_url(url)  # our storage path has no way around it either
    monkeypatch.setenv("PGPASSWORD", PW)
    psycopg2.connect(pg.dsn("auth", "worker")).close()
    assert storage_from_url(url).get_all_studies() == []
    wrong = url.replace("worker@", f"worker:not-{PW}@")
    with pytest.raises(sqlalchemy.exc.OperationalError) as e:  # the URL's password wins over PGPASSWORD
        storage_from_url(wrong)
    assert "password authentication failed" in str(e.value) and PW not in str(e.value)


def _mlflow_values(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    return [f"{k}={v}" for r in runs for k, v in [*r.data.params.items(), *r.data.tags.items()]]


@pytest.mark.slow
def test_no_password_in_mlflow_logs_or_outputs(pg, pg_sweep, project, tmp_path, monkeypatch, caplog):
    """The workers' sweep (password in PGPASSWORD) and an in-process sweep whose storage URL holds the
    password: neither's MLflow params / tags, log lines or tuned_losses.json show it."""
    assert pg_sweep["run"].returncode == 0
    assert PW not in pg_sweep["run"].stdout
    values = _mlflow_values(pg_sweep["mlflow"])
    assert f"sweep.storage={pg_sweep['url']}" in values and not [v for v in values if PW in v]

    url = new_db(pg, "sweep_c").replace("worker@", f"worker:{PW}@")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("SALIENT_PARENT_RUN_ID", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # the URL's password is the only one
    caplog.set_level(logging.DEBUG)
    p = load_params(project / "params.yaml", ["sweep.epochs=1", "sweep.trials=2", f"sweep.storage={url}"])
    paths = replace(Paths().under(project).seeded(0), work=tmp_path / "work")
    res = run_sweep(p, paths)
    assert sum(res["trials"].values()) == 2 and res["storage"] == tracking.redact(url) != url
    assert PW not in (paths.data / "tuned_losses.json").read_text()
    assert "into postgresql://worker:***@" in caplog.text and PW not in caplog.text
    values = _mlflow_values(uri)
    assert f"sweep.storage={tracking.redact(url)}" in values
    assert "optuna.study=pg-tsqnet" in values and not [v for v in values if PW in v]
