"""Feature-store splits as tensors for samplers: valid rows only, checked, batched; a sampler's
scores over a split (:func:`predict_split`)."""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch

from components.store.feature_store import FeatureStore

log = logging.getLogger(__name__)
SAMPLER_KEYS = ("light_feats", "light_logits", "object_scores", "rec_feats", "rec_logits", "audio_emb",
                "has_audio", "gt", "labels", "frame_indices")


def sampler_keys(model_or_name, training: bool = False) -> tuple[str, ...]:
    """Store arrays to load for a sampler (an instance, or a registered name): :data:`SAMPLER_KEYS` plus
    what it declares in ``inputs`` beyond them, and in training its ``train_inputs`` (AVGN: its light
    maps, and the frame cache it crops patches from), so other samplers never load pixels."""
    if isinstance(model_or_name, str):
        from components.models.samplers import sampler_class  # deferred: names only, on demand

        model_or_name = sampler_class(model_or_name)
    extra = tuple(getattr(model_or_name, "inputs", ())) + (tuple(getattr(model_or_name, "train_inputs", ()))
                                                            if training else ())
    return SAMPLER_KEYS + tuple(dict.fromkeys(k for k in extra if k not in SAMPLER_KEYS))


def union_keys(names, training: bool = False) -> tuple[str, ...]:
    """:func:`sampler_keys` of several registered samplers together (one load serves them all)."""
    keys: dict[str, None] = {}
    for n in names:
        keys.update(dict.fromkeys(sampler_keys(n, training)))
    return tuple(keys) or SAMPLER_KEYS


def check_store(store: FeatureStore, T: int) -> None:
    if store.T != T:
        raise ValueError(f"feature store has T={store.T} frames per video but frames.T={T}: "
                         f"rerun `extract` (dvc repro) after changing frames.T")


def load_split(store: FeatureStore, split: str, keys=SAMPLER_KEYS, extra: dict[str, np.ndarray] | None = None
               ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Valid rows of ``split`` as tensors (float arrays float32, labels float); refuses NaN/inf."""
    valid = np.asarray(store.array(split, "valid"), dtype=bool)
    ids = [i for i, v in zip(store.ids(split), valid) if v]
    if (~valid).any():
        log.info("%s: skipping %d videos that failed to decode", split, int((~valid).sum()))
    out = {}
    for k in keys:
        a = np.asarray(store.array(split, k))[valid]
        out[k] = _tensor(a, k, ids, split)
    for k, a in (extra or {}).items():
        if len(a) != len(valid):
            raise ValueError(f"{k}: {len(a)} rows for {len(valid)} videos of split {split}")
        out[k] = _tensor(np.asarray(a)[valid], k, ids, split)
    if not ids:
        raise ValueError(f"split {split!r} has no usable video")
    return out, ids


def _tensor(a: np.ndarray, key: str, ids: list[str], split: str) -> torch.Tensor:
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
        if bad.any():
            raise ValueError(f"{split}/{key}: NaN or inf in the features of videos "
                             f"{[ids[i] for i in np.flatnonzero(bad)[:10]]}; re-extract or quarantine them")
        return torch.from_numpy(a.astype(np.float32))
    if key == "labels":
        return torch.from_numpy(a.astype(np.float32))
    return torch.from_numpy(a)


def batches(data: dict[str, torch.Tensor], batch_size: int, seed: int | None = None, epoch: int = 0
            ) -> Iterator[dict[str, torch.Tensor]]:
    """Mini-batches; shuffled deterministically from (seed, epoch) when seed is given."""
    n = len(next(iter(data.values())))
    order = np.random.default_rng([seed, epoch]).permutation(n) if seed is not None else np.arange(n)
    for i in range(0, n, batch_size):
        j = torch.from_numpy(order[i:i + batch_size])
        yield {k: v[j] for k, v in data.items()}


@torch.no_grad()
def predict_split(model: torch.nn.Module, data: dict, batch_size: int = 256) -> dict[str, np.ndarray]:
    """``{"saliency": [N,T], <branch>: [N,T], ...}`` of ``model`` over a split's tensors (eval mode)."""
    model.eval()
    outs: dict[str, list] = {}
    for b in batches({k: v for k, v in data.items() if k != "frames_full"}, batch_size):  # scores need no pixels
        o = model(b)
        for k, v in {"saliency": o.saliency, **o.branches}.items():
            outs.setdefault(k, []).append(v.float().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}
