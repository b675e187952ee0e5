"""Stage ``train_sampler@<name>``: train one sampler per seed on the feature store, write its saliency.

``python -m components.stages.train_sampler --sampler tsqnet`` (``--sampler`` repeated: several in one
process, as the ``baselines`` stage runs the training-free ones). For every seed in
``train_sampler.seeds``: build the sampler from the registry (priors: light-space prototypes and
text embeddings for TSQNet), train it with the one engine on the train split (early stopping on
``train_sampler.monitor``, by default the val mAP of the frame recognizer over the top-K frames of
each branch, :func:`components.training.val_objective.branch_val_score`: the losses are proxies of selection
quality, and on the demo's 144 training videos val loss starts rising after 2-4 epochs, as the
models overfit; checkpoints and resume under ``.salient/work``), and write
``data/samplers/<name>/seed<s>.pt`` plus per-frame saliency and branch scores for val and test
(``saliency_seed<s>.npz``: ``<split>/saliency``, ``<split>/<branch>``, ``<split>/ids``). Untrained
baselines only write their saliency. Loss curves go to ``reports/samplers/<name>_history.json``.

The ``fusion`` section is not read here (nor by the val_map monitor): how two-branch samplers fuse
their branches is an inference-time setting passed to ``select`` (:mod:`components.evaluation.fusion`), so tuning it
never retrains a sampler.
The stored ``<split>/saliency`` is the sampler's output at the default fusion (for NSNet, the FSM
score); selection always fuses the stored branch scores. Building and training one seed
(:func:`components.training.sampler_training.train_one`) is shared with the loss-weight sweep.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys

import numpy as np
import torch

from components.tracking import mlflow_tracking as tracking
from components.core.atomic import atomic_savez, atomic_torch_save, atomic_write_json
from components.training.engine import remove_checkpoints
from components.models.samplers import sampler_class, sampler_trainable
from components.core.params import Params, variant_params
from components.core.paths import Paths, write_report
from components.store.sampler_data import check_store, load_split, predict_split, sampler_keys
from components.training.sampler_training import load_train_val, sampler_checkpoint, train_one
from components.core.scratch import collect
from components.ops.stage_runner import stage_main
from components.store.feature_store import FeatureStore
from components.tracking.variant_runs import training_run

log = logging.getLogger(__name__)


def run(p: Params, paths: Paths, name: str) -> dict:
    """Train sampler ``name`` (a registered sampler, or an ablation of ``p.ablations``) for every seed
    of ``train_sampler.seeds``; write ``data/samplers/<name>/``."""
    variants = p  # the whole params: the (variant, seed) runs log the ablation's overrides as applied
    registered, p = variant_params(p, name)
    if p.train_sampler.threads:
        torch.set_num_threads(p.train_sampler.threads)
    store = FeatureStore(paths.features)
    check_store(store, p.frames.T)
    t = p.train_sampler
    out_dir = paths.features.parent / "samplers" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded: list[tuple[dict, dict]] = []

    def data() -> tuple[dict, dict]:  # loaded once, for the first trainable seed
        if not loaded:
            loaded.append(load_train_val(store, paths, sampler_keys(registered, training=True),
                                         sampler_class(registered).pseudo_labels))
        return loaded[0]

    histories, training, ckpts = {}, {}, []
    trainable = sampler_trainable(registered)
    for seed in t.seeds:
        # MLflow: a run per (variant, seed) under the stage's run, the epoch rows unprefixed in it
        ctx = training_run(variants, name, seed, trainable=trainable, pipeline_seed=paths.pipeline_seed) \
            if trainable else contextlib.nullcontext(tracking.NULL_RUN)
        with ctx as run:
            model, kwargs, history, ckpt, best = train_one(p, paths, registered, seed, store=store, data=data,
                                                           variant=name)
            ckpts += [ckpt] if ckpt is not None else []
            if history is not None:
                histories[seed] = history
                kept = history[best] if history and best >= 0 else {}
                training[str(seed)] = {"best_epoch": best, "epochs_run": len(history),
                                       "steps_per_epoch": int(history[0]["steps"]) if history else 0,
                                       "steps_to_best": int(kept.get("steps", 0)),
                                       **{f"best_{k}": v for k, v in kept.items() if k.startswith("val_")}}
                run.log_metrics(training[str(seed)])
        atomic_torch_save(sampler_checkpoint(model, registered, kwargs, seed, store.classes, variant=name),
                          out_dir / f"seed{seed}.pt")
        arrays = {}
        for split in ("val", "test"):
            rows, ids = load_split(store, split, keys=sampler_keys(model))
            for k, v in predict_split(model, rows).items():
                arrays[f"{split}/{k}"] = v
            arrays[f"{split}/ids"] = np.array(ids)
        atomic_savez(out_dir / f"saliency_seed{seed}.npz", **arrays)
    write_report(paths, f"samplers/{name}_history.json", histories)
    if training:  # beside the checkpoints (a DVC output): what sampler_report's training table reads
        atomic_write_json(out_dir / "training.json", training)
    remove_checkpoints(ckpts)  # every seed's outputs written: a forced or dependency-triggered rerun retrains
    # then what no current key can use (components.core.scratch)
    collect(variants, paths.work, None, areas=("train_sampler",), seed=paths.pipeline_seed)
    tracking.log_artifacts([out_dir], artifact_path=f"samplers/{name}")
    return histories


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--sampler", required=True, action="append",
                    help="a sampler or ablation name; repeat it to run several in one process (the baselines stage)")
    known, rest = ap.parse_known_args(argv)
    names = known.sampler

    def run_all(p: Params, paths: Paths) -> dict:
        if len(names) > 1:
            return {name: run(p, paths, name) for name in names}
        tracking.log_params({"variant": names[0], "sampler": variant_params(p, names[0])[0]})
        run(p, paths, names[0])
        return {}

    def run_name(p: Params) -> str:
        if len(names) > 1:
            return "baselines"
        return f"{'ablate' if names[0] in p.ablations else 'train_sampler'}@{names[0]}"

    full = sys.argv[1:] if argv is None else list(argv)  # what torchrun re-runs (trained samplers only)
    return stage_main("baselines" if len(names) > 1 else "train_sampler", run_all, rest, run_name=run_name,
                      effective=None if len(names) > 1 else (lambda p: variant_params(p, names[0])[1]),
                      ddp=None if len(names) > 1 else ("components.stages.train_sampler", full))


if __name__ == "__main__":
    raise SystemExit(main())
