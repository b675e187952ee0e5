"""Optuna plumbing shared by every search: storages by URL, study creation, quiet logging, trial counts.

Storages (:func:`storage_from_url`): ``sqlite:///path`` (parent folders created; relative paths are
relative to the working directory; WAL journal, see :func:`_sqlite_connect`), ``postgresql://...``
(many machines on one study, docs/design.md §5; see :func:`_postgres`), any other SQLAlchemy URL as is,
``journal:<path>`` for Optuna's journal file storage (NFS-friendly, no database), ``memory:`` for an
in-process study.

PostgreSQL passwords stay out of URLs and params: ``postgresql://user@host:5432/optuna`` and libpq
reads the password from ``PGPASSWORD`` or a ``~/.pgpass`` / ``PGPASSFILE`` secret file. A URL that
does hold one is only ever logged through :func:`components.tracking.mlflow_tracking.redact`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from components.ops.redaction import redact

if TYPE_CHECKING:  # pragma: no cover
    import optuna

log = logging.getLogger(__name__)


def storage_from_url(url: str | None, heartbeat: int = 0, reconnect: float = 0) -> "optuna.storages.BaseStorage":
    """An Optuna storage for ``url``: ``sqlite:///file`` (parent folders created; WAL journal, see
    :func:`_sqlite_connect`; a URL with ``?query`` options is passed as is), ``postgresql://...``
    (:func:`_postgres`), another SQLAlchemy URL as is, ``journal:<path>`` ->
    ``JournalStorage(JournalFileBackend(path))``, ``memory:`` -> in memory.

    ``heartbeat`` > 0 (SQL storages): each running trial records a heartbeat every ``heartbeat``
    seconds; when a worker starts a trial, Optuna fails every trial of the study silent for longer
    than ``2 * heartbeat`` (its process was killed: SIGKILL leaves no chance to say so) and
    :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues it once more, so no trial stays
    RUNNING forever and the killed trial's parameters are still evaluated.

    SQL storages come wrapped in :class:`ResilientStorage`: a call that loses its connection to the
    database (server stopped or restarting, network gone) is retried with backoff for ``reconnect``
    seconds, then fails with :class:`StorageUnavailable` naming the storage and the driver's own error
    (``Connection refused``). Other errors (a wrong password, a bad query) are raised at once."""
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
            return _rdb(url, hb, reconnect)
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(Path(db + ".lock")):  # two processes creating one new database race on its schema
            return _rdb(url, hb, reconnect, engine_kwargs={"creator": lambda: _sqlite_connect(db)})
    if pg := _postgres_url(url):
        storage = with_reconnect(lambda: _postgres(pg, hb, reconnect), url, reconnect, "opening")
        storage.url = url  # as given, in messages
        return storage
    if "://" in url:
        return _rdb(url, hb, reconnect)
    raise ValueError(f"optuna storage {redact(url)!r}: expected sqlite:///file, postgresql://..., journal:<file> "
                     "or memory:")


def _rdb(url: str, heartbeat: dict, reconnect: float = 0, **kwargs: Any) -> "ResilientStorage":
    import optuna

    with warnings.catch_warnings():  # the heartbeat arguments are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(url, **kwargs, **heartbeat)
    return _resilient_class()(rdb, url, reconnect)


# ------------------------------------------------------------------------------ lost connections
class StorageUnavailable(RuntimeError):
    """The study's database could not be reached for the whole reconnect window (``sweep.reconnect``)."""


#: What libpq / psycopg2 / SQLAlchemy say when the server went away (as opposed to refusing a password).
_LOST = ("connection refused", "server closed the connection", "terminating connection", "could not connect",
         "the database system is shutting down", "the database system is starting up", "connection not open",
         "connection already closed", "no connection to the server", "could not receive data",
         "could not send data", "ssl syscall error", "connection reset", "broken pipe")


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def connection_lost(e: BaseException) -> bool:
    """Whether ``e`` (or what it wraps: Optuna's ``StorageInternalError`` wraps SQLAlchemy's error) says the
    database server went away, not that it refused the request."""
    for c in _causes(e):
        if getattr(c, "connection_invalidated", False) or isinstance(c, (ConnectionError, TimeoutError)):
            return True
        if any(m in str(c).lower() for m in _LOST):
            return True
    return False


def _root_cause(e: BaseException) -> str:
    """The driver's own words (``connection to server at ... failed: Connection refused``), one line."""
    chain = list(_causes(e))
    lost = [c for c in chain if any(m in str(c).lower() for m in _LOST)]
    text = str((lost or chain)[-1]).strip() or repr(e)
    return " ".join(text.split())[:400]


