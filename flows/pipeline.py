"""Prefect flow ``pipeline``: the DVC stages as Prefect tasks, so DVC still decides what is up to date.

    python -m flows.pipeline [TARGET ...] [-S key=value ...] [--force]     # a local run
    prefect deployment run 'pipeline/pipeline' -p targets='["prepare"]' \\
        -p overrides='{"data.synthetic.noise": 5.0}'                       # on a worker (salient serve)

The flow only orchestrates (DESIGN.md §4): every piece of work is a ``dvc`` subprocess in the project
directory, whose output is streamed line by line into the Prefect logger (visible in the UI).

**Order.** The stage graph comes from DVC itself (``dvc dag --dot``: one node per stage, foreach
items as ``group@key``, edges upstream -> downstream); :func:`stage_plan` keeps the requested
``targets`` and everything upstream of them (what ``dvc repro TARGETS`` would consider) and sorts them
topologically, one task per stage, or per foreach group (``train_sampler``: one task running all its
selected items). Tasks run one after another: ``dvc repro`` holds a lock on the repository, so two
stages of one workspace cannot run at once anyway (for the same reason two flow runs on one checkout
serialise through DVC's lock and the task retries; give parallel workers a checkout each).

**Tasks.** ``dvc repro --single-item [--force] <stage or items>``: DVC skips what is up to date. A
failing stage is retried ``SALIENT_TASK_RETRIES`` times (default 2), ``SALIENT_RETRY_DELAY_SECONDS``
apart (default 10; both read when this module is imported, so a work pool's or deployment's ``env``
job variable can set them); after the last attempt the task, and so the flow run, ends FAILED with
the tail of the stage's output (stdout and stderr, interleaved as printed) in the exception message
and in an ERROR log line. Downstream stages are not started.

**Overrides: a DVC experiment, not an edit of params.yaml.** Without ``overrides`` the flow runs
plain ``dvc repro`` stages on the workspace as it is. With ``overrides`` (``{"tsqnet.alpha": 0.4}``)
it runs *one* task: ``dvc exp run --name <flow run name> -S key=value ... [TARGETS]``, so the change is
recorded as a named DVC experiment (``dvc exp show``; ``dvc exp apply NAME`` brings it back later) and
DVC itself writes the values into the params file, reproduces what they invalidate and commits the
result to the experiment ref. We chose this over editing ``params.yaml`` from the flow because the
experiment keeps the provenance (which values, which flow run) in git refs, needs no code of ours
to parse or merge YAML, and is the same command a user types by hand. Workspace semantics of
``dvc exp run`` (not ``--temp``): on success the workspace holds the experiment's params and outputs,
exactly as after a ``dvc exp run`` by hand (``git checkout params.yaml && dvc checkout`` or
``dvc exp apply`` another one to go back); on failure the params files are restored to what they were
before the attempt, so a bad value never stays behind. Git HEAD never moves. The repository must be
a git repository with a commit (DVC experiments are git refs).

**MLflow.** One parent run (``components.tracking.parent_run``) spans the flow; its id is exported as
``$SALIENT_PARENT_RUN_ID`` (and the absolute tracking URI as ``$MLFLOW_TRACKING_URI``) into every dvc
subprocess, so stage runs become its children; it ends FAILED when the flow fails. Its id is logged
and returned. The tracking URI is ``$MLFLOW_TRACKING_URI`` or the project's ``params.yaml``
``tracking.mlflow_uri`` (a relative SQLite path is taken relative to ``project_dir``);
``SALIENT_TRACKING=0`` turns tracking off.
"""
from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

import components  # noqa: F401  (imported first: telemetry off, PREFECT_HOME inside the project)
from components.processes import dvc_command, start_group, stop_group, venv_env
from components.tracking import ENV_PARENT, ENV_URI, parent_run

