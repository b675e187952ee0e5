"""MLflow tracking of every stage run, sampler training, ablation and sweep trial.

One *parent* run per ``dvc repro`` / Prefect flow run / Optuna sweep, one *child* run per stage or
trial. The parent is handed to children through the environment, so it works across processes
(DVC stages are subprocesses; Prefect process workers and sweep workers too)::

    with parent_run("pipeline", params):            # exports SALIENT_PARENT_RUN_ID (+ the tracking URI)
        subprocess.run(["dvc", "repro"])             # each stage: with stage_run(...) -> child run

    # inside a stage (components/stages/<name>.py)
    with stage_run("train_sampler@tsqnet", to_dict(params.tsqnet), tracking=params.tracking) as run:
        log_curve("train/loss", losses)             # step = epoch
        log_budget_curve("test/tsqnet", ks, {"mAP": maps, "gmacs": gmacs})   # step = K
        log_artifacts(["data/samplers/tsqnet"])     # checkpoints as plain files

Configuration, resolved on every call (so tests and library users can change it at run time):

* tracking URI: ``$MLFLOW_TRACKING_URI`` > ``params.tracking.mlflow_uri`` > ``sqlite:///mlflow.db``;
* experiment: ``params.tracking.experiment`` (a child always goes to its parent's experiment);
* ``SALIENT_TRACKING=0`` (or false / no / off) switches tracking off: every function is a cheap
  no-op, the context managers still work and yield a run handle whose ``run_id`` is None, nothing is
  imported from mlflow and no database file is created.
* a tracking server with basic auth (:mod:`components.ops.servers`): ``MLFLOW_TRACKING_USERNAME`` and
  ``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_PASSWORD_FILE`` naming a secret file (read into the
  environment when the first client is made); URIs in log lines, params and tags go through :func:`redact`.

Where the parent comes from, first match wins: ``parent_run_id=``; the innermost run opened by this
module in this process (a trial inside a stage); ``$SALIENT_PARENT_RUN_ID``. Runs are created with
``MlflowClient`` and an explicit ``mlflow.parentRunId`` tag, never through mlflow's in-process
active-run stack (``mlflow.start_run``), which knows nothing of a parent in another process and
raises when a second run starts in the same process without ``nested=True``.

The module-level ``log_*`` functions write to the innermost open run of this process and are no-ops
outside one (a stage's ``run()`` called directly by a unit test logs nothing). The yielded
:class:`TrackedRun` has the same methods, for code that holds its run explicitly.

Artifacts of experiments created here on a SQLite backend go to ``mlartifacts/`` beside the
database file (mlflow's client-side default would be ``./mlruns`` under whatever the working
directory is). Sampler checkpoints are logged as plain files, not as mlflow model flavours;
:func:`register_model` registers such a directory in the Model Registry and
:func:`resolve_model_uri` downloads ``models:/name@alias`` back to a local path.

A tracking **server that cannot be reached** (refused, timed out, 5xx after the retries; :func:`unreachable`)
never holds a run's results hostage: requests give up after ``tracking.retries`` retries of at most
``tracking.timeout_s`` seconds each (:func:`http_budget`, through MLflow's ``MLFLOW_HTTP_REQUEST_*``
variables); the run then goes on offline, with one warning naming the server, buffered in
``tracking.spool`` (:class:`Spool`: params, metrics with their steps, tags, artifacts, status), and so does
every run the process opens in the next minute. ``salient tracking sync`` (:func:`sync_spool`), or the start
of the next run that reaches the server, replays the buffer: the run then reads as if it had logged live.

Other errors of the tracking backend propagate (a misconfigured URI fails the stage at its start, set
``SALIENT_TRACKING=0`` to run without tracking), except while a run is being closed after an
exception in its body: then the original exception wins and the closing failure is logged.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from components import __version__
from components.ops.redaction import redact  # noqa: F401 - also used as tracking.redact
from components.ops.servers import export_secret_files, mlflow_server_env

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "salient"
ENV_ENABLED = "SALIENT_TRACKING"
ENV_PARENT = "SALIENT_PARENT_RUN_ID"
ENV_URI = "MLFLOW_TRACKING_URI"
PARENT_TAG = "mlflow.parentRunId"
#: MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, assistant); ours hold
#: training and evaluation runs ("custom_model_development" is its "traditional ML" kind).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_KEY = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
_FALSE = {"0", "false", "no", "off"}


# ------------------------------------------------------------------------------ configuration
def tracking_enabled() -> bool:
    """False when ``$SALIENT_TRACKING`` is 0 / false / no / off."""
    return os.environ.get(ENV_ENABLED, "1").strip().lower() not in _FALSE


def _section(tracking: Any) -> Any:
    """``TrackingParams`` from a Params, a TrackingParams, a mapping or None."""
    if tracking is None:
        return None
    if isinstance(tracking, Mapping):
        return tracking.get("tracking", tracking)
    return getattr(tracking, "tracking", tracking)


def _get(tracking: Any, key: str) -> Any:
    t = _section(tracking)
    if t is None:
        return None
    if isinstance(t, Mapping):
        return t.get(key)
    return getattr(t, key, None)


def tracking_uri(tracking: Any = None) -> str:
    """``$MLFLOW_TRACKING_URI`` > ``tracking.mlflow_uri`` > ``sqlite:///mlflow.db``.

    ``tracking`` is a ``Params``, its ``TrackingParams`` section, a mapping or None.
    """
    return os.environ.get(ENV_URI) or _get(tracking, "mlflow_uri") or DEFAULT_URI


def experiment_name(tracking: Any = None) -> str:
    return _get(tracking, "experiment") or DEFAULT_EXPERIMENT


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def absolute_uri(uri: str) -> str:
    """A SQLite URI with an absolute database path (so another working directory sees the same db)."""
    path = _sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return "sqlite:///" + str(path.absolute()) + (f"?{query}" if query else "")


# ------------------------------------------------------------------------------ flattening
def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str)
    if isinstance(value, Path):
        return str(value)
    try:
        return json.dumps(value)  # true / false / null / numbers as YAML would write them
    except (TypeError, ValueError):
        return str(value)


def flatten_params(params: Any, prefix: str = "") -> dict[str, str]:
    """A params slice (mapping or dataclass, nested) as ``{"a.b.c": "text"}`` for MLflow.

    Lists and tuples become their JSON text (``[1, 2, 3]``, also valid YAML); booleans
    ``true``/``false``; values longer than MLflow's 6000 characters are truncated with a warning.
    """
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    out: dict[str, str] = {}
    if not isinstance(params, Mapping):
        raise TypeError(f"params slice must be a mapping or a dataclass, got {type(params).__name__}")
    for k, v in params.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if (dataclasses.is_dataclass(v) and not isinstance(v, type)) or isinstance(v, Mapping):
            out.update(flatten_params(v, key))
            continue
        text = redact(_param_text(v))
        if len(text) > MAX_PARAM_VALUE:
            log.warning("param %s: %d characters, truncated to MLflow's %d", key, len(text), MAX_PARAM_VALUE)
            text = text[:MAX_PARAM_VALUE]
        out[key] = text
    return out


def _flatten_metrics(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten_metrics(v, key))
            continue
        if isinstance(v, (str, bytes, list, tuple, type(None))):
            continue  # names, CIs, file lists: not metrics
        try:
            out[key] = float(v)  # python / numpy / 0-d torch scalars
        except (TypeError, ValueError):
            log.debug("metric %s: %r is not a number, not logged", key, v)
    return out


# ------------------------------------------------------------------------------ provenance
def _git(*args: str, cwd: str | os.PathLike | None = None) -> str | None:
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, timeout=20, check=False, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


_git_cache: dict[str, tuple[float, dict[str, str]]] = {}


def git_info(max_age: float = 0.0, cwd: str | os.PathLike | None = None) -> dict[str, str]:
    """``git.commit`` (and mlflow's ``mlflow.source.git.commit``) and ``git.dirty`` of the repository at
    ``cwd`` (default: the working directory); empty outside a git repository or without git. ``git.dirty``
    is true only when tracked *source* differs from the commit: ``dvc.lock`` and the pipeline's own
    outputs (every ``outs`` path of ``dvc.lock``, and what else lands in :data:`RESULT_DIRS`) are left out, so the demo's
    results on a clean clone do not mark every later run dirty, and so is ``params.yaml`` inside a DVC
    experiment (its changes are the overrides, :func:`experiment_tags`); ``git.dirty_files`` names up to 10 of
    the changed sources. ``max_age`` > 0 reuses an answer for this directory at most that many seconds
    old (one evaluation opens ~100 runs)."""
    where = str(Path(cwd or os.getcwd()).absolute())
    hit = _git_cache.get(where)
    if max_age > 0 and hit is not None and time.monotonic() - hit[0] <= max_age:
        return dict(hit[1])
    out = _git_info(where)
    _git_cache[where] = (time.monotonic(), out)
    return dict(out)


def pipeline_outputs(root: str | os.PathLike) -> set[str]:
    """``dvc.lock`` and every ``outs`` path it records (relative to ``root``, the DVC project): the files
    a ``dvc repro`` writes, which are results, not source."""
    import yaml

    try:
        lock = yaml.safe_load((Path(root) / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {"dvc.lock"}
    stages = lock.get("stages") if isinstance(lock, Mapping) else None
    outs = {str(o["path"]).rstrip("/") for st in (stages or {}).values() if isinstance(st, Mapping)
            for o in st.get("outs") or [] if isinstance(o, Mapping) and o.get("path")}
    return outs | {"dvc.lock"}


#: Folders the stages and ``salient demo`` write results into (``components.core.paths.Paths``): a changed file
#: there is a result, not source, even where no stage declares it (``reports/demo_timing.json``); code kept
#: there (``reports/experiments/*.py``) still counts as source.
RESULT_DIRS = ("reports", "results")


def _is_output(path: str, outputs: set[str]) -> bool:
    if any(path == o or path.startswith(o + "/") for o in outputs):
        return True
    return path.split("/", 1)[0] in RESULT_DIRS and not path.endswith(".py")


def _git_info(cwd: str) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return {}
    out = {"git.commit": commit.strip(), "mlflow.source.git.commit": commit.strip()}
    top = (_git("rev-parse", "--show-toplevel", cwd=cwd) or "").strip()
    changed = _git("-c", "core.quotepath=off", "diff", "HEAD", "--name-only", "--no-renames", cwd=cwd)
    if changed is not None and top:
        outputs = pipeline_outputs(top)
        if os.environ.get("DVC_EXP_NAME") and os.environ.get("DVC_EXP_BASELINE_REV"):
            outputs.add("params.yaml")  # an experiment's -S values: every changed key is in its override tags
        source = [p for p in changed.splitlines() if p.strip() and not _is_output(p.strip(), outputs)]
        out["git.dirty"] = "true" if source else "false"
        if source:
            out["git.dirty_files"] = ", ".join(source[:10]) + (f" (+{len(source) - 10})" if len(source) > 10 else "")
    return out


#: The tags that group runs by experiment: ``salient.experiment`` (the DVC experiment's or flow run's
#: name, ``workspace`` for a plain ``dvc repro``), ``salient.overrides`` (``k=v; ...`` or ``none``) and one
#: ``salient.override.<key>`` per changed param, so ``tags.`salient.override.tsqnet.alpha` = '0.4'`` filters.
EXPERIMENT_TAG, OVERRIDES_TAG, OVERRIDE_PREFIX = "salient.experiment", "salient.overrides", "salient.override."
ENV_EXPERIMENT, ENV_OVERRIDES = "SALIENT_EXPERIMENT", "SALIENT_OVERRIDES"
_overrides_cache: dict[tuple[str, str, str], dict[str, str]] = {}


def params_diff(root: str | os.PathLike, rev: str, file: str = "params.yaml") -> dict[str, str]:
    """``{dotted key: value text}`` of the params in ``root/file`` that differ from ``file`` at git ``rev``
    (a DVC experiment's ``-S`` overrides: DVC writes them into the experiment's ``params.yaml``; its
    baseline commit is ``$DVC_EXP_BASELINE_REV``). A key only one side has counts as changed."""
    import yaml

    key = (str(Path(root).absolute()), rev, file)
    if key not in _overrides_cache:
        try:
            now = flatten_params(yaml.safe_load((Path(root) / file).read_text()) or {})
            then = flatten_params(yaml.safe_load(_git("show", f"{rev}:{file}", cwd=root) or "{}") or {})
        except (OSError, yaml.YAMLError, TypeError) as e:
            log.debug("no params diff against %s: %s", rev, e)
            now, then = {}, {}
        _overrides_cache[key] = {k: v for k, v in sorted(now.items()) if then.get(k) != v}
    return dict(_overrides_cache[key])


def experiment_tags(name: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The experiment tags (:data:`EXPERIMENT_TAG` & co.) of a run. ``name`` / ``overrides`` given (a
    Prefect flow run) win; else a stage run inside ``dvc exp run`` takes ``$DVC_EXP_NAME`` and the params
    that differ from ``$DVC_EXP_BASELINE_REV``; else ``$SALIENT_EXPERIMENT`` / ``$SALIENT_OVERRIDES``
    (JSON, exported by a parent run); else ``workspace`` with no overrides."""
    env = os.environ
    if name is None and env.get("DVC_EXP_NAME"):
        name = env["DVC_EXP_NAME"]
        if overrides is None and env.get("DVC_EXP_BASELINE_REV"):
            # the experiment's checkout (a temporary one under .dvc/tmp/exps with --temp): the stage's
            # repository, not $DVC_ROOT, which names the workspace the experiment was started from
            root = (_git("rev-parse", "--show-toplevel") or "").strip() or "."
            overrides = params_diff(root, env["DVC_EXP_BASELINE_REV"])
    name = name or env.get(ENV_EXPERIMENT) or "workspace"
    if overrides is None:
        try:
            overrides = json.loads(env.get(ENV_OVERRIDES) or "{}")
        except ValueError:
            overrides = {}
    flat = flatten_params(dict(overrides or {}))
    out = {EXPERIMENT_TAG: name, OVERRIDES_TAG: "; ".join(f"{k}={v}" for k, v in sorted(flat.items())) or "none"}
    out.update({(OVERRIDE_PREFIX + k)[:MAX_KEY]: v for k, v in flat.items()})
    return out


def dvc_stage_hash(stage_name: str, lock_path: str | Path = "dvc.lock") -> str | None:
    """md5 of the stage's ``dvc.lock`` entry (its deps, params and outs, canonical JSON), or None.

    ``stage_name`` as DVC writes it, ``train_sampler@tsqnet`` for a foreach member. Note that
    ``dvc repro`` rewrites ``dvc.lock`` only after a stage's command exits, so read from inside the
    stage this is the entry of the stage's previous locked run (the state the run started from).
    """
    import yaml

    try:
        lock = yaml.safe_load(Path(lock_path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        log.debug("no stage hash: cannot read %s: %s", lock_path, e)
        return None
    entry = (lock.get("stages") or {}).get(stage_name) if isinstance(lock, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    body = {k: entry.get(k) for k in ("deps", "params", "outs")}
    return hashlib.md5(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _salient_version() -> str:
    return str(__version__)


# ------------------------------------------------------------------------------ client
_clients: dict[str, Any] = {}


#: MLflow's request budget (read on every request, mlflow.environment_variables) -> the params key setting it.
_HTTP_VARS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "timeout_s", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "retries",
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": None}
_HTTP_DEFAULTS = {"timeout_s": 10, "retries": 2, None: 1}  # backoff 1 s, 2 s, ... (MLflow's: 2 s, 4 s, ... x7)
_HTTP_MARK = "SALIENT_MLFLOW_HTTP_SET"  # the variables this module set (inherited by stages: not the user's)
_USER_HTTP = {v for v in _HTTP_VARS if v in os.environ and v not in os.environ.get(_HTTP_MARK, "").split(",")}


def http_budget(tracking: Any = None) -> dict[str, str]:
    """Set MLflow's request timeout, retries and backoff for this process from ``tracking.timeout_s`` /
    ``tracking.retries`` (a variable the user set wins). MLflow's own defaults (120 s, 7 retries 2 s ... 128 s
    apart) held a stage ~4 minutes per call once its server was gone; with these a call gives up in about
    ``(retries + 1) x timeout_s`` for a hung server, ~3 s for a refused connection. Returns the values."""
    ours = []
    for var, key in _HTTP_VARS.items():
        if var in _USER_HTTP:
            continue
        value = _get(tracking, key) if key else None
        os.environ[var] = str(int(_HTTP_DEFAULTS[key] if value is None else value))
        ours.append(var)
    os.environ[_HTTP_MARK] = ",".join(ours)
    return {v: os.environ[v] for v in _HTTP_VARS}


def client(tracking: Any = None):
    """An ``MlflowClient`` for the configured tracking URI (and the same registry), cached per URI; sets the
    request budget (:func:`http_budget`)."""
    http_budget(tracking)
    return _client_for(tracking_uri(tracking))


def _client_for(uri: str):
    if uri not in _clients:
        from mlflow.tracking import MlflowClient

        # MLFLOW_TRACKING_PASSWORD_FILE & co. (components/ops/servers.py): mlflow reads only the plain variables
        export_secret_files()

        registry = os.environ.get("MLFLOW_REGISTRY_URI") or uri
        _clients[uri] = MlflowClient(tracking_uri=uri, registry_uri=registry)
    return _clients[uri]


def _experiment_id(c: Any, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older version or by hand
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    db = _sqlite_path(uri)
    location = (db.absolute().parent / "mlartifacts").as_uri() if db is not None else None
    try:
        return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:  # another process created it in between
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ------------------------------------------------------------------------------ offline: the spool
SPOOL_PREFIX = "spool-"  # run ids of runs made while the server was unreachable, until a sync creates them
DEFAULT_SPOOL = ".salient/tracking_spool"
DOWN_RECHECK_S = 60.0  # a process that found its server unreachable tries it again after this long
_down: dict[str, float] = {}


def spool_dir(tracking: Any = None) -> Path:
    """Where runs are buffered while their server is unreachable: ``tracking.spool`` (relative to the
    working directory), absolute."""
    return Path(_get(tracking, "spool") or DEFAULT_SPOOL).absolute()


def unreachable(e: BaseException) -> bool:
    """Whether ``e`` (or what it wraps) says the tracking server could not be reached or kept failing
    (refused, timed out, reset, 5xx after the retries), as opposed to refusing the request itself."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if text.startswith("API request to ") and " failed with " in text:  # mlflow.utils.rest_utils.http_request
            code = re.search(r"error code (\d{3})", text)
            # the server answered and refused (401 unauthenticated, 403, 404...): not an outage, fail loudly;
            # 408/429 (timed out, rate-limited) are transient like a 5xx
            return not (code and code.group(1).startswith("4") and code.group(1) not in ("408", "429"))
        if type(e).__name__ in ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "MaxRetryError",
                                "NewConnectionError", "ConnectionRefusedError", "ConnectionResetError"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _cause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    m = re.search(r"\[Errno[^\]]*\][^')\]]*|Read timed out[^')]*|too many \d+ error responses", text)
    return m.group(0) if m else text[:200]


def _mark_down(uri: str, e: BaseException, what: str, root: Path) -> None:
    """Remember that ``uri`` is unreachable (for :data:`DOWN_RECHECK_S`); one warning per outage."""
    if not _server_down(uri):
        log.warning("MLflow tracking server %s unreachable (%s): %s goes on offline, buffered in %s; "
                    "`salient tracking sync` (or the next tracked run) replays it to the server", redact(uri),
                    redact(_cause(e)), what, root)
    _down[uri] = time.monotonic()


def _server_down(uri: str) -> bool:
    t = _down.get(uri)
    return t is not None and time.monotonic() - t < DOWN_RECHECK_S


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Spool:
    """One run's buffer, ``<spool>/<run id>/``: ``meta.json`` (server, experiment, name, tags, start time,
    the writing process), ``events.jsonl`` (params, tags, metrics with steps and timestamps, artifacts,
    the final status, in order) and ``artifacts/`` (copies of the files logged)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, key: str, meta: Mapping[str, Any]) -> "Spool":
        d = Path(root) / key
        (d / "artifacts").mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        _write_json(d / "meta.json", {"created": time.time(), "host": socket.gethostname(), "pid": pid,
                                      "pid_start": _process_start(pid), **meta})
        return cls(d)

    def append(self, kind: str, payload: Mapping[str, Any]) -> None:
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps({"kind": kind, **payload}, default=str) + "\n")

    def copy_artifact(self, src: Path, artifact_path: str | None) -> dict[str, Any]:
        """Copy ``src`` (file or folder) in; the event that logs it from there on replay."""
        import shutil

        dest = self.path / "artifacts" / str(len(list((self.path / "artifacts").iterdir()))) / src.name
        dest.parent.mkdir(parents=True)
        if src.is_dir():
            shutil.copytree(src, dest)
            return {"local": str(dest.relative_to(self.path)), "dir": True,
                    "artifact_path": "/".join(x for x in (artifact_path, src.name) if x)}
        shutil.copy2(src, dest)
        return {"local": str(dest.relative_to(self.path)), "dir": False, "artifact_path": artifact_path}


def sync_spool(tracking: Any = None, *, root: str | Path | None = None,
               uri: str | None = None) -> list[tuple[str, str]]:
    """Replay the buffered runs (:class:`Spool`) to their servers, oldest first: a run made offline is created
    (start time, name, tags; a child gets its synced parent's id), then its params, tags, metrics (steps and
    timestamps as logged), artifacts and final status are logged, so it reads as if it had logged live. A run
    still being written by a live process is left for later (a dead one's run ends KILLED). Each replayed
    event is recorded, so a sync interrupted half-way resumes without logging anything twice. ``uri``: only
    runs of that server. Returns ``(spool key, run id)`` of the runs replayed, whose folders are removed;
    raises what the server raises (unreachable: try again later)."""
    import fcntl
    import shutil

    root = Path(root) if root is not None else spool_dir(tracking)
    if not root.is_dir():
        return []
    done: list[tuple[str, str]] = []
    with open(root / ".sync.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process is syncing this spool
            return done
        ids = _read_json(root / "ids.json") or {}
        metas = [(d, _read_json(d / "meta.json")) for d in root.iterdir() if d.is_dir()]
        for d, meta in sorted((x for x in metas if x[1]), key=lambda x: x[1].get("created", 0)):
            parent = meta.get("tags", {}).get(PARENT_TAG, "")
            if (uri is not None and meta.get("uri") != uri) or (parent.startswith(SPOOL_PREFIX) and parent not in ids):
                continue  # another server's, or its parent is not on the server yet
            events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines() if line.strip()] \
                if (d / "events.jsonl").exists() else []
            if not any(ev["kind"] == "status" for ev in events):
                pid, start = int(meta.get("pid", 0)), meta.get("pid_start", "")
                if meta.get("host") == socket.gethostname() and _alive(pid, start):
                    continue  # still being logged
                events.append({"kind": "status", "status": "KILLED", "end_time": int(time.time() * 1000)})
            done.append((d.name, _replay(d, meta, events, ids, root)))
            shutil.rmtree(d, ignore_errors=True)
            log.info("MLflow run %s (%s) replayed to %s%s", done[-1][1], meta.get("name"), redact(meta["uri"]),
                     f" (buffered as {d.name})" if d.name != done[-1][1] else "")
    return done


def _replay(d: Path, meta: Mapping[str, Any], events: list[dict], ids: dict[str, str], root: Path) -> str:
    """Log one spooled run's events to its server (see :func:`sync_spool`); returns its run id there."""
    from mlflow.entities import Metric, Param, RunTag

    c = _client_for(meta["uri"])
    run_id = meta.get("run_id") or ids.get(d.name)
    if run_id is None:  # made offline: create it now, as it started
        tags = dict(meta.get("tags", {}))
        if tags.get(PARENT_TAG) in ids:
            tags[PARENT_TAG] = ids[tags[PARENT_TAG]]
        exp_id = _experiment_id(c, meta.get("experiment") or DEFAULT_EXPERIMENT, meta["uri"])
        run = c.create_run(exp_id, start_time=meta.get("start_time"), run_name=meta.get("name"), tags=tags)
        run_id = run.info.run_id
        ids[d.name] = run_id
        _write_json(root / "ids.json", ids)
    progress = d / "replayed"
    start = int(progress.read_text() or 0) if progress.exists() else 0
    for i, ev in enumerate(events[start:], start):
        kind = ev["kind"]
        if kind == "params":
            items = [Param(k, v) for k, v in ev["params"].items()]
            for j in range(0, len(items), 100):
                c.log_batch(run_id, params=items[j:j + 100])
        elif kind == "tags":
            items = [RunTag(k, v) for k, v in ev["tags"].items()]
            for j in range(0, len(items), 100):
                c.log_batch(run_id, tags=items[j:j + 100])
        elif kind == "metrics":
            items = [Metric(k, v, ts, step) for k, v, ts, step in ev["points"]]
            for j in range(0, len(items), 1000):
                c.log_batch(run_id, metrics=items[j:j + 1000])
        elif kind == "artifact":
            log_files = c.log_artifacts if ev["dir"] else c.log_artifact
            log_files(run_id, str(d / ev["local"]), ev["artifact_path"])
        elif kind == "status":
            c.set_terminated(run_id, ev["status"], end_time=ev.get("end_time"))
        progress.write_text(str(i + 1))
    return run_id


# ------------------------------------------------------------------------------ runs
class _NullRun:
    """What the context managers yield when tracking is off: every method is a no-op."""

    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None

    def __bool__(self) -> bool:
        return False

    def _noop(self, *args: Any, **kwargs: Any) -> None:
        return None

    log_params = log_metrics = log_curve = log_budget_curve = log_artifacts = set_tags = _noop


NULL_RUN = _NullRun()


@dataclasses.dataclass
class TrackedRun:
    """An open MLflow run, written to through an explicit ``MlflowClient``.

    When the server is unreachable (:func:`unreachable`) a write goes to the run's :class:`Spool` instead,
    and so does every later one: the run goes on offline (one warning per outage) and
    :func:`sync_spool` replays it. A run made while the server was down has a ``spool-...`` id and no
    experiment id until then."""

    client: Any
    run_id: str
    experiment_id: str | None
    tracking_uri: str
    name: str = ""
    spool: Spool | None = None
    spool_root: Path | None = None

    def _send(self, kind: str, payload: Any, call: Any) -> None:
        """``call()`` on the server, or the event ``payload()`` into the spool once it is unreachable. A
        SIGTERM that arrives during the write waits for it to end (:func:`_writing`)."""
        if self.spool is None:
            try:
                with _writing():
                    call()
                return
            except Exception as e:  # noqa: BLE001 - sorted by unreachable()
                if not unreachable(e):
                    raise
                root = self.spool_root or spool_dir()
                _mark_down(self.tracking_uri, e, f"run {self.run_id} ({self.name})", root)
                self.spool = Spool.create(root, self.run_id, {"run_id": self.run_id, "uri": self.tracking_uri,
                                                              "name": self.name})
        self.spool.append(kind, payload())

    def terminate(self, status: str) -> None:
        """End the run FINISHED / FAILED / KILLED (now)."""
        end = int(time.time() * 1000)
        self._send("status", lambda: {"status": status, "end_time": end},
                   lambda: self.client.set_terminated(self.run_id, status, end_time=end))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k)[:MAX_KEY], redact(str(v))) for k, v in tags.items() if v is not None]

        def call() -> None:
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, tags=items[i:i + 100])

        self._send("tags", lambda: {"tags": {t.key: t.value for t in items}}, call)

    def log_params(self, params: Any) -> None:
        """Flattened (see :func:`flatten_params`); a key already logged must keep its value."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]

        def call() -> None:
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])

        self._send("params", lambda: {"params": {x.key: x.value for x in items}}, call)

    def _log(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow allows letters, digits and _ - . space : / in names: tsqnet[vqm] becomes tsqnet_vqm_
        items = [Metric(re.sub(r"[^\w\-. :/]", "_", k), v, now, s) for k, v, s in points]

        def call() -> None:
            for i in range(0, len(items), 1000):
                self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

        self._send("metrics", lambda: {"points": [[m.key, m.value, m.timestamp, m.step] for m in items]}, call)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Scalars (nested mappings become ``a/b`` names); non-numbers are skipped with a warning."""
        self._log([(k, v, int(step or 0)) for k, v in _flatten_metrics(metrics).items()])

    def log_curve(self, name: str, values: Sequence[Any], start_step: int = 0) -> None:
        """``values[i]`` at step ``start_step + i`` (a loss per epoch)."""
        points = []
        for i, v in enumerate(values):
            try:
                points.append((name, float(v), start_step + i))
            except (TypeError, ValueError):
                log.warning("curve %s[%d]: %r is not a number, not logged", name, i, v)
        self._log(points)

    def log_budget_curve(self, prefix: str, ks: Sequence[int], values: Any) -> None:
        """Values at step = K, so MLflow's chart of a metric over steps is the metric vs budget K.

        ``values``: one sequence (metric ``prefix``) or a mapping ``name -> sequence``
        (metrics ``prefix/name``, e.g. ``{"mAP": [...], "gmacs": [...]}``), each as long as ``ks``.
        """
        curves = values.items() if isinstance(values, Mapping) else [(None, values)]
        points = []
        for name, seq in curves:
            seq = list(seq)
            if len(seq) != len(ks):
                raise ValueError(f"budget curve {prefix}/{name}: {len(seq)} values for {len(ks)} budgets")
            metric = f"{prefix}/{name}" if name is not None else prefix
            for k, v in zip(ks, seq):
                try:
                    points.append((metric, float(v), int(k)))
                except (TypeError, ValueError):
                    log.warning("budget curve %s at K=%s: %r is not a number, not logged", metric, k, v)
        self._log(points)

    def log_artifacts(self, paths: Any, artifact_path: str | None = None) -> list[str]:
        """Files and directories (a directory keeps its name under ``artifact_path``); missing paths
        are skipped with a warning. Returns the artifact paths logged."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        logged = []
        for p in map(Path, paths):
            if not p.exists():
                log.warning("artifact %s does not exist: skipped", p)
                continue
            dest = "/".join(x for x in (artifact_path, p.name) if x)
            call = ((lambda p=p, dest=dest: self.client.log_artifacts(self.run_id, str(p), dest)) if p.is_dir()
                    else (lambda p=p: self.client.log_artifact(self.run_id, str(p), artifact_path)))
            self._send("artifact", lambda p=p: self.spool.copy_artifact(p, artifact_path), call)
            logged.append(dest)
        return logged


_stack: contextvars.ContextVar[tuple[TrackedRun, ...]] = contextvars.ContextVar("salient_runs", default=())


def active_run() -> TrackedRun | None:
    """The innermost run opened by this module in this process (this thread / task), or None."""
    stack = _stack.get()
    return stack[-1] if stack else None


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM while a run is open, so the run ends KILLED instead of
    staying RUNNING; exits the process with status 143 (128 + SIGTERM) like the default handler."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class _TermState:
    """The main thread's SIGTERM bookkeeping: how many store writes are in flight, and whether a SIGTERM
    arrived during one (to be raised as :class:`Terminated` when the last ends)."""
    writing = 0
    pending = False


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """One write to the tracking store. Raising :class:`Terminated` half-way through a SQL transaction
    leaves SQLite's write lock held by the interrupted connection, so marking the run KILLED then fails
    with "database is locked" (measured: 4 of 12 SIGTERMs during a metric loop left a run RUNNING). A
    SIGTERM in here is held until the write ends, then raised."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        _TermState.writing += 1
    try:
        yield
    finally:
        if main:
            _TermState.writing -= 1
            if not _TermState.writing and _TermState.pending:
                _TermState.pending = False
                raise Terminated()


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (Prefect cancellation, ``kill``) into :class:`Terminated` while inside; only in
    the main thread and only where nobody installed a SIGTERM handler (the default is restored)."""
    try:
        installable = (threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    except (ValueError, AttributeError):  # pragma: no cover - platforms without SIGTERM
        installable = False
    if not installable:
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        # the first SIGTERM ends the open runs KILLED; a repeat (torchrun forwards its own on shutdown) must
        # not interrupt that and leave a run RUNNING: ignored until the default comes back below
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if _TermState.writing:  # mid-write: raised as soon as the write ends (_writing)
            _TermState.pending = True
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "FINISHED"
    return "FAILED"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``; "" elsewhere or when
    it is gone): with the pid it names one process, even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return not start or _process_start(pid) in ("", start)


def reap_dead_runs(c: Any, exp_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of experiment ``exp_id`` that this host started from a process that
    no longer exists (SIGKILL, OOM killer, power loss: nothing could end them), tagged
    ``salient.reaped``. Runs of other hosts are left alone (their processes cannot be checked from
    here). Called whenever a run is opened; returns the reaped run ids."""
    host, reaped = socket.gethostname(), []
    try:
        running = c.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=1000)
    except Exception as e:  # noqa: BLE001 - housekeeping must never stop a stage
        log.debug("could not list running MLflow runs: %s", e)
        return reaped
    for r in running:
        tags = r.data.tags
        if tags.get("host") != host or not tags.get("salient.pid", "").isdigit():
            continue
        if _alive(int(tags["salient.pid"]), tags.get("salient.pid_start", "")):
            continue
        try:
            c.set_tag(r.info.run_id, "salient.reaped", f"process {tags['salient.pid']} was gone; marked KILLED by "
                                                      f"process {os.getpid()} (end time: when it was found)")
            c.set_terminated(r.info.run_id, "KILLED")
            reaped.append(r.info.run_id)
            log.warning("MLflow run %s (%s) was left RUNNING by process %s, which no longer exists: marked KILLED",
                        r.info.run_id, r.info.run_name, tags["salient.pid"])
        except Exception as e:  # noqa: BLE001
            log.debug("could not mark run %s KILLED: %s", r.info.run_id, e)
    return reaped


