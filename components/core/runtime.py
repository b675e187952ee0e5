"""Process-wide environment: telemetry off, caches inside the project, torchvision on CPU torch.

* :func:`quiet_environment` sets the opt-outs of ENVIRONMENT.md (only where the user has not set
  them) and points tool homes (Prefect, HF, torch hub, matplotlib) at ``.salient/`` in the project
  instead of ``$HOME``.
* :func:`ensure_torchvision` makes ``import torchvision`` / ``timm`` / ``transformers`` work on a CPU
  torch when PyPI's CUDA torchvision wheel cannot load its compiled ops, by registering the missing
  ``torchvision::nms`` / ``qnms`` operator *schemas* (no kernels). It touches nothing when the
  compiled ops load (a matching CUDA install).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_OPT_OUT = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


def state_dir() -> Path:
    """Where tools keep their state: ``$SALIENT_HOME`` or ``.salient/`` in the working directory."""
    return Path(os.environ.get("SALIENT_HOME") or Path.cwd() / ".salient").absolute()


def quiet_environment() -> None:
    for k, v in _OPT_OUT.items():
        os.environ.setdefault(k, v)
    home = state_dir()
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("HF_HOME", str(home / "hf"))
    os.environ.setdefault("TORCH_HOME", str(home / "torch"))
    os.environ.setdefault("MPLCONFIGDIR", str(home / "mpl"))
    os.environ.setdefault("XDG_CACHE_HOME", str(home / "cache"))


_patched = False


def ensure_torchvision() -> bool:
    """Import torchvision, registering op schemas first if its compiled ops cannot load.

    Returns True when a patch was applied. Safe to call many times.
    """
    global _patched
    import importlib.util
    import sys

    if "torchvision" in sys.modules or _patched:
        return _patched
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return False
    if _compiled_ops_load(spec):
        return False
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive on the module
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_tv_lib"] = lib
    _patched = True
    log.info("torchvision compiled ops do not load on this torch: registered nms/qnms schemas "
             "(torchvision.ops kernels and torchvision.io stay unavailable)")
    return True


def _compiled_ops_load(spec) -> bool:
    """Try loading torchvision's ``_C`` extension the way torchvision does, without importing it."""
    import glob

    import torch

    folder = Path(spec.origin).parent
    libs = glob.glob(str(folder / "_C*.so")) + glob.glob(str(folder / "_C*.pyd"))
    if not libs:
        return False
    try:
        torch.ops.load_library(libs[0])
    except (OSError, RuntimeError):
        return False
    try:
        torch.ops.torchvision.nms  # noqa: B018 - resolves the registered op
    except (AttributeError, RuntimeError):
        return False
    return True


def deterministic_torch() -> None:
    """Deterministic kernels for everything a stage computes (docs/design.md §3): torch refuses an op
    that has no deterministic implementation instead of silently varying; cuBLAS gets the workspace
    setting its deterministic mode needs (used only on a GPU)."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms(True) is this call plus inductor's ``deterministic`` flag; it
    # imports torch._inductor to set that flag, 2.2 s of every stage's start (measured). Nothing here
    # compiles with inductor: set the flag only where inductor is already loaded.
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    if "torch._inductor.config" in sys.modules:
        sys.modules["torch._inductor.config"].deterministic = True


def die_with_parent(sig: int | None = None) -> bool:
    """Have the kernel send this process ``sig`` (default SIGKILL) when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``; returns False elsewhere). For helper processes such as decode
    workers: one blocked writing to a pipe its dead parent no longer reads never reaches its own
    liveness check and would live on, orphaned, holding its memory. Exits at once when the parent
    died during the call."""
    import ctypes
    import signal

    sig = signal.SIGKILL if sig is None else sig
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(sig), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):  # not Linux
        return False
    if os.getppid() != parent:  # the parent died between the two reads: reparented already
        os._exit(1)
    return True


def end_with_launcher(names: tuple[str, ...] = ("dvc",), interval: float = 1.0) -> bool:
    """When an ancestor process named one of ``names`` (``dvc repro`` runs each stage through a shell)
    launched this one, send this process SIGTERM once that ancestor is gone: a stopped ``dvc repro``
    then stops its stage (the MLflow run ends KILLED; outputs are published atomically, so nothing
    half-written stays) instead of leaving it running, its outputs recorded nowhere. A daemon thread
    polls every ``interval`` seconds. Returns whether a launcher was found."""
    import signal
    import threading

    import psutil

    def is_launcher(p: "psutil.Process") -> bool:
        try:
            return any(Path(a).name in names for a in p.cmdline()[:2])
        except psutil.Error:
            return False

    launcher = next((p for p in psutil.Process().parents() if is_launcher(p)), None)
    if launcher is None:
        return False

    def watch() -> None:
        while launcher.is_running():  # compares the creation time too: a reused pid is not it
            time.sleep(interval)
        log.error("the launching %s process (pid %d) is gone: stopping this one", "/".join(names), launcher.pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-launcher", daemon=True).start()
    return True


def resolve_device(device: str) -> str:
    """``compute.device`` / ``--device`` -> a torch device name: ``auto`` is ``cuda`` when a GPU is
    visible, else ``cpu``; anything else (``cpu``, ``cuda``, ``cuda:1``) as given (the caller that
    moves a model checks that the device exists and names its own setting in the error)."""
    if device == "auto":
        import torch  # deferred: most tools never touch a model

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def host_to_device(x: Any, device: Any, pin_memory: bool = False) -> Any:
    """A host tensor onto ``device``: page-locked and without blocking when ``pin_memory`` and the
    device is CUDA (the copy overlaps host work; later kernels on the same stream wait for it),
    otherwise a plain ``.to``; returned as is on the CPU. The engine, extraction and predict share it."""
    import torch  # deferred: most tools never touch a model

    dev = torch.device(device)
    if dev.type == "cpu":
        return x
    if pin_memory and dev.type == "cuda":
        return x.pin_memory().to(dev, non_blocking=True)
    return x.to(dev)