RETRIES = int(os.environ.get("SALIENT_TASK_RETRIES", "2"))
RETRY_DELAY_SECONDS = float(os.environ.get("SALIENT_RETRY_DELAY_SECONDS", "10"))
TAIL_LINES = 40  # lines of a failed command's output put into the exception message


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
               targets: Iterable[str] | None = None) -> list[tuple[str, list[str]]]:
    """The tasks to run, in dependency order: ``[(task name, [stage, ...]), ...]``.

    Keeps ``targets`` (default: every stage) and all their upstream stages; foreach items of one
    group share a task (named after the group) unless that would create a cycle between groups, in
    which case every item is its own task. Every edge between kept stages goes from an earlier task
    to a later one (or stays inside one group task, where DVC orders the items itself).
    """
    keep = upstream_closure(resolve_targets(targets, nodes), edges)
    sel = [n for n in nodes if n in keep]
    sel_edges = [(a, b) for a, b in edges if a in keep and b in keep]
    order = _toposort(sel, sel_edges)
    if order is None:
        raise ValueError("the DVC stage graph has a cycle")
    groups = list(dict.fromkeys(group_of(n) for n in order))
    g_order = _toposort(groups, [(group_of(a), group_of(b)) for a, b in sel_edges if group_of(a) != group_of(b)])
    inner = any(group_of(a) == group_of(b) for a, b in sel_edges)
    if g_order is None or inner:  # items of one group depend on each other or interleave with others
        return [(n, [n]) for n in order]
    members: dict[str, list[str]] = collections.defaultdict(list)
    for n in order:
        members[group_of(n)].append(n)
    return [(g, members[g]) for g in g_order]


def plan(project_dir: str | os.PathLike = ".", targets: Iterable[str] | None = None) -> list[tuple[str, list[str]]]:
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
    by :func:`components.processes.stop_group`."""
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


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS, task_run_name="{name}")
def dvc_stage(name: str, stages: list[str], project_dir: str, force: bool = False,
              parent_run_id: str | None = None) -> list[str]:
    """``dvc repro --single-item [--force] STAGES`` (one stage, or the items of one foreach group)."""
    logger = get_run_logger()
    cmd = [*dvc_command(), "repro", "--single-item", *(["--force"] if force else []), *stages]
    t0 = time.perf_counter()
    rc, tail = run_logged(cmd, project_dir, _dvc_env(parent_run_id), logger, name)
    if rc:
        logger.error("stage %s failed (exit %d); last lines:\n%s", name, rc, tail)
        raise StageFailed(f"`dvc {' '.join(cmd[len(dvc_command()):])}` exited with {rc}; last lines:\n{tail}")
    logger.info("stage %s done in %.1f s", name, time.perf_counter() - t0)
    return stages


def _override_arg(key: str, value: Any) -> str:
    """``-S`` argument: the value as YAML DVC can parse (strings as they are, the rest as JSON)."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _params_files(project_dir: Path, overrides: Mapping[str, Any]) -> list[Path]:
    files = {project_dir / "params.yaml"}
    for k in overrides:
        if ":" in k:  # [<filename>:]<param_name>
            files.add(project_dir / k.split(":", 1)[0])
    return sorted(files)


def experiment_name(base: str, project_dir: str | os.PathLike) -> str:
    """A git-ref-safe experiment name from ``base`` that no existing DVC experiment of the repo uses."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "pipeline"
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=project_dir,
                          capture_output=True, text=True).stdout.split()
    taken = {r.rsplit("/", 1)[-1] for r in refs}
    out, i = name, 1
    while out in taken:
        i += 1
        out = f"{name}-{i}"
    return out


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS, task_run_name="experiment {name}")
def dvc_experiment(name: str, overrides: dict[str, Any], targets: list[str] | None, project_dir: str,
                   force: bool = False, parent_run_id: str | None = None) -> str:
    """``dvc exp run --name NAME -S k=v ... [--force] [TARGETS]``; the params files are put back as
    they were when it fails. Returns the experiment's name."""
    logger = get_run_logger()
    project = Path(project_dir)
    files = _params_files(project, overrides)
    saved = {f: f.read_bytes() if f.exists() else None for f in files}
    exp = experiment_name(name, project)
    cmd = [*dvc_command(), "exp", "run", "--name", exp, *(["--force"] if force else [])]
    for k, v in overrides.items():
        cmd += ["-S", _override_arg(k, v)]
    cmd += list(targets or [])
    t0 = time.perf_counter()
    rc, tail = run_logged(cmd, project, _dvc_env(parent_run_id), logger, f"exp {exp}")
    if rc:
        for f, data in saved.items():
            if data is None:
                f.unlink(missing_ok=True)
            else:
                f.write_bytes(data)
        logger.error("experiment %s failed (exit %d); params files restored; last lines:\n%s", exp, rc, tail)
        raise StageFailed(f"`dvc {' '.join(cmd[len(dvc_command()):])}` exited with {rc}; last lines:\n{tail}")
    logger.info("experiment %s done in %.1f s (`dvc exp show` lists it)", exp, time.perf_counter() - t0)
    return exp


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


