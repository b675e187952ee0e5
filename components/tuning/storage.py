"""Optuna plumbing shared by every search: storages by URL, study creation, quiet logging, trial counts.

Storages (:func:`storage_from_url`): ``sqlite:///path`` (parent folders created; relative paths are
relative to the working directory; WAL journal, see :func:`_sqlite_connect`), ``postgresql://...``
(many machines on one study, docs/design.md §5; see :func:`_postgres`), any other SQLAlchemy URL as is,
``journal:<path>`` for Optuna's journal file storage (NFS-friendly, no database), ``memory:`` for an
in-process study.

PostgreSQL passwords stay out of URLs and params: ``postgresql://user@host:5432/optuna`` and libpq
reads the password from ``PGPASSWORD`` or a ``~/.pgpass`` / ``PGPASSFILE`` secret file. A URL that
does hold one is only ever logged through :func:`components.tracking.redact`.
"""
from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from components.redaction import redact

if TYPE_CHECKING:  # pragma: no cover
    import optuna


def storage_from_url(url: str | None, heartbeat: int = 0) -> "optuna.storages.BaseStorage":
    """An Optuna storage for ``url``: ``sqlite:///file`` (parent folders created; WAL journal, see
    :func:`_sqlite_connect`; a URL with ``?query`` options is passed as is), ``postgresql://...``
    (:func:`_postgres`), another SQLAlchemy URL as is, ``journal:<path>`` ->
    ``JournalStorage(JournalFileBackend(path))``, ``memory:`` -> in memory.

    ``heartbeat`` > 0 (SQL storages): each running trial records a heartbeat every ``heartbeat``
    seconds; when a worker starts a trial, Optuna fails every trial of the study silent for longer
    than ``2 * heartbeat`` (its process was killed: SIGKILL leaves no chance to say so) and
    :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues it once more, so no trial stays
    RUNNING forever and the killed trial's parameters are still evaluated."""
    import optuna

    hb = {}
    if heartbeat:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8, and Optuna's only stale-trial handling
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            hb = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat,
                  "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}

    url = (url or "").strip()
    if url in ("", "memory", "memory:"):
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):].removeprefix("//"))
        if not path.name:
            raise ValueError(f"optuna storage {url!r}: journal: needs a file path (journal:.salient/optuna.log)")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        db = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
        if not db or db == ":memory:" or "?" in url:
            return _rdb(url, hb)
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(Path(db + ".lock")):  # two processes creating one new database race on its schema
            return _rdb(url, hb, engine_kwargs={"creator": lambda: _sqlite_connect(db)})
    if pg := _postgres_url(url):
        return _postgres(pg, hb)
    if "://" in url:
        return _rdb(url, hb)
    raise ValueError(f"optuna storage {redact(url)!r}: expected sqlite:///file, postgresql://..., journal:<file> "
                     "or memory:")


def _rdb(url: str, heartbeat: dict, **kwargs: Any) -> "optuna.storages.RDBStorage":
    import optuna

    with warnings.catch_warnings():  # the heartbeat arguments are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **kwargs, **heartbeat)


_PG_SCHEMA_LOCK = 0x5A11E7  # the pg_advisory_lock key under which a process creates / checks Optuna's tables


def _postgres_url(url: str) -> str:
    """``url`` with an explicit PostgreSQL driver (:func:`components.servers.sqlalchemy_url`: SQLAlchemy
    2.1's default driver is psycopg 3, which is not in the pinned set) when it names PostgreSQL, else ""."""
    from components.servers import sqlalchemy_url  # deferred: only PostgreSQL storages need it

    out = sqlalchemy_url(url)
    return out if out.lower().startswith("postgresql+") else ""


def _postgres(url: str, heartbeat: dict) -> "optuna.storages.RDBStorage":
    """An RDBStorage on PostgreSQL for workers on many machines.

    Optuna creates its tables and stamps its schema version (``create_all``, ``version_info``,
    ``alembic_version``) unlocked when a storage is opened: workers opening a new database at once
    raced on it (duplicate-type errors, two ``alembic_version`` rows). Here each opener holds a
    PostgreSQL advisory lock (one key per database) while it does so, on a connection of its own.
    Connections are checked before use (``pool_pre_ping``: a worker outlives a server restart or an
    idle timeout in between) and give up after 10 s unless the URL sets ``connect_timeout``.
    Passwords: libpq's ``PGPASSWORD`` / ``~/.pgpass`` / ``PGPASSFILE`` (or the URL, redacted in logs).
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    connect_args = {} if "connect_timeout" in url else {"connect_timeout": 10}
    lock = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with lock.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
            try:
                return _rdb(url, heartbeat, engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args})
            finally:  # closing the connection would release it too
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_SCHEMA_LOCK})
    finally:
        lock.dispose()


@contextlib.contextmanager
def study_lock(url: str | None, name: str) -> Iterator[None]:
    """Hold an exclusive lock for filling study ``name`` of a file storage (``sqlite:///file`` or
    ``journal:<file>``; a lock file beside it), so two processes topping one study up to N trials run
    one after the other and the second finds it full, instead of both adding N (60 + 60 = 120 trials
    and a doubled Pareto table). Other storages (PostgreSQL, memory): no lock; run one filler per study."""
    url = (url or "").strip()
    db = ""
    if url.startswith("sqlite:") and ":///" in url:
        db = url.split(":///", 1)[1].split("?", 1)[0]
    elif url.startswith("journal:"):
        db = url[len("journal:"):].removeprefix("//")
    if not db or db == ":memory:":
        yield
        return
    tag = hashlib.sha1(name.encode()).hexdigest()[:12]
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(Path(f"{db}.{tag}.lock")):
        yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sqlite_connect(db: str):
    """A connection to the study database in WAL mode with ``synchronous=NORMAL`` (a commit does not
    wait for an fsync: ~15x faster trials here, still safe against process crashes; readers do not
    block the writer, which several sweep workers need) and a 60 s busy timeout."""
    import sqlite3

    con = sqlite3.connect(db, timeout=60, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _study(name: str, storage: Any, sampler: Any, directions: Sequence[str] = ("maximize",),
           pruner: Any = None) -> "optuna.Study":
    import optuna

    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                               directions=list(directions), load_if_exists=True)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's one INFO line per trial is noise for hundreds of millisecond trials (a progress bar
    shows them instead); warnings still come through."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _trials_per_second(study: "optuna.Study") -> float | None:
    """Complete trials per second of trial time (sampling + objective + storage writes), from the
    stored trial timestamps: also right for a study topped up over several runs."""
    secs = sum(t.duration.total_seconds() for t in _complete(study) if t.duration is not None)
    return len(_complete(study)) / secs if secs > 0 else None


def _progress() -> bool:
    """Progress bars where a terminal watches (tqdm's ``disable=None`` rule)."""
    import sys

    return sys.stderr.isatty()


def _complete(study: "optuna.Study") -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