def with_reconnect(fn: Callable[[], Any], url: str, window: float, what: str = "") -> Any:
    """``fn()``, retried with backoff (0.5 s doubling to 5 s) while it fails because the database is
    unreachable, for up to ``window`` seconds; then :class:`StorageUnavailable` names the storage and the
    cause. One warning when the connection is first lost, one info line when it is back."""
    t0, delay, lost = time.monotonic(), 0.5, None
    while True:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - sorted by connection_lost below
            if not connection_lost(e):
                raise
            waited = time.monotonic() - t0
            if waited >= window:
                raise StorageUnavailable(f"Optuna storage {redact(url)} unreachable for {waited:.0f} s "
                                         f"(sweep.reconnect = {window:g} s){f' while {what}' if what else ''}: "
                                         f"{redact(_root_cause(e))}") from e
            if lost is None:
                lost = _root_cause(e)
                log.warning("Optuna storage %s: connection lost (%s); retrying for up to %g s", redact(url),
                            redact(lost), window)
            time.sleep(min(delay, max(0.05, window - waited)))
            delay = min(2 * delay, 5.0)
            continue
        if lost is not None:
            _RECOVERED[0] = time.monotonic()
            log.info("Optuna storage %s: reconnected after %.1f s", redact(url), time.monotonic() - t0)
        return out


#: When this process last got its connection back (monotonic seconds).
_RECOVERED = [float("-inf")]


class _Resilient:
    """The body of :class:`ResilientStorage`: every storage call goes through :func:`with_reconnect`."""

    def __init__(self, inner: Any, url: str, reconnect: float = 0) -> None:
        try:  # Optuna's own cache in front of an RDBStorage (what create_study would wrap it in)
            from optuna.storages._cached_storage import _CachedStorage

            cached = _CachedStorage(inner)
        except ImportError:  # pragma: no cover - a future Optuna without it
            cached = inner
        self._inner, self._engine = cached, getattr(inner, "engine", None)
        self.url, self.reconnect = url, float(reconnect)

    @contextlib.contextmanager
    def claim_lock(self, study_name: str) -> Iterator[None]:
        """Held while a worker counts the study's trials and takes a new one (:func:`claim_lock`)."""
        if self._engine is None or self._engine.dialect.name != "postgresql":
            with study_lock(self.url, study_name + ".claim"):
                yield
            return
        import sqlalchemy

        key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:8], "big", signed=True)
        con = with_reconnect(self._engine.connect, self.url, self.reconnect, "locking the study")
        try:
            con = con.execution_options(isolation_level="AUTOCOMMIT")
            with_reconnect(lambda: con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key}),
                           self.url, self.reconnect, "locking the study")
            yield
        finally:
            try:  # the connection goes back to the pool: the session lock must not go with it
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except Exception:  # noqa: BLE001 - the server went away, and the lock with its session
                con.invalidate()
            with contextlib.suppress(Exception):
                con.close()

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self._inner, name)
        return with_reconnect(lambda: fn(*args, **kwargs), self.url, self.reconnect, name)

    def record_heartbeat(self, trial_id: int) -> None:
        """Called by Optuna's heartbeat thread: past the window it stops quietly (the worker's own next call
        raises the error), instead of printing a thread's traceback."""
        try:
            self._call("record_heartbeat", trial_id)
        except StorageUnavailable as e:
            log.debug("heartbeat of trial %d not recorded: %s", trial_id, e)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """The backend's stale trials, except just after the database came back: then every trial's last
        heartbeat is as old as the outage, and the live workers' heartbeats (retried with backoff, at most
        5 s apart) are given ``2 x heartbeat + 5`` seconds to arrive before anything counts as dead."""
        ids = self._call("_get_stale_trial_ids", study_id)
        grace = 2 * (self._inner.get_heartbeat_interval() or 0) + 5
        return [] if ids and time.monotonic() - _RECOVERED[0] < grace else ids

    def __getattr__(self, name: str) -> Any:  # the backend's other attributes (engine, url, ...)
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