def _run_tags(tags: Mapping[str, Any], reap: bool) -> dict[str, Any]:
    """MLflow's context tags, git, host, version, process, then ``tags``."""
    all_tags: dict[str, Any] = {}
    try:
        from mlflow.tracking.context.registry import resolve_tags

        all_tags.update(resolve_tags({}))  # mlflow.user, mlflow.source.name/type, ...
    except Exception as e:  # noqa: BLE001 - mlflow internals; the run still gets our tags
        log.debug("mlflow context tags unavailable: %s", e)
    all_tags.update(git_info(max_age=0 if reap else 60))
    all_tags.update(experiment_tags())
    all_tags.update({"host": socket.gethostname(), "salient.version": _salient_version(),
                     "salient.pid": os.getpid(), "salient.pid_start": _process_start(os.getpid())})
    all_tags.update({k: v for k, v in tags.items() if v is not None})
    return all_tags


def _create_online(c: Any, uri: str, name: str, parent: str | None, all_tags: dict[str, Any], tracking: Any,
                   reap: bool) -> TrackedRun:
    """The run on the server (raises what the server raises); replays this server's spool first."""
    exp_id = None
    if parent:
        try:
            exp_id = c.get_run(parent).info.experiment_id  # children live with their parent
        except Exception as e:  # noqa: BLE001 - any lookup failure but an unreachable server: made top-level
            if unreachable(e):
                raise
            log.warning("parent run %s not found at %s (%s): %r becomes a top-level run", parent, redact(uri),
                        redact(str(e)), name)
            parent = None
    if exp_id is None:
        exp_id = _experiment_id(c, experiment_name(tracking), uri)
    root = spool_dir(tracking)
    if root.is_dir() and any(d.is_dir() for d in root.iterdir()):  # the server is back: replay what waited
        try:
            sync_spool(tracking, uri=uri)
        except Exception as e:  # noqa: BLE001 - never stop a run for it; `salient tracking sync` retries
            log.warning("replaying buffered MLflow runs from %s to %s failed: %s", root, redact(uri), redact(str(e)))
    if parent:
        all_tags[PARENT_TAG] = parent
    if reap:
        reap_dead_runs(c, exp_id)
    run = c.create_run(exp_id, run_name=name, tags={k: redact(str(v)) for k, v in all_tags.items()})
    handle = TrackedRun(c, run.info.run_id, exp_id, uri, name, spool_root=root)
    log.info("MLflow run %s (%s) at %s%s", handle.run_id, name, redact(uri), f", child of {parent}" if parent else "")
    return handle


