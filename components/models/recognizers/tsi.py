"""TSI: Temporal Saliency Integration for video action recognition (Su, Feng, Wang, Gan, Wu, Qiao,
2021), arXiv:2106.01088 (Sec. 3.2-3.4, eqs. 3-10, Fig. 4).

A **TSI block** is SME then CTI (the "cascade" fusion of Table 7) on the features ``X [N,T,C,H,W]``
of the T frames of a clip; :class:`TSINet` folds time into the batch for the 2D backbone and the
block unfolds it.

**SME** (Salient Motion Excitation, Sec. 3.2). A 1x1 conv C -> C/r (``reduction`` r = 16) followed
by BN (the paper names the conv only; the BN is that of the reduction conv of STM / TEA, refs. [13,
16]) gives ``X^r``. Then, for every pair of neighbouring frames:

* *Saliency alignment* (eq. 3), query ``X_t^r``, key = value ``X_{t+1}^r``, spatial attention::

      S[p,q] = softmax_q( <X_t^r[p], X_{t+1}^r[q]> / sqrt(C/r) )
      X_{t+1}^{r(sa)}[p] = X_{t+1}^r[p] * sum_q S[p,q] X_{t+1}^r[q]                        (3)

  Reading: ``X_t (x) X_{t+1}`` is the spatial similarity matrix of Fig. 3, the "scaled and
  normalization steps" omitted from eq. 3 are scaled dot-product attention's ``1/sqrt(d)`` and a
  softmax over the key positions, and the gathered values are multiplied element-wise into
  ``X_{t+1}``: where t and t+1 agree (aligned background, inside the actor) features are amplified.
  ``kv_stride`` (default 2) max-pools the keys / values first, the subsampling of non-local networks
  (Wang et al., CVPR 2018, Sec. 3.3). The literal full-resolution attention (``kv_stride=1``) costs
  ``2 (HW)^2 C/r`` MACs per frame pair, mostly in res2 (HW = 56^2): measured, TSI-ResNet-50 at 224^2
  costs 1.065x the plain ResNet-50 with it and 1.020x with ``kv_stride=2``. The paper reports 1.03x,
  which a count including the full-resolution product cannot give.
* *Pyramidal feature difference* (eqs. 4-5), ``pyramid`` cascaded depth-wise 3x3 convs (the paper
  sets K = 4 and sums k = 0..K; ``pyramid`` is the number of convs, 3 by default)::

      D_0 = Conv_0(X_{t+1}^{r(sa)}),   D_k = Conv_k(D_{k-1} + X_{t+1}^{r(sa)})               (4)
      M_{t,t+1} = sum_k (D_k - X_t^r)                                                       (5)

* *Channel attention* (eq. 6): ``A_t = sigmoid(Conv1x1_{C/r->C}(AvgPool(M_{t,t+1})))``. The paper
  recovers the channels before pooling; a 1x1 conv and an average pool commute exactly, so pooling
  first is the same A at 1/HW of the cost. The last frame has no t+1: its motion is zero (zero
  padding in time, as TSM / STM / TEA do), so ``A_{T-1} = sigmoid(bias)``; a 1-frame clip has only
  that (no neighbour, no motion; it runs).
* *Excitation* with an identity shortcut: ``X^SME = X + X * A``                                 (7)

**CTI** (Cross-scale Temporal Integration, Sec. 3.3): the channels split into G = ``groups``
groups ``X_g [N,T,C/G,H,W]``; group 0 passes through, every other group gets a depth-wise temporal
conv (kernel 3, zero padding) of its cross-scale integration with the previous group's output::

      T_0 = X_0^SME,   T_g = Conv1D_g(CI(T_{g-1}, X_g^SME))                                     (8)
      alpha = Softmax(FC(AvgPool(T_{g-1} + X_g^SME)))                                           (9)
      CI(T_{g-1}, X_g^SME) = alpha * X_g^SME + (1 - alpha) * T_{g-1}                            (10)

and the T_g are concatenated back to C channels. Reading of eq. 9: the pooling is spatial only, so
``alpha`` is a "temporal-channel" weight ``[N,T,C/G]``; the FC maps C/G -> 2 C/G and the softmax
runs over the two scales (X_g, T_{g-1}) of each channel and frame, selective-kernel style, alpha
being the first - the one reading in which alpha and 1 - alpha are both weights in [0, 1].

**Placement** (Sec. 3.4, Fig. 4): every residual block of res2-res5 (16 in ResNet-50). In a
Bottleneck, "the output features [of the 3x3 conv] are further passed through SME and CTI
sequentially", then the last 1x1 conv restores the channels: the block sits after conv2 / bn2 / act2
and before conv3. The paper has no BasicBlock (ResNet-18/34); there the block sits at the start of
the residual branch, before conv1 (where TSM shifts), and the shortcut carries the unmodified input.
In timm's EfficientNet (our choice; the benchmark's recognizer is EfficientNet-Lite0) the block sits
where it sits in a Bottleneck: after the depth-wise 3x3 conv, before the 1x1 projection
(``conv_pwl``). ``min_stride`` keeps blocks only where the features' output stride is at least that:
eq. 3's attention costs ``2 HW hw C/r`` per frame pair, so at 176² the stride-2 and stride-4 blocks of
Lite0 (88², 44² maps) would cost a quarter of the network; at ``min_stride`` 16 TSI runs in the 11
blocks at 11² and 6² (the paper's res4-res5 analogue). 1 (the default) is every block, the paper.

**Fine-tuning a frame recognizer** (``identity_init=True``). With the SME recovery conv zero
(``A = sigmoid(0) = 1/2``, so ``X^SME = 1.5 X``), the CI FCs zero (``alpha = 1/2``) and the temporal
convs identity kernels (0, 1, 0), a TSI block is a fixed per-pixel channel map ``M = 1.5 L`` (L
block lower-triangular, ``T_g = (X_g + T_{g-1}) / 2``, invertible). :meth:`TSIBlock.init_identity_`
sets that up and returns M; the net folds ``M^-1`` into the conv that follows the block
(``W <- W M^-1`` over its input channels), so at init the TSI net computes exactly the frame
recognizer's function, i.e. TSN's clip scores. Every TSI parameter still trains: the recovery conv,
the CI FCs and the temporal convs get gradient at the first step, the SME layers before the recovery
conv as soon as it is non-zero. (From timm's own init instead, which zeroes the last BN of every
residual branch, a Bottleneck's TSI block gets gradient once that BN's scale leaves zero.)
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from components.models.recognizers import RECOGNIZERS, Recognizer
from components.core.runtime import ensure_torchvision


@dataclass(frozen=True)
class TSIConfig:
    pyramid: int = 3  # cascaded depth-wise 3x3 convs of the pyramidal feature difference (eqs. 4-5)
    groups: int = 4  # CTI channel groups G (eq. 8)
    reduction: int = 16  # SME channel reduction r
    kv_stride: int = 2  # max-pool of the saliency-alignment keys / values (1 = literal eq. 3)
    min_stride: int = 1  # blocks only where the features' output stride >= this (1 = every block, the paper)


# ------------------------------------------------------------------------------------------ SME
def saliency_align(query: Tensor, key: Tensor, kv_stride: int = 1) -> Tensor:
    """Eq. 3: ``key * softmax(query key^T / sqrt(c)) key`` over spatial positions.

    ``query`` = X_t^r, ``key`` = value = X_{t+1}^r, both [P,c,H,W] (P frame pairs) -> [P,c,H,W].
    """
    P, c, H, W = key.shape
    kv = F.max_pool2d(key, kv_stride, ceil_mode=True) if kv_stride > 1 else key  # [P,c,h,w]
    kv = kv.flatten(2)  # [P,c,hw]
    q = query.flatten(2).transpose(1, 2)  # [P,HW,c]
    attn = torch.softmax(q @ kv / math.sqrt(c), dim=-1)  # [P,HW,hw]
    aligned = (attn @ kv.transpose(1, 2)).transpose(1, 2)  # [P,c,HW]
    return key * aligned.reshape(P, c, H, W)


class SME(nn.Module):
    """Salient Motion Excitation, eqs. 3-7: X [N,T,C,H,W] -> X + X * A, A [N,T,C,1,1]."""

    def __init__(self, channels: int, cfg: TSIConfig):
        super().__init__()
        c = max(channels // cfg.reduction, 1)
        self.kv_stride = cfg.kv_stride
        self.reduce = nn.Sequential(nn.Conv2d(channels, c, 1, bias=False), nn.BatchNorm2d(c))
        self.pyramid = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
                                     for _ in range(cfg.pyramid))
        self.recover = nn.Conv2d(c, channels, 1)

    def motion(self, x_t: Tensor, x_next: Tensor) -> Tensor:
        """Eqs. 3-5: M_{t,t+1} [P,c,H,W] from X_t^r, X_{t+1}^r [P,c,H,W]."""
        sa = saliency_align(x_t, x_next, self.kv_stride)  # eq. 3
        d = self.pyramid[0](sa)  # D_0, eq. 4
        m = d - x_t
        for conv in self.pyramid[1:]:
            d = conv(d + sa)  # D_k
            m = m + (d - x_t)  # eq. 5
        return m

    def forward(self, x: Tensor) -> Tensor:  # [N,T,C,H,W] -> [N,T,C,H,W]
        N, T = x.shape[:2]
        xr = self.reduce(x.flatten(0, 1)).unflatten(0, (N, T))  # [N,T,c,H,W]
        m = self.motion(xr[:, :-1].flatten(0, 1), xr[:, 1:].flatten(0, 1))  # [N(T-1),c,H,W]
        pooled = m.mean((2, 3)).view(N, T - 1, xr.shape[2])  # [N,T-1,c]
        pooled = F.pad(pooled, (0, 0, 0, 1))  # [N,T,c]: the last frame has no t+1, zero motion
        a = torch.sigmoid(self.recover(pooled.flatten(0, 1)[:, :, None, None]))  # [NT,C,1,1], eq. 6
        return x + x * a.unflatten(0, (N, T))  # eq. 7


# ------------------------------------------------------------------------------------------ CTI
class CrossScaleIntegration(nn.Module):
    """CI, eqs. 9-10: (T_{g-1}, X_g) [N,T,c,H,W] -> alpha * X_g + (1 - alpha) * T_{g-1}."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, 2 * channels)

    def forward(self, prev: Tensor, x: Tensor) -> Tensor:
        logits = self.fc((prev + x).mean((3, 4)))  # [N,T,2c]
        alpha = logits.unflatten(-1, (2, -1)).softmax(-2)[..., 0, :, None, None]  # [N,T,c,1,1], eq. 9
        return alpha * x + (1 - alpha) * prev  # eq. 10


