"""Prefect orchestration only (no model logic): the flows ``pipeline`` (``flows/pipeline.py``, the DVC
stages as tasks) and ``sweep`` (``flows/sweep.py``, the Optuna sweep), deployed by ``prefect.yaml``,
and ``salient serve`` (``flows/serve.py``: a local Prefect server, work pool, deployments and workers)."""