def _git_tags(project: Path) -> dict[str, str]:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True)
    if out.returncode:
        return {}
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project,
                           capture_output=True, text=True).stdout.strip()
    commit = out.stdout.strip()
    return {"git.commit": commit, "mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def _runtime() -> dict[str, str | None]:
    from prefect.runtime import deployment, flow_run

    return {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name,
            "prefect.deployment": deployment.name, "prefect.ui_url": flow_run.ui_url}


@flow(name="pipeline")
def pipeline(targets: list[str] | None = None, overrides: dict[str, Any] | None = None, force: bool = False,
             project_dir: str = ".") -> dict[str, Any]:
    """Run the DVC pipeline (or ``targets`` and what they need) as Prefect tasks in dependency order.

    targets: DVC stages (``prepare``), foreach groups (``train_sampler``) or items
        (``train_sampler@tsqnet``); default: every stage.
    overrides: params to change for this run, ``{"tsqnet.alpha": 0.4}``: the run becomes a DVC
        experiment named after the flow run (``dvc exp run -S``); see the module docstring.
    force: reproduce even what DVC finds up to date (``--force``).
    project_dir: the DVC project (a deployment's pull step already changed into it).

    Returns ``{"mlflow_run_id", "tasks", "stages", "experiment"}``.
    """
    logger = get_run_logger()
    project = Path(project_dir).absolute()
    nodes, edges = stage_graph(project)
    steps = stage_plan(nodes, edges, targets)
    logger.info("project %s; tasks in order: %s", project, " -> ".join(n for n, _ in steps))
    rt = _runtime()
    run_name = rt["prefect.flow_run_name"] or time.strftime("pipeline-%Y%m%d-%H%M%S")
    params = {"targets": json.dumps(list(targets or [])), "force": force, "project_dir": str(project),
              "overrides": dict(overrides or {})}
    tags = {**_git_tags(project), **{k: v for k, v in rt.items() if v}}
    result: dict[str, Any] = {"tasks": [n for n, _ in steps], "stages": [s for _, ss in steps for s in ss],
                              "experiment": None}
    with parent_run(f"pipeline {run_name}", params, tags=tags, tracking=_tracking_config(project)) as run:
        result["mlflow_run_id"] = run.run_id
        if run.run_id:
            logger.info("MLflow parent run %s (%s=%s, %s=%s)", run.run_id, ENV_PARENT, run.run_id, ENV_URI,
                        os.environ.get(ENV_URI))
        if overrides:
            result["experiment"] = dvc_experiment(run_name, dict(overrides), list(targets) if targets else None,
                                                  str(project), force, run.run_id)
            if run.run_id:
                run.set_tags({"dvc.experiment": result["experiment"]})
        else:
            for name, stages in steps:
                dvc_stage(name, stages, str(project), force, run.run_id)
    logger.info("pipeline done: %s", result)
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help="DVC stages / groups / items (default: all)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="param override (the run becomes a DVC experiment)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--project-dir", default=".")
    args = ap.parse_args(argv)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    pipeline(args.targets or None, overrides or None, args.force, args.project_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
