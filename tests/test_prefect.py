"""Prefect orchestration: the stage order of flows/pipeline.py against the project's DVC graph, the
process-group helpers of components/processes.py, flows/serve.py's prefect.yaml reading, the
deployment files, and (slow) the real thing: a Prefect server + process work pool + worker (the
LocalPrefect of flows/serve.py) running the ``pipeline`` deployment in a copy of the project, a
COMPLETED run (a DVC experiment with an override) and a FAILED one (retried), with MLflow parent
runs, and nothing left running afterwards."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

try:
    from tests.conftest import ROOT, copy_tiny_project
except ModuleNotFoundError:  # `pytest` rather than `python -m pytest`: tests/ is on sys.path, not the root
    from conftest import ROOT, copy_tiny_project

BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------ stage order (fast)
@pytest.fixture(scope="module")
def dvc_graph():
    from flows.pipeline import stage_graph

    return stage_graph(ROOT)


def _dvc_index(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    """stage -> (deps, outs) as absolute paths, from DVC's own index (not from `dvc dag`)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.addressing: ([d.fs_path for d in s.deps], [o.fs_path for o in s.outs]) for s in repo.index.stages}


def _feeds(outs: list[str], deps: list[str]) -> bool:
    """Does a stage with ``outs`` produce something a stage with ``deps`` reads?"""
    return any(d == o or d.startswith(o + os.sep) or o.startswith(d + os.sep) for d in deps for o in outs)


def test_stage_plan_respects_every_dependency_of_dvc_yaml(dvc_graph):
    from flows.pipeline import stage_plan

    nodes, edges = dvc_graph
    steps = stage_plan(nodes, edges)
    order = [s for _, stages in steps for s in stages]
    assert sorted(order) == sorted(nodes) and len(order) == len(set(order)), "every stage exactly once"
    task_of = {s: i for i, (_, stages) in enumerate(steps) for s in stages}
    index = _dvc_index(ROOT)
    assert set(index) == set(nodes)
    checked = 0
    for a, (_, outs_a) in index.items():  # brute force: every ordered pair of stages
        for b, (deps_b, _) in index.items():
            if a != b and _feeds(outs_a, deps_b):
                assert task_of[a] < task_of[b], f"{a} feeds {b} but runs in task {task_of[a]} >= {task_of[b]}"
                assert (a, b) in edges, f"dvc dag lacks {a} -> {b}"
                checked += 1
    assert checked >= len(edges) > 5
    # foreach items share one task named after their group
    groups = {name: stages for name, stages in steps}
    assert all(s.startswith("train_sampler@") for s in groups["train_sampler"]) and len(groups["train_sampler"]) > 1
    assert steps[0] == ("prepare", ["prepare"])


def test_stage_plan_targets_keep_only_their_upstream(dvc_graph):
    from flows.pipeline import stage_plan, upstream_closure

    nodes, edges = dvc_graph
    assert stage_plan(nodes, edges, ["prepare"]) == [("prepare", ["prepare"])]
    steps = stage_plan(nodes, edges, ["train_sampler@0-tsqnet"])
    flat = [s for _, ss in steps for s in ss]
    assert set(flat) == upstream_closure(["train_sampler@0-tsqnet"], edges)
    assert steps[-1] == ("train_sampler", ["train_sampler@0-tsqnet"])
    assert "headroom" not in flat and "train_sampler@0-nsnet" not in flat
    whole_group = stage_plan(nodes, edges, ["train_sampler"])[-1][1]
    assert whole_group == [n for n in nodes if n.startswith("train_sampler@")]
    with pytest.raises(ValueError, match="unknown DVC stage 'nope'"):
        stage_plan(nodes, edges, ["nope"])


