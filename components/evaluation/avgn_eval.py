"""AVGN's own recognizer path on a split, and its cost (what ``evaluate`` and ``avgn_report`` share).

* :func:`head_predictions` - glance (T_G frames encoded, eq. 14) → the K most salient frames, most
  salient first → AESPA / π / patch / f_L / ψ / f_C (eqs. 4-8). Step t's prediction ``p_t`` uses the t
  most salient frames only (every module after the glance is causal over the processed frames:
  max aggregation, π's GRU, per-frame AESPA and ψ queries), so one pass at K_max gives every K ≤ K_max
  and the early-exit decisions (:func:`components.models.avgn_net.early_exit`).
* :func:`avgn_gmacs` - GMACs of one prediction, counted on the real modules (FlopCounterMode):
  light encoder × T_G (only the glanced frames are encoded) + audio encoder × T + the temporal glance
  + per processed frame (π's finer map where ``avgn.pi_map: fine`` + AESPA + π + f_L at P×P + ψ + f_C) × K. With the frame recognizer instead of
  the head (AVGN as a plain sampler) the recognizer runs on the K frames at full resolution.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from components.evaluation.cost import avgn_glance_head_gmacs
from components.models.avgn_net import early_exit
from components.store.sampler_data import batches


def is_avgn(model) -> bool:
    return hasattr(model, "predict_head") and hasattr(model, "glance_frames")


def head_predictions(model, data: Mapping[str, torch.Tensor], K: int, t_g: int | None = None,
                     batch_size: int = 32, idx: np.ndarray | None = None, extras: bool = False) -> dict[str, np.ndarray]:
    """AVGN's head on every video of ``data`` (store tensors with ``frames_full``) with up to ``K`` frames:
    ``idx [N,K]`` (most salient first), ``probs [N,K,C]`` (``p_t`` after t frames), ``centre [N,K,2]``
    ((x_c, y_c) in [0,1] of each frame's patch), ``saliency [N,T]``; ``extras``: also the early-exit
    gate inputs of :meth:`components.models.samplers.avgn.AVGNSampler.head`."""
    if "frames_full" not in data:
        raise ValueError("AVGN's head needs the frame cache: load the split with "
                         "sampler_keys('avgn', training=True) (store array frames_full)")
    K = min(K, int(data["light_maps"].shape[1]))
    data = dict(data)
    if idx is not None:  # frames chosen outside (stored saliency), processed in the given order
        data["_idx"] = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    outs: dict[str, list] = {}
    for b in batches(data, batch_size):
        sel = b.pop("_idx", None)
        for k, v in model.predict_head(b, K, t_g, idx=sel, extras=extras).items():
            outs.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in outs.items()}


def exit_predictions(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Early exit (AVGN⁺) over ``probs [N,K,C]``: (frames used ``[N]`` in 1..K, prediction ``[N,C]``)."""
    used, p = early_exit(torch.from_numpy(np.asarray(probs)), threshold)
    return used.numpy(), p.numpy()


class HeadScorer:
    """AVGN's head as the recognizer of the ``avgn`` rows of ``evaluate``: ``bind(run)`` -> a scorer of
    that AVGN run (None for any other sampler) whose ``scores(idx)`` are ``p_K`` (softmax after the K
    most salient frames); one head pass per run at the largest K, every smaller K read off it."""

    def __init__(self, data: Mapping[str, torch.Tensor], k_max: int):
        self.data, self.k_max = data, k_max
        self.cache: dict[int, dict[str, np.ndarray]] = {}

    def predictions(self, run) -> dict[str, np.ndarray]:
        """The head on the run's own selection at the largest K (``run.select``: its stored saliency,
        most salient first), so every K's row scores exactly the frames its row's metrics count."""
        key = id(run.model)
        if key not in self.cache:
            self.cache[key] = head_predictions(run.model, self.data, self.k_max, idx=run.select(self.k_max))
        return self.cache[key]

    def bind(self, run):
        if not is_avgn(run.model) or run.branch is not None:
            return None
        scorer = self

        class _Bound:
            def scores(self, idx: np.ndarray) -> np.ndarray:
                pred = scorer.predictions(run)
                K = idx.shape[1]
                if not np.array_equal(pred["idx"][:, :K], idx):  # top-K is a prefix of top-K_max
                    raise RuntimeError(f"{run.name} seed {run.seed}: top-{K} is not a prefix of top-{scorer.k_max}")
                return pred["probs"][:, K - 1].astype(np.float64)

        return _Bound()


def _one(data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v[:1] for k, v in data.items()}


def frames_beyond_glance(idx: np.ndarray, t_g: int) -> float:
    """Mean number of processed frames per video that the glance did not encode (position >= T_G):
    the head needs their e^G (AESPA, ψ's query, f_C), so f_G runs on each of them once more."""
    return float((np.asarray(idx) >= t_g).sum(1).mean()) if len(idx) else 0.0


def avgn_gmacs(model, enc: Mapping[str, float], data: Mapping[str, torch.Tensor], K: int,
               t_g: int | None = None, head: bool = True, beyond: float = 0.0) -> float:
    """GMACs of one AVGN prediction with ``K`` frames and glance budget ``t_g`` (default the model's):
    light encoder × T_G + audio encoder × T + temporal glance + (``head``: the spatial glance and
    head on K frames, + light encoder × ``beyond``: the mean number of processed frames outside the
    glance, :func:`frames_beyond_glance`; else the frame recognizer × K, which reads pixels only).
    ``enc``: per-call GMACs of ``light``, ``audio``, ``recognizer`` (``components.evaluation.cost.encoder_gmacs``)."""
    one = _one(data)
    T = int(one["light_maps"].shape[1])
    t_g = model.glance_frames if t_g is None else t_g
    glance, on_k = avgn_glance_head_gmacs(model, one, K, t_g, head)  # the FLOPs table's counter too
    total = glance + enc["light"] * min(t_g, T) + enc.get("audio", 0.0) * T * bool(model.params.audio)
    if not head:
        return total + enc["recognizer"] * K
    return total + on_k + enc["light"] * beyond


__all__ = ["HeadScorer", "frames_beyond_glance", "head_predictions", "exit_predictions", "avgn_gmacs", "is_avgn"]
