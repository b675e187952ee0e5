"""Servers other machines may reach: the MLflow tracking server on a SQL backend with an artifact store,
and who may use it and the Prefect server (issue 15, items 4 and 7).

Everything binds ``127.0.0.1`` unless told otherwise. Binding another address without authentication
is refused (``allow_unauthenticated=True`` overrides it, for a network you trust by other means).

**Secrets** never go into ``params.yaml``, ``prefect.yaml``, a command line, a log line or an MLflow param
or tag. They come from environment variables, or from a *secret file* named by the same variable with
``_FILE`` appended (the convention of Docker / Kubernetes secrets)::

    MLFLOW_TRACKING_PASSWORD(_FILE)        client of an MLflow server with basic auth (+ MLFLOW_TRACKING_USERNAME)
    MLFLOW_AUTH_ADMIN_PASSWORD(_FILE)      that server: its admin's password, set on first start (+ ..._USERNAME)
    MLFLOW_FLASK_SERVER_SECRET_KEY(_FILE)  that server: its CSRF key (a random one per start when unset)
    PREFECT_API_AUTH_STRING(_FILE)         client / worker of a Prefect server with an auth string ("user:password")
    PREFECT_SERVER_API_AUTH_STRING(_FILE)  that server (``salient serve`` takes either of the two)
    PGPASSWORD(_FILE)                      the PostgreSQL role of a backend / Optuna storage (libpq also reads PGPASSFILE)

:func:`secret_env` reads the files into a copy of an environment (a variable already set wins; the file's
content without its trailing newline; a file others may read is warned about); :func:`export_secret_files`
does it for this process (:func:`components.tracking.mlflow_tracking.client` calls it, so every MLflow client of a stage,
trial or flow authenticates). The tools themselves read only the plain variables.

**MLflow**: :func:`mlflow_server_command` / :class:`MlflowServer` run ``mlflow server --backend-store-uri
postgresql://user@host:port/db --artifacts-destination DIR --host 127.0.0.1 ...`` (``--app-name
basic-auth`` with :class:`MlflowAuth`: an ini file :func:`write_auth_config` writes, pointed at by
``MLFLOW_AUTH_CONFIG_PATH``, with the users database and default permission and no password in it; the
admin's password comes from ``MLFLOW_AUTH_ADMIN_PASSWORD`` in the server's environment). A password in
the backend URI is moved into the server's ``PGPASSWORD``, so the command line (which
:func:`components.ops.processes.start_group` logs) never carries one.

**Prefect**: :func:`prefect_auth_env` gives a server or a client / worker environment the one auth string
(``flows/serve.py`` uses it for ``salient serve``).
"""
from __future__ import annotations

import configparser
import logging
import os
import secrets
import signal
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.ops.processes import ProcessError, Proc, free_port, port_in_use, start_group, stop_group, wait_healthy

log = logging.getLogger(__name__)

FILE_SUFFIX = "_FILE"
#: Environment variables holding secrets, each also readable from the file named by ``<name>_FILE``.
SECRET_VARS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
               "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING", "PGPASSWORD")
PREFECT_CLIENT_AUTH, PREFECT_SERVER_AUTH = "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SecretError(RuntimeError):
    """A secret file is missing, unreadable or empty, or a secret would end up where it must not."""


class InsecureBindError(ValueError):
    """A server would listen beyond this machine with nobody asked who they are."""


# ------------------------------------------------------------------------------ secrets
def read_secret_file(path: str | os.PathLike, var: str = "") -> str:
    """The secret in ``path`` without its trailing newline; warns when group or others may read it."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
        mode = p.stat().st_mode
    except OSError as e:
        raise SecretError(f"{var or 'secret'} file {p}: {e.strerror or e}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise SecretError(f"{var or 'secret'} file {p} is empty")
    if mode & 0o077:
        log.warning("secret file %s is readable by group or others (mode %o): chmod 600 it", p, mode & 0o777)
    return secret


def secret_env(base: Mapping[str, str] | None = None, names: Sequence[str] = SECRET_VARS) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) where each ``NAME`` of ``names`` that is unset but has
    ``NAME_FILE`` set is read from that file. A variable that is set wins over its file."""
    env = dict(os.environ if base is None else base)
    for name in names:
        path = env.get(name + FILE_SUFFIX)
        if path and not env.get(name):
            env[name] = read_secret_file(path, name + FILE_SUFFIX)
    return env


def export_secret_files(names: Sequence[str] = SECRET_VARS) -> list[str]:
    """:func:`secret_env` applied to this process's environment; returns the names it set."""
    env = secret_env(os.environ, names)
    added = [n for n in names if n in env and n not in os.environ]
    for n in added:
        os.environ[n] = env[n]
    return added


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The secrets present in ``env`` (default ``os.environ``, secret files read): what must never show up in
    a log, a param or a tag (tests scan for them)."""
    env = secret_env(env)
    out = [env[n] for n in SECRET_VARS if env.get(n)]
    for n in PREFECT_CLIENT_AUTH, PREFECT_SERVER_AUTH:  # "user:password": the password alone too
        if ":" in env.get(n, ""):
            out.append(env[n].split(":", 1)[1])
    return sorted({s for s in out if s})


def split_password(url: str) -> tuple[str, str | None]:
    """``scheme://user:password@host/...`` -> (``scheme://user@host/...``, password); (url, None) when it
    has none. The password is percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url, None
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (urllib.parse.quote(user, safe="") + "@" if user else "") + host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), urllib.parse.unquote(parts.password)