def test_stage_plan_on_small_graphs():
    from flows.pipeline import parse_dot, stage_plan

    nodes, edges = parse_dot(textwrap.dedent('''\
        strict digraph {
        "c";
        "a@1";
        "b";
        "a@2";
        "b" -> "c";
        "a@1" -> "b";
        }
        '''))
    assert nodes == ["c", "a@1", "b", "a@2"] and edges == [("b", "c"), ("a@1", "b")]
    assert stage_plan(nodes, edges) == [("a", ["a@1", "a@2"]), ("b", ["b"]), ("c", ["c"])]
    # a group whose items sit on both sides of another stage cannot be one task
    steps = stage_plan(nodes, [("a@1", "b"), ("b", "a@2"), ("b", "c")])
    assert steps == [("a@1", ["a@1"]), ("b", ["b"]), ("c", ["c"]), ("a@2", ["a@2"])]
    with pytest.raises(ValueError, match="cycle"):
        stage_plan(["x", "y"], [("x", "y"), ("y", "x")])


def test_override_args_and_experiment_names(tmp_path):
    from flows.pipeline import _override_arg, experiment_name

    assert _override_arg("a.b", 0.5) == "a.b=0.5"
    assert _override_arg("a.b", [1, 2]) == "a.b=[1, 2]"
    assert _override_arg("a.b", True) == "a.b=true"
    assert _override_arg("a.b", "resnet18") == "a.b=resnet18"
    assert experiment_name("witty hedgehog/1", tmp_path) == "witty-hedgehog-1"


# ------------------------------------------------------------------------------ deployment files (fast)
def test_prefect_yaml_deployments():
    from flows.serve import read_deployments

    cfg = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    step = cfg["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $SALIENT_PROJECT_DIR }}"
    deps = {d["name"]: d for d in read_deployments(ROOT)}
    assert deps["pipeline"]["entrypoint"] == "flows/pipeline.py:pipeline"
    assert deps["sweep"]["entrypoint"] == "flows/sweep.py:sweep_flow"
    assert set(deps["sweep"]["parameters"]) == {"n_trials", "workers", "overrides"}
    assert all(d["work_pool"]["name"] == "gpu" for d in deps.values())
    import inspect

    from flows.pipeline import pipeline

    assert set(deps["pipeline"]["parameters"]) == set(inspect.signature(pipeline.fn).parameters)


@pytest.mark.parametrize("name", ["k8s-pool.json", "docker-pool.json"])
def test_pool_job_templates_are_valid(name):
    tpl = json.loads((ROOT / "deploy" / name).read_text())
    props = tpl["variables"]["properties"]
    used = set(re.findall(r"\{\{\s*([\w]+)\s*\}\}", json.dumps(tpl["job_configuration"])))
    assert used and used <= set(props), f"placeholders without a variable: {used - set(props)}"
    assert props["env"]["default"]["SALIENT_PROJECT_DIR"] == "/app"


# ------------------------------------------------------------------------------ process groups (fast)
STUBBORN = textwrap.dedent('''\
    import os, signal, subprocess, sys, time
    # like a Prefect worker: the first SIGTERM only starts a graceful stop, the second exits;
    # and a child in a session of its own (a flow run), which a group kill would miss
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    print(child.pid, flush=True)
    hits = []
    def on_term(signum, frame):
        hits.append(signum)
        if len(hits) >= 2:
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    while True:
        time.sleep(0.1)
    ''')


def test_stop_group_needs_two_signals_and_finds_detached_children(tmp_path):
    import psutil

    from components.processes import start_group, stop_group

    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    proc = start_group([sys.executable, str(script)], name="stubborn", log_path=tmp_path / "out.log")
    deadline = time.time() + 30
    while not (tmp_path / "out.log").read_text().strip() and time.time() < deadline:
        time.sleep(0.1)
    child = int((tmp_path / "out.log").read_text().split()[0])
    assert psutil.pid_exists(child) and os.getpgid(child) != os.getpgid(proc.pid)
    t0 = time.time()
    left = stop_group(proc, interval=1.0, grace=10)
    assert left == [] and proc.popen.returncode == 0, "the second SIGTERM made it exit on its own"
    assert time.time() - t0 < 8
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_wait_healthy_reports_a_dead_process(tmp_path):
    from components.processes import ProcessError, free_port, start_group, wait_healthy

    proc = start_group([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], name="dead",
                       log_path=tmp_path / "dead.log")
    with pytest.raises(ProcessError, match="(?s)exited with 3.*boom"):
        wait_healthy(f"http://127.0.0.1:{free_port()}/api/health", proc=proc, timeout=30)


def test_run_command_text():
    from flows.serve import run_command_text

    cmd = run_command_text("pipeline/pipeline", {"targets": ["prepare"], "overrides": {"a.b": 1}}, "http://h:1/api")
    assert cmd == ("PREFECT_API_URL=http://h:1/api prefect deployment run pipeline/pipeline "
                   """-p 'targets=["prepare"]' -p 'overrides={"a.b": 1}'""")


# ------------------------------------------------------------------------------ the real thing (slow)
def _run(args, cwd, env=None, check=True, timeout=300):
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env or {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=timeout)
    if check and out.returncode:
        raise AssertionError(f"{args} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def _flow_run_id(output: str) -> str:
    m = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert m, f"no flow run id in:\n{output}"
    return m.group(1)


def _wait_final(client, flow_run_id: str, timeout: float, stack) -> object:
    t0 = time.time()
    while time.time() - t0 < timeout:
        fr = client.read_flow_run(flow_run_id)
        if fr.state is not None and fr.state.is_final():
            return fr
        dead = stack.check_alive()
        assert not dead, f"{dead}; worker log:\n{stack.workers[0].tail(6000)}"
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout} s: {fr.state}\n"
                         f"worker log:\n{stack.workers[0].tail(6000)}")


