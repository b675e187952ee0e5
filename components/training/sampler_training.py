"""Build, train, load and run samplers on the feature store: what the ``train_sampler`` stage, the
loss-weight sweep, the val objective, evaluate, the reports and ``predict`` share.

* :func:`sampler_kwargs` - a registered sampler's constructor arguments from params and the store's
  priors (light-space prototypes and text embeddings for TSQNet, train-split feature statistics).
* :func:`train_one` - build sampler ``name`` for one seed and train it with the one engine
  (:func:`components.training.engine.fit`; early stopping on ``train_sampler.monitor``, by default the val mAP
  of each branch's top-K, :func:`components.training.val_objective.branch_val_score`).
* :func:`load_sampler` - a trained sampler from its ``seed<s>.pt``, in eval mode, default fusion.
* :func:`load_train_val` - the train and val splits as tensors, with NSNet's pseudo labels.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from components.tracking import mlflow_tracking as tracking
from components.training.engine import CKPT_VERSION, FitConfig, fit
from components.core.hashing import code_fingerprint, fingerprint
from components.core.integrity import CheckpointError, file_sha256, load_checkpoint, with_digest
from components.models.samplers import Sampler, create_sampler, sampler_class
from components.core.params import Params, to_dict, variant_params
from components.core.paths import Paths
from components.core.scratch import ScratchKey
from components.store.sampler_data import batches, load_split, sampler_keys
from components.store.feature_store import FeatureStore
from components.training.val_objective import branch_val_score, load_val

#: Constructor arguments that older checkpoints stored but that are inference-time settings now
#: (``fusion.*``, passed to ``select``): dropped when a checkpoint is loaded.
STALE_KWARGS = frozenset({"lambda_v"})


def sampler_kwargs(name: str, p: Params, store: FeatureStore, seed: int) -> dict:
    """Constructor arguments of a registered sampler, from params and the store's priors (what its class
    declares: :meth:`components.models.samplers.Sampler.build_kwargs`; a plugin's typed ``settings`` from
    params ``plugins.<name>`` first, :meth:`~components.models.samplers.Sampler.plugin_settings`)."""
    cls = sampler_class(name)
    return {**cls.plugin_settings(p, name), **cls.build_kwargs(p, store, seed)}


def training_settings(p: Params, name: str) -> tuple[int, int, float, float]:
    """(epochs, batch size, lr, weight decay) of registered sampler ``name``, from the params section its
    class names (``schedule_section``: ``train_sampler``, or AVGN's own ``avgn``)."""
    t = getattr(p, sampler_class(name).schedule_section)
    return t.epochs, t.batch_size, t.lr, t.weight_decay


def describe_kwargs(kwargs: dict) -> dict:
    """kwargs as hashable data: tensors by content digest, params sections as dicts."""
    return {k: hashlib.sha1(v.numpy().tobytes()).hexdigest() if torch.is_tensor(v) else to_dict(v)
            for k, v in kwargs.items()}


def sampler_seeds(p: Params, name: str) -> tuple[int, ...]:
    """The seeds ``train_sampler`` writes for sampler or ablation ``name`` (an ablation may set its own)."""
    return tuple(variant_params(p, name)[1].train_sampler.seeds)


MODEL_META = "salient.json"  # beside the checkpoint in a registered model (components.training.sampler_model)


def resolve_checkpoint(ref: str | Path, seed: int, *, tracking_params: Any = None) -> tuple[Path, dict | None]:
    """``(checkpoint file, model metadata or None)`` for ``ref``: a checkpoint file; a folder of
    ``seed<s>.pt`` (``seed`` picks one); or a registered model / artifact URI (``models:/name@alias``,
    ``runs:/...``), downloaded: a model written by :mod:`components.training.sampler_model` brings its own
    checkpoint, seed and sampler (``seed`` is not used), an older plain folder is read as a folder."""
    local = tracking.resolve_model_uri(str(ref), tracking=tracking_params)
    if not local.is_dir():
        return local, None
    if not (local / "MLmodel").exists():
        return local / f"seed{seed}.pt", None
    import yaml

    try:
        arts = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]["artifacts"]
        return local / arts["checkpoint"]["path"], json.loads((local / arts["meta"]["path"]).read_text())
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        raise CheckpointError(f"{ref} ({local}): not a salient sampler model (no readable MLmodel naming a "
                              f"checkpoint and {MODEL_META}: {type(e).__name__}: {e})") from e


