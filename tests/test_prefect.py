"""Prefect orchestration: the stage order of flows/pipeline.py against the project's DVC graph, the
process-group helpers of components/ops/processes.py, flows/serve.py's prefect.yaml reading, the
deployment files and their parameter descriptions, the results artifact, the flow itself in this
process (one task per stage, no empty MLflow parent run, an override run as an isolated DVC
experiment that leaves the workspace byte-identical), and (slow) the real thing: a Prefect server +
process work pool + worker (the LocalPrefect of flows/serve.py) running the ``pipeline`` deployment
in a copy of the project, a COMPLETED run (a DVC experiment with an override) and a FAILED one
(retried), with MLflow parent runs and artifacts, and nothing left running afterwards."""
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
    from tests.conftest import ROOT, copy_tiny_project, stop_local_prefect
except ModuleNotFoundError:  # `pytest` rather than `python -m pytest`: tests/ is on sys.path, not the root
    from conftest import ROOT, copy_tiny_project, stop_local_prefect

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
    order = stage_plan(nodes, edges)
    assert sorted(order) == sorted(nodes) and len(order) == len(set(order)), "every stage exactly once"
    position = {s: i for i, s in enumerate(order)}
    index = _dvc_index(ROOT)
    assert set(index) == set(nodes)
    checked = 0
    for a, (_, outs_a) in index.items():  # brute force: every ordered pair of stages
        for b, (deps_b, _) in index.items():
            if a != b and _feeds(outs_a, deps_b):
                assert position[a] < position[b], f"{a} feeds {b} but runs at {position[a]} >= {position[b]}"
                assert (a, b) in edges, f"dvc dag lacks {a} -> {b}"
                checked += 1
    assert checked >= len(edges) > 5
    # foreach / matrix items are tasks of their own, a group's items next to each other
    samplers = [i for i, s in enumerate(order) if s.startswith("train_sampler@")]
    assert len(samplers) > 1 and samplers == list(range(samplers[0], samplers[0] + len(samplers)))
    assert order[:2] == ["sources", "prepare"]  # sources: always_changed, prepare's trigger


def test_stage_plan_targets_keep_only_their_upstream(dvc_graph):
    from flows.pipeline import stage_plan, upstream_closure

    nodes, edges = dvc_graph
    assert stage_plan(nodes, edges, ["prepare"]) == ["sources", "prepare"]
    order = stage_plan(nodes, edges, ["train_sampler@0-tsqnet"])
    assert set(order) == upstream_closure(["train_sampler@0-tsqnet"], edges)
    assert order[-1] == "train_sampler@0-tsqnet"
    assert "headroom@0" not in order and "train_sampler@0-nsnet" not in order
    whole_group = [s for s in stage_plan(nodes, edges, ["train_sampler"]) if s.startswith("train_sampler")]
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
    assert stage_plan(nodes, edges) == ["a@1", "a@2", "b", "c"]  # a@2 is free: it stays beside a@1
    # a group whose items sit on both sides of another stage is split by it
    assert stage_plan(nodes, [("a@1", "b"), ("b", "a@2"), ("b", "c")]) == ["a@1", "b", "c", "a@2"]
    # two seeds of a matrix: seed by seed within each group, groups in DVC's order
    nodes = ["x@0", "x@1", "y@0", "y@1"]
    assert stage_plan(nodes, [("x@0", "y@0"), ("x@1", "y@1")]) == nodes
    assert stage_plan(nodes, [("x@0", "y@0"), ("x@1", "y@1")], ["y@1"]) == ["x@1", "y@1"]
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
def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "0"]):
        _run(["git", *args], path)
    return path


def test_untracked_inputs_are_the_dataset_paths_a_temp_checkout_lacks(tmp_path):
    from flows.pipeline import untracked_inputs

    proj = _git_repo(tmp_path / "p")
    (proj / "params.yaml").write_text("data: {dataset: ucf101, root: data/raw, annotations: data/splits}\n")
    (proj / "data/raw").mkdir(parents=True)
    assert untracked_inputs(proj) == ["data/raw"]  # data/splits does not exist
    (proj / "data/splits").mkdir()
    assert untracked_inputs(proj) == ["data/raw", "data/splits"]
    assert untracked_inputs(proj, {"data.dataset": "synthetic"}) == []  # never read then
    assert untracked_inputs(proj, {"data.root": str(proj / "data/raw")}) == ["data/splits"]  # absolute
    (proj / "data/splits/a.txt").write_text("x")
    _run(["git", "add", "data/splits/a.txt"], proj)
    (proj / "data/raw.dvc").write_text("outs: []\n")
    assert untracked_inputs(proj) == []  # in git / tracked by DVC: the temp checkout has them


