"""Prefect flow that runs the DVC stages in order, so DVC still decides what is up to date.

    python -m flows.pipeline            # a local run (Prefect starts a temporary server)

Each stage is a task running ``dvc repro --single-item <stage>`` with retries; a failing stage
fails the flow run with the stage's output in the logs.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

import components  # noqa: F401  (imported first: telemetry off, PREFECT_HOME inside the project)
from components.cli import STAGES, venv_env


@task(retries=1, retry_delay_seconds=5)
def dvc_stage(name: str, project: str) -> str:
    logger = get_run_logger()
    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.run([str(dvc), "repro", "--single-item", name], cwd=project, capture_output=True,
                          text=True, env=venv_env())
    logger.info("%s\n%s", proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode:
        raise RuntimeError(f"stage {name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return name


@flow(name="pipeline")
def pipeline(stages: list[str] | None = None, project: str = ".") -> list[str]:
    done = []
    for name in stages or list(STAGES):
        done.append(dvc_stage(name, project))
    return done


if __name__ == "__main__":
    pipeline()