def sampler_checkpoint(model: Sampler, name: str, kwargs: dict, seed: int, classes: list[str], **extra) -> dict:
    """What ``seed<s>.pt`` holds: how to rebuild the sampler, its weights (None for a training-free
    one) and their digest, which :func:`load_sampler` checks."""
    return with_digest({"name": name, "kwargs": kwargs, "state_dict": model.state_dict() if model.trainable else None,
                        "seed": seed, "classes": classes, **extra})


def load_sampler(path: Path) -> Sampler:
    """A trained sampler from ``seed<s>.pt``, in eval mode, with the *default* fusion settings; callers
    that select frames apply the configured / tuned ones (:func:`components.evaluation.fusion.fusion_values`).
    Raises :class:`CheckpointError` naming the file when it does not load or its weights do not match
    the digest written with them (a file damaged with its zip layout intact would otherwise load).
    ``model.checkpoint_info`` holds the file's ``name``, ``seed``, ``classes`` and ``variant``."""
    fix = "retrain it (`dvc repro -f train_sampler@<seed>-<name>`)"
    ck = load_checkpoint(path, "sampler checkpoint", fix)  # unreadable or damaged weights: refused, named
    try:
        kwargs = {k: v for k, v in ck["kwargs"].items() if k not in STALE_KWARGS}
        for key in ("local_path", "pi_path"):  # AVGN's f_L / π encoder: found from here or beside the checkpoint
            if kwargs.get(key):
                kwargs[key] = _beside(Path(path), kwargs[key])
        model = create_sampler(ck["name"], **kwargs)
        if ck.get("state_dict"):
            model.load_state_dict(ck["state_dict"])
    except CheckpointError:  # a file it names (AVGN's f_L) is damaged: that error names that file
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing: this file is not usable
        raise CheckpointError(f"{path}: not a loadable sampler checkpoint ({type(e).__name__}: {e}); {fix}") from e
    # what the file says about itself, so callers need not read it a second time
    model.checkpoint_info = {k: ck.get(k) for k in ("name", "seed", "classes", "variant")}
    return model.eval()


def _beside(checkpoint: Path, rel: str) -> str:
    """A file a checkpoint names by a path relative to the workspace it was trained in
    (``data/s0/encoders/recognizer.pt``): as given when it exists from here, else under an ancestor of
    the checkpoint (the workspace), else the pipeline-seed folder's ``encoders/`` (a copied
    ``data/s<k>/`` tree). The caller checks the file's digest, so a wrong match is refused, not used."""
    p = Path(rel)
    if p.is_absolute() or p.exists():
        return rel
    for base in checkpoint.resolve().parents:
        if (base / p).exists():
            return str(base / p)
    alt = checkpoint.resolve().parents[2] / "encoders" / p.name if len(checkpoint.resolve().parents) > 2 else None
    return str(alt) if alt is not None and alt.exists() else rel


def _extra(paths: Paths, split: str, pseudo: tuple[str, ...]) -> dict:
    f = paths.data / "pseudo_labels" / f"{split}.npz"
    if not pseudo or not f.exists():
        return {}
    with np.load(f) as z:
        return {f"{k}_labels": z[k] for k in pseudo}


def load_train_val(store: FeatureStore, paths: Paths, keys: tuple[str, ...] | None = None,
                   pseudo: tuple[str, ...] = ("ns",)) -> tuple[dict, dict]:
    """The train and val splits as tensors (``keys``: default :data:`SAMPLER_KEYS`), with the pseudo labels
    ``pseudo`` (a sampler class's ``pseudo_labels``; default NSNet's) where they exist."""
    kw = {} if keys is None else {"keys": keys}
    train, _ = load_split(store, "train", extra=_extra(paths, "train", pseudo), **kw)
    val, _ = load_split(store, "val", extra=_extra(paths, "val", pseudo), **kw)
    return train, val


class Trained(NamedTuple):
    model: Sampler
    kwargs: dict
    history: list[dict] | None  # None: an untrained baseline
    ckpt_dir: Path | None  # where its resume checkpoint lives (None: nothing was trained)
    best_epoch: int | None = None  # the epoch whose weights were kept (None: untrained)