def _create_offline(c: Any, uri: str, name: str, parent: str | None, all_tags: dict[str, Any],
                    tracking: Any) -> TrackedRun:
    """A run buffered in the spool from its start (a ``spool-...`` id), created on the server by a sync."""
    import uuid

    if parent:
        all_tags[PARENT_TAG] = parent
    key, root = SPOOL_PREFIX + uuid.uuid4().hex, spool_dir(tracking)
    spool = Spool.create(root, key, {"run_id": None, "uri": uri, "experiment": experiment_name(tracking), "name": name,
                                     "start_time": int(time.time() * 1000),
                                     "tags": {k: redact(str(v)) for k, v in all_tags.items()}})
    log.info("MLflow run %s (%s) buffered in %s until %s is reachable", key, name, spool.path, redact(uri))
    return TrackedRun(c, key, None, uri, name, spool, root)


@contextlib.contextmanager
def _open_run(name: str, params: Any, tags: Mapping[str, Any], parent_run_id: str | None,
              tracking: Any, reap: bool = True) -> Iterator[TrackedRun]:
    uri = tracking_uri(tracking)
    c = client(tracking)
    parent = parent_run_id or (active_run().run_id if active_run() else None) or os.environ.get(ENV_PARENT) or None
    all_tags = _run_tags(tags, reap)
    handle = None
    if not _server_down(uri) and not (parent or "").startswith(SPOOL_PREFIX):  # a buffered parent's child: buffered
        try:
            with _writing():  # a SIGTERM to an enclosing run waits for this one to exist
                handle = _create_online(c, uri, name, parent, dict(all_tags), tracking, reap)
        except Exception as e:  # noqa: BLE001 - sorted by unreachable()
            if not unreachable(e):
                raise
            _mark_down(uri, e, f"run {name!r}", spool_dir(tracking))
    if handle is None:
        handle = _create_offline(c, uri, name, parent, all_tags, tracking)
    token = _stack.set(_stack.get() + (handle,))
    status = "FAILED"
    with _sigterm_as_exit():
        try:
            if params is not None:
                handle.log_params(params)
            yield handle
            status = "FINISHED"
        except BaseException as e:
            status = _status_for(e)
            try:
                handle.terminate(status)
            except Exception as close_error:  # noqa: BLE001 - the body's exception matters more
                log.error("could not mark MLflow run %s %s: %s", handle.run_id, status, close_error)
            status = ""
            raise
        finally:
            _stack.reset(token)
            if status:
                handle.terminate(status)


