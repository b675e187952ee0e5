"""Optuna on the **validation** split (docs/design.md §2 ``tune_fusion``, §3: anything tuned sees val only).

Three searches, all on stored artefacts or through the existing training path:

* **Fusion** (:func:`tune_fusion`): TSQNet's union ratio ``lambda_v`` and NSNet's fusion strategy and
  ratio, from the val saliencies that ``train_sampler`` stored (``data/samplers/<name>/
  saliency_seed<s>.npz``). The objective is the val mAP of the frame recognizer's mean softmax over
  the K selected frames, averaged over every trained seed and over ``fusion.budgets``: pure numpy on
  cached logits (the softmax is computed once, mAPs are memoised by selection), so a trial costs
  about a millisecond plus Optuna's own bookkeeping. A TPE study per sampler, seeded with ``seed``,
  whose first trial is the params' values, so the result is never worse on val than the defaults.
  The result is written atomically to ``data/tuned_fusion.json``; reading and applying it is
  :mod:`components.evaluation.fusion`'s job (``fusion_values``, ``select``). Fusion is an
  inference-time setting, so no sampler is retrained.
* **Accuracy vs cost** (:func:`pareto_study`): NSGA-II over (sampler, K, its fusion settings),
  maximising val mAP at K and minimising GMACs per video (a callable the caller passes, e.g. the
  measured costs of evaluate); :func:`pareto_front` is the exact non-dominated set,
  :func:`write_pareto` the CSV and the plot.
* **Loss weights** (:func:`run_sweep`): every trial trains one sampler (one seed) through
  ``sampler_training.train_one`` with weights from the sampler class's ``sweep_space`` (TSQNet alpha / beta, NSNet
  gamma), reports the val mAP after every epoch to a Median / SuccessiveHalving pruner, and is an
  MLflow child run of the sweep's parent run. A trial that raises is recorded FAIL and the study
  goes on. The best weights go to ``data/tuned_losses.json``, never into params.yaml: copy them there
  or run ``dvc exp run -S tsqnet.alpha=... -S tsqnet.beta=...`` (the file spells the command out).
  ``flows/sweep.py`` runs it from several processes / Prefect tasks on one study.

Storages: :func:`storage_from_url` (``sqlite:///``, ``postgresql://...``, ``journal:``, ``memory:``).

Where each piece lives (one job per file):

==========================  ==============================================================
``tuning/storage.py``       Optuna storages by URL, study creation, quiet logging, counts
``tuning/fusion_search.py`` the fusion objective on val and :func:`tune_fusion`
``tuning/pareto.py``        the accuracy-vs-GMACs NSGA-II study, its front, CSV and plot
``tuning/loss_sweep.py``    loss-weight sweep trials (:func:`run_sweep`), ``tuned_losses.json``
==========================  ==============================================================
"""
from __future__ import annotations

from components.tuning.fusion_search import (FusionData, fusion_objective_data, input_study_name, learned_objectives,
                                             suggest_fusion, tune_fusion)
from components.tuning.loss_sweep import (TUNED_LOSSES, make_pruner, run_sweep, suggest_losses, sweep_objective,
                                          sweep_study_name, write_best_losses)
from components.tuning.pareto import PARETO_COLUMNS, pareto_front, pareto_study, write_pareto
from components.tuning.storage import storage_from_url, study_lock

__all__ = [
    "TUNED_LOSSES", "storage_from_url", "study_lock", "FusionData", "fusion_objective_data", "suggest_fusion",
    "input_study_name", "learned_objectives", "tune_fusion", "PARETO_COLUMNS", "pareto_front", "pareto_study", "write_pareto",
    "sweep_study_name", "make_pruner", "suggest_losses", "sweep_objective", "write_best_losses", "run_sweep",
]
