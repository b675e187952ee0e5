"""Process plumbing shared by the CLI, the Prefect flows and ``salient serve``: one copy of each.

* :func:`venv_env`: an environment with this interpreter's bin folder first on ``PATH`` (so
  ``dvc``, and dvc.yaml's ``python -m ...``, run in this venv); :func:`dvc_command`: the ``dvc``
  executable of this venv (else the one on ``PATH``).
* :func:`free_port`, :func:`port_in_use`: TCP ports on this machine.
* :func:`start_group` starts a command in a session (process group) of its own, as a :class:`Proc`;
  :func:`wait_healthy` polls a URL until it answers while watching that process; :func:`stop_group`
  stops the group and every descendant seen.

Stopping (:func:`stop_group`): a Prefect worker treats its first SIGTERM / SIGINT as "stop polling,
wait for the running flow runs" and only the second as "exit now" (SIGKILL to itself), and it starts
flow runs in process groups of their own; so every process tree is snapshotted first (``psutil``),
signalled once per entry of ``signals``, killed after a grace period, and every descendant seen is
checked to be gone.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from components.ops.redaction import redact

log = logging.getLogger(__name__)


class ProcessError(RuntimeError):
    """A started process did not come up (its output is in the message)."""


# ------------------------------------------------------------------------------ executables / environment
def venv_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with this interpreter's bin folder first on
    ``PATH``: ``dvc`` and dvc.yaml's ``python -m ...`` run in this venv."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", os.defpath)
    return env


def dvc_command() -> list[str]:
    """The ``dvc`` command: this venv's executable, else the one on ``PATH``."""
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.exists() else [shutil.which("dvc") or "dvc"]


# ------------------------------------------------------------------------------ ports
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# ------------------------------------------------------------------------------ process groups
@dataclass
class Proc:
    """A process started in its own process group (session), with the descendants seen so far."""

    name: str
    popen: subprocess.Popen
    log_path: Path | None = None
    seen: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def remember_children(self) -> set[int]:
        """Record the current descendants (flow runs start in sessions of their own: killing the
        group would miss them)."""
        import psutil

        try:
            self.seen |= {c.pid for c in psutil.Process(self.pid).children(recursive=True)}
        except psutil.Error:
            pass
        return self.seen

    def tail(self, n: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n:]


def start_group(cmd: Sequence[str], *, name: str, env: Mapping[str, str] | None = None,
                cwd: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
                pipe: bool = False) -> Proc:
    """Start ``cmd`` in a new session (its own process group): Ctrl-C in the terminal reaches only
    us, and :func:`stop_group` can signal the whole group. Output (stdout and stderr together) goes
    to ``log_path`` (appended); with ``pipe`` (``log_path`` unused) to ``proc.popen.stdout``, text
    read line by line (undecodable bytes replaced); with neither to our stdout / stderr."""
    out: IO[Any] | int | None = None
    text: dict[str, Any] = {}
    if pipe:
        out, log_path = subprocess.PIPE, None
        text = {"text": True, "errors": "replace", "bufsize": 1}
    elif log_path is not None:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - the child holds it; closed below
    try:
        popen = subprocess.Popen(list(map(str, cmd)), cwd=cwd, env=dict(env) if env is not None else None,
                                 stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT if out is not None else None,
                                 start_new_session=True, **text)
    finally:
        if log_path is not None:
            out.close()  # the child has its own copy of the descriptor
    log.info("started %s (pid %d): %s", name, popen.pid, redact(" ".join(map(str, cmd))))
    return Proc(name, popen, log_path)


def wait_healthy(url: str, *, proc: Proc | None = None, timeout: float = 180.0, interval: float = 0.5) -> float:
    """Poll ``url`` until it answers 200; returns the seconds waited. Raises :class:`ProcessError`
    when ``proc`` exits first (with its output) or after ``timeout`` seconds."""
    import urllib.error
    import urllib.request  # here, not at the top: 40 ms on every `salient` command

    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        if proc is not None and not proc.alive():
            raise ProcessError(f"{proc.name} exited with {proc.popen.returncode} before {url} was healthy:\n"
                               f"{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - t0
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(interval)
    raise ProcessError(f"{url} not healthy after {timeout:.0f} s ({last})" + (f":\n{proc.tail()}" if proc else ""))


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _alive(pids: set[int]) -> list:
    import psutil

    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def stop_group(proc: Proc, *, signals: Sequence[int] = (signal.SIGTERM, signal.SIGTERM),
               interval: float = 3.0, grace: float = 15.0) -> list[int]:
    """Stop ``proc``'s process group and every descendant seen: the ``signals`` in turn
    (``interval`` s apart, a Prefect worker needs two), then SIGKILL after ``grace`` s in all.
    Returns the pids still alive afterwards (an empty list when everything is gone)."""
    import psutil

    proc.remember_children()
    t0 = time.monotonic()
    for i, sig in enumerate(signals):
        if not proc.alive():
            break
        if i:
            proc.remember_children()
        _signal_group(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(interval if i < len(signals) - 1 else max(grace - (time.monotonic() - t0), 0.5))
    if proc.alive():
        log.warning("%s (pid %d) ignored %d signals: SIGKILL", proc.name, proc.pid, len(signals))
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(10)
    # descendants in other process groups (flow runs) or left behind by the group leader
    rest = _alive(proc.seen)
    for p in rest:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, still = psutil.wait_procs(rest, timeout=5)
    for p in still:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(still, timeout=5)
    left = [p.pid for p in _alive(proc.seen | {proc.pid})]
    if left:
        log.error("%s: processes still alive after stopping: %s", proc.name, left)
    else:
        log.info("stopped %s (pid %d, exit %s)", proc.name, proc.pid, proc.popen.returncode)
    return left
