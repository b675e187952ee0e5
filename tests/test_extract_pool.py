"""Sharded extraction spread over a real Prefect work pool, with the API auth string on (flows/extract_shards.py,
flows/serve.py): a real server + process pool + 2 workers whose auth string comes from a secret file;
`prefect deployment run extract/extract -p shards=2 -p spread=true` starts one `extract-shard` flow run per
shard, each picked up by an *authenticated* worker, and the merge publishes a store byte-identical
(every file's sha256) to the one-process `python -m components.stages.extract`; the API refuses a request
without the auth string (401) while the runs go on; nothing is left running afterwards."""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.ops import servers

try:
    from tests.conftest import copy_tiny_project, stop_local_prefect
    from tests.test_server_auth import assert_no_secret, call, secret_file
except ModuleNotFoundError:  # `pytest` rather than `python -m pytest`
    from conftest import copy_tiny_project, stop_local_prefect
    from test_server_auth import assert_no_secret, call, secret_file

SEED = 0  # the extract deployment's default pipeline_seed: the store is data/s0/features


def _digests(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _stage(project: Path, name: str, *args: str) -> None:
    env = {**os.environ, "SALIENT_TRACKING": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, "-m", f"components.stages.{name}", *args], cwd=project, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


def _wait_final(client, flow_run_id, timeout: float, stack, during=None):
    t0 = time.time()
    fr = None
    while time.time() - t0 < timeout:
        fr = client.read_flow_run(flow_run_id)
        if fr.state is not None and fr.state.is_final():
            return fr
        dead = stack.check_alive()
        assert not dead, f"{dead}; worker logs:\n" + "\n".join(w.tail(4000) for w in stack.workers)
        if during is not None:
            during(fr)
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout} s: {fr and fr.state}\nworker logs:\n"
                         + "\n".join(w.tail(4000) for w in stack.workers))


@pytest.mark.slow
def test_spread_extraction_on_an_authenticated_pool_of_two_workers(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterName, FlowRunFilter,
                                                FlowRunFilterParentFlowRunId)
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from components.ops.processes import free_port
    from flows.serve import LocalPrefect

    t_start, timings = time.time(), {}
    project = copy_tiny_project(tmp_path / "proj")
    data = project / "data" / f"s{SEED}"
    store = data / "features"

    # prerequisites with the stages' own CLIs, then the one-process reference store, set aside
    t0 = time.time()
    _stage(project, "prepare")
    _stage(project, "train_encoders", "--pipeline-seed", str(SEED))
    timings["prereq"] = time.time() - t0
    t0 = time.time()
    _stage(project, "extract", "--pipeline-seed", str(SEED))
    timings["reference"] = time.time() - t0
    reference = _digests(store)
    assert {"meta.json", "failures.csv", "text_objects.npy", "train/rec_feats.npy"} <= set(reference)
    shutil.move(str(store), tmp_path / "reference")
    assert not store.exists()

    auth = f"salient:{secrets.token_urlsafe(16)}"
    env = {"PREFECT_API_AUTH_STRING_FILE": str(secret_file(tmp_path / "prefect.auth", auth)),
           "SALIENT_TRACKING": "0", "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
           "SALIENT_HOME": str(tmp_path / "salient")}
    stack = LocalPrefect(project, port=free_port(), pool="extract-test", workers=2, home=tmp_path / "prefect_home",
                         log_dir=tmp_path / "logs", ui=False, env=env)
    assert stack.auth
    started: set[int] = set()
    refused: list[int] = []
    try:
        t0 = time.time()
        stack.start(["extract", "extract-shard"])
        timings["up"] = time.time() - t0
        assert sorted(stack.deployed) == ["extract-shard/extract-shard", "extract/extract"]
        started |= stack.pids()

        t0 = time.time()
        out = stack.cli("deployment", "run", "extract/extract", "-p", "shards=2", "-p", "spread=true")
        m = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
        assert m, f"no flow run id in:\n{out.stdout}"
        run_id = m.group(1)

        def unauthenticated(fr) -> None:  # while the runs go on: nobody without the string gets in
            nonlocal started
            started |= stack.pids()
            if not refused and fr.state is not None and fr.state.is_running():
                refused.append(call(f"{stack.api_url}/flow_runs/filter", {})[0])

        settings = {PREFECT_API_URL: stack.api_url, PREFECT_API_AUTH_STRING: auth}
        with temporary_settings(settings), get_client(sync_client=True) as client:
            fr = _wait_final(client, run_id, 400, stack, during=unauthenticated)
            timings["run"] = time.time() - t0
            started |= stack.pids()
            worker_logs = {w.name: w.tail(10**7) for w in stack.workers}
            assert fr.state.is_completed(), f"{fr.state}\n" + "\n".join(worker_logs.values())[-8000:]
            shard_runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["extract-shard"])))
            all_shard_runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["extract-shard"])))
        assert len(shard_runs) == 2 and len(all_shard_runs) == 2, [(r.name, r.state) for r in all_shard_runs]
        assert all(r.state.is_completed() for r in shard_runs), [(r.name, r.state) for r in shard_runs]
        assert sorted(r.parameters["shard"] for r in shard_runs) == [0, 1]
        assert all(r.parameters["shards"] == 2 for r in shard_runs)

        # which worker ran each flow run (the scheduler decides; only recorded): the run's process writes
        # its "View at .../flow-run/<id>" line into the log of the worker that started it (both workers
        # may log "submitting" a run; the one that loses the race logs "Aborted submission")
        def ran_on(flow_run_id) -> list[str]:
            return [n for n, text in worker_logs.items() if f"/flow-run/{flow_run_id}" in text]

        where = {f"shard {r.parameters['shard']}/2 ({r.name})": ran_on(r.id) for r in shard_runs}
        where[f"extract ({fr.name})"] = ran_on(run_id)
        print(f"\nworkers: {where}")
        assert all(len(v) == 1 for v in where.values()), where
        never = servers.secret_values({"PREFECT_API_AUTH_STRING": auth})
        for name, text in worker_logs.items():
            assert_no_secret(text, never, f"the log of {name}")

        assert refused == [401], refused  # an unauthenticated request during the run
        assert _digests(store) == reference
        leftovers = [p for p in data.iterdir() if p.name.startswith("features") and p != store]
        assert leftovers == [], leftovers  # no features.partial, no features.shards/
        stores = sorted(m.parent for m in (project / "data").rglob("meta.json") if "encoders" not in m.parts)
        assert stores == [store], stores
    finally:
        left, alive = stop_local_prefect(stack, started, timings, t_start)
    assert left == []
    assert alive == [], f"still running: {alive}"
    assert len(started) >= 6  # server, 2 workers, the extract flow run and 2 shard flow runs at least
