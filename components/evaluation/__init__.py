"""Evaluation and its numbers: video-level metrics (``metrics``), measured GMACs (``cost``) and the
cost table (``cost_table``), fusion of a sampler's branches (``fusion``), the evaluation grid of
samplers × budgets × recognizers (``sampler_eval``), the efficiency frontier (``frontier``), the
paper-style headline table (``paper_table``) and AVGN's own
evaluation and calibration (``avgn_eval``, ``avgn_calibration``). It may import ``components.core``,
``components.models`` and ``components.store``; never ``components.reporting`` (reporting reads
evaluation, not the other way), a stage, a flow or the app.
"""