def _forward(name: str) -> Callable:
    def method(self: _Resilient, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


_RESILIENT: list[type] = []


def _resilient_class() -> type:
    """:class:`ResilientStorage`, made on first use (Optuna is imported lazily): an Optuna storage (and
    heartbeat) forwarding every abstract method, so ``is_heartbeat_enabled`` and ``fail_stale_trials`` see
    the backend's heartbeat, and no Optuna version's new method is missed."""
    if not _RESILIENT:
        from optuna.storages import BaseStorage
        from optuna.storages._heartbeat import BaseHeartbeat

        names = set(BaseStorage.__abstractmethods__) | set(BaseHeartbeat.__abstractmethods__)
        _RESILIENT.append(type("ResilientStorage", (_Resilient, BaseStorage, BaseHeartbeat),
                               {n: _forward(n) for n in sorted(names) if n not in vars(_Resilient)}))
    return _RESILIENT[0]


ResilientStorage = _Resilient  # the name in docs; instances are of _resilient_class()


_PG_SCHEMA_LOCK = 0x5A11E7  # the pg_advisory_lock key under which a process creates / checks Optuna's tables


def _postgres_url(url: str) -> str:
    """``url`` with an explicit PostgreSQL driver (:func:`components.ops.servers.sqlalchemy_url`: SQLAlchemy
    2.1's default driver is psycopg 3, which is not in the pinned set) when it names PostgreSQL, else ""."""
    from components.ops.servers import sqlalchemy_url  # deferred: only PostgreSQL storages need it

    out = sqlalchemy_url(url)
    return out if out.lower().startswith("postgresql+") else ""


def _postgres(url: str, heartbeat: dict, reconnect: float = 0) -> "ResilientStorage":
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
                return _rdb(url, heartbeat, reconnect,
                            engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args})
            finally:  # closing the connection would release it too
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_SCHEMA_LOCK})
    finally:
        lock.dispose()


def claim_lock(storage: Any, url: str | None, study_name: str) -> contextlib.AbstractContextManager:
    """A lock all workers of study ``study_name`` share while one counts the trials and takes a new one, so
    two never both take the last free slot: a PostgreSQL advisory lock (one key per study) on a PostgreSQL
    storage, a lock file beside a SQLite or journal file (:func:`study_lock`), none in memory."""
    if isinstance(storage, _Resilient):
        return storage.claim_lock(study_name)
    return study_lock(url, study_name + ".claim")


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




# ------------------------------------------------------------------------------ filling a study to a count
def settled_trials(study: "optuna.Study") -> tuple[int, int]:
    """(settled, open) trials of ``study``: settled = COMPLETE, PRUNED and FAIL trials with a verdict (a
    trial failed because its worker died, and retried by the heartbeat callback, does not count: its retry
    does); open = RUNNING and WAITING trials."""
    import optuna

    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    settled = sum(1 for t in trials if t.state.is_finished() and not (t.state == states.FAIL and t.number in retried))
    return settled, sum(1 for t in trials if t.state in (states.RUNNING, states.WAITING))


def _claim(study: "optuna.Study", url: str, target: int | None) -> "optuna.Trial | None":
    """A trial of ``study`` for this worker (a WAITING retry first), or None when settled + open trials
    already reach ``target`` (None: no limit); counted and taken under :func:`claim_lock`."""
    import optuna

    with claim_lock(study._storage, url, study.study_name) if target is not None else contextlib.nullcontext():
        if target is not None:
            settled, open_ = settled_trials(study)
            waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
            if settled + open_ >= target and not waiting:
                return None
        with warnings.catch_warnings():  # the heartbeat runs: _tell_one starts it, as Study.optimize would
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
            return study.ask()


def _tell_one(study: "optuna.Study", trial: "optuna.Trial", objective: Callable) -> None:
    """Run ``objective`` on ``trial`` under its heartbeat and record the verdict: COMPLETE, PRUNED, or FAIL
    when it raises (logged; the study goes on). :class:`StorageUnavailable` ends the worker instead."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread

    states, value, state = optuna.trial.TrialState, None, None
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            value, state = objective(trial), states.COMPLETE
        except optuna.TrialPruned:
            state = states.PRUNED
        except StorageUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - a broken trial must not end the sweep
            if any(isinstance(c, StorageUnavailable) for c in _causes(e)):
                raise
            log.warning("trial %d failed: %r", trial.number, e, exc_info=True)
            state = states.FAIL
    study.tell(trial, value if state == states.COMPLETE else None, state=state, skip_if_finished=True)


def fill_study(study: "optuna.Study", objective: Callable, url: str, heartbeat: int = 0, *,
               until: int | None = None, trials: int = 0) -> int:
    """Run trials of ``objective`` on ``study``: ``trials`` of this worker's own, or, with ``until``, until the
    study holds ``until`` settled trials (:func:`settled_trials`) with every other worker given the same
    ``until`` doing the same. Each of those trials is claimed under :func:`claim_lock`, so together the
    workers make exactly ``until``, and the ones that survive a killed worker make up for its trials: when
    the study is full but other workers' trials still run, a worker waits ``heartbeat`` seconds at a time
    and fails the stale ones (their worker died; the heartbeat callback queues each once more). Without a
    heartbeat it cannot tell a dead worker from a slow one and stops. Returns the trials this worker ran."""
    import optuna

    ran = 0
    while (settled_trials(study)[0] < until) if until is not None else ran < trials:
        if heartbeat:  # what Study.optimize does before every trial
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        trial = _claim(study, url, until)
        if trial is None:
            if not heartbeat:
                break
            time.sleep(heartbeat)
            continue
        _tell_one(study, trial, objective)
        ran += 1
    return ran