def sqlalchemy_url(url: str) -> str:
    """``url`` with an explicit driver when it names PostgreSQL (``postgres(ql)://`` ->
    ``postgresql+psycopg2://``): SQLAlchemy 2.1's default driver is psycopg 3, which is not in the pinned
    set (the same rule as :mod:`components.tuning.storage` applies to Optuna storages). Others as is."""
    scheme, sep, rest = url.partition("://")
    base, _, driver = scheme.partition("+")
    if not sep or base.lower() not in ("postgres", "postgresql"):
        return url
    return f"postgresql+{driver or 'psycopg2'}://{rest}"


def check_bind(host: str, authenticated: bool, allow_unauthenticated: bool = False, what: str = "server") -> None:
    """Refuse (:class:`InsecureBindError`) to listen beyond loopback without authentication."""
    if host in LOOPBACK or authenticated or allow_unauthenticated:
        return
    raise InsecureBindError(f"{what} on {host}: other machines could reach it and nobody would be asked who they "
                            f"are; turn authentication on (see components/ops/servers.py) or bind 127.0.0.1")


# ------------------------------------------------------------------------------ MLflow
@dataclass
class MlflowAuth:
    """MLflow's ``basic-auth`` app: users in ``database_uri`` (a SQLAlchemy URI; the tracking backend's
    database works too: its tables and migration table are its own), ``default_permission`` for every
    signed-in user on what they did not create (``EDIT``: a team logs into shared experiments; ``READ``;
    ``NO_PERMISSIONS``); a verified password is trusted ``cache_seconds`` before it is checked again. The admin (``admin_username``) is created on the first start with the password of
    ``$MLFLOW_AUTH_ADMIN_PASSWORD`` (or its ``_FILE``) in the server's environment."""

    database_uri: str
    admin_username: str = "admin"
    default_permission: str = "EDIT"
    cache_seconds: int = 60


def write_auth_config(path: str | os.PathLike, auth: MlflowAuth) -> Path:
    """The ini file ``MLFLOW_AUTH_CONFIG_PATH`` points at: no password in it (mode 600 all the same)."""
    if split_password(auth.database_uri)[1] is not None:
        raise SecretError("the auth database URI has a password: give it through PGPASSWORD(_FILE) / PGPASSFILE")
    cfg = configparser.ConfigParser()
    cfg["mlflow"] = {"default_permission": auth.default_permission, "database_uri": sqlalchemy_url(auth.database_uri),
                     "admin_username": auth.admin_username,
                     "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
                     # a password check (PBKDF2) costs ~1 s of CPU here, on every request of a stage that logs
                     # hundreds; cached a minute per worker (one worker: a password change applies at once)
                     "auth_cache_ttl_seconds": str(auth.cache_seconds)}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as f:
        cfg.write(f)
    os.chmod(p, 0o600)
    return p