@contextlib.contextmanager
def stage_run(name: str, params_slice: Any = None, *, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None, tracking: Any = None,
              lock_path: str | Path = "dvc.lock") -> Iterator[TrackedRun | _NullRun]:
    """An MLflow run for one stage / sampler training / ablation / trial.

    ``params_slice``: the params the stage reads (a mapping or dataclass), logged flattened to dotted
    keys. Tags: git commit and dirty flag, ``dvc.stage`` (= ``name`` unless given in ``tags``) and
    ``dvc.stage_hash`` when ``dvc.lock`` has that stage, host, salient version, plus ``tags``.
    ``tracking``: ``Params`` / ``TrackingParams`` / mapping for the URI and experiment.

    The run ends FINISHED, FAILED on an exception (re-raised) or KILLED on KeyboardInterrupt and
    on SIGTERM (raised as :class:`Terminated`, exit status 143, where no SIGTERM handler was set).
    Yields a :class:`TrackedRun` (a falsy no-op handle when tracking is off).
    """
    if not tracking_enabled():
        yield NULL_RUN
        return
    stage = (tags or {}).get("dvc.stage") or name
    base = {"dvc.stage": stage, "dvc.stage_hash": dvc_stage_hash(stage, lock_path), "salient.kind": "stage"}
    with _open_run(name, params_slice, {**base, **dict(tags or {})}, parent_run_id, tracking) as run:
        yield run