class CTI(nn.Module):
    """Cross-scale Temporal Integration, eq. 8: [N,T,C,H,W] -> [N,T,C,H,W]."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"CTI: {channels} channels do not split into {groups} groups")
        c = channels // groups
        self.groups = groups
        self.integrate = nn.ModuleList(CrossScaleIntegration(c) for _ in range(groups - 1))
        self.temporal = nn.ModuleList(nn.Conv3d(c, c, (3, 1, 1), padding=(1, 0, 0), groups=c, bias=False)
                                      for _ in range(groups - 1))

    def forward(self, x: Tensor) -> Tensor:
        xs = x.chunk(self.groups, dim=2)  # G x [N,T,c,H,W]
        out = [xs[0]]  # T_0
        for ci, conv, x_g in zip(self.integrate, self.temporal, xs[1:]):
            mixed = ci(out[-1], x_g).transpose(1, 2)  # [N,c,T,H,W]
            out.append(conv(mixed).transpose(1, 2))  # T_g
        return torch.cat(out, dim=2)


# ------------------------------------------------------------------------------------ TSI block
class TSIBlock(nn.Module):
    """SME then CTI on frames folded into the batch: [N*T,C,H,W] -> [N*T,C,H,W], T = ``frames``
    (set by :class:`TSINet` on every call)."""

    def __init__(self, channels: int, cfg: TSIConfig, frames: int):
        super().__init__()
        self.channels = channels
        self.frames = frames
        self.sme = SME(channels, cfg)
        self.cti = CTI(channels, cfg.groups)

    def forward(self, x: Tensor) -> Tensor:
        x = x.unflatten(0, (-1, self.frames))  # [N,T,C,H,W]
        return self.cti(self.sme(x)).flatten(0, 1)

    @torch.no_grad()
    def init_identity_(self) -> Tensor:
        """Zero the SME recovery conv and the CI FCs, make the temporal convs identities, and return
        the channel map M [C,C] the block then applies at every pixel and frame (block(x) = M x)."""
        nn.init.zeros_(self.sme.recover.weight)
        nn.init.zeros_(self.sme.recover.bias)
        for ci in self.cti.integrate:
            nn.init.zeros_(ci.fc.weight)
            nn.init.zeros_(ci.fc.bias)
        for conv in self.cti.temporal:
            nn.init.zeros_(conv.weight)
            conv.weight[:, :, 1] = 1
        # probe: the C unit vectors as C one-pixel, one-frame clips (eval: BN statistics untouched)
        training, frames = self.training, self.frames
        self.eval()
        self.frames = 1
        w = self.sme.recover.weight
        eye = torch.eye(self.channels, device=w.device, dtype=w.dtype)
        probe = self(eye[:, :, None, None])[:, :, 0, 0]  # row i = M e_i
        self.train(training)
        self.frames = frames
        return probe.T


@torch.no_grad()
def fold_inverse_(conv: nn.Conv2d, channel_map: Tensor) -> None:
    """``W <- W M^-1`` over the input channels, so that the new ``conv(M x)`` is the old ``conv(x)``."""
    inv = torch.linalg.inv(channel_map.double())  # [C,C]
    conv.weight.copy_(torch.einsum("oikl,ij->ojkl", conv.weight.double(), inv))


def tsi_sites(backbone: nn.Module) -> list[tuple[nn.Module, str]]:
    """Where TSI blocks go, ``(block, conv attribute)``: in front of conv3 of every timm Bottleneck (after
    its 3x3 conv, Sec. 3.4) and conv1 of every BasicBlock; in timm's EfficientNet, the same place as in
    a Bottleneck: after the depth-wise 3x3 conv, in front of the 1x1 projection (``conv_pwl`` of an
    InvertedResidual, ``conv_pw`` of a DepthwiseSeparableConv; our choice, the paper has ResNets only)."""
    ensure_torchvision()
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
    from timm.models.resnet import BasicBlock, Bottleneck

    kinds = ((Bottleneck, "conv3"), (BasicBlock, "conv1"), (InvertedResidual, "conv_pwl"),
             (DepthwiseSeparableConv, "conv_pw"))
    return [(block, next(name for kind, name in kinds if isinstance(block, kind)))
            for block in backbone.modules() if isinstance(block, tuple(kind for kind, _ in kinds))]


@torch.no_grad()
def site_strides(backbone: nn.Module, sites: list[tuple[nn.Module, str]], size: int = 64) -> list[int]:
    """The output stride of the features each site's conv reads (one probe forward at ``size``²)."""
    seen: dict[int, int] = {}
    hooks = [getattr(block, name).register_forward_pre_hook(
        lambda mod, args, i=i: seen.__setitem__(i, size // args[0].shape[-1])) for i, (block, name) in enumerate(sites)]
    training, w = backbone.training, next(backbone.parameters())
    try:
        backbone.eval()(torch.zeros(1, 3, size, size, device=w.device, dtype=w.dtype))
    finally:
        backbone.train(training)
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(sites))]


def insert_tsi_blocks(backbone: nn.Module, cfg: TSIConfig, frames: int) -> list[nn.Sequential]:
    """Put a TSI block at every site of :func:`tsi_sites` whose features have an output stride >=
    ``cfg.min_stride``; returns the new ``Sequential(tsi=..., conv=...)`` sites."""
    sites = tsi_sites(backbone)
    if cfg.min_stride > 1 and sites:
        sites = [s for s, stride in zip(sites, site_strides(backbone, sites)) if stride >= cfg.min_stride]
    if not sites:
        raise ValueError(f"{type(backbone).__name__} has no timm ResNet Bottleneck / BasicBlock or EfficientNet "
                         f"block for TSI blocks (at output stride >= {cfg.min_stride})")
    out = []
    for block, name in sites:
        conv = getattr(block, name)
        site = nn.Sequential(OrderedDict(tsi=TSIBlock(conv.in_channels, cfg, frames), conv=conv))
        setattr(block, name, site)
        out.append(site)
    return out


# -------------------------------------------------------------------------------------- network
@RECOGNIZERS.register("tsi")
class TSINet(Recognizer):
    """TSI network (Fig. 4): a timm ResNet with a TSI block in every residual block; frames
    [B,K,3,H,W] in [0,1] -> logits [B,C], class scores averaged over the K frames.

    ``pretrained_state``: a frame recognizer of the same arch (FrameClassifier or plain timm state
    dict). ``identity_init``: start the TSI blocks so the net equals that frame recognizer's
    averaged scores exactly (module docstring); otherwise they keep PyTorch's default init.
    """

    def __init__(self, arch: str, num_classes: int, num_frames: int,
                 pretrained_state: Mapping[str, Tensor] | None = None, pyramid: int = 3, groups: int = 4,
                 reduction: int = 16, kv_stride: int = 2, identity_init: bool = False, consensus: str = "probs",
                 min_stride: int = 1):
        super().__init__(arch, num_classes, num_frames, pretrained_state, consensus)
        self.cfg = TSIConfig(pyramid=pyramid, groups=groups, reduction=reduction, kv_stride=kv_stride,
                             min_stride=min_stride)
        self.frames.set_channels_last(False)  # the TSI blocks view [B*K,C,H,W] as [B,K,C,H,W]
        for site in insert_tsi_blocks(self.frames.backbone, self.cfg, num_frames):
            if identity_init:
                fold_inverse_(site.conv, site.tsi.init_identity_())

    @property
    def tsi_blocks(self) -> list[TSIBlock]:
        return [m for m in self.modules() if isinstance(m, TSIBlock)]

    def forward(self, x: Tensor) -> Tensor:  # [B,K,3,H,W] in [0,1] -> [B,C]
        for block in self.tsi_blocks:
            block.frames = x.shape[1]
        return super().forward(x)
