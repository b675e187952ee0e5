"""Operations: local servers (MLflow, Prefect; ``servers``), a throwaway PostgreSQL cluster
(``pgcluster``), child processes and their logs (``processes``), secret redaction (``redaction``) and
the wrapper every stage runs in (``stage_runner``: params, device, tracking run). It may import
``components.core`` and ``components.tracking``; never a stage, a flow or the app.
"""
