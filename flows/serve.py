"""``salient serve``: a local Prefect server, a work pool, the deployments of ``prefect.yaml`` and
worker(s), in one command; Ctrl-C stops every process it started.

    python -m flows.serve [--port 4200] [--pool gpu] [--workers 1]     # = salient serve [...]

then, in another terminal (the command is printed once everything is up)::

    PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run 'pipeline/pipeline' \\
        -p targets='["prepare"]' -p overrides='{"data.synthetic.noise": 5.0}'

What it does, in order (each step is a plain Prefect CLI call, so it can be done by hand too):

1. ``prefect server start --host H --port P`` in its own process group, with ``PREFECT_HOME`` from
   :mod:`components.core.runtime` (``.salient/prefect``) and telemetry off; waits for ``/api/health``.
2. ``prefect work-pool create POOL --type process`` (an existing pool is kept as it is).
3. ``prefect deploy --no-prompt -n NAME --pool POOL`` for every deployment of ``prefect.yaml`` whose
   entrypoint file exists (one call each: one broken flow file does not stop the others).
4. ``prefect worker start --pool POOL --type process`` (``workers`` of them), each in its own process
   group, with ``SALIENT_PROJECT_DIR`` set: ``prefect.yaml``'s pull step changes into it.

Everything binds 127.0.0.1 unless ``--host`` says otherwise. **Authentication** (for a server that workers on
other machines reach): set one auth string (``user:password``) in ``PREFECT_SERVER_API_AUTH_STRING`` or
``PREFECT_API_AUTH_STRING``, or name a secret file holding it in ``PREFECT_SERVER_API_AUTH_STRING_FILE`` /
``PREFECT_API_AUTH_STRING_FILE`` (:mod:`components.ops.servers`); the server then refuses every API request
without it (401) and the CLI calls and workers started here send it. Clients elsewhere set
``PREFECT_API_AUTH_STRING``; the UI asks for it. A ``--host`` other than loopback without one is refused
(``--allow-unauthenticated`` overrides that). The string is never put on a command line or printed.

Ctrl-C stops the workers (two SIGTERMs: a Prefect worker's first one only stops polling; then the
flow runs it started in sessions of their own), then the server, with
:func:`components.ops.processes.stop_group`.

Here: :data:`PREFECT_QUIET` / :func:`prefect_env` (the environment of every Prefect process),
:func:`read_deployments` and :func:`run_command_text` (``prefect.yaml``), the :class:`LocalPrefect`
context manager (what the tests use to run a real server + worker on a free port with a throw-away
``PREFECT_HOME``) and the entry points :func:`serve` / :func:`main`. The process plumbing (ports,
process groups, health checks) is :mod:`components.ops.processes`. Prefect itself is only run as
subprocesses (``python -m prefect``), never imported here.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import components  # noqa: F401  (telemetry off, PREFECT_HOME inside the project, before prefect runs)
from components.ops.processes import (ProcessError, Proc, port_in_use, start_group, stop_group, venv_env,
                                  wait_healthy)
from components.ops.servers import (PREFECT_CLIENT_AUTH, InsecureBindError, check_bind, prefect_auth_env,
                                prefect_auth_string)
from components.core.runtime import state_dir

log = logging.getLogger(__name__)

DEFAULT_POOL = "gpu"
DEFAULT_PORT = 4200
PREFECT = [sys.executable, "-m", "prefect"]

# Environment of every Prefect process started here (only where the caller has not set them).
PREFECT_QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_CLI_PROMPT": "false",  # never wait for an answer on a terminal nobody watches
    # Prefect 3.8 may re-launch a flow run under `uv run --project <dir>` when the project's
    # pyproject declares prefect and uv is on PATH; uv cannot see the on-disk CPU torch wheel.
    "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PYTHONUNBUFFERED": "1",
}


class ServeError(ProcessError):
    """A step of bringing the local Prefect stack up failed (its output is in the message); a server
    that does not get healthy raises the base class, from :func:`~components.ops.processes.wait_healthy`."""


def prefect_env(api_url: str | None = None, *, home: str | os.PathLike | None = None,
                base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None,
                server: bool = False) -> dict[str, str]:
    """Environment for a Prefect CLI call / server / worker.

    ``PREFECT_HOME``: ``home`` > ``$PREFECT_HOME`` > ``<state_dir>/prefect``; ``PREFECT_API_URL``:
    ``api_url`` (removed when None, so a server never points at another one); telemetry off;
    the venv's bin first on ``PATH``; ``extra`` last (wins); then the API auth string, when one is set
    (or its secret file), where a ``server`` or a client reads it (:func:`components.ops.servers.prefect_auth_env`).
    """
    env = venv_env(base)
    for k, v in PREFECT_QUIET.items():
        env.setdefault(k, v)
    env["PREFECT_HOME"] = str(Path(home).absolute()) if home else env.get("PREFECT_HOME") or str(state_dir() / "prefect")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:
        env.pop("PREFECT_API_URL", None)
    env.update(extra or {})
    return prefect_auth_env(env, server=server)


# ------------------------------------------------------------------------------ prefect.yaml
def read_deployments(project_dir: str | os.PathLike = ".", prefect_file: str = "prefect.yaml") -> list[dict]:
    """The ``deployments:`` of ``prefect.yaml`` (name, entrypoint, ...)."""
    import yaml

    path = Path(project_dir) / prefect_file
    if not path.is_file():
        raise ServeError(f"{path} does not exist: run from the project root or pass --project-dir")
    cfg = yaml.safe_load(path.read_text()) or {}
    return [d for d in cfg.get("deployments") or [] if isinstance(d, dict) and d.get("name")]


def run_command_text(deployment: str, parameters: Mapping[str, Any] | None = None,
                     api_url: str | None = None) -> str:
    """The shell command that starts a flow run of ``flow/deployment`` with ``parameters``."""
    import json
    import shlex

    parts = ["prefect", "deployment", "run", shlex.quote(deployment)]
    for k, v in (parameters or {}).items():
        parts += ["-p", shlex.quote(f"{k}={json.dumps(v)}")]
    prefix = f"PREFECT_API_URL={api_url} " if api_url else ""
    return prefix + " ".join(parts)


# ------------------------------------------------------------------------------ the local stack
class LocalPrefect:
    """A Prefect server + process work pool + deployments + workers for one project directory.

    Use as a context manager (``__exit__`` stops everything) or call :meth:`start` / :meth:`stop`.
    ``home``: ``PREFECT_HOME`` (default ``$PREFECT_HOME`` or ``.salient/prefect``); ``log_dir``:
    where server / worker output goes (default ``<home>/logs``; ``worker_output="inherit"`` shows
    the workers' output, i.e. the flow run logs, on this terminal instead); ``env``: extra
    environment for every process (e.g. ``MLFLOW_TRACKING_URI``, ``PREFECT_WORKER_QUERY_SECONDS``).
    An API auth string in the environment or ``env`` (or its secret file, see the module docstring) goes
    to the server as ``PREFECT_SERVER_API_AUTH_STRING`` and to the CLI calls and workers as
    ``PREFECT_API_AUTH_STRING``. A ``host`` beyond loopback without one raises
    :class:`~components.ops.servers.InsecureBindError` unless ``allow_unauthenticated``.
    """

    def __init__(self, project_dir: str | os.PathLike = ".", *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 pool: str = DEFAULT_POOL, workers: int = 1, home: str | os.PathLike | None = None,
                 log_dir: str | os.PathLike | None = None, ui: bool = True, env: Mapping[str, str] | None = None,
                 worker_output: str = "file", prefect_file: str = "prefect.yaml",
                 allow_unauthenticated: bool = False) -> None:
        self.project_dir = Path(project_dir).absolute()
        self.host, self.port, self.pool, self.n_workers, self.ui = host, int(port), pool, int(workers), ui
        self.extra = dict(env or {})
        base = prefect_env(home=home, extra=self.extra)
        self.home = Path(base["PREFECT_HOME"])
        self.log_dir = Path(log_dir) if log_dir else self.home / "logs"
        self.worker_output = worker_output
        self.prefect_file = prefect_file
        self.auth = prefect_auth_string(base) is not None  # the API asks for the auth string
        self.allow_unauthenticated = allow_unauthenticated
        self.server: Proc | None = None
        self.workers: list[Proc] = []
        self.deployed: list[str] = []

    # urls / environment
    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a CLI call against this server (``PREFECT_API_URL`` set)."""
        return prefect_env(self.api_url, home=self.home, extra={**self.extra, **extra})

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """``prefect ARGS`` against this server, from the project directory."""
        out = subprocess.run([*PREFECT, *args], cwd=self.project_dir, env=self.env(), capture_output=True,
                             text=True, timeout=timeout)
        if check and out.returncode:
            raise ServeError(f"prefect {' '.join(args)} failed (exit {out.returncode}):\n"
                             f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    # steps
    def start_server(self, timeout: float = 180.0) -> float:
        check_bind(self.host, self.auth, self.allow_unauthenticated, "Prefect server")
        if port_in_use(self.host, self.port):
            raise ServeError(f"{self.host}:{self.port} is in use: another Prefect server? "
                             f"pick another --port (or use that server with PREFECT_API_URL={self.api_url})")
        self.home.mkdir(parents=True, exist_ok=True)
        env = prefect_env(home=self.home, extra={**self.extra, "PREFECT_SERVER_UI_API_URL": self.api_url},
                          server=True)
        cmd = [*PREFECT, "server", "start", "--host", self.host, "--port", str(self.port),
               "--ui" if self.ui else "--no-ui"]
        self.server = start_group(cmd, name="prefect server", env=env, cwd=self.project_dir,
                                  log_path=self.log_dir / "server.log")
        waited = wait_healthy(f"{self.api_url}/health", proc=self.server, timeout=timeout)
        log.info("Prefect server healthy at %s after %.1f s%s", self.api_url, waited,
                 " (API auth string required)" if self.auth else "")
        return waited

    def create_pool(self) -> bool:
        """Create the process work pool; False when it existed already (kept unchanged)."""
        out = self.cli("work-pool", "create", self.pool, "--type", "process", check=False)
        if out.returncode == 0:
            log.info("created work pool %r (process)", self.pool)
            return True
        if "already exists" in out.stdout + out.stderr:
            log.info("work pool %r exists: kept", self.pool)
            return False
        raise ServeError(f"prefect work-pool create {self.pool} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")

    def deploy(self, names: Sequence[str] | None = None) -> list[str]:
        """``prefect deploy`` each deployment of ``prefect.yaml`` (all, or ``names``) onto this pool.

        Deployments whose entrypoint file does not exist are skipped with a warning; one that fails
        to deploy is logged and skipped (all failing raises). Returns ``flow/deployment`` names."""
        done: list[str] = []
        failed: dict[str, str] = {}
        for d in read_deployments(self.project_dir, self.prefect_file):
            if names is not None and d["name"] not in names:
                continue
            path = str(d.get("entrypoint", "")).split(":", 1)[0]
            if not path or not (self.project_dir / path).exists():
                log.warning("deployment %r: entrypoint %r does not exist here: skipped", d["name"], d.get("entrypoint"))
                continue
            out = self.cli("deploy", "--no-prompt", "--prefect-file", self.prefect_file, "-n", d["name"],
                           "--pool", self.pool, check=False)
            text = out.stdout + out.stderr
            if out.returncode:
                failed[d["name"]] = text[-3000:]
                log.error("deploying %r failed (exit %d):\n%s", d["name"], out.returncode, text[-3000:])
                continue
            m = re.search(r"Deployment '([^']+/[^']+)' successfully", text)
            done.append(m.group(1) if m else d["name"])
            log.info("deployed %s", done[-1])
        missing = set(names or ()) - {d["name"] for d in read_deployments(self.project_dir, self.prefect_file)}
        if missing:
            raise ServeError(f"no deployment named {sorted(missing)} in {self.project_dir / self.prefect_file}")
        if not done:
            raise ServeError("nothing was deployed" + "".join(f"\n--- {k}:\n{v}" for k, v in failed.items()))
        self.deployed += done
        return done

    def start_workers(self) -> list[Proc]:
        env = self.env(SALIENT_PROJECT_DIR=str(self.project_dir))
        env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")
        for i in range(self.n_workers):
            name = f"{self.pool}-worker-{len(self.workers) + 1}"
            log_path = None if self.worker_output == "inherit" else self.log_dir / f"{name}.log"
            cmd = [*PREFECT, "worker", "start", "--pool", self.pool, "--type", "process", "--name", name]
            self.workers.append(start_group(cmd, name=name, env=env, cwd=self.project_dir, log_path=log_path))
        return self.workers

    def start(self, deployments: Sequence[str] | None = None) -> LocalPrefect:
        try:
            self.start_server()
            self.create_pool()
            self.deploy(deployments)
            self.start_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> list[Proc]:
        return [*self.workers, *([self.server] if self.server else [])]

    def pids(self) -> set[int]:
        """Every pid started here and every descendant seen so far."""
        out: set[int] = set()
        for p in self.processes():
            p.remember_children()
            out |= {p.pid} | p.seen
        return out

    def check_alive(self) -> list[str]:
        """Names of the started processes that have exited."""
        return [f"{p.name} (exit {p.popen.returncode})" for p in self.processes() if not p.alive()]

    def stop(self) -> list[int]:
        """Workers first (so no flow run is left without its worker), then the server. Returns the
        pids still alive (empty when all is gone)."""
        left: list[int] = []
        for w in self.workers:
            left += stop_group(w)
        if self.server is not None:
            left += stop_group(self.server, signals=(signal.SIGTERM,), grace=20)
        return left

    def __enter__(self) -> LocalPrefect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------ entry points
def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, pool: str = DEFAULT_POOL, workers: int = 1, *,
          project_dir: str | os.PathLike = ".", deployments: Sequence[str] | None = None, ui: bool = True,
          home: str | os.PathLike | None = None, allow_unauthenticated: bool = False) -> int:
    """Bring the local stack up, print how to use it, block until Ctrl-C (or SIGTERM, or a process
    dying), then stop everything. Returns 0 on a clean stop, 1 when a process died or survived."""
    try:
        stack = LocalPrefect(project_dir, host=host, port=port, pool=pool, workers=workers, ui=ui, home=home,
                             worker_output="inherit", allow_unauthenticated=allow_unauthenticated)
        check_bind(host, stack.auth, allow_unauthenticated, "Prefect server")
    except (InsecureBindError, OSError, RuntimeError) as e:  # a bad secret file: SecretError
        print(f"error: {e}", file=sys.stderr)
        return 2
    stopping = {"sig": None}

    def on_term(signum, frame):  # noqa: ARG001
        stopping["sig"] = signum
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must stop the stack even when this process inherited SIGINT as ignored (started from a
    # non-interactive shell's background job, as CI runners do): Python then installs no handler.
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    rc = 0
    try:
        stack.start(deployments)
        names = stack.deployed
        pipe = next((n for n in names if n.startswith("pipeline/")), names[0])
        print(f"\nPrefect server  {stack.api_url}   (PREFECT_HOME={stack.home}, logs in {stack.log_dir})")
        if ui:
            print(f"UI              {stack.ui_url}")
        print(f"work pool       {pool} (process), {workers} worker(s) in {stack.project_dir}")
        print(f"deployments     {', '.join(names)}\n")
        if stack.auth:
            print(f"The API asks for its auth string: clients set {PREFECT_CLIENT_AUTH} (the workers here have it),\n"
                  f"e.g. export {PREFECT_CLIENT_AUTH}=\"$(cat <your secret file>)\"\n")
        print("Run the pipeline (whole, or some targets, with param overrides as a DVC experiment):")
        print("  " + run_command_text(pipe, None, stack.api_url))
        print("  " + run_command_text(pipe, {"targets": ["prepare"], "overrides": {"data.synthetic.noise": 5.0}},
                                      stack.api_url))
        print("\nCtrl-C stops the workers and the server.\n", flush=True)
        while True:
            dead = stack.check_alive()
            if dead:
                print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
                rc = 1
                break
            for p in stack.processes():
                p.remember_children()
            time.sleep(2)
    except KeyboardInterrupt:
        print("\nstopping ...", file=sys.stderr, flush=True)
    except ProcessError as e:  # a ServeError, or the server not getting healthy (wait_healthy)
        print(f"error: {e}", file=sys.stderr)
        rc = 1
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        left = stack.stop()
        if left:
            print(f"error: processes still alive: {left}", file=sys.stderr)
            rc = 1
        else:
            print("all Prefect processes stopped", file=sys.stderr)
    return rc


SERVE_HELP = """\
Start a local Prefect server, a process work pool, the deployments of prefect.yaml (pipeline, sweep)
and worker(s) in one command, then run the pipeline from the Prefect UI or the CLI. Ctrl-C stops
every process it started.

Once it prints that everything is up, in another terminal:

  export PREFECT_API_URL=http://127.0.0.1:4200/api
  prefect deployment run 'pipeline/pipeline' -p targets='["evaluate"]'
  prefect deployment run 'pipeline/pipeline' -p overrides='{"data.synthetic.noise": 5.0}'

Overrides run as an isolated DVC experiment (`dvc exp show` lists it); they are checked like
params.yaml before anything runs. To serve workers on other machines, set an auth string
(PREFECT_SERVER_API_AUTH_STRING=user:password, or a *_FILE variable naming a file holding it) and
--host; a non-loopback --host without one is refused."""


def build_parser() -> argparse.ArgumentParser:
    """``salient serve``'s options (user-facing help: :data:`SERVE_HELP`)."""
    ap = argparse.ArgumentParser(prog="salient serve", description=SERVE_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address the server binds (default: %(default)s; another "
                    "one needs an auth string, see above)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help="the server's port (default: %(default)s; API at /api, UI at /)")
    ap.add_argument("--pool", default=DEFAULT_POOL, help="process work pool name (created if missing)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (SQLite: keep it small)")
    ap.add_argument("--project-dir", default=".", help="the checkout the workers run the flows in")
    ap.add_argument("--deployment", action="append", dest="deployments", metavar="NAME",
                    help="deploy only these prefect.yaml deployments (default: all)")
    ap.add_argument("--no-ui", action="store_true", help="API only, no web UI")
    ap.add_argument("--allow-unauthenticated", action="store_true",
                    help="let a --host other than 127.0.0.1 serve without an API auth string")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return serve(args.host, args.port, args.pool, args.workers, project_dir=args.project_dir,
                 deployments=args.deployments, ui=not args.no_ui, allow_unauthenticated=args.allow_unauthenticated)


if __name__ == "__main__":
    raise SystemExit(main())
