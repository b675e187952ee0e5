"""Baseline samplers (NSNet Table 1, TSQNet Table 2): uniform, random, dense, MaxConf, MaxConf-L, oracle,
plus VideoConf-L (ours, below).

None is trained. ``maxconf`` reads the recognizer's cached logits on all T frames (so its real cost
is the recognizer on every frame); ``maxconf_l`` the light encoder's frame classifier; ``oracle``
the ground-truth saliency (the upper bound, only where a dataset has per-frame ground truth).
``videoconf_l`` is not in the papers: it scores each frame by the light classifier's probability of
the class the whole video is predicted as, so a frame confidently showing *another* class (a
distractor, which MaxConf-L ranks high) scores low. It is the training-free reference a learned
sampler on the same light features has to beat.
"""
from __future__ import annotations

import numpy as np
import torch

from components.models.samplers import SAMPLERS, Batch, Sampler, SamplerOutput
from components.evaluation.metrics import salient_mask
from components.core.selection import oracle_select, random_select, uniform_select


class Uniform(Sampler):
    """K evenly spread frames (segment centres); no saliency, so it reads nothing but the frame indices
    (``salient predict`` runs no encoder for it)."""

    inputs = ("frame_indices",)

    def forward(self, batch: Batch) -> SamplerOutput:
        x = batch["frame_indices"]  # [B,T]
        return SamplerOutput(saliency=torch.zeros(x.shape[:2]))

    def select(self, out: SamplerOutput, K: int, fusion=None) -> np.ndarray:
        self.check_fusion(fusion)
        B, T = out.saliency.shape
        return uniform_select(B, T, K)


class Random(Uniform):
    """K frames drawn without replacement; a fixed seed makes runs repeatable."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    @classmethod
    def build_kwargs(cls, p, store, seed: int) -> dict:
        return {"seed": seed}

    def select(self, out: SamplerOutput, K: int, fusion=None) -> np.ndarray:
        self.check_fusion(fusion)
        B, T = out.saliency.shape
        return random_select(B, T, K, self.rng)


class Dense(Uniform):
    """All T frames whatever K (its cost is the recognizer on every frame)."""

    uses_all_frames = True

    def select(self, out: SamplerOutput, K: int, fusion=None) -> np.ndarray:
        self.check_fusion(fusion)
        B, T = out.saliency.shape
        return uniform_select(B, T, T)


class MaxConf(Sampler):
    """Saliency = the highest class probability of a per-frame classifier's cached logits."""

    def __init__(self, key: str):
        super().__init__()
        self.inputs = (key,)

    def forward(self, batch: Batch) -> SamplerOutput:
        return SamplerOutput(saliency=batch[self.inputs[0]].float().softmax(-1).amax(-1))  # [B,T]


class VideoConf(MaxConf):
    """Saliency_t = p_t(c_hat): a per-frame classifier's probability, at frame t, of the video's
    predicted class c_hat = argmax_c mean_t p_t(c) (p = softmax of the cached logits)."""

    def forward(self, batch: Batch) -> SamplerOutput:
        p = batch[self.inputs[0]].float().softmax(-1)  # [B,T,C]
        c = p.mean(1).argmax(-1)  # [B]
        return SamplerOutput(saliency=p.gather(-1, c[:, None, None].expand(-1, p.shape[1], 1)).squeeze(-1))


class Oracle(Sampler):
    """Ground-truth saliency; selection spreads K picks over the salient frames (see oracle_select)."""

    inputs = ("gt", "labels")

    def forward(self, batch: Batch) -> SamplerOutput:
        if (batch["gt"] < -2).all():
            raise ValueError("the oracle needs per-frame ground truth, which this dataset does not have")
        return SamplerOutput(saliency=torch.from_numpy(salient_mask(batch["gt"].numpy(), batch["labels"].numpy())).float())

    def select(self, out: SamplerOutput, K: int, fusion=None) -> np.ndarray:
        self.check_fusion(fusion)
        return oracle_select(out.saliency.numpy() > 0.5, K)


@SAMPLERS.register("uniform")
def uniform(**_) -> Uniform:
    return Uniform()


@SAMPLERS.register("random")
def random(seed: int = 0, **_) -> Random:
    return Random(seed)


@SAMPLERS.register("dense")
def dense(**_) -> Dense:
    return Dense()


@SAMPLERS.register("maxconf")
def maxconf(**_) -> MaxConf:
    return MaxConf("rec_logits")


@SAMPLERS.register("maxconf_l")
def maxconf_l(**_) -> MaxConf:
    return MaxConf("light_logits")


@SAMPLERS.register("videoconf_l")
def videoconf_l(**_) -> VideoConf:
    return VideoConf("light_logits")


@SAMPLERS.register("oracle")
def oracle(**_) -> Oracle:
    return Oracle()
