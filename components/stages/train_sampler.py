"""Stage ``train_sampler@<name>``: train one sampler per seed on the feature store, write its saliency.

``python -m components.stages.train_sampler --sampler tsqnet``. For every seed in
``train_sampler.seeds``: build the sampler from the registry (priors: light-space prototypes and
text embeddings for TSQNet), train it with the one engine on the train split (early stopping on
``train_sampler.monitor``, by default the val mAP of the frame recognizer over the top-K frames of
each branch, :func:`components.validation.branch_val_score`: the losses are proxies of selection
quality, and on the demo's 144 training videos val loss starts rising after 2-4 epochs, as the
models overfit; checkpoints and resume under ``.salient/work``), and write
``data/samplers/<name>/seed<s>.pt`` plus per-frame saliency and branch scores for val and test
(``saliency_seed<s>.npz``: ``<split>/saliency``, ``<split>/<branch>``, ``<split>/ids``). Untrained
baselines only write their saliency. Loss curves go to ``reports/samplers/<name>_history.json``.

The ``fusion`` section is not read here (nor by the val_map monitor): how two-branch samplers fuse
their branches is an inference-time setting applied after loading (``set_fusion``), so tuning it
never retrains a sampler.
The stored ``<split>/saliency`` is the sampler's output at the default fusion (for NSNet, the FSM
score); selection always fuses the stored branch scores. :func:`train_one` (build + train one seed)
is shared with the loss-weight sweep.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from components import tracking
from components.engine import CKPT_VERSION, FitConfig, atomic_save, fit
from components.hashing import fingerprint
from components.models.samplers import Sampler, create_sampler
from components.params import Params, to_dict, variant_params
from components.sampler_data import batches, check_store, load_split
from components.stages import Paths, stage_main
from components.store import FeatureStore, atomic_savez

log = logging.getLogger(__name__)


def sampler_kwargs(name: str, p: Params, store: FeatureStore, seed: int) -> dict:
    """Constructor arguments of a registered sampler, from params and the store's priors."""
    C, d = len(store.classes), store.array("train", "light_feats").shape[-1]
    if name in ("tsqnet", "nsnet"):
        mean, std = light_stats(store)
    if name == "tsqnet":
        protos = np.load(store.folder.parent / "prototypes.npz")["light"]
        return {"num_classes": C, "light_dim": d, "params": p.tsqnet,
                "visual_prototypes": torch.from_numpy(protos), "object_text": torch.from_numpy(store.load("text_objects")),
                "class_text": torch.from_numpy(store.load("text_classes")), "light_mean": mean, "light_std": std}
    if name == "nsnet":
        return {"num_classes": C, "light_dim": d, "params": p.nsnet, "light_mean": mean, "light_std": std}
    if name == "random":
        return {"seed": seed}
    return {}


def _describe(kwargs: dict) -> dict:
    """kwargs as hashable data: tensors by content digest, params sections as dicts."""
    import hashlib

    return {k: hashlib.sha1(v.numpy().tobytes()).hexdigest() if torch.is_tensor(v) else to_dict(v)
            for k, v in kwargs.items()}


def light_stats(store: FeatureStore) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean / std of the training split's light features (valid videos, all frames)."""
    valid = np.asarray(store.array("train", "valid"), dtype=bool)
    x = np.asarray(store.array("train", "light_feats"))[valid].astype(np.float64)
    x = x.reshape(-1, x.shape[-1])
    return torch.from_numpy(x.mean(0)).float(), torch.from_numpy(x.std(0)).float()


#: Constructor arguments that older checkpoints stored but that are inference-time settings now
#: (``fusion.*``, applied after loading with ``set_fusion``): dropped when a checkpoint is loaded.
STALE_KWARGS = frozenset({"lambda_v"})


def load_sampler(path: Path) -> Sampler:
    """A trained sampler from ``seed<s>.pt``, in eval mode, with the *default* fusion settings; callers
    that select frames apply the configured / tuned ones (``components.tuning.fusion_values``)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = create_sampler(ck["name"], **{k: v for k, v in ck["kwargs"].items() if k not in STALE_KWARGS})
    if ck.get("state_dict"):
        model.load_state_dict(ck["state_dict"])
    return model.eval()


def _extra(paths: Paths, split: str) -> dict:
    f = paths.features.parent / "pseudo_labels" / f"{split}.npz"
    return {"ns_labels": np.load(f)["ns"]} if f.exists() else {}


@torch.no_grad()
def predict_split(model: Sampler, data: dict, batch_size: int = 256) -> dict[str, np.ndarray]:
    model.eval()
    outs: dict[str, list] = {}
    for b in batches(data, batch_size):
        o = model(b)
        for k, v in {"saliency": o.saliency, **o.branches}.items():
            outs.setdefault(k, []).append(v.float().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def load_train_val(store: FeatureStore, paths: Paths) -> tuple[dict, dict]:
    """The train and val splits as tensors, with NSNet's pseudo labels where they exist."""
    train, _ = load_split(store, "train", extra=_extra(paths, "train"))
    val, _ = load_split(store, "val", extra=_extra(paths, "val"))
    return train, val