def _step(m, batch, train_mode):
    return m.loss(batch, m(batch))


def train_one(p: Params, paths: Paths, name: str, seed: int,
              on_epoch: Callable[[Sampler, int, dict[str, float]], None] | None = None, *,
              store: FeatureStore | None = None, data: Callable[[], tuple[dict, dict]] | tuple[dict, dict] | None = None,
              ckpt_dir: Path | None = None, log_prefix: str = "", variant: str | None = None) -> "Trained":
    """Build sampler ``name`` for ``seed`` from the registry and, if it is trainable, train it with the
    engine on the train split (``p.train_sampler``: epochs, lr, early stopping on ``monitor``: val mAP
    of each branch's top-K, see :func:`components.training.val_objective.branch_val_score`, or val loss).

    Shared by the ``train_sampler`` stage and the loss-weight sweep (:mod:`components.tuning`), which
    passes ``on_epoch(model, epoch, row)`` (called by the engine after every epoch with the model
    being trained and the epoch's losses, e.g. to report val mAP to an Optuna pruner; raising stops
    training) and its own ``ckpt_dir``. ``data`` is ``(train, val)`` tensors or a callable returning
    them (called only for a trainable sampler); default: loaded from the store. Checkpoints go to
    ``ckpt_dir`` (default ``<work>/train_sampler/<name>/<fingerprint>``; resumed when the
    configuration is the same; stamped with ``variant``, the ablation ``p`` was resolved for, so that
    :mod:`components.core.scratch` can tell when no current key can use it). Epoch rows go to MLflow
    (:func:`components.tracking.mlflow_tracking.log_metrics`, the innermost open run: the (variant, seed) run of the
    stage), named ``<log_prefix>/<key>`` (bare keys by default: ``val_map``).
    Returns :class:`Trained` ``(model, constructor kwargs, loss history or None for untrained
    baselines, the checkpoint folder or None)``; the caller removes the folder once its outputs are
    written (:func:`components.training.engine.remove_checkpoints`).
    """
    store = store if store is not None else FeatureStore(paths.features)
    kwargs = sampler_kwargs(name, p, store, seed)
    torch.manual_seed(seed)
    model = create_sampler(name, **kwargs)
    if not model.trainable:
        return Trained(model, kwargs, None, None)
    train, val = ((data() if callable(data) else data) if data is not None
                  else load_train_val(store, paths, sampler_keys(model, training=True), model.pseudo_labels))
    t = p.train_sampler
    epochs, batch_size, lr, wd = training_settings(p, name)
    cfg = FitConfig(epochs=epochs, lr=lr, weight_decay=wd, patience=t.patience, seed=seed,
                    desc=f"train {name} seed {seed}", log_prefix=log_prefix, grad_clip=1.0, monitor=t.monitor,
                    mode="max" if t.monitor == "val_map" else "min")
    val_metrics = None
    if t.monitor == "val_map":  # what the sampler is for: the recognizer's val mAP on its selections
        val_set = load_val(p, paths, store)
        val_metrics = lambda: {"map": branch_val_score(model, val, val_set, t.val_budgets)}  # noqa: E731
    fp = fingerprint(store.meta["fingerprint"], name, describe_kwargs(kwargs), repr(cfg), CKPT_VERSION,
                     code_fingerprint("components.training.sampler_training"))  # other training code never resumes it
    if ckpt_dir is None:  # the stage's own folder, stamped for `salient gc` (a sweep keeps its trials itself)
        ckpt_dir = paths.work / "train_sampler" / name / fp
        ScratchKey("components.training.sampler_training", ("train_sampler", *[s for s in (name,) if hasattr(p, s)]),
                   (paths.features / "meta.json",), variant, paths.pipeline_seed).stamp(ckpt_dir, p)
    groups = model.optimizer_groups(lr, wd) if hasattr(model, "optimizer_groups") else None  # AVGN: f_L's own lr
    res = fit(model, _step, lambda ep: batches(train, batch_size, seed, ep), lambda: batches(val, batch_size),
              cfg, ckpt_dir, fp, params=groups, on_epoch=None if on_epoch is None else (lambda epoch, row: on_epoch(model, epoch, row)),
              val_metrics=val_metrics, log_metrics=tracking.log_metrics)
    return Trained(model, kwargs, res.history, ckpt_dir, res.best_epoch)