@contextlib.contextmanager
def variant_run(name: str, params: Any = None, *, tags: Mapping[str, Any] | None = None,
                tracking: Any = None) -> Iterator[TrackedRun | _NullRun]:
    """A run for one evaluated or trained *variant* (sampler, ablation, branch) and seed: a child of the
    innermost open run (the stage's), tagged ``salient.kind = variant`` unless ``tags`` says otherwise.
    Cheaper than :func:`stage_run` (no reaping, no dvc.lock read, git asked once a minute): a stage opens
    one per variant and seed. Yields a falsy no-op handle when tracking is off."""
    if not tracking_enabled():
        yield NULL_RUN
        return
    with _open_run(name, params, {"salient.kind": "variant", **dict(tags or {})}, None, tracking, reap=False) as run:
        yield run


@contextlib.contextmanager
def parent_run(name: str, params: Any = None, *, tags: Mapping[str, Any] | None = None,
               tracking: Any = None) -> Iterator[TrackedRun | _NullRun]:
    """The parent run of a pipeline (``dvc repro``), flow run or sweep.

    While inside, ``$SALIENT_PARENT_RUN_ID`` is this run's id and ``$MLFLOW_TRACKING_URI`` its
    (absolute) tracking URI, so stage runs started in subprocesses become its children in the same
    store; both are restored afterwards. A parent opened inside another (a sweep inside a flow run)
    is itself that one's child. Its experiment tags (:func:`experiment_tags`; ``tags`` may set them) go to
    the children through ``$SALIENT_EXPERIMENT`` / ``$SALIENT_OVERRIDES``.
    """
    if not tracking_enabled():
        yield NULL_RUN
        return
    uri = absolute_uri(tracking_uri(tracking))
    with _open_run(name, params, {"salient.kind": "parent", **dict(tags or {})}, None, tracking) as run:
        saved = {k: os.environ.get(k) for k in (ENV_PARENT, ENV_URI, ENV_EXPERIMENT, ENV_OVERRIDES)}
        os.environ[ENV_PARENT] = run.run_id
        os.environ[ENV_URI] = uri
        # its experiment tags, as _run_tags merged them (no server round trip: a spooled run has none)
        got = {**experiment_tags(), **{k: str(v) for k, v in dict(tags or {}).items() if v is not None}}
        os.environ[ENV_EXPERIMENT] = got.get(EXPERIMENT_TAG, "workspace")
        os.environ[ENV_OVERRIDES] = json.dumps({k[len(OVERRIDE_PREFIX):]: v for k, v in got.items()
                                                if k.startswith(OVERRIDE_PREFIX)})
        try:
            yield run
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def child_runs(run: TrackedRun, max_results: int = 5000) -> list:
    """The runs that name ``run`` as their parent (the stage runs under a pipeline's parent run), oldest
    first, as mlflow ``Run`` objects (none known for a run buffered offline)."""
    if run.spool is not None:
        return []
    return list(run.client.search_runs([run.experiment_id], f"tags.`{PARENT_TAG}` = '{run.run_id}'",
                                       max_results=max_results, order_by=["attributes.start_time ASC"]))