@pytest.mark.slow
def test_pipeline_deployment_on_a_real_server_and_worker(tmp_path):
    import psutil
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from components.processes import free_port
    from flows.serve import LocalPrefect

    t_start = time.time()
    project = copy_tiny_project(tmp_path / "proj")
    mlflow_db = tmp_path / "mlflow.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}", "SALIENT_TRACKING": "1",
           "SALIENT_RETRY_DELAY_SECONDS": "1", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "5", "SALIENT_HOME": str(tmp_path / "salient")}
    stack = LocalPrefect(project, port=free_port(), pool="gpu-test", home=tmp_path / "prefect_home",
                         log_dir=tmp_path / "logs", ui=False, env=env)
    started: set[int] = set()
    timings = {}
    try:
        t0 = time.time()
        stack.start(["pipeline"])
        timings["up"] = time.time() - t0
        assert stack.deployed == ["pipeline/pipeline"]
        started |= stack.pids()

        # 1. an override -> a DVC experiment named after the flow run; only the cheap first stage
        t0 = time.time()
        out = stack.cli("deployment", "run", "pipeline/pipeline", "-p", 'targets=["prepare"]',
                        "-p", 'overrides={"data.synthetic.noise": 5.0}')
        ok_id = _flow_run_id(out.stdout)
        with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
            fr = _wait_final(client, ok_id, 150, stack)
            started |= stack.pids()
            logs = "\n".join(rec.message for rec in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[ok_id]))))
            assert fr.state.is_completed(), f"{fr.state}\n{logs[-5000:]}\nworker:\n{stack.workers[0].tail(5000)}"
            timings["run_ok"] = time.time() - t0
            assert "Running stage 'prepare'" in logs and "MLflow parent run" in logs
            assert (project / "data/prepared/manifest.csv").exists()
            status = _run([BIN / "dvc", "status", "prepare"], project).stdout
            assert "up to date" in status, status
            assert yaml.safe_load((project / "params.yaml").read_text())["data"]["synthetic"]["noise"] == 5.0
            exps = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], project).stdout
            assert re.search(rf"/{re.escape(fr.name)}$", exps, re.M), exps

            # 2. a stage that fails: params.yaml the stage's loader rejects, --force so DVC runs it
            p = yaml.safe_load((project / "params.yaml").read_text())
            p["fusion"]["lambda_v"] = 1.5
            (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
            t0 = time.time()
            out = stack.cli("deployment", "run", "pipeline/pipeline", "-p", 'targets=["prepare"]', "-p", "force=true")
            bad_id = _flow_run_id(out.stdout)
            fr = _wait_final(client, bad_id, 150, stack)
            started |= stack.pids()
            timings["run_failed"] = time.time() - t0
            assert fr.state.is_failed(), fr.state
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[bad_id])))
            stage_runs = [t for t in task_runs if t.name == "prepare"]
            assert len(stage_runs) == 1, [t.name for t in task_runs]
            assert stage_runs[0].run_count == 3, "two retries after the first attempt"
            assert stage_runs[0].state.is_failed()
            assert "outside the allowed range" in stage_runs[0].state.message
            records = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[bad_id])))
            logs = "\n".join(rec.message for rec in records)
            assert "fusion.lambda_v: 1.5 is outside the allowed range" in logs
            attempts = [r for r in records if r.message.startswith("$ ") and "repro --single-item --force prepare" in r.message]
            assert len(attempts) == 3, logs[-3000:]  # the command of each attempt, streamed to the flow run's logs
            assert any(r.level >= 40 and "outside the allowed range" in r.message for r in records)  # an ERROR line

        # 3. MLflow: one parent run per flow run, FINISHED and FAILED
        from mlflow.tracking import MlflowClient

        mc = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
        runs = {r.data.tags.get("prefect.flow_run_id"): r for e in mc.search_experiments()
                for r in mc.search_runs([e.experiment_id])}
        assert runs[ok_id].info.status == "FINISHED"
        assert runs[ok_id].data.tags["salient.kind"] == "parent"
        assert runs[ok_id].data.params["overrides.data.synthetic.noise"] == "5.0"
        assert runs[bad_id].info.status == "FAILED"
    finally:
        started |= stack.pids()
        t0 = time.time()
        left = stack.stop()
        timings["stop"] = time.time() - t0
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()}, "total", round(time.time() - t_start, 1))
    assert left == []
    alive = [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"still running: {alive}"
    assert len(started) >= 3  # server, worker, flow run processes at least


@pytest.mark.slow
def test_serve_main_until_ctrl_c(tmp_path):
    """`python -m flows.serve` (what `salient serve` calls): up, usable, the pool templates of
    deploy/ accepted by a real server, and after Ctrl-C (SIGINT) exit 0 with nothing left running."""
    import psutil

    from components.processes import free_port

    proj = tmp_path / "proj"
    (proj / "flows").mkdir(parents=True)
    for f in ("prefect.yaml", "flows/__init__.py", "flows/pipeline.py"):
        shutil.copy2(ROOT / f, proj / f)
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "SALIENT_HOME": str(tmp_path / "salient")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "flows.serve", "--port", str(port), "--pool", "gpu-serve",
                             "--no-ui", "--project-dir", str(proj), "--deployment", "pipeline"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[int] = set()
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if "Ctrl-C stops" in line:
                break
        text = "".join(out)
        assert "Ctrl-C stops" in text, text
        assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api prefect deployment run pipeline/pipeline" in text
        seen = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        assert len(seen) >= 2  # server + worker
        api_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
        for kind, f in (("kubernetes", "k8s-pool.json"), ("docker", "docker-pool.json")):
            r = _run([sys.executable, "-m", "prefect", "work-pool", "create", f"check-{kind}", "--type", kind,
                      "--base-job-template", ROOT / "deploy" / f], ROOT, env=api_env)
            assert "Created work pool" in r.stdout
        r = _run([sys.executable, "-m", "prefect", "deployment", "ls"], ROOT, env=api_env)
        assert "pipeline/pipeline" in r.stdout
    finally:
        seen |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)} if proc.poll() is None else set()
        proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=90)[0]
        except subprocess.TimeoutExpired:  # never leave the stack running behind a failed test
            for p in {proc.pid} | seen:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(p).kill()
            raise
    assert proc.returncode == 0, "".join(out) + rest
    assert "all Prefect processes stopped" in rest
    assert not [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