def mlflow_server_command(backend_store_uri: str, artifacts_destination: str | os.PathLike, *,
                          host: str = "127.0.0.1", port: int = 5000, auth: bool = False, workers: int = 1,
                          allowed_hosts: Sequence[str] = (), allow_unauthenticated: bool = False) -> list[str]:
    """``mlflow server`` on ``backend_store_uri`` (``postgresql://user@host:port/db``, ``sqlite:///...``)
    proxying artifacts to ``artifacts_destination`` (a folder or ``s3://...``), clients reaching them as
    ``mlflow-artifacts:/`` through the server. ``auth``: the ``basic-auth`` app. ``allowed_hosts``: the
    Host headers accepted besides localhost and private addresses (a public name when exposed).

    A URI with a password is refused (the command line is logged and visible in ``ps``):
    :class:`MlflowServer` moves it into ``PGPASSWORD``."""
    if split_password(backend_store_uri)[1] is not None:
        raise SecretError("the backend store URI has a password: give it through PGPASSWORD(_FILE) / PGPASSFILE")
    check_bind(host, auth, allow_unauthenticated, "MLflow server")
    dest = str(artifacts_destination)
    if "://" not in dest:
        dest = str(Path(dest).absolute())
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", sqlalchemy_url(backend_store_uri),
           "--serve-artifacts", "--artifacts-destination", dest,
           "--host", host, "--port", str(int(port)), "--workers", str(int(workers))]
    if allowed_hosts:
        cmd += ["--allowed-hosts", ",".join(allowed_hosts)]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def mlflow_server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``mlflow ui`` / ``mlflow server``: one small process instead of ~2 GB of workers
    (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``), telemetry off, secret files read, and no client
    settings (a server is nobody's client)."""
    env = {k: v for k, v in secret_env(base).items()
           if not k.startswith(("MLFLOW_TRACKING_", "SALIENT_PARENT_RUN"))}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


class MlflowServer:
    """``with MlflowServer(backend, artifacts_dir) as srv: srv.url``: a tracking server process (its own
    process group, output in ``log_path``), healthy on entry, stopped on exit.

    ``auth`` (:class:`MlflowAuth`): the basic-auth app; its config goes to ``auth_config`` (default beside
    the log). ``env``: the server's environment (default ``os.environ``); ``PGPASSWORD`` / its ``_FILE``
    there, or a password in ``backend_store_uri`` (moved into ``PGPASSWORD``), reach the database."""

    def __init__(self, backend_store_uri: str, artifacts_destination: str | os.PathLike, *,
                 host: str = "127.0.0.1", port: int | None = None, auth: MlflowAuth | None = None,
                 env: Mapping[str, str] | None = None, log_path: str | os.PathLike | None = None,
                 auth_config: str | os.PathLike | None = None, allowed_hosts: Sequence[str] = (),
                 allow_unauthenticated: bool = False, cwd: str | os.PathLike | None = None) -> None:
        self.backend_store_uri, password = split_password(backend_store_uri)
        self.env = mlflow_server_env(env)
        if password is not None:
            self.env["PGPASSWORD"] = password
        self.host, self.port = host, int(port or free_port(host))
        self.auth, self.artifacts_destination = auth, artifacts_destination
        self.log_path = Path(log_path) if log_path else Path(artifacts_destination).parent / "mlflow-server.log"
        self.cwd = Path(cwd) if cwd else self.log_path.parent
        self.cmd = mlflow_server_command(self.backend_store_uri, artifacts_destination, host=host, port=self.port,
                                         auth=auth is not None, allowed_hosts=allowed_hosts,
                                         allow_unauthenticated=allow_unauthenticated)
        if auth is not None:
            if not self.env.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
                raise SecretError("MLflow basic auth needs the admin's password: set MLFLOW_AUTH_ADMIN_PASSWORD "
                                  "or MLFLOW_AUTH_ADMIN_PASSWORD_FILE")
            cfg = write_auth_config(auth_config or self.log_path.parent / "mlflow-auth.ini", auth)
            self.env["MLFLOW_AUTH_CONFIG_PATH"] = str(cfg.absolute())
            self.env.setdefault("MLFLOW_AUTH_ADMIN_USERNAME", auth.admin_username)
            if not self.env.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):  # the app's CSRF key; one server: any will do
                self.env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_urlsafe(32)
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 180.0) -> MlflowServer:
        if port_in_use(self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1", self.port):
            raise ProcessError(f"{self.host}:{self.port} is in use: pick another port")
        self.proc = start_group(self.cmd, name="mlflow server", env=self.env, cwd=self.cwd, log_path=self.log_path)
        try:
            waited = wait_healthy(f"{self.url}/health", proc=self.proc, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        log.info("MLflow server healthy at %s after %.1f s%s", self.url, waited,
                 " (basic auth)" if self.auth else "")
        return self

    def stop(self) -> list[int]:
        """Stop the server's process group; returns the pids still alive (empty when all is gone)."""
        if self.proc is None:
            return []
        left = stop_group(self.proc, signals=(signal.SIGTERM,), grace=20)
        self.proc = None
        return left

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------ Prefect
def prefect_auth_string(env: Mapping[str, str] | None = None) -> str | None:
    """The Prefect API auth string of ``env`` (secret files read): the server's, else the client's."""
    env = secret_env(env, (PREFECT_SERVER_AUTH, PREFECT_CLIENT_AUTH))
    return env.get(PREFECT_SERVER_AUTH) or env.get(PREFECT_CLIENT_AUTH) or None


def prefect_auth_env(env: Mapping[str, str], *, server: bool) -> dict[str, str]:
    """``env`` with the one auth string (:func:`prefect_auth_string`) where Prefect reads it: a server gets
    ``PREFECT_SERVER_API_AUTH_STRING`` (its own internal clients use that too); a client / worker gets
    ``PREFECT_API_AUTH_STRING`` and not the server's variable. Without one, ``env`` is returned as is."""
    out = dict(env)
    auth = prefect_auth_string(out)
    if not auth:
        return out
    if server:
        out[PREFECT_SERVER_AUTH] = auth
    else:
        out.pop(PREFECT_SERVER_AUTH, None)
        out.pop(PREFECT_SERVER_AUTH + FILE_SUFFIX, None)
    out[PREFECT_CLIENT_AUTH] = auth
    return out


__all__ = ["SECRET_VARS", "SecretError", "InsecureBindError", "read_secret_file", "secret_env", "export_secret_files",
           "secret_values", "split_password", "sqlalchemy_url", "check_bind", "MlflowAuth", "write_auth_config",
           "mlflow_server_command", "mlflow_server_env", "MlflowServer", "prefect_auth_string", "prefect_auth_env"]
