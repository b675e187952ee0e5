"""Prefect flow ``pipeline``: the DVC stages as Prefect tasks, so DVC still decides what is up to date.

    python -m flows.pipeline [TARGET ...] [-S key=value ...] [--force]     # a local run
    prefect deployment run 'pipeline/pipeline' -p targets='["prepare"]' \\
        -p overrides='{"data.synthetic.noise": 5.0}'                       # on a worker (salient serve)

The flow only orchestrates (docs/design.md §4): every piece of work is a ``dvc`` subprocess in the project
directory, whose output is streamed line by line into the Prefect logger (visible in the UI).

**Order.** The stage graph comes from DVC itself (``dvc dag --dot``: one node per stage, foreach /
matrix items as ``group@key``, edges upstream -> downstream); :func:`stage_plan` keeps the requested
``targets`` and everything upstream of them (what ``dvc repro TARGETS`` would consider) and sorts them
topologically, items of one group kept next to each other where the graph allows. **One task per
stage and per item** (``train_sampler@0-tsqnet``, ``ablate@0-nsnet_fem_mlp``): each sampler is seen,
timed and retried on its own in the UI, and ``-p targets='["train_sampler@0-tsqnet"]'`` re-runs one.
Tasks run one after another: ``dvc repro`` holds a lock on the repository, so two stages of one
workspace cannot run at once anyway (for the same reason two flow runs on one checkout serialise
through DVC's lock and the task retries; give parallel workers a checkout each).

**Tasks.** ``dvc repro --single-item [--force] <stage>``: DVC skips what is up to date. A failing
stage is retried ``SALIENT_TASK_RETRIES`` times (default 2), ``SALIENT_RETRY_DELAY_SECONDS`` apart
(default 10; both read when this module is imported, so a work pool's or deployment's ``env`` job
variable can set them); after the last attempt the task, and so the flow run, ends FAILED with the
tail of the stage's output (stdout and stderr, interleaved as printed) in the exception message and
in an ERROR log line. Downstream stages are not started.

**Overrides: an isolated DVC experiment.** Without ``overrides`` the flow runs plain ``dvc repro``
stages on the workspace as it is. With ``overrides`` (``{"tsqnet.alpha": 0.4}``) it runs
``dvc exp run --temp --name <flow run name> -S key=value ... [TARGETS]`` and reads DVC's output as it
prints it: every stage DVC starts (``Running stage 'X'``, or restores from its run cache) becomes a task
of its own, RUNNING while DVC is in it, with that stage's output in its log (:func:`dvc_experiment`). DVC builds the experiment
in a temporary git checkout under ``.dvc/tmp/exps/`` (HEAD plus the workspace's uncommitted changes
to tracked files), reproduces there what the values invalidate (outputs it does not rebuild come from
the DVC cache, and from the run cache when an identical stage ran before), commits the result to the
experiment's git ref and removes the checkout. The worker's ``params.yaml``, ``dvc.lock`` and outputs
stay byte for byte as they were (tested), so the next plain run starts from the committed params, not
from the experiment's. The experiment is listed by ``dvc exp show`` (``dvc exp apply NAME`` brings it
into a workspace), its stage runs are MLflow children of the flow's parent run (tagged
``dvc.experiment``) and its results are in the flow run's artifact. Files the temporary checkout
lacks: untracked and git-ignored ones; the only such *input* of this pipeline is a real dataset
(``data.root`` / ``data.annotations`` as relative paths, e.g. ``data/raw``), which is copied in with
``--copy-paths`` when ``prepare`` is among the stages (:func:`untracked_inputs`; a dataset tracked with
``dvc add`` or given as an absolute path is not copied). The repository must be a git repository
with a commit (DVC experiments are git refs).

**MLflow.** One parent run (``components.tracking.mlflow_tracking.parent_run``) spans the flow; its id is exported as
``$SALIENT_PARENT_RUN_ID`` (and the absolute tracking URI as ``$MLFLOW_TRACKING_URI``) into every dvc
subprocess, so stage runs become its children; it ends FAILED when the flow fails. A run that
completes without any stage run under it (DVC found everything up to date) is deleted (MLflow's
*deleted* lifecycle stage, restorable, tagged ``salient.empty``): a user comparing runs sees one
parent per flow run that did something, not a row of empty ones. An experiment's parent is always
kept (it records the overrides and the experiment's name even when the run cache served every stage).
The tracking URI is ``$MLFLOW_TRACKING_URI`` or the project's ``params.yaml`` ``tracking.mlflow_uri``
(a relative SQLite path is taken relative to ``project_dir``); ``SALIENT_TRACKING=0`` turns tracking
off.

**Artifact.** Every flow run, completed or failed, publishes a markdown artifact (key
``pipeline-results``, :func:`results_markdown`): the link to its MLflow parent run (a server URI's
own page; for SQLite the page ``salient ui`` serves), the DVC experiment and its overrides, the
headline table (frame recognizer, mAP by K and GMACs, from ``reports/summary.json``, of the experiment
when there is one) when ``summary`` is among the stages, and one row per stage run with its MLflow
run and status.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import components  # noqa: F401  (imported first: telemetry off, PREFECT_HOME inside the project)
from components.core.params import load_params
from components.core.paths import Paths
from components.ops.processes import dvc_command, start_group, stop_group, venv_env
from components.ops.stage_runner import always_changed_stages
from components.tracking.mlflow_tracking import (ENV_PARENT, ENV_URI, NULL_RUN, child_runs, delete_empty, experiment_tags, git_info,
                                 parent_run, ui_url)

RETRIES = int(os.environ.get("SALIENT_TASK_RETRIES", "2"))
RETRY_DELAY_SECONDS = float(os.environ.get("SALIENT_RETRY_DELAY_SECONDS", "10"))
TAIL_LINES = 40  # lines of a failed command's output put into the exception message
ARTIFACT_KEY = "pipeline-results"
UI_URL = "http://127.0.0.1:5000"  # where `salient ui` serves a SQLite store


class StageFailed(RuntimeError):
    """A dvc command exited non-zero; the message ends with the tail of its output."""


# ------------------------------------------------------------------------------ the stage graph
_EDGE = re.compile(r'^\s*"(?P<a>[^"]+)"\s*->\s*"(?P<b>[^"]+)"\s*;?\s*$')
_NODE = re.compile(r'^\s*"(?P<n>[^"]+)"\s*;?\s*$')


def parse_dot(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Nodes (in the order listed) and edges ``(upstream, downstream)`` of ``dvc dag --dot``."""
    nodes: list[str] = []
    edges: list[tuple[str, str]] = []
    for line in text.splitlines():
        if m := _EDGE.match(line):
            edges.append((m["a"], m["b"]))
            for n in (m["a"], m["b"]):
                if n not in nodes:
                    nodes.append(n)
        elif (m := _NODE.match(line)) and m["n"] not in nodes:
            nodes.append(m["n"])
    return nodes, edges