def has_children(run: TrackedRun) -> bool:
    """Whether any run names ``run`` as its parent (a stage ran under a pipeline's parent run); True for a run
    buffered offline (its children cannot be listed: it is kept)."""
    if run.spool is not None:
        return True
    try:
        return bool(child_runs(run, max_results=1))
    except Exception as e:  # noqa: BLE001 - unreachable now: keep the run
        if unreachable(e):
            return True
        raise


def delete_empty(run: TrackedRun, reason: str) -> None:
    """Tag ``run`` ``salient.empty = reason`` and delete it (MLflow's *deleted* lifecycle stage: hidden
    from the runs table, restorable): a parent under which nothing ran is not a result to compare."""
    run.client.set_tag(run.run_id, "salient.empty", reason)
    run.client.delete_run(run.run_id)


# ------------------------------------------------------------------------------ module-level logging
def log_params(params: Any) -> None:
    """Log more params to the innermost open run (no-op outside one)."""
    if (run := active_run()) is not None:
        run.log_params(params)


def set_tags(tags: Mapping[str, Any]) -> None:
    if (run := active_run()) is not None:
        run.set_tags(tags)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Scalars to the innermost open run (no-op outside one)."""
    if (run := active_run()) is not None:
        run.log_metrics(metrics, step)


def log_curve(name: str, values: Sequence[Any], start_step: int = 0) -> None:
    """``values[i]`` at step ``start_step + i`` (loss per epoch) to the innermost open run."""
    if (run := active_run()) is not None:
        run.log_curve(name, values, start_step)


def log_budget_curve(prefix: str, ks: Sequence[int], values: Any) -> None:
    """Accuracy / GFLOPs with step = K to the innermost open run (see :meth:`TrackedRun.log_budget_curve`)."""
    if (run := active_run()) is not None:
        run.log_budget_curve(prefix, ks, values)


def log_artifacts(paths: Any, artifact_path: str | None = None) -> list[str]:
    """Files or directories to the innermost open run; missing paths skipped with a warning."""
    if (run := active_run()) is not None:
        return run.log_artifacts(paths, artifact_path)
    return []


# ------------------------------------------------------------------------------ model registry
def register_model(run_id: str, artifact_path: str, name: str, alias: str | None = None, *,
                   description: str | None = None, tags: Mapping[str, Any] | None = None, tracking: Any = None):
    """Register the run's artifact directory ``artifact_path`` (an MLflow model directory: with an
    ``MLmodel`` file) as a new version of model ``name`` (created if needed), with ``description``
    and ``tags`` on the version (and the description on the model), and point ``alias`` at it.
    Returns the ``ModelVersion`` (None when off)."""
    if not tracking_enabled():
        return None
    from mlflow.exceptions import MlflowException

    c = client(tracking)
    try:
        c.create_registered_model(name, description=description)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        if description:
            c.update_registered_model(name, description=description)
    run = c.get_run(run_id)
    source = run.info.artifact_uri.rstrip("/") + "/" + artifact_path.strip("/")
    mv = c.create_model_version(name, source, run_id=run_id, description=description,
                                tags={str(k): str(v) for k, v in (tags or {}).items() if v is not None})
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    log.info("registered %s version %s (%s)%s", name, mv.version, source, f" as @{alias}" if alias else "")
    return mv


def resolve_model_uri(uri: str, dst_path: str | Path | None = None, *, tracking: Any = None) -> Path:
    """A local path for ``models:/name@alias``, ``models:/name/version``, ``runs:/id/path`` or any
    artifact URI (downloaded into ``dst_path`` or a temporary directory; artifacts in a local store
    come back as their own path). A plain local path is returned as is."""
    if "://" not in uri and not uri.startswith(("models:/", "runs:/")):
        return Path(uri)
    import mlflow.artifacts

    export_secret_files()  # a server's password from its secret file, as client() does
    t_uri = tracking_uri(tracking)
    registry = os.environ.get("MLFLOW_REGISTRY_URI") or t_uri
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=None if dst_path is None else str(dst_path),
                                                tracking_uri=t_uri, registry_uri=registry)
    return Path(local)


# ------------------------------------------------------------------------------ UI
def ui_command(params: Any = None, port: int = 5000) -> list[str]:
    """The command that serves the MLflow UI on 127.0.0.1 for the configured SQL / file backend.

    Run it with :func:`server_env` (one worker, no job runner, no telemetry). An ``http(s)://``
    tracking URI already is a server: open it in a browser instead (ValueError).
    """
    uri = tracking_uri(params)
    if uri.startswith(("http://", "https://")):
        raise ValueError(f"tracking URI {uri} is a server already: open it in a browser")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    db = _sqlite_path(uri)
    if db is not None:  # the same artifact root that experiments created here use
        cmd += ["--default-artifact-root", (db.absolute().parent / "mlartifacts").as_uri()]
    return cmd


def ui_url(port: int | str, experiment_id: str | None = None, run_id: str | None = None,
           host: str = "127.0.0.1", base: str | None = None, view: str | None = None) -> str:
    """The MLflow UI link that opens an experiment (or one of its runs; else the experiment list) on its
    training runs. MLflow 3.17's UI shows an experiment in its GenAI view (traces, sessions) unless the URL
    says ``workflowType=machine_learning`` or the user switched to "Model training" in that browser: it does
    not read the experiment's ``mlflow.experimentKind`` tag (checked in Chromium, tests/test_browser.py).
    ``base``: the server's URL (an ``http(s)://`` tracking URI) instead of ``http://host:port`` ("": a link
    relative to the page's server, ``/#/...``). ``view``: a
    saved view of the experiment's runs table (:func:`save_view`) that the page opens with."""
    root = (f"http://{host}:{port}" if base is None else base).rstrip("/")  # base "": a link on the same server
    page = "experiments" if not experiment_id else f"experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    if view and experiment_id and not run_id:  # the runs table of the experiment, as the view arranges it
        key = urllib.parse.quote(view, safe="")
        return f"{root}/#/{page}/runs?workflowType=machine_learning&{VIEW_URL_PARAM}={key}"
    return f"{root}/#/{page}?workflowType=machine_learning"