def test_results_markdown_headline_links_and_experiment(tmp_path):
    from flows.pipeline import experiment_ref, headline_table, mlflow_url, read_json, results_markdown

    ml = "?workflowType=machine_learning"  # MLflow 3.17's UI opens the GenAI view without it
    assert mlflow_url("http://mlflow.example:5000/", "3", "abc") == f"http://mlflow.example:5000/#/experiments/3/runs/abc{ml}"
    assert mlflow_url("sqlite:////x/mlflow.db", "3", "abc") == f"http://127.0.0.1:5000/#/experiments/3/runs/abc{ml}"
    summary = {"headline": {
        "uniform": {"frame": {"1": {"map": 0.5, "gmacs": 0.3, "runs": 1, "pipeline_seeds": 1},
                              "3": {"map": 0.6, "gmacs": 0.9, "runs": 1, "pipeline_seeds": 1, "map_ci": [0.55, 0.65]},
                              "5": {"map": 0.65, "gmacs": 1.5, "runs": 1, "pipeline_seeds": 1}}},
        "tsqnet": {"frame": {"1": {"map": 0.55, "map_std_runs": 0.02, "runs": 3, "pipeline_seeds": 1},
                             "3": {"map": 0.7, "map_std_runs": 0.01, "runs": 3, "pipeline_seeds": 1, "gmacs": 1.2,
                                   "map_ci": [0.651, 0.749]}},
                   "tsi": {"3": {"map": 0.1}}},
        "tsqnet[vqm]": {"frame": {"1": {"map": 0.4}}}}}
    # K=3 and K=5 (K=1 left out), mAP with its spread and CI, GMACs at each K; a missing cell is a dash
    assert headline_table(summary) == [
        "| sampler | mAP K=3 [95% CI] | GMACs K=3 | mAP K=5 [95% CI] | GMACs K=5 |", "|---|---|---|---|---|",
        "| uniform | 60.0 [55.0, 65.0] | 0.900 | 65.0 | 1.500 |",
        "| tsqnet | 70.0 ± 1.0 [65.1, 74.9] | 1.200 | – | – |"]
    assert headline_table(summary, ks=(7,))[0] == "| sampler | mAP K=1 [95% CI] | GMACs K=1 | mAP K=3 [95% CI] | " \
                                                  "GMACs K=3 | mAP K=5 [95% CI] | GMACs K=5 |"  # none of them: every K
    real = json.loads((ROOT / "reports/summary.json").read_text())  # the recorded demo's summary
    table = headline_table(real)
    assert len(table) == 2 + sum("[" not in s for s in real["headline"]) and "| tsqnet |" in "\n".join(table)
    assert table[0].startswith("| sampler | mAP K=3 [95% CI] | GMACs K=3 | mAP K=5") and "], " not in table[2]

    result = {"run_name": "witty-fox", "stages": ["prepare", "summary"], "experiment": "witty-fox",
              "overrides": {"fusion.lambda_v": 0.4}, "mlflow_run_id": "r1", "error": None,
              "ran": [{"stage": "summary", "run_id": "c1" * 8, "status": "FINISHED"}]}
    md = results_markdown(result, tracking_uri="sqlite:////x/mlflow.db", experiment_id="2", summary=summary)
    assert "# pipeline witty-fox: COMPLETED" in md
    assert "[`r1`](http://127.0.0.1:5000/#/experiments/2/runs/r1?workflowType=machine_learning)" in md and "`salient ui`" in md
    assert "`dvc exp apply witty-fox`" in md and "`fusion.lambda_v=0.4`" in md
    assert "| tsqnet | 70.0 ± 1.0 [65.1, 74.9] | 1.200 | – | – |" in md and "of experiment `witty-fox`" in md
    assert ("| summary | [`c1c1c1c1c1c1`](http://127.0.0.1:5000/#/experiments/2/runs/c1c1c1c1c1c1c1c1"
            "?workflowType=machine_learning) | FINISHED |") in md
    md = results_markdown({**result, "experiment": None, "ran": [], "deleted": True, "error": None}, summary=None)
    assert "nothing ran" in md and "was deleted" in md and "Up to date, skipped by DVC: `prepare`, `summary`" in md
    md = results_markdown({**result, "mlflow_run_id": None, "ran": None, "error": "StageFailed: boom", "failed": "summary"})
    assert ": FAILED" in md and "tracking off" in md and "Planned, in order: `prepare`, `summary`" in md
    assert "## Error (in `summary`)\n\n```\nStageFailed: boom\n```" in md

    # an experiment's files are read from its git ref, the workspace's from disk
    repo = _git_repo(tmp_path / "repo")
    (repo / "reports").mkdir()
    (repo / "reports/summary.json").write_text('{"v": 1}')
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    _run([*git, "add", "reports"], repo)
    _run([*git, "commit", "-qm", "exp"], repo)
    _run(["git", "update-ref", "refs/exps/ab/cdef/witty-fox", "HEAD"], repo)
    (repo / "reports/summary.json").write_text('{"v": 2}')
    ref = experiment_ref("witty-fox", repo)
    assert ref == "refs/exps/ab/cdef/witty-fox" and experiment_ref("other", repo) is None
    assert read_json(repo, "reports/summary.json", ref) == {"v": 1}
    assert read_json(repo, "reports/summary.json") == {"v": 2}
    assert read_json(repo, "reports/nope.json", ref) is None and read_json(repo, "reports/nope.json") is None