def stage_graph(project_dir: str | os.PathLike = ".") -> tuple[list[str], list[tuple[str, str]]]:
    """The project's stages and dependency edges, asked from DVC (``dvc dag --dot``)."""
    out = subprocess.run([*dvc_command(), "dag", "--dot"], cwd=project_dir, capture_output=True, text=True,
                         env=venv_env())
    if out.returncode:
        raise StageFailed(f"`dvc dag --dot` failed in {project_dir} (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return parse_dot(out.stdout)


def group_of(stage: str) -> str:
    """``train_sampler@tsqnet`` -> ``train_sampler`` (foreach / matrix items); a plain stage is its own group."""
    return stage.split("@", 1)[0]


def _toposort(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """Kahn's algorithm, ties broken by the order of ``nodes`` (stable); None on a cycle."""
    rank = {n: i for i, n in enumerate(nodes)}
    succ: dict[str, set[str]] = {n: set() for n in nodes}
    indeg = dict.fromkeys(nodes, 0)
    for a, b in set(edges):
        if a in succ and b in succ and a != b and b not in succ[a]:
            succ[a].add(b)
            indeg[b] += 1
    ready = sorted((n for n in nodes if indeg[n] == 0), key=rank.__getitem__)
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
        ready.sort(key=rank.__getitem__)
    return out if len(out) == len(nodes) else None


def upstream_closure(targets: Iterable[str], edges: Iterable[tuple[str, str]]) -> set[str]:
    """``targets`` and every stage they depend on, directly or not."""
    preds: dict[str, set[str]] = collections.defaultdict(set)
    for a, b in edges:
        preds[b].add(a)
    seen: set[str] = set()
    todo = list(targets)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(preds[n])
    return seen


def resolve_targets(targets: Iterable[str] | None, nodes: Sequence[str]) -> list[str]:
    """Stage names for ``targets`` (a stage, a foreach item ``group@key`` or a whole group); ValueError
    naming the known stages for anything else."""
    if not targets:
        return list(nodes)
    out: list[str] = []
    for t in targets:
        t = t.split(":", 1)[1] if t.startswith("dvc.yaml:") else t
        hits = [n for n in nodes if n == t] or [n for n in nodes if group_of(n) == t]
        if not hits:
            groups = sorted({group_of(n) for n in nodes})
            raise ValueError(f"unknown DVC stage {t!r}; stages: {', '.join(groups)} (foreach items as group@key)")
        out += [h for h in hits if h not in out]
    return out


def stage_plan(nodes: Sequence[str], edges: Sequence[tuple[str, str]],
               targets: Iterable[str] | None = None) -> list[str]:
    """The stages to run, one task each, in dependency order.

    Keeps ``targets`` (default: every stage) and all their upstream stages; every edge between kept
    stages goes from an earlier stage to a later one. Foreach / matrix items are stages of their own;
    among stages that are free to go next, the items of the group met first in ``nodes`` go first, so
    a group's items stay next to each other unless an edge puts another stage between them.
    """
    keep = upstream_closure(resolve_targets(targets, nodes), edges)
    first = {}
    for i, n in enumerate(nodes):
        first.setdefault(group_of(n), i)
    sel = sorted((n for n in nodes if n in keep), key=lambda n: (first[group_of(n)], nodes.index(n)))
    order = _toposort(sel, [(a, b) for a, b in edges if a in keep and b in keep])
    if order is None:
        raise ValueError("the DVC stage graph has a cycle")
    return order


def plan(project_dir: str | os.PathLike = ".", targets: Iterable[str] | None = None) -> list[str]:
    """:func:`stage_plan` of the project's DVC graph."""
    return stage_plan(*stage_graph(project_dir), targets)


# ------------------------------------------------------------------------------ running dvc
def _dvc_env(parent_run_id: str | None) -> dict[str, str]:
    env = venv_env()  # this venv's bin first: dvc.yaml's `python -m ...` runs in this venv
    env["PYTHONUNBUFFERED"] = "1"
    if parent_run_id:
        env[ENV_PARENT] = parent_run_id
    return env


def run_logged(cmd: Sequence[str], cwd: str | os.PathLike, env: Mapping[str, str], logger, label: str) -> tuple[int, str]:
    """Run ``cmd``, every output line (stdout and stderr, as printed) to ``logger.info``; returns the
    exit status and the last :data:`TAIL_LINES` lines. The command gets its own process group, killed
    if we are interrupted (a cancelled flow run leaves no stage running): SIGTERM, SIGKILL after 10 s,
    by :func:`components.ops.processes.stop_group`."""
    logger.info("$ %s", " ".join(cmd))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = start_group(cmd, name=label, env=env, cwd=cwd, pipe=True)
    try:
        assert proc.popen.stdout is not None
        for line in proc.popen.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                logger.info("[%s] %s", label, line)
        return proc.popen.wait(), "\n".join(tail)
    finally:
        if proc.alive():  # interrupted: a cancelled or crashed flow run
            stop_group(proc, signals=(signal.SIGTERM,), grace=10)


def run_dvc(args: Sequence[str], project_dir: str | os.PathLike, parent_run_id: str | None, label: str) -> None:
    """``dvc ARGS`` in ``project_dir`` through :func:`run_logged` (in a task: its logger); raises
    :class:`StageFailed` with the tail of the output when it exits non-zero."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    rc, tail = run_logged([*dvc_command(), *args], project_dir, _dvc_env(parent_run_id), logger, label)
    if rc:
        logger.error("%s failed (exit %d); last lines:\n%s", label, rc, tail)
        raise StageFailed(f"`dvc {' '.join(args)}` exited with {rc}; last lines:\n{tail}")
    logger.info("%s done in %.1f s", label, time.perf_counter() - t0)


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS, task_run_name="{stage}")
def dvc_stage(stage: str, project_dir: str, force: bool = False, parent_run_id: str | None = None) -> str:
    """``dvc repro --single-item [--force] STAGE``: one stage, or one item of a foreach / matrix group."""
    run_dvc(["repro", "--single-item", *(["--force"] if force else []), stage], project_dir, parent_run_id, stage)
    return stage


def _override_arg(key: str, value: Any) -> str:
    """``-S`` argument: the value as YAML DVC can parse (strings as they are, the rest as JSON)."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _git_lines(project_dir: str | os.PathLike, *args: str) -> list[str]:
    out = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else []


def experiment_ref(name: str, project_dir: str | os.PathLike) -> str | None:
    """The git ref of DVC experiment ``name`` (``refs/exps/<baseline>/<name>``), None when there is none."""
    refs = _git_lines(project_dir, "for-each-ref", "--format=%(refname)", "refs/exps")
    return next((r for r in refs if r.count("/") >= 4 and r.rsplit("/", 1)[-1] == name), None)


def experiment_name(base: str, project_dir: str | os.PathLike) -> str:
    """A git-ref-safe experiment name from ``base`` that no existing DVC experiment of the repo uses."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "pipeline"
    out, i = name, 1
    while experiment_ref(out, project_dir):
        i += 1
        out = f"{name}-{i}"
    return out


def _lookup(params: Mapping, key: str) -> Any:
    for part in key.split("."):
        params = params.get(part) if isinstance(params, Mapping) else None
    return params


def untracked_inputs(project_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> list[str]:
    """What ``prepare`` reads that a temporary git checkout lacks: ``data.root`` and ``data.annotations``
    (after ``overrides``) of a dataset other than the synthetic one, when they are relative paths that
    exist in the project and neither git (``git ls-files``) nor DVC (``<path>.dvc``) tracks."""
    import yaml

    project = Path(project_dir)
    params = yaml.safe_load((project / "params.yaml").read_text()) or {}
    get = {k: (overrides or {}).get(k, _lookup(params, k)) for k in ("data.dataset", "data.root", "data.annotations")}
    if get["data.dataset"] in (None, "synthetic"):
        return []
    out = []
    for rel in (get["data.root"], get["data.annotations"]):
        if not rel or Path(rel).is_absolute() or not (project / rel).exists():
            continue
        if not (project / f"{str(rel).rstrip('/')}.dvc").exists() and not _git_lines(project, "ls-files", "--", str(rel)):
            out.append(str(rel))
    return out


def check_overrides(project_dir: str | os.PathLike, overrides: Mapping[str, Any]) -> None:
    """Load the project's ``params.yaml`` with ``overrides`` as the experiment's stages will
    (:func:`components.core.params.load_params`), so that a bad override, or one its switch makes unused
    (``fusion.lambda_v`` while ``fusion.source=tuned``), fails the flow run before anything runs."""
    load_params(Path(project_dir) / "params.yaml", dict(overrides))


#: DVC's log line when it starts (or restores from its run cache, or skips) a stage: one task per match
_STAGE_LINE = re.compile(r"^(?:Running stage '(?P<run>[^']+)':|Stage '(?P<cached>[^']+)' is cached - skipping run"
                         r"|Stage '(?P<same>[^']+)' didn't change, skipping)")
_streams: dict[str, queue.Queue] = {}  # experiment output streams, by key, for experiment_stage tasks


def stream_events(proc: Any, events: queue.Queue) -> None:
    """Read ``proc``'s output (in a thread): ``("stage", name, line)`` when DVC starts a stage,
    ``("line", text)`` otherwise, ``("exit", status)`` last."""
    try:
        for line in proc.popen.stdout:
            line = line.rstrip()
            if not line:
                continue
            m = _STAGE_LINE.match(line.strip())
            events.put(("stage", m.group("run") or m.group("cached") or m.group("same"), line) if m else ("line", line))
    finally:
        events.put(("exit", proc.popen.wait()))


@task(task_run_name="{stage}", cache_policy=NO_CACHE)
def experiment_stage(stage: str, stream: str, first_line: str) -> tuple:
    """One stage of a running ``dvc exp run``: RUNNING from DVC's ``Running stage`` line until the next
    stage starts (COMPLETED) or DVC exits (COMPLETED on 0, FAILED with the output's tail otherwise); its
    output lines go to this task's log. Returns the event that ended it."""
    logger, events = get_run_logger(), _streams[stream]
    tail: collections.deque[str] = collections.deque([first_line], maxlen=TAIL_LINES)
    logger.info("[%s] %s", stage, first_line)
    while True:
        event = events.get()
        if event[0] == "line":
            tail.append(event[1])
            logger.info("[%s] %s", stage, event[1])
            continue
        if event[0] == "exit" and event[1]:
            tail_text = "\n".join(tail)
            logger.error("dvc exp run failed in %s (exit %d); last lines:\n%s", stage, event[1], tail_text)
            raise StageFailed(f"`dvc exp run` exited with {event[1]} in stage {stage}; last lines:\n{tail_text}")
        return event


def experiment_args(name: str, overrides: Mapping[str, Any], targets: Sequence[str] | None, force: bool,
                    copy_paths: Sequence[str] | None) -> list[str]:
    """``exp run --temp --name NAME [-C PATH ...] -S k=v ... [--force] [TARGETS]``."""
    args = ["exp", "run", "--temp", "--name", name, *(["--force"] if force else [])]
    for p in copy_paths or []:
        args += ["--copy-paths", p]
    for k, v in overrides.items():
        args += ["-S", _override_arg(k, v)]
    return [*args, *(targets or [])]


def dvc_experiment(name: str, overrides: dict[str, Any], targets: list[str] | None, project_dir: str,
                   force: bool = False, parent_run_id: str | None = None,
                   copy_paths: list[str] | None = None) -> str:
    """``dvc exp run --temp ...`` (:func:`experiment_args`), called from the flow: the experiment runs in a
    temporary checkout, the workspace is never touched. DVC's output is read as it prints it and every
    stage DVC starts becomes its own task (:func:`experiment_stage`), RUNNING while DVC runs it, so the
    flow run shows which stage an experiment is in. A failing run is started again up to ``RETRIES``
    times, ``RETRY_DELAY_SECONDS`` apart (DVC's run cache restores the stages that had finished).
    Returns the experiment's name."""
    logger = get_run_logger()
    exp = experiment_name(name, project_dir)
    cmd = [*dvc_command(), *experiment_args(exp, overrides, targets, force, copy_paths)]
    proc = None
    for attempt in range(RETRIES + 1):
        logger.info("$ %s", " ".join(cmd))
        key, events = f"{exp}-{attempt}", queue.Queue()
        _streams[key] = events
        proc = start_group(cmd, name=f"exp {exp}", env=_dvc_env(parent_run_id), cwd=project_dir, pipe=True)
        threading.Thread(target=stream_events, args=(proc, events), daemon=True).start()
        try:
            event = events.get()
            while event[0] != "exit":
                if event[0] == "stage":
                    event = experiment_stage(event[1], key, event[2])
                else:  # before the first stage: DVC preparing the temporary checkout
                    logger.info("[exp %s] %s", exp, event[1])
                    event = events.get()
            if event[1]:
                raise StageFailed(f"`dvc exp run` exited with {event[1]} before any stage ran")
            break
        except StageFailed:
            if attempt == RETRIES:
                raise
            logger.warning("experiment %s failed (attempt %d of %d); again in %.0f s", exp, attempt + 1, RETRIES + 1,
                           RETRY_DELAY_SECONDS)
            time.sleep(RETRY_DELAY_SECONDS)
        finally:
            _streams.pop(key, None)
            if proc is not None and proc.alive():  # interrupted: a cancelled or crashed flow run
                stop_group(proc, signals=(signal.SIGTERM,), grace=10)
    logger.info("experiment %s: `dvc exp show` lists it, `dvc exp apply %s` applies it", exp, exp)
    return exp


# ------------------------------------------------------------------------------ results and links
def mlflow_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run: on the tracking server itself for an ``http(s)`` URI, else on the
    local UI ``salient ui`` starts (:data:`UI_URL`); opened on training runs, not MLflow 3's GenAI view
    (:func:`components.tracking.mlflow_tracking.ui_url`)."""
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else UI_URL
    return ui_url(0, experiment_id, run_id, base=base)


def read_json(project_dir: str | os.PathLike, path: str | os.PathLike, ref: str | None = None) -> Any:
    """JSON file ``path`` of the project: the workspace's, or as committed in git ``ref`` (an
    experiment); None when it is absent or unreadable."""
    try:
        if ref is None:
            return json.loads((Path(project_dir) / path).read_text())
        out = subprocess.run(["git", "show", f"{ref}:{Path(path).as_posix()}"], cwd=project_dir,
                             capture_output=True, text=True)
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, ValueError):
        return None


#: The K of the artifact's results table (the headline tables' budgets)
TABLE_KS = (3, 5)


def headline_table(summary: Mapping[str, Any], recognizer: str = "frame", ks: Sequence[int] = TABLE_KS) -> list[str]:
    """Markdown lines: per K of ``ks`` (those the summary has; every K when it has none of them) the mAP (%)
    with its spread over seeds (± as ``reports/README.md``) and 95% bootstrap CI over test videos, and the
    GMACs per video; one row per sampler of ``summary.json``'s headline (branch rows left out)."""
    rows = {s: by_rec[recognizer] for s, by_rec in (summary.get("headline") or {}).items()
            if "[" not in s and by_rec.get(recognizer)}
    have = sorted({int(k) for cells in rows.values() for k in cells})
    ks = [k for k in ks if k in have] or have
    if not ks:
        return []

    def cell(c: Mapping[str, Any] | None) -> str:
        if not c or c.get("map") is None:
            return "–"
        std = c.get("map_std_pipeline") if c.get("pipeline_seeds", 1) > 1 else c.get("map_std_runs")
        ci = c.get("map_ci")
        return (f"{100 * c['map']:.1f}" + (f" ± {100 * std:.1f}" if c.get("runs", 1) > 1 and std is not None else "")
                + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci and len(ci) == 2 else ""))

    def gmacs(c: Mapping[str, Any] | None) -> str:
        g = (c or {}).get("gmacs", (c or {}).get("gflops"))
        return f"{g:.3f}" if isinstance(g, (int, float)) else "–"

    lines = ["| sampler | " + " | ".join(f"mAP K={k} [95% CI] | GMACs K={k}" for k in ks) + " |",
             "|---|" + "---|---|" * len(ks)]
    for s, cells in rows.items():
        lines.append(f"| {s} | " + " | ".join(f"{cell(cells.get(str(k)))} | {gmacs(cells.get(str(k)))}" for k in ks)
                     + " |")
    return lines


def stage_runs(run: Any) -> list[dict[str, str]] | None:
    """The stage runs under parent ``run`` (MLflow children), oldest first, as ``{stage, run_id, status}``;
    None when tracking is off or they cannot be listed."""
    if not run:
        return None
    try:
        found = child_runs(run)
    except Exception:  # noqa: BLE001 - the artifact and the cleanup must never fail the flow
        return None
    return [{"stage": r.data.tags.get("dvc.stage") or r.info.run_name, "run_id": r.info.run_id,
             "status": r.info.status} for r in found]


def results_markdown(result: Mapping[str, Any], *, tracking_uri: str | None = None,
                     experiment_id: str | None = None, summary: Mapping[str, Any] | None = None) -> str:
    """The flow run's artifact: MLflow link, DVC experiment, headline table, stage runs, error (see the
    module docstring). ``result`` is what :func:`pipeline` returns."""
    run_id, ran, exp = result.get("mlflow_run_id"), result.get("ran"), result.get("experiment")
    status = "FAILED" if result.get("error") else "COMPLETED"
    lines = [f"# pipeline {result.get('run_name') or ''}: {status}", ""]
    if not run_id:
        lines.append("**MLflow**: tracking off (`SALIENT_TRACKING=0`).")
    elif result.get("deleted"):
        lines.append(f"**MLflow**: nothing ran (DVC found every stage up to date), so no run was kept: the empty "
                     f"parent run `{run_id}` was deleted (restorable from MLflow's deleted runs).")
    else:
        url = mlflow_url(tracking_uri or "", experiment_id or "", run_id)
        where = ("" if (tracking_uri or "").startswith(("http://", "https://"))
                 else f" (tracking URI `{tracking_uri}`: start the UI with `salient ui`, then open the link)")
        lines.append(f"**MLflow**: parent run [`{run_id}`]({url}) in experiment {experiment_id}{where}.")
    if exp:
        sets = " ".join(f"`{_override_arg(k, v)}`" for k, v in (result.get("overrides") or {}).items())
        lines += ["", f"**DVC experiment** `{exp}` ({sets}), run in a temporary checkout: the worker's workspace "
                      f"is unchanged. `dvc exp show` lists it; `dvc exp apply {exp}` brings it into a workspace."]
    table = headline_table(summary or {})
    if table:
        src = f"`reports/summary.json` of experiment `{exp}`" if exp else "`reports/summary.json`"
        lines += ["", f"## Results: frame recognizer, mAP (%) ± std over seeds [95% bootstrap CI over test videos] "
                      f"and GMACs per video ({src})", "", *table]
    lines += ["", "## Stages", ""]
    if ran:
        lines += ["| stage | MLflow run | status |", "|---|---|---|"]
        link = lambda rid: f"[`{rid[:12]}`]({mlflow_url(tracking_uri or '', experiment_id or '', rid)})"  # noqa: E731
        lines += [f"| {r['stage']} | {link(r['run_id'])} | {r['status']} |" for r in ran]
    planned = result.get("stages") or []
    quiet = set(result.get("always_run") or ())  # run every time, open no MLflow run: neither ran nor idle
    idle = [s for s in planned if s not in {r["stage"] for r in ran or []} and s not in quiet]
    if ran is None or result.get("error"):
        lines += ["", "Planned, in order: " + ", ".join(f"`{s}`" for s in planned) + "."]
    elif idle and not exp:
        lines += ["", "Up to date, skipped by DVC: " + ", ".join(f"`{s}`" for s in idle) + "."]
    if result.get("error"):
        lines += ["", f"## Error (in `{result.get('failed') or 'the flow'}`)", "",
                  "```", str(result["error"])[-4000:], "```"]
    return "\n".join(lines) + "\n"


def _publish(result: Mapping[str, Any], project: Path, run: Any, logger) -> None:
    """The markdown artifact of this flow run; a failure here is logged, never raised."""
    from prefect.artifacts import create_markdown_artifact

    try:
        summary = None
        if "summary" in (result.get("stages") or []):
            ref = experiment_ref(result["experiment"], project) if result.get("experiment") else None
            if ref or not result.get("experiment"):
                summary = read_json(project, Paths().reports / "summary.json", ref)
        md = results_markdown(result, tracking_uri=getattr(run, "tracking_uri", None),
                              experiment_id=getattr(run, "experiment_id", None), summary=summary)
        create_markdown_artifact(md, key=ARTIFACT_KEY, description=f"pipeline {result.get('run_name')}: results and "
                                                                  "MLflow run")
    except Exception as e:  # noqa: BLE001 - the artifact is a report; the flow's own outcome stands
        logger.warning("could not publish the results artifact: %s", e)


def _drop_empty(run: Any, logger) -> bool:
    """Delete parent ``run`` (tagged ``salient.empty``): nothing ran under it."""
    try:
        delete_empty(run, "no stage ran: DVC found every stage up to date")
    except Exception as e:  # noqa: BLE001
        logger.warning("could not delete the empty MLflow parent run %s: %s", run.run_id, e)
        return False
    logger.info("no stage ran (DVC found every stage up to date): empty MLflow parent run %s deleted", run.run_id)
    return True


# ------------------------------------------------------------------------------ the flow
def _tracking_config(project: Path) -> dict[str, str] | None:
    """The project's ``tracking`` params with a relative SQLite URI made absolute under ``project``."""
    import yaml

    try:
        t = (yaml.safe_load((project / "params.yaml").read_text()) or {}).get("tracking") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    uri = str(t.get("mlflow_uri") or "")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_absolute():
        uri = "sqlite:///" + str(project / uri[len("sqlite:///"):])
    return {k: v for k, v in {"mlflow_uri": uri or None, "experiment": t.get("experiment")}.items() if v}


def _runtime() -> dict[str, str | None]:
    from prefect.runtime import deployment, flow_run

    return {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name,
            "prefect.deployment": deployment.name, "prefect.ui_url": flow_run.ui_url}


@flow(name="pipeline")
def pipeline(targets: list[str] | None = None, overrides: dict[str, Any] | None = None, force: bool = False,
             project_dir: str = ".") -> dict[str, Any]:
    """Run the DVC pipeline (or ``targets`` and what they need) as Prefect tasks in dependency order.

    One task per stage and per foreach item; with ``overrides``, an isolated ``dvc exp run --temp`` whose
    stages are tasks too, as DVC starts them.
    Publishes the markdown artifact ``pipeline-results``. See the module docstring.

    Args:
        targets: DVC stages to reproduce, with everything upstream of them: a stage (`prepare`), a
            foreach group (`train_sampler`) or one item (`train_sampler@0-tsqnet`). Empty or null:
            every stage.
        overrides: Params changed for this run only, as {"dotted.key": value}, e.g.
            {"fusion.source": "params", "fusion.lambda_v": 0.4}. Checked like params.yaml before
            anything runs: an unknown key, a bad value, or one its switch makes unused fails the run.
            The run becomes a DVC experiment named after the flow run, built in a temporary
            checkout: the worker's params.yaml, dvc.lock and outputs stay as they are; see
            `dvc exp show`.
        force: Reproduce even the stages DVC finds up to date (`dvc repro --force`).
        project_dir: The DVC project to run in; a deployment's pull step has already changed into
            it, so "." is the worker's checkout.

    Returns:
        ``{"mlflow_run_id", "stages", "experiment", "ran", "deleted", ...}``: ``ran`` lists the stage
        runs MLflow recorded under the parent run (None when tracking is off).
    """
    logger = get_run_logger()
    project = Path(project_dir).absolute()
    stages = stage_plan(*stage_graph(project), targets)
    logger.info("project %s; %d tasks in order: %s", project, len(stages), " -> ".join(stages))
    rt = _runtime()
    run_name = rt["prefect.flow_run_name"] or time.strftime("pipeline-%Y%m%d-%H%M%S")
    params = {"targets": json.dumps(list(targets or [])), "force": force, "project_dir": str(project),
              "overrides": dict(overrides or {})}
    exp_name = experiment_name(run_name, project) if overrides else None  # the DVC experiment it becomes
    tags = {**git_info(cwd=project), **{k: v for k, v in rt.items() if v},
            **(experiment_tags(exp_name, dict(overrides)) if overrides else {})}
    result: dict[str, Any] = {"run_name": run_name, "stages": stages, "overrides": dict(overrides or {}),
                              "experiment": None, "mlflow_run_id": None, "ran": None, "deleted": False,
                              "error": None, "failed": None,
                              "always_run": sorted(always_changed_stages(project / "dvc.yaml"))}
    run: Any = NULL_RUN
    try:
        if overrides:  # refused before any stage, experiment or MLflow run starts
            result["failed"] = "params"
            check_overrides(project, overrides)
        with parent_run(f"pipeline {run_name}", params, tags=tags, tracking=_tracking_config(project)) as run:
            result["mlflow_run_id"] = run.run_id
            if run.run_id:
                logger.info("MLflow parent run %s (%s=%s, %s=%s)", run.run_id, ENV_PARENT, run.run_id, ENV_URI,
                            os.environ.get(ENV_URI))
            if overrides:
                copy = untracked_inputs(project, overrides) if "prepare" in stages else []
                if copy:
                    logger.info("copying the untracked dataset paths %s into the experiment's checkout", copy)
                result["failed"] = f"experiment {run_name}"  # the step under way: named by the artifact on error
                result["experiment"] = dvc_experiment(exp_name, dict(overrides), list(targets or []) or None,
                                                      str(project), force, run.run_id, copy)
                run.set_tags({"dvc.experiment": result["experiment"]})
            else:
                for stage in stages:
                    result["failed"] = stage
                    dvc_stage(stage, str(project), force, run.run_id)
            result["failed"] = None
    except BaseException as e:
        result["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        result["ran"] = stage_runs(run)
        if result["ran"] == [] and not result["experiment"] and not result["error"]:
            result["deleted"] = _drop_empty(run, logger)
        _publish(result, project, run, logger)
    logger.info("pipeline done: %s", {k: v for k, v in result.items() if k != "ran"})
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help="DVC stages / groups / items (default: all)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="param override (the run becomes an isolated DVC experiment)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--project-dir", default=".")
    args = ap.parse_args(argv)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    pipeline(args.targets or None, overrides or None, args.force, args.project_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
