"""A throwaway PostgreSQL cluster on loopback, for tests and for one-box multi-worker sweeps.

:class:`PostgresCluster` runs ``initdb`` / ``pg_ctl`` from the installed server (``$PG_BIN``, else
``pg_config --bindir``, else ``/usr/lib/postgresql/<newest>/bin``) in a directory of its own, on a
free port of 127.0.0.1. The server refuses to run as root, so under root every server command runs
as the unprivileged ``postgres`` user (``runuser -u postgres``), which then owns the data folder.

Authentication is by password only (``scram-sha-256`` for every TCP connection in ``pg_hba.conf``,
no ``trust`` line): :meth:`create_role` makes a login role with a password and
:meth:`create_database` a database it owns. Passwords never appear in a command line (they go in
over the superuser's connection) and clients read theirs from libpq's own places: ``PGPASSWORD``,
a ``PGPASSFILE`` / ``~/.pgpass`` secret file, never the URL in ``params.yaml``
(:func:`components.tracking.mlflow_tracking.redact` hides any that is there from logs and MLflow).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.ops.processes import free_port

log = logging.getLogger(__name__)
SUPERUSER = "salient_admin"


class PostgresError(RuntimeError):
    """The server could not be found, initialised, started or reached."""


def pg_bindir() -> Path:
    """Where ``initdb`` / ``pg_ctl`` live: ``$PG_BIN``, ``pg_config --bindir``, or the newest
    ``/usr/lib/postgresql/<v>/bin``; a clear error naming what to install when none has them."""
    cands = [os.environ.get("PG_BIN", "")]
    if shutil.which("pg_config"):
        try:
            cands.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                        timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    cands += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")),
                    key=lambda s: int(Path(s).parent.name) if Path(s).parent.name.isdigit() else 0, reverse=True)
    for c in cands:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise PostgresError("no PostgreSQL server found (initdb / pg_ctl): install it (Debian: apt-get install "
                        "postgresql) or set PG_BIN to its bin folder")


@dataclass
class PostgresCluster:
    """``with PostgresCluster() as pg: url = pg.url("optuna", "worker", pw)``: a new cluster in a
    temporary folder (or ``root``), started on a free loopback port, stopped and removed on exit."""

    root: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    superuser_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    keep: bool = False
    _tmp: str | None = None

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _as_server_user(self, cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        if not shutil.which("runuser"):
            raise PostgresError("running as root and runuser is missing: PostgreSQL refuses to run as root")
        return ["runuser", "-u", "postgres", "--", *cmd]

    def _run(self, cmd: list[str], what: str, timeout: float = 120) -> str:
        r = subprocess.run(self._as_server_user(cmd), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "LC_ALL": "C"})
        if r.returncode != 0:
            raise PostgresError(f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout)[-1500:]}")
        return r.stdout

    def start(self) -> "PostgresCluster":
        bindir = pg_bindir()
        if self.root is None:
            self._tmp = tempfile.mkdtemp(prefix="salient-pg-")
            self.root = Path(self._tmp)
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # the server user must own its folder and reach it
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run([str(bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER, "--pwfile", str(pwfile),
                       "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"],
                      "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        self.port = self.port or free_port(self.host)
        conf = self.datadir / "postgresql.conf"
        with open(conf, "a") as f:  # loopback only, socket inside our folder, quick and small
            f.write(f"\nlisten_addresses = '{self.host}'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.root}'\nfsync = off\nsynchronous_commit = off\n"
                    f"full_page_writes = off\nmax_connections = 100\nshared_buffers = 32MB\n")
        return self.resume()

    def resume(self) -> "PostgresCluster":
        """``pg_ctl start`` on the existing data folder (after :meth:`halt`), waiting until it accepts logins."""
        self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "server.log"),
                   "-w", "-t", "60", "start"], "pg_ctl start")
        self._wait()
        log.info("PostgreSQL on %s:%d (%s)", self.host, self.port, self.root)
        return self

    def halt(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>``, keeping the data folder (:meth:`resume` starts it again): what an
        administrator's restart or a crashed database server does to its clients."""
        self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"], "pg_ctl stop",
                  timeout=60)

    def _wait(self, timeout: float = 60.0) -> None:
        import psycopg2

        t0, err = time.monotonic(), None
        while time.monotonic() - t0 < timeout:
            try:
                psycopg2.connect(self.dsn("postgres", SUPERUSER, self.superuser_password)).close()
                return
            except psycopg2.OperationalError as e:
                err = e
                time.sleep(0.3)
        raise PostgresError(f"PostgreSQL on {self.host}:{self.port} did not accept connections in {timeout:.0f} s: "
                            f"{err}; log: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        p = (self.root or Path("/nonexistent")) / "server.log"
        try:
            return p.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.root is None or not self.datadir.exists():
            return
        try:
            self.halt()
        except (PostgresError, subprocess.SubprocessError) as e:
            log.warning("stopping PostgreSQL in %s: %s", self.root, e)
        if self._tmp and not self.keep:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------- roles and URLs
    def dsn(self, db: str, user: str, password: str | None = None) -> str:
        """A libpq keyword DSN; without ``password`` libpq reads PGPASSWORD / PGPASSFILE."""
        out = f"host={self.host} port={self.port} dbname={db} user={user} connect_timeout=10"
        return out + (f" password={password}" if password is not None else "")

    def url(self, db: str, user: str) -> str:
        """``postgresql://user@host:port/db``: no password in it (libpq reads PGPASSWORD / PGPASSFILE)."""
        return f"postgresql://{user}@{self.host}:{self.port}/{db}"

    def _admin(self, sql: str, args: tuple = ()) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn("postgres", SUPERUSER, self.superuser_password))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
        finally:
            conn.close()

    def create_role(self, user: str, password: str) -> None:
        """A login role authenticated by ``password`` (sent as a bound parameter, never logged)."""
        self._admin(f'CREATE ROLE "{_ident(user)}" LOGIN PASSWORD %s', (password,))

    def create_database(self, db: str, owner: str) -> None:
        self._admin(f'CREATE DATABASE "{_ident(db)}" OWNER "{_ident(owner)}"')


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits, _)")
    return name
