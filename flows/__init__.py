"""Prefect flows: orchestration only (no model logic). See ``flows/pipeline.py``."""