@pytest.mark.parametrize("entry", ["flows/pipeline.py:pipeline", "flows/sweep.py:sweep_flow"])
def test_deployment_parameters_have_descriptions(entry):
    """What `prefect deploy` puts into a deployment's parameter_openapi_schema (the flow's Google-style
    ``Args:``), also as read from the source without importing it."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint

    for schema in (parameter_schema(load_flow_from_entrypoint(str(ROOT / entry))),
                   parameter_schema_from_entrypoint(str(ROOT / entry))):
        props = schema.model_dump()["properties"]
        assert props and all(len(p.get("description") or "") > 20 for p in props.values()), props


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

    from components.ops.processes import start_group, stop_group

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
    from components.ops.processes import ProcessError, free_port, start_group, wait_healthy

    proc = start_group([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], name="dead",
                       log_path=tmp_path / "dead.log")
    with pytest.raises(ProcessError, match="(?s)exited with 3.*boom"):
        wait_healthy(f"http://127.0.0.1:{free_port()}/api/health", proc=proc, timeout=30)


def test_run_command_text():
    from flows.serve import run_command_text

    cmd = run_command_text("pipeline/pipeline", {"targets": ["prepare"], "overrides": {"a.b": 1}}, "http://h:1/api")
    assert cmd == ("PREFECT_API_URL=http://h:1/api prefect deployment run pipeline/pipeline "
                   """-p 'targets=["prepare"]' -p 'overrides={"a.b": 1}'""")


# ------------------------------------------------------------------------------ the flow in process (real Prefect and DVC)
def _workspace_hashes(project: Path) -> dict[str, str]:
    """sha256 of every file of the project outside .git and .dvc (params.yaml, dvc.lock, outputs, code)."""
    import hashlib

    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(project.rglob("*")) if p.is_file() and p.relative_to(project).parts[0] not in (".git", ".dvc")}


def _artifacts(client, flow_run_id) -> list:
    """The flow run's results artifacts (markdown, key pipeline-results; not Prefect's result records)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.pipeline import ARTIFACT_KEY

    arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                                                                key=ArtifactFilterKey(any_=[ARTIFACT_KEY])))
    assert all(a.type == "markdown" for a in arts)
    return arts