#: MLflow 3.17's *saved views* of an experiment's runs table live on the server, as experiment tags
#: ``mlflow.sharedViewState.<id>``: a JSON envelope ``{name, createdAt, updatedAt, state}`` whose ``state`` is
#: the page's search facets (``searchFilter``, ``orderByKey``, ``orderByAsc``, ...) and table state
#: (``selectedColumns``, ``columnOrder``, ``columnWidths``, ``groupBy``, ``groupsExpanded``, ...) as a JSON
#: string. The UI lists them under *Views* and opens one from a link with ``viewStateShareKey=<id>`` (the
#: state of the runs table a user arranges by hand stays in that browser's localStorage).
SAVED_VIEW_PREFIX, VIEW_URL_PARAM = "mlflow.sharedViewState.", "viewStateShareKey"
NOTE_TAG = "mlflow.note.content"  # an experiment's (or run's) description, markdown, shown by the UI
MAX_EXPERIMENT_TAG_VALUE = 20000  # mlflow.utils.validation.MAX_EXPERIMENT_TAG_VAL_LENGTH


def saved_view(experiment_id: str, view_id: str, *, tracking: Any = None) -> dict[str, Any] | None:
    """The saved view ``view_id`` of an experiment as ``{name, createdAt, updatedAt, state}`` (``state``
    decoded to a dict); None when there is none or it is unreadable."""
    value = client(tracking).get_experiment(experiment_id).tags.get(SAVED_VIEW_PREFIX + view_id)
    try:
        env = json.loads(value)
        return {**env, "state": json.loads(env["state"])}
    except (TypeError, ValueError, KeyError):
        return None


