"""Experiment tracking: MLflow runs, the spool and the server-side store (``mlflow_tracking``) and the
lookup of a sampler variant's runs (``variant_runs``). It may import ``components.core``,
``components.ops`` and ``components.evaluation``; never a stage, a flow or the app.
"""