@pytest.mark.slow
def test_pipeline_flow_tasks_artifacts_empty_parents_and_isolated_experiments(tmp_path, monkeypatch):
    """The flow in this process on a temporary Prefect database, real DVC on a copy of the tiny project:
    (1) a plain run: one task per stage, a parent MLflow run with the stage run under it, a markdown
    artifact with the link; (2) the same again, nothing to do: no parent run left, the artifact says
    why; (3) with overrides: an experiment in a temp checkout, the workspace byte-identical, the
    experiment in `dvc exp show`, its stage run under the flow's parent run, named in the artifact."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline

    project = copy_tiny_project(tmp_path / "proj")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SALIENT_RETRY_DELAY_SECONDS", "0")
    mc = MlflowClient(uri)

    def artifact_and_tasks(flow_run_name: str) -> tuple[str, list[str]]:
        with get_client(sync_client=True) as client:
            (fr,) = [r for r in client.read_flow_runs() if r.name == flow_run_name]
            (art,) = _artifacts(client, fr.id)
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id])))
        return art.data, sorted(t.name for t in tasks)

    with prefect_test_harness(server_startup_timeout=180):
        # 1. a plain run of one stage
        first = pipeline(["prepare"], project_dir=str(project))
        assert first["stages"] == ["sources", "prepare"] and [r["stage"] for r in first["ran"]] == ["prepare"]
        parent = mc.get_run(first["mlflow_run_id"])
        assert parent.info.status == "FINISHED" and parent.info.lifecycle_stage == "active"
        md, tasks = artifact_and_tasks(first["run_name"])
        assert tasks == ["prepare", "sources"]  # sources runs on every repro and opens no MLflow run
        assert f"/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?workflowType" in md
        assert f"| prepare | [`{first['ran'][0]['run_id'][:12]}`]" in md and "| FINISHED |" in md

        # 2. nothing to do: the parent run is not left behind
        again = pipeline(["prepare"], project_dir=str(project))
        assert again["ran"] == [] and again["deleted"]
        gone = mc.get_run(again["mlflow_run_id"])
        assert gone.info.lifecycle_stage == "deleted" and "salient.empty" in gone.data.tags
        listed = mc.search_runs([parent.info.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)
        assert again["mlflow_run_id"] not in {r.info.run_id for r in listed}
        md, _ = artifact_and_tasks(again["run_name"])
        assert "nothing ran" in md and "Up to date, skipped by DVC: `prepare`" in md

        # 3. overrides: an isolated experiment
        before = _workspace_hashes(project)
        assert {"params.yaml", "dvc.lock", "reports/prepare.json", "data/prepared/manifest.csv"} <= set(before)
        git_before = [_run(["git", *a], project).stdout for a in (["status", "--porcelain"], ["rev-parse", "HEAD"])]
        exp = pipeline(["prepare"], {"data.synthetic.noise": 5.0}, project_dir=str(project))
        assert _workspace_hashes(project) == before, "the experiment changed the workspace"
        assert [_run(["git", *a], project).stdout for a in (["status", "--porcelain"], ["rev-parse", "HEAD"])] == git_before
        assert exp["experiment"] and [r["stage"] for r in exp["ran"]] == ["prepare"]
        shown = _run([BIN / "dvc", "exp", "show", "--json"], project).stdout
        exps = [e for b in json.loads(shown) for e in b.get("experiments") or [] if e.get("name") == exp["experiment"]]
        assert len(exps) == 1, shown[:2000]
        assert exps[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]["data"]["synthetic"]["noise"] == 5.0
        child = mc.get_run(exp["ran"][0]["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == exp["mlflow_run_id"] and child.info.status == "FINISHED"
        assert child.data.params["data.synthetic.noise"] == "5.0"
        assert mc.get_run(exp["mlflow_run_id"]).data.tags["dvc.experiment"] == exp["experiment"]
        tags = child.data.tags  # grouped by experiment: its name and overrides, one filterable tag per key
        assert tags["salient.experiment"] == exp["experiment"] and tags["salient.overrides"] == "data.synthetic.noise=5.0"
        assert tags["salient.override.data.synthetic.noise"] == "5.0"
        found = mc.search_runs([parent.info.experiment_id], "tags.`salient.override.data.synthetic.noise` = '5.0'")
        assert {r.info.run_id for r in found} == {exp["mlflow_run_id"], child.info.run_id}
        assert parent.data.tags["salient.experiment"] == "workspace" and parent.data.tags["salient.overrides"] == "none"
        # dvc.lock and the stage's outputs changed by run 1 are results, not source: the tree counts as clean
        assert mc.get_run(exp["mlflow_run_id"]).data.tags["git.dirty"] == "false" == child.data.tags["git.dirty"]
        md, tasks = artifact_and_tasks(exp["run_name"])
        assert tasks == ["prepare", "sources"]  # one task per stage DVC ran (sources: always), not one opaque task
        assert f"**DVC experiment** `{exp['experiment']}` (`data.synthetic.noise=5.0`)" in md
        assert yaml.safe_load((project / "params.yaml").read_text())["data"]["synthetic"]["noise"] != 5.0

        # 4. a value the typed params reject: refused before any stage, experiment or MLflow run
        from components.core.params import ParamsError
        from flows.pipeline import RETRIES

        with pytest.raises(ParamsError, match="num_classes"):
            pipeline(["prepare"], {"data.synthetic.num_classes": "many"}, project_dir=str(project))
        known = {first["run_name"], again["run_name"], exp["run_name"]}
        with get_client(sync_client=True) as client:
            (refused,) = [r for r in client.read_flow_runs() if r.name not in known]
            assert refused.state.is_failed() and not client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[refused.id])))
        known.add(refused.name)

        # 5. an experiment whose stage fails (valid params, a csv dataset naming no annotation file): that stage's
        # task FAILED, with the stage's own error in its message, once per attempt; the flow run FAILED
        with pytest.raises(Exception, match="in stage prepare") as failed:
            pipeline(["prepare"], {"data.dataset": "csv"}, project_dir=str(project))
        assert "data.annotations is empty" in str(failed.value)
        with get_client(sync_client=True) as client:
            (fr,) = [r for r in client.read_flow_runs() if r.name not in known]
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id])))
        assert fr.state.is_failed()
        assert sorted((t.name, t.state.type.value) for t in tasks if t.name == "prepare") == \
            [("prepare", "FAILED")] * (RETRIES + 1)


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
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from components.ops.processes import free_port
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
        before = _workspace_hashes(project)
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
            assert _workspace_hashes(project) == before, "the experiment changed the worker's workspace"
            exps = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], project).stdout
            assert re.search(rf"/{re.escape(fr.name)}$", exps, re.M), exps
            shown = _run([BIN / "dvc", "exp", "show", "--json"], project).stdout
            assert f'"name": "{fr.name}"' in shown, shown[:2000]
            (art,) = _artifacts(client, ok_id)
            assert f"**DVC experiment** `{fr.name}` (`data.synthetic.noise=5.0`)" in art.data
            schema = client.read_deployment_by_name("pipeline/pipeline").parameter_openapi_schema
            assert all(len(p.get("description") or "") > 20 for p in schema["properties"].values()), schema

            # 2. a stage that fails: params.yaml the stage's loader rejects, --force so DVC runs it (the first
            # stage, `sources`, already loads the params and fails; prepare never starts)
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
            stage_runs = [t for t in task_runs if t.name == "sources"]
            assert len(stage_runs) == 1, [t.name for t in task_runs]
            assert stage_runs[0].run_count == 3, "two retries after the first attempt"
            assert stage_runs[0].state.is_failed()
            assert "outside the allowed range" in stage_runs[0].state.message
            records = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[bad_id])))
            logs = "\n".join(rec.message for rec in records)
            assert "fusion.lambda_v: 1.5 is outside the allowed range" in logs
            attempts = [r for r in records if r.message.startswith("$ ") and "repro --single-item --force sources" in r.message]
            assert len(attempts) == 3, logs[-3000:]  # the command of each attempt, streamed to the flow run's logs
            assert any(r.level >= 40 and "outside the allowed range" in r.message for r in records)  # an ERROR line
            (art,) = _artifacts(client, bad_id)
            assert ": FAILED" in art.data and "## Error (in `sources`)" in art.data and "outside the allowed range" in art.data

        # 3. MLflow: one parent run per flow run, FINISHED and FAILED
        from mlflow.tracking import MlflowClient

        mc = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
        runs = {r.data.tags.get("prefect.flow_run_id"): r for e in mc.search_experiments()
                for r in mc.search_runs([e.experiment_id])}
        assert runs[ok_id].info.status == "FINISHED"
        assert runs[ok_id].data.tags["salient.kind"] == "parent"
        assert runs[ok_id].data.params["overrides.data.synthetic.noise"] == "5.0"
        (child,) = mc.search_runs([runs[ok_id].info.experiment_id], f"tags.`mlflow.parentRunId` = '{runs[ok_id].info.run_id}'")
        assert child.data.tags["dvc.stage"] == "prepare" and child.data.params["data.synthetic.noise"] == "5.0"
        assert runs[bad_id].info.status == "FAILED"
    finally:
        left, alive = stop_local_prefect(stack, started, timings, t_start)
    assert left == []
    assert alive == [], f"still running: {alive}"
    assert len(started) >= 3  # server, worker, flow run processes at least


@pytest.mark.slow
def test_serve_main_until_ctrl_c(tmp_path):
    """`python -m flows.serve` (what `salient serve` calls): up, usable, the pool templates of
    deploy/ accepted by a real server, and after Ctrl-C (SIGINT) exit 0 with nothing left running."""
    import psutil

    from components.ops.processes import free_port

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