def save_view(experiment_id: str, view_id: str, name: str, state: Mapping[str, Any], *,
              tracking: Any = None) -> str:
    """Write (or rewrite, keeping its creation time) the saved view ``view_id`` named ``name`` of an
    experiment's runs table; returns ``view_id`` (``ui_url(..., view=view_id)`` opens it)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", view_id):
        raise ValueError(f"saved view id {view_id!r}: letters, digits, '.', '_' and '-' only")
    old = saved_view(experiment_id, view_id, tracking=tracking)
    now = int(time.time() * 1000)
    created = old["createdAt"] if old and isinstance(old.get("createdAt"), int) else now
    value = json.dumps({"name": name, "createdAt": created, "updatedAt": now,
                        "state": json.dumps(dict(state), separators=(",", ":"))}, separators=(",", ":"))
    if len(value) > MAX_EXPERIMENT_TAG_VALUE:
        raise ValueError(f"saved view {view_id!r} is {len(value)} characters, over MLflow's "
                         f"{MAX_EXPERIMENT_TAG_VALUE} for an experiment tag")
    client(tracking).set_experiment_tag(experiment_id, SAVED_VIEW_PREFIX + view_id, value)
    return view_id


def set_experiment_note(experiment_id: str, text: str, *, owner: str, tracking: Any = None) -> bool:
    """Set the experiment's description (``mlflow.note.content``) to ``text`` unless someone else wrote one:
    only an empty description or one that starts with ``owner`` (the first line of ours) is replaced.
    Returns whether it was written."""
    c = client(tracking)
    current = c.get_experiment(experiment_id).tags.get(NOTE_TAG)
    if current and not current.startswith(owner):
        return False
    if current != text:
        c.set_experiment_tag(experiment_id, NOTE_TAG, text)
    return True


def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``mlflow ui`` / ``mlflow server``: one small process instead of ~2 GB of
    workers (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``) and telemetry off (with secret files read and
    no client settings: :func:`components.ops.servers.mlflow_server_env`)."""
    return mlflow_server_env(base)


__all__ = [
    "tracking_enabled", "tracking_uri", "experiment_name", "absolute_uri", "flatten_params", "git_info",
    "pipeline_outputs", "params_diff", "experiment_tags",
    "dvc_stage_hash", "client", "TrackedRun", "Terminated", "NULL_RUN", "active_run", "stage_run", "variant_run",
    "parent_run",
    "log_params", "set_tags", "log_metrics", "log_curve", "log_budget_curve", "log_artifacts",
    "register_model", "resolve_model_uri", "ui_command", "ui_url", "saved_view", "save_view", "set_experiment_note",
    "server_env", "child_runs", "has_children",
    "delete_empty", "http_budget", "unreachable", "spool_dir", "sync_spool", "Spool",
]