def _step(m, batch, train_mode):
    return m.loss(batch, m(batch))


def train_one(p: Params, paths: Paths, name: str, seed: int,
              on_epoch: Callable[[Sampler, int, dict[str, float]], None] | None = None, *,
              store: FeatureStore | None = None, data: Callable[[], tuple[dict, dict]] | tuple[dict, dict] | None = None,
              ckpt_dir: Path | None = None) -> tuple[Sampler, dict, list[dict] | None]:
    """Build sampler ``name`` for ``seed`` from the registry and, if it is trainable, train it with the
    engine on the train split (``p.train_sampler``: epochs, lr, early stopping on ``monitor``: val mAP
    of each branch's top-K, see :func:`components.validation.branch_val_score`, or val loss).

    Shared by this stage and the loss-weight sweep (``components.tuning``), which passes
    ``on_epoch(model, epoch, row)`` (called by the engine after every epoch with the model being
    trained and the epoch's losses, e.g. to report val mAP to an Optuna pruner; raising stops
    training) and its own ``ckpt_dir``. ``data`` is ``(train, val)`` tensors or a callable returning them (called only for a
    trainable sampler); default: loaded from the store. Checkpoints go to ``ckpt_dir`` (default
    ``<work>/train_sampler/<name>/<fingerprint>``; resumed when the configuration is the same).
    Returns ``(model, constructor kwargs, loss history or None for untrained baselines)``.
    """
    store = store if store is not None else FeatureStore(paths.features)
    kwargs = sampler_kwargs(name, p, store, seed)
    torch.manual_seed(seed)
    model = create_sampler(name, **kwargs)
    if not model.trainable:
        return model, kwargs, None
    train, val = (data() if callable(data) else data) if data is not None else load_train_val(store, paths)
    t = p.train_sampler
    cfg = FitConfig(epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay, patience=t.patience, seed=seed,
                    desc=f"train {name} seed {seed}", grad_clip=1.0, monitor=t.monitor,
                    mode="max" if t.monitor == "val_map" else "min")
    val_metrics = None
    if t.monitor == "val_map":  # what the sampler is for: the recognizer's val mAP on its selections
        from components.validation import branch_val_score, load_val

        val_set = load_val(p, paths, store)
        val_metrics = lambda: {"map": branch_val_score(model, val, val_set, t.val_budgets)}  # noqa: E731
    fp = fingerprint(store.meta["fingerprint"], name, _describe(kwargs), repr(cfg), CKPT_VERSION)
    res = fit(model, _step, lambda ep: batches(train, t.batch_size, seed, ep), lambda: batches(val, t.batch_size),
              cfg, ckpt_dir if ckpt_dir is not None else paths.work / "train_sampler" / name / fp, fp,
              on_epoch=None if on_epoch is None else (lambda epoch, row: on_epoch(model, epoch, row)),
              val_metrics=val_metrics)
    return model, kwargs, res.history


def run(p: Params, paths: Paths, name: str) -> dict:
    """Train sampler ``name`` (a registered sampler, or an ablation of ``p.ablations``) for every seed
    of ``train_sampler.seeds``; write ``data/samplers/<name>/``."""
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
            loaded.append(load_train_val(store, paths))
        return loaded[0]

    histories = {}
    for seed in t.seeds:
        model, kwargs, history = train_one(p, paths, registered, seed, store=store, data=data)
        if history is not None:
            histories[seed] = history
        atomic_save({"name": registered, "variant": name, "kwargs": kwargs,
                     "state_dict": model.state_dict() if model.trainable else None,
                     "seed": seed, "classes": store.classes}, out_dir / f"seed{seed}.pt")
        arrays = {}
        for split in ("val", "test"):
            rows, ids = load_split(store, split)
            for k, v in predict_split(model, rows).items():
                arrays[f"{split}/{k}"] = v
            arrays[f"{split}/ids"] = np.array(ids)
        atomic_savez(out_dir / f"saliency_seed{seed}.npz", **arrays)
    rep = paths.reports / "samplers"
    rep.mkdir(parents=True, exist_ok=True)
    (rep / f"{name}_history.json").write_text(json.dumps(histories, indent=1) + "\n")
    tracking.log_artifacts([out_dir], artifact_path=f"samplers/{name}")
    return histories


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--sampler", required=True)
    known, rest = ap.parse_known_args(argv)
    return stage_main("train_sampler", lambda p, paths: run(p, paths, known.sampler), rest,
                      run_name=lambda p: f"{'ablate' if known.sampler in p.ablations else 'train_sampler'}@{known.sampler}")


if __name__ == "__main__":
    raise SystemExit(main())
