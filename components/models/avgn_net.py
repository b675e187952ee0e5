"""AVGN: "Audio-Visual Glance Network for Efficient Video Recognition" (Nugroho, Woo, Lee, Kim,
ICCV 2023), arXiv:2308.09322 (Sec. 3, eqs. 1-14; equation numbers are the paper's). Plain torch, no pipeline wiring yet: this
module is the model and its losses; registering it as a sampler (``create_sampler("avgn")``), the
store inputs it needs (spatial light-encoder maps, full-resolution frames) and the FLOPs pricing are
later steps of issue 14.

Inputs (the encoders f_G and f_A of eq. 1 live outside this module; their outputs come in)::

    e_g     [B,T,D_G,H_G,W_G]   spatial maps of the light visual encoder f_G (eq. 1)
    e_a     [B,T,D_A] or [B,T,D_A,H_A,W_A]  audio features of f_A (eq. 1), pooled over H_A x W_A
    frames  [B,K,3,H0,W0]       full-resolution frames for the spatial glance (K = T in training)
    has_audio [B] or [B,T] bool, labels [B,C] multi-hot float

Read top to bottom: config, helpers (one per equation), blocks, model, losses, early exit.

* **AV-TeST** (:class:`AVTeST`, eqs. 2-3, 14): the spatially pooled features are embedded to
  ``D_AV`` (``ẽ^G_t``, ``ẽ^A_t``); the token of frame t is the **concatenation** ``[ẽ^G_t, ẽ^A_t]``
  (``2 D_AV`` wide) plus a learned position embedding, and ``TF_AV`` (``nn.TransformerEncoder``,
  batch_first) runs over the T per-frame tokens. Why concatenation and not a 2T sequence: eq. 2
  writes ``[·,·]`` "concatenation" per time step, eq. 14 writes the glance-budget token the same way
  (``[M, e^A_t]``), and eq. 3 applies ``FC_s`` to one ``e^TF_t`` per t, which a 2T layout would have
  to invent a rule for. With concatenation the modality is the half of the vector a feature sits
  in, so a learned additive modality embedding would only duplicate the embedding layers' biases
  and is not added. ``s_t = FC_s(e^TF_t)`` is the raw linear output (eq. 3 as written), trained by
  L1 towards pseudo-labels in (0, 1].
* **Glance budget** (:func:`glance_tokens`, eq. 14): frames ``t > T_G`` (1-based) get the learned
  mask token ``M`` in place of ``ẽ^G_t``; ``t_g`` at forward (default ``config.t_g``; training uses
  the same masking, which is what L_mask trains against). Frames beyond T_G still need an ``e_g``
  entry (zeros): the glance never reads it, the spatial glance reads it only for selected frames.
* **Missing audio**: where ``has_audio`` is false the audio feature is replaced by one learned
  missing-audio vector ``[D_A]`` before any module reads it (TF_AV, AESPA, ψ, f_C^A), so an
  audio-less video's output does not depend on what its audio slot holds; L_A skips those frames.
  Non-finite audio where ``has_audio`` is true raises ``ValueError`` naming the videos.
* **AESPA** (:class:`AESPA`, eq. 4): per selected frame, ``z^G_{1,t}`` = the H_G·W_G flattened
  visual tokens, ``z^A_1`` = the T pooled audio tokens (both projected to ``d_aespa``, plus learned
  spatial / temporal position embeddings), ``n_b`` learned bottleneck tokens appended to both; each
  layer runs ``TF_A^l`` and ``TF_G^l`` and averages the two bottleneck outputs. The output
  ``e^GA_t = z^G_{L+1,t}`` reshaped to ``[d_aespa, H_G, W_G]``. ``TF_A^L`` (the last audio layer) is
  not built: its outputs ``z^A_{L+1}``, ``b̂^A_{L+1}`` feed nothing in eq. 4 (only ``b_{L+1}``, which is
  unused), so it would be weights without a gradient and FLOPs without effect; hence ``L >= 2``
  (with L = 1 audio could not reach ``e^GA`` at all, a silent audio-free AESPA).
* **π** (:class:`PatchPolicy`, eq. 5): AdaFocusV2-style (its ``PolicySTN``): 1x1 conv reduction of
  ``e^GA_t``, flattened (pooling would throw away *where*), Linear + tanh, a GRU over the frames in
  the order given (so the centre at step t sees ``e^GA_1..t``), Linear + sigmoid -> ``u in (0,1)^2``,
  mapped affinely onto the centres whose P×P patch lies inside the frame (:func:`centre_from_unit`).
  What AESPA / π read (our choice, ``pi_encoder``): eq. 5 reads e^G, the light encoder's last map,
  which is 2×2 at 48² and 1×1 at 32² (no *where* left to read); with a π encoder (a frozen module on
  the processed frames' pixels, ``config.d_pi`` channels on ``config.grid``) they read its finer map
  instead, e.g. the light encoder's stride-8 stage (6×6 / 4×4). The pooled e^G of TF_AV, ψ and f_C is
  unchanged. ``forward(order="saliency")`` processes the K frames most salient first
  (:func:`saliency_order`), the order inference's top-K has, so π's GRU and the running max see the
  same kind of sequence in training and at test time (our choice; the paper does not say).
* **Patch** (:func:`extract_patches`, eq. 6): centre ``(x_c, y_c)`` in [0,1] frame coordinates (x
  along the width), clamped to ``[P/(2W0), 1 - P/(2W0)] x [P/(2H0), 1 - P/(2H0)]``; pixel offsets
  ``o_ij = (j - (P-1)/2, i - (P-1)/2)``; bilinear ``grid_sample`` with ``align_corners=False`` (pixel
  k covers [k, k+1) of the continuous frame, normalised coordinate ``2u/W0 - 1``), so a centre with
  ``x_c W0 - P/2`` integer returns exactly the slice ``frame[..., y1:y1+P, x1:x1+P]``.
* **f_L** (:class:`LocalEncoder`, eq. 7): pluggable; anything with ``patch_size`` and ``out_dim``.
* **ψ** (:class:`AudioFusion`, eq. 8): post-norm transformer blocks whose query is the (detached)
  pooled ``e^G_t`` and whose keys / values are the T audio tokens. Cross-attention only: a decoder
  layer's query self-attention would mix the selected frames and break "p_t uses frames 1..t".
* **f_C** (:class:`MaxAggClassifier`, eqs. 8-11): per-frame FC + ReLU, running max over time
  (``torch.cummax``), FC to C logits; ``p_t = softmax``. ``per_frame`` skips the max (eq. 11).
* **Losses** (:meth:`AVGN.loss`, Sec. 3.4): L_p, L_V (eq. 9), L_A (eq. 10), L_mask, L_s (eqs.
  11-12), L_ord (eq. 13), each with a switch and a weight in :class:`AVGNConfig` (Table 7). CE against
  multi-hot labels is the soft-target CE of the other samplers (labels normalised to sum 1).
* **L_search** (our choice, not in the paper; ``loss_search``, off by default in the config): π learns
  only through the bilinear gradient of eq. 6 at the patch's border, which carries little signal, and on
  the benchmark it drifted to a corner of the frame (hit rate below a random patch). L_search gives π a
  target from the training labels alone, in the spirit of AdaFocus v1's reward (the patch that makes
  the classifier more confident): on the first ``search_frames`` processed frames, f_L's classifier
  (:meth:`AVGN.patch_logits`) scores a ``search_grid``² grid of patches; the soft-argmin of their
  cross-entropy (:meth:`AVGN.search_target`, temperature ``search_tau``) is π's target, ``L1`` in ``u``
  space. No box or position label is read; it costs ``search_grid``² f_L calls per searched frame in
  training only (inference runs π alone). With ``search_detach`` (the default) the other losses see a
  detached centre, so L_search alone trains π: with both, on the benchmark L_search rose from 0.61 to
  1.00 over the first four epochs while the classification losses' border gradient pulled π away.
* **Stop-gradients** (Sec. 3.4, last paragraph): TF_AV, AESPA and π read ``e_g.detach()`` and the
  detached audio; ψ reads the detached ``e^G`` as its query (its audio keys stay attached: the paper
  stops ψ only towards f_G). The L_mask target ``ẽ^G`` and the pseudo-labels ``s̃`` are detached.
* **Early exit** (:func:`early_exit`, AVGN⁺): the first step whose max probability passes the gate.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from components.core.params import AVGNParams
from components.models.samplers.nsnet import normalise_labels, soft_cross_entropy

LOSSES = ("p", "v", "a", "mask", "s", "ord")  # the paper's (Sec. 3.4); L_search is ours (avgn.loss_search)


# ------------------------------------------------------------------------------------- config
#: AVGNConfig field -> the ``avgn`` params key it is built from. The network's config is built from the params
#: section (:meth:`AVGNConfig.from_params`) and takes its defaults from it: one definition, no second set of
#: defaults. The fields not listed are the network's own (derived from the data or fixed by the paper).
FROM_PARAMS = {"d_av": "dim", "tf_layers": "layers", "tf_heads": "heads", "t_g": "t_g", "d_aespa": "dim",
               "aespa_layers": "aespa_layers", "aespa_heads": "heads", "bottlenecks": "bottlenecks",
               "patch_size": "patch_size", "d_psi": "dim", "psi_heads": "heads", "cls_hidden": "cls_hidden",
               "dropout": "dropout", "ord_k": "ord_k",
               **{f"{k}_{n}": f"{k}_{n}" for k in ("loss", "w") for n in ("v", "a", "mask", "s", "ord", "search")},
               "search_grid": "search_grid", "search_frames": "search_frames", "search_tau": "search_tau",
               "search_detach": "search_detach", "use_audio": "audio", "av_test": "av_test", "use_aespa": "aespa",
               "use_psi": "psi", "patch": "patch"}
_P = AVGNParams()


@dataclass(frozen=True)
class AVGNConfig:
    """Sizes, budgets and the loss switches / weights of AVGN (Table 7 switches one loss off each). The
    fields of :data:`FROM_PARAMS` default to the ``avgn`` params' values (:class:`AVGNParams`)."""

    num_classes: int
    d_g: int  # channels of f_G's map e^G
    d_a: int  # channels of f_A's features e^A
    grid: tuple[int, int] = (7, 7)  # H, W of the map AESPA / π read (e^G's, or the π encoder's)
    d_pi: int | None = None  # channels of the π encoder's map (None: AESPA / π read e^G itself)
    max_frames: int = 16  # T at most
    # AV-TeST (eqs. 2-3): tokens are 2*d_av wide (concatenated visual | audio halves)
    d_av: int = _P.dim
    tf_layers: int = _P.layers
    tf_heads: int = _P.heads
    t_g: int = _P.t_g  # T_G, glance budget (eq. 14); >= T masks nothing
    # AESPA (eq. 4)
    d_aespa: int = _P.dim
    aespa_layers: int = _P.aespa_layers  # L (>= 2, see module docstring)
    aespa_heads: int = _P.heads
    bottlenecks: int = _P.bottlenecks  # number of shared bottleneck tokens b
    # π (eq. 5), patch (eq. 6), f_L (eq. 7)
    pi_reduce: int = 16
    pi_hidden: int = 256
    patch_size: int = _P.patch_size  # P
    d_local: int = 256
    # ψ (eq. 8) and the classifiers f_C
    d_psi: int = _P.dim
    psi_heads: int = _P.heads
    psi_layers: int = 1
    cls_hidden: int = _P.cls_hidden
    dropout: float = _P.dropout
    # L_ord (eq. 13)
    ord_k: int = _P.ord_k  # frames kept by the simulated limited-frame inference
    gumbel_tau: float = 1.0
    # losses (Sec. 3.4): a switch and a weight each
    loss_p: bool = True
    loss_v: bool = _P.loss_v
    loss_a: bool = _P.loss_a
    loss_mask: bool = _P.loss_mask
    loss_s: bool = _P.loss_s
    loss_ord: bool = _P.loss_ord
    w_p: float = 1.0
    w_v: float = _P.w_v
    w_a: float = _P.w_a
    w_mask: float = _P.w_mask
    w_s: float = _P.w_s
    w_ord: float = _P.w_ord
    # L_search (our choice, not in the paper; module docstring): π regressed towards the patch the scorer
    # classifies best among a search_grid x search_grid grid of candidates, on search_frames frames a video
    loss_search: bool = _P.loss_search
    w_search: float = _P.w_search
    search_grid: int = _P.search_grid
    search_frames: int = _P.search_frames
    search_tau: float = _P.search_tau
    search_detach: bool = _P.search_detach  # with L_search on, π learns from it alone (the others see a detached centre)
    # component switches (Tables 4 and 6): audio modality, TF_AV, AESPA, ψ, patch centre source
    use_audio: bool = _P.audio  # False: every frame treated as audio-less (the missing-audio token)
    av_test: bool = _P.av_test  # False: a per-frame MLP scores saliency (no temporal attention)
    use_aespa: bool = _P.aespa  # False: π reads a linear projection of e^G alone
    use_psi: bool = _P.psi  # False: f_C^AV reads [e^G, e^L] only
    patch: str = _P.patch  # "policy" (π, eq. 5) or "centre" (a fixed centre crop)

    @classmethod
    def from_params(cls, a: AVGNParams, *, num_classes: int, d_g: int, d_a: int, grid: tuple[int, int],
                    max_frames: int, d_pi: int | None = None) -> "AVGNConfig":
        """The network's config from the ``avgn`` params section (:data:`FROM_PARAMS`) and what the data
        fixes: T_G capped at T, L_ord's k at the frames a training video processes, and L_search off with
        a centre crop (there is no π to train)."""
        kw = {f: getattr(a, k) for f, k in FROM_PARAMS.items()}
        kw.update(t_g=min(a.t_g, max_frames), ord_k=min(a.ord_k, a.train_frames),
                  loss_search=a.loss_search and a.patch == "policy")
        return cls(num_classes=num_classes, d_g=d_g, d_a=d_a, grid=tuple(grid), max_frames=max_frames, d_pi=d_pi, **kw)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int) and not isinstance(v, bool) and f.name != "t_g" and v <= 0:
                raise ValueError(f"avgn.{f.name}={v} must be positive")
        if self.t_g < 0:
            raise ValueError(f"avgn.t_g={self.t_g} must be >= 0")
        if len(self.grid) != 2 or min(self.grid) <= 0:
            raise ValueError(f"avgn.grid={self.grid} must be two positive sizes (H_G, W_G)")
        for dim, heads, what in ((2 * self.d_av, self.tf_heads, "2*d_av / tf_heads"),
                                 (self.d_aespa, self.aespa_heads, "d_aespa / aespa_heads"),
                                 (self.d_psi, self.psi_heads, "d_psi / psi_heads")):
            if dim % heads:
                raise ValueError(f"avgn: {what} = {dim} / {heads} is not an integer")
        if self.aespa_layers < 2:
            raise ValueError(f"avgn.aespa_layers={self.aespa_layers}: eq. 4 needs L >= 2 for audio to reach "
                             "e^GA (with L = 1 only TF_G^1 feeds the output)")
        if self.patch not in ("policy", "centre"):
            raise ValueError(f"avgn.patch={self.patch!r} must be 'policy' or 'centre'")
        if self.gumbel_tau <= 0:
            raise ValueError(f"avgn.gumbel_tau={self.gumbel_tau} must be > 0")
        if self.search_tau <= 0:
            raise ValueError(f"avgn.search_tau={self.search_tau} must be > 0")
        if self.loss_search and self.patch != "policy":
            raise ValueError("avgn.loss_search trains π: it needs avgn.patch: policy")

    def enabled(self) -> dict[str, float]:
        """Switched-on losses -> their weights."""
        return {k: getattr(self, f"w_{k}") for k in LOSSES + ("search",) if getattr(self, f"loss_{k}")}


# ------------------------------------------------------------------------------------ helpers
def glance_tokens(vis: Tensor, aud: Tensor, mask_token: Tensor, t_g: int) -> tuple[Tensor, Tensor]:
    """Eq. 14: ``e^AV_t = [ẽ^G_t, ẽ^A_t]`` for ``t <= T_G`` (1-based), ``[M, ẽ^A_t]`` otherwise.

    ``vis, aud [B,T,D]``, ``mask_token [D]`` -> (tokens ``[B,T,2D]``, masked ``[B,T]`` bool).
    """
    B, T, _ = vis.shape
    masked = (torch.arange(T, device=vis.device) >= t_g)[None].expand(B, T)  # 0-based t >= T_G, [B,T]
    vis = torch.where(masked[..., None], mask_token.to(vis.dtype).expand_as(vis), vis)  # [B,T,D]
    return torch.cat([vis, aud], -1), masked


def saliency_pseudo_labels(frame_probs: Tensor) -> Tensor:
    """Eq. 12: ``s̃_t = max_c p'_{c,t} / max_t max_c p'_{c,t}`` (detached), ``[B,T,C] -> [B,T]``.

    ``frame_probs`` are the per-frame softmax predictions ``p'_t`` of eq. 11 (the paper's text says
    "logit", its equation uses ``p'``; probabilities keep the ratio in (0, 1])."""
    conf = frame_probs.detach().amax(-1)  # max_c, [B,T]
    return conf / conf.amax(-1, keepdim=True).clamp_min(1e-12)  # [B,T]


def patch_centre_bounds(P: int, H0: int, W0: int) -> tuple[Tensor, Tensor]:
    """Lowest and highest centre ``(x_c, y_c)`` in [0,1] whose P×P patch lies inside an H0×W0 frame."""
    if P > H0 or P > W0:
        raise ValueError(f"patch size P={P} exceeds the frame {H0}x{W0}")
    lo = torch.tensor([P / (2 * W0), P / (2 * H0)])  # (x, y)
    return lo, 1.0 - lo


def clamp_centre(centre: Tensor, P: int, H0: int, W0: int) -> Tensor:
    """Clamp centres ``[...,2]`` (x_c, y_c) so the P×P patch stays inside the frame."""
    lo, hi = patch_centre_bounds(P, H0, W0)
    return torch.clamp(centre, lo.to(centre), hi.to(centre))


def centre_from_unit(u: Tensor, P: int, H0: int, W0: int) -> Tensor:
    """Map π's ``u in [0,1]^2`` affinely onto the admissible centres (AdaFocusV2's ``a (W0 - P)``
    top-left, written for the centre): ``u = 0`` puts the patch at the top-left corner."""
    lo, hi = patch_centre_bounds(P, H0, W0)
    return lo.to(u) + u * (hi - lo).to(u)


def patch_offsets(P: int, device=None, dtype=None) -> Tensor:
    """Eq. 6's fixed offsets ``o_ij`` in pixels along one axis, ``[P]``: ``j - (P-1)/2``."""
    return torch.arange(P, device=device, dtype=dtype) - (P - 1) / 2


def extract_patches(frames: Tensor, centre: Tensor, P: int) -> Tensor:
    """Eq. 6: a P×P patch per frame by bilinear sampling at ``centre + o_ij`` (differentiable in centre).

    ``frames [N,3,H0,W0]``, ``centre [N,2]`` (x_c, y_c) in [0,1] (clamped, :func:`clamp_centre`) ->
    ``[N,3,P,P]``. Pixel coordinate of patch pixel (i, j): ``(x_c W0 + o_j, y_c H0 + o_i)`` measured
    so that pixel k's centre sits at k + 0.5; with ``align_corners=False`` its normalised grid value
    is ``2 x / W0 - 1 = (2 x_c - 1) + 2 o_j / W0``.
    """
    N, _, H0, W0 = frames.shape
    centre = clamp_centre(centre, P, H0, W0)  # [N,2]
    o = patch_offsets(P, frames.device, frames.dtype)  # [P]
    gx = (2 * centre[:, 0:1] - 1) + 2 * o[None] / W0  # [N,P]  (columns j)
    gy = (2 * centre[:, 1:2] - 1) + 2 * o[None] / H0  # [N,P]  (rows i)
    grid = torch.stack([gx[:, None, :].expand(N, P, P), gy[:, :, None].expand(N, P, P)], -1)  # [N,P,P,2]
    return F.grid_sample(frames, grid.to(frames.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)  # [N,3,P,P]


def gumbel_topk(scores: Tensor, k: int, tau: float, noise: bool = True) -> Tensor:
    """Eq. 13's simulated limited-frame inference: k picks without replacement, highest (perturbed)
    score first, each a straight-through Gumbel-softmax one-hot over the T frames.

    ``scores [B,T]`` -> weights ``[B,k,T]``: exact one-hot rows in the forward pass, the gradient of
    the relaxed ``softmax((s + g) / tau)`` (restricted to frames not yet picked) in the backward pass.
    ``noise=False`` drops the Gumbel noise (deterministic top-k, used in eval).
    """
    B, T = scores.shape
    k = min(k, T)
    g = -torch.log(-torch.log(torch.rand_like(scores).clamp(1e-10, 1.0 - 1e-7))) if noise else 0.0
    logits = (scores + g) / tau  # [B,T]
    taken = torch.zeros_like(scores, dtype=torch.bool)  # [B,T]
    rows = []
    for _ in range(k):
        soft = logits.masked_fill(taken, float("-inf")).softmax(-1)  # [B,T]
        hard = F.one_hot(soft.argmax(-1), T).to(soft)  # [B,T]
        rows.append(hard + soft - soft.detach())  # straight-through, [B,T]
        taken = taken | hard.bool()
    return torch.stack(rows, 1)  # [B,k,T]


def saliency_order(saliency: Tensor) -> Tensor:
    """Positions ``[B,K]`` that sort ``saliency [B,K]`` most salient first (stable: ties keep their
    order). Training and inference both process the spatial glance's frames in this order (our choice:
    π's GRU and the running max then see the same sequence in both; inference's top-K is this order)."""
    return torch.argsort(-saliency, dim=1, stable=True)


def early_exit(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """AVGN⁺ (FrameExit-style): exit after the first frame whose ``max_c p_t >= threshold``.

    ``probs [B,K,C]`` (softmax predictions over the frames in processing order, aggregated as in
    eq. 8) -> (frames used ``[B]`` int64 in 1..K, K when no step passes; the prediction at exit
    ``[B,C]``). Frames used x per-frame cost prices the GFLOPs.
    """
    B, K, _ = probs.shape
    passed = probs.amax(-1) >= threshold  # [B,K]
    first = torch.where(passed.any(1), passed.float().argmax(1), torch.full((B,), K - 1, device=probs.device))
    return first + 1, probs[torch.arange(B, device=probs.device), first]  # [B], [B,C]


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """``x [B,T,...]`` at ``idx [B,K]`` -> ``[B,K,...]``."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


def _ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Soft-target CE of every step: ``logits [B,K,C]``, multi-hot ``labels [B,C]`` -> ``[B,K]``."""
    y = normalise_labels(labels.to(logits.dtype))[:, None, :].expand_as(logits)  # [B,K,C]
    return soft_cross_entropy(logits, y)  # [B,K]


def _encoder(dim: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _pos(n: int, dim: int) -> nn.Parameter:
    p = nn.Parameter(torch.zeros(n, dim))
    nn.init.trunc_normal_(p, std=0.02)
    return p


# ------------------------------------------------------------------------------------- blocks
class AVTeST(nn.Module):
    """Eqs. 2-3 and 14 + the mask encoder of L_mask: pooled ``e^G, e^A [B,T,D]`` -> saliency."""

    def __init__(self, c: AVGNConfig):
        super().__init__()
        self.embed_g = nn.Linear(c.d_g, c.d_av)  # -> ẽ^G
        self.embed_a = nn.Linear(c.d_a, c.d_av)  # -> ẽ^A
        self.mask_token = _pos(1, c.d_av)  # M (eq. 14)
        self.pos = _pos(c.max_frames, 2 * c.d_av)
        # TF_AV; without it (Table 4) a per-frame MLP of the same width, no attention across time
        self.tf = _encoder(2 * c.d_av, c.tf_heads, c.tf_layers, c.dropout) if c.av_test else nn.Sequential(
            nn.Linear(2 * c.d_av, 2 * c.d_av), nn.GELU(), nn.Linear(2 * c.d_av, 2 * c.d_av))
        self.fc_s = nn.Linear(2 * c.d_av, 1)  # FC_s (eq. 3)
        self.mask_encoder = nn.Sequential(nn.Linear(2 * c.d_av, 2 * c.d_av), nn.GELU(), nn.Linear(2 * c.d_av, c.d_av))

    def forward(self, g: Tensor, a: Tensor, t_g: int) -> dict[str, Tensor]:
        """``g [B,T,D_G]``, ``a [B,T,D_A]`` (both already detached) -> saliency [B,T], e_tf [B,T,2D],
        recon / target [B,T,D] (``ê^G`` and the stop-gradient ``ẽ^G``), masked [B,T]."""
        vis, aud = self.embed_g(g), self.embed_a(a)  # [B,T,D]
        x, masked = glance_tokens(vis, aud, self.mask_token[0], t_g)  # eq. 14, [B,T,2D]
        e_tf = self.tf(x + self.pos[:x.shape[1]] if isinstance(self.tf, nn.TransformerEncoder) else x)  # eq. 2
        return {"saliency": self.fc_s(e_tf)[..., 0],  # eq. 3, [B,T]
                "e_tf": e_tf, "recon": self.mask_encoder(e_tf), "target": vis.detach(), "masked": masked}


class AESPALayer(nn.Module):
    """One layer ``l`` of eq. 4: ``TF_A^l`` (absent in the last layer) and ``TF_G^l``, bottlenecks averaged."""

    def __init__(self, dim: int, heads: int, dropout: float, audio: bool):
        super().__init__()
        self.tf_a = _encoder(dim, heads, 1, dropout) if audio else None
        self.tf_g = _encoder(dim, heads, 1, dropout)

    def forward(self, z_a: Tensor, z_g: Tensor, b: Tensor) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """``z_a [N,T,D]``, ``z_g [N,HW,D]``, ``b [N,n_b,D]`` -> (z_a', z_g', b') (eq. 4)."""
        n = b.shape[1]
        out_g = self.tf_g(torch.cat([z_g, b], 1))  # [z^G_{l+1}, b̂^G], [N,HW+n_b,D]
        if self.tf_a is None:  # last layer: only z^G_{L+1} is used
            return None, out_g[:, :-n], None
        out_a = self.tf_a(torch.cat([z_a, b], 1))  # [z^A_{l+1}, b̂^A], [N,T+n_b,D]
        return out_a[:, :-n], out_g[:, :-n], 0.5 * (out_a[:, -n:] + out_g[:, -n:])  # AVG(b̂^A, b̂^G)


class AESPA(nn.Module):
    """Eq. 4: per frame, visual grid tokens + the whole audio sequence + shared bottlenecks -> e^GA."""

    def __init__(self, c: AVGNConfig):
        super().__init__()
        self.grid = c.grid
        self.proj_g = nn.Linear(c.d_pi or c.d_g, c.d_aespa)
        self.proj_a = nn.Linear(c.d_a, c.d_aespa)
        self.pos_g = _pos(c.grid[0] * c.grid[1], c.d_aespa)
        self.pos_a = _pos(c.max_frames, c.d_aespa)
        self.bottleneck = _pos(c.bottlenecks, c.d_aespa)  # b_1
        self.layers = nn.ModuleList(AESPALayer(c.d_aespa, c.aespa_heads, c.dropout, audio=l < c.aespa_layers - 1)
                                    for l in range(c.aespa_layers))

    def forward(self, e_g: Tensor, a: Tensor | None) -> Tensor:
        """``e_g [B,K,D_G,H,W]`` (selected frames), ``a [B,T,D_A]`` -> ``e^GA [B,K,d_aespa,H,W]``;
        ``a = None`` (AESPA switched off, Tables 4 / 6): the projected visual tokens, no audio."""
        if a is None:
            B, K, _, H, W = e_g.shape
            return self.proj_g(e_g.flatten(3).transpose(2, 3)).transpose(2, 3).reshape(B, K, -1, H, W)
        B, K, _, H, W = e_g.shape
        T = a.shape[1]
        z_g = self.proj_g(e_g.flatten(3).transpose(2, 3)) + self.pos_g  # z^G_1, [B,K,HW,D]
        z_g = z_g.flatten(0, 1)  # [BK,HW,D]
        z_a = self.proj_a(a) + self.pos_a[:T]  # z^A_1, [B,T,D]
        z_a = z_a[:, None].expand(B, K, T, -1).flatten(0, 1)  # one copy per frame t, [BK,T,D]
        b = self.bottleneck[None].expand(B * K, -1, -1)  # b_{1,t}, [BK,n_b,D]
        for layer in self.layers:
            z_a, z_g, b = layer(z_a, z_g, b)
        return z_g.transpose(1, 2).reshape(B, K, -1, H, W)  # e^GA, [B,K,D,H,W]


class PatchPolicy(nn.Module):
    """π of eq. 5 (AdaFocusV2's policy network): ``e^GA [B,K,D,H,W]`` -> ``u [B,K,2]`` in (0,1)."""

    def __init__(self, c: AVGNConfig):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(c.d_aespa, c.pi_reduce, 1), nn.Flatten(),
                                    nn.Linear(c.pi_reduce * c.grid[0] * c.grid[1], c.pi_hidden), nn.Tanh())
        self.gru = nn.GRU(c.pi_hidden, c.pi_hidden, batch_first=True)
        self.out = nn.Linear(c.pi_hidden, 2)

    def forward(self, e_ga: Tensor) -> Tensor:
        B, K = e_ga.shape[:2]
        h = self.encode(e_ga.flatten(0, 1)).view(B, K, -1)  # [B,K,hidden]
        h, _ = self.gru(h)  # step t sees e^GA_1..t, [B,K,hidden]
        return torch.sigmoid(self.out(h))  # (x, y), [B,K,2]


class LocalEncoder(nn.Module):
    """Default f_L (eq. 7): a tiny conv net on the P×P patch. Any replacement needs ``patch_size``
    (the FLOPs counter prices f_L at P×P) and ``out_dim``."""

    def __init__(self, patch_size: int, out_dim: int, width: int = 32):
        super().__init__()
        self.patch_size, self.out_dim = patch_size, out_dim
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, out_dim))

    def forward(self, patch: Tensor) -> Tensor:  # [N,3,P,P] -> [N,out_dim]
        return self.net(patch)


class CrossBlock(nn.Module):
    """Post-norm transformer block with cross-attention only: ``q = LN(q + MHA(q, kv, kv))``,
    ``q = LN(q + FFN(q))``."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norm1, self.norm2, self.drop = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.Dropout(dropout)

    def forward(self, q: Tensor, kv: Tensor) -> Tensor:
        q = self.norm1(q + self.drop(self.attn(q, kv, kv, need_weights=False)[0]))
        return self.norm2(q + self.drop(self.ffn(q)))


class AudioFusion(nn.Module):
    """ψ of eq. 8: query = pooled ``e^G_t`` of each processed frame, key/value = the T audio tokens."""

    def __init__(self, c: AVGNConfig):
        super().__init__()
        self.q = nn.Linear(c.d_g, c.d_psi)
        self.kv = nn.Linear(c.d_a, c.d_psi)
        self.pos = _pos(c.max_frames, c.d_psi)
        self.blocks = nn.ModuleList(CrossBlock(c.d_psi, c.psi_heads, c.dropout) for _ in range(c.psi_layers))

    def forward(self, g: Tensor, a: Tensor) -> Tensor:
        """``g [B,K,D_G]`` (detached by the caller), ``a [B,T,D_A]`` -> ``e^AT [B,K,d_psi]``."""
        q, kv = self.q(g), self.kv(a) + self.pos[:a.shape[1]]  # [B,K,D], [B,T,D]
        for blk in self.blocks:
            q = blk(q, kv)
        return q


class MaxAggClassifier(nn.Module):
    """f_C^AV / f_C^V / f_C^A (eqs. 8-10): ``h_t = ReLU(FC(x_t))``, running max over steps, FC -> C."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Eq. 8: ``x [B,K,in]`` -> logits ``[B,K,C]``, step t aggregating ``max_{s<=t} h_s``."""
        return self.head(torch.cummax(self.embed(x), dim=1).values)

    def per_frame(self, x: Tensor) -> Tensor:
        """Eq. 11: the same classifier on frame t alone (no max aggregation), ``[B,K,C]``."""
        return self.head(self.embed(x))


# -------------------------------------------------------------------------------------- model
@dataclass
class AVGNOutput:
    saliency: Tensor  # s [B,T] (eq. 3)
    glance: dict[str, Tensor]  # AVTeST outputs: e_tf, recon, target, masked
    has_audio: Tensor  # [B,T] bool
    frame_idx: Tensor | None = None  # [B,K] frames processed by the spatial glance, in order
    centre: Tensor | None = None  # [B,K,2] (x_c, y_c) in [0,1] (eq. 5)
    unit: Tensor | None = None  # [B,K,2] π's u in (0,1)^2 before centre_from_unit (L_search's prediction)
    frames: Tensor | None = None  # [B,K,3,H0,W0] the processed frames (kept for L_search in training)
    logits: Tensor | None = None  # p_t logits [B,K,C] (eq. 8)
    frame_logits: Tensor | None = None  # p'_t logits [B,K,C] (eq. 11)
    e_av: Tensor | None = None  # [e^G, e^L, e^AT] [B,K,F] (eq. 13's e^AV)
    aux: dict[str, Tensor] | None = None  # logits of FC^G, FC^L, f_C^V [B,K,C]; FC^A, f_C^A [B,T,C]

    def probs(self) -> Tensor:
        """``p_t = softmax`` of :attr:`logits`, ``[B,K,C]``."""
        return self.logits.softmax(-1)


class AVGN(nn.Module):
    """The whole network of Sec. 3 (see the module docstring); :meth:`loss` is Sec. 3.4."""

    def __init__(self, config: AVGNConfig, local_encoder: nn.Module | None = None,
                 pi_encoder: nn.Module | None = None):
        super().__init__()
        c = self.config = config
        f_l = local_encoder if local_encoder is not None else LocalEncoder(c.patch_size, c.d_local)
        if getattr(f_l, "patch_size", None) != c.patch_size or not hasattr(f_l, "out_dim"):
            raise ValueError(f"local encoder must expose patch_size == {c.patch_size} and out_dim")
        if getattr(f_l, "frozen", False):  # a pretrained f_L kept out of the state dict and the optimizer
            self._frozen = [f_l.eval().requires_grad_(False)]
        else:
            self.f_l_trained = f_l
        if (pi_encoder is None) != (c.d_pi is None):
            raise ValueError(f"avgn: a π encoder needs config.d_pi (its channels) and d_pi needs one; got "
                             f"d_pi={c.d_pi}, encoder {'given' if pi_encoder is not None else 'none'}")
        self._pi_encoder = [pi_encoder.eval().requires_grad_(False)] if pi_encoder is not None else []
        d_l = f_l.out_dim
        self.missing_audio = _pos(1, c.d_a)  # learned token for absent audio
        self.temporal = AVTeST(c)
        self.aespa = AESPA(c)
        self.pi = PatchPolicy(c)
        self.psi = AudioFusion(c)
        C, hid, p = c.num_classes, c.cls_hidden, c.dropout
        self.f_av = MaxAggClassifier(c.d_g + d_l + c.d_psi * c.use_psi, hid, C, p)  # f_C^AV (eq. 8)
        self.f_v = MaxAggClassifier(c.d_g + d_l, hid, C, p)  # f_C^V (eq. 9)
        self.f_a = MaxAggClassifier(c.d_a, hid, C, p)  # f_C^A (eq. 10)
        self.fc_g, self.fc_l, self.fc_a = nn.Linear(c.d_g, C), nn.Linear(d_l, C), nn.Linear(c.d_a, C)

    @property
    def f_l(self) -> nn.Module:
        """f_L (eq. 7): trained with the model, or frozen (held outside the module tree: its weights are
        the frame recognizer's file, not this checkpoint's)."""
        return self._frozen[0] if hasattr(self, "_frozen") else self.f_l_trained

    def train(self, mode: bool = True) -> "AVGN":
        super().train(mode)
        for m in getattr(self, "_frozen", []) + self._pi_encoder:
            m.eval()  # a frozen f_L / π encoder keeps its BatchNorm statistics
        return self

    # ---------------------------------------------------------------------------- input checks
    def _inputs(self, e_g: Tensor, e_a: Tensor, has_audio: Tensor | None,
                ids: Sequence | None) -> tuple[Tensor, Tensor]:
        """Validate, pool audio spatially, broadcast ``has_audio`` -> (``e_a [B,T,D_A]``, ``[B,T]`` bool)."""
        c = self.config
        if e_g.dim() != 5 or e_g.shape[2] != c.d_g or (not self._pi_encoder and tuple(e_g.shape[3:]) != tuple(c.grid)):
            want = f"{c.grid[0]},{c.grid[1]}" if not self._pi_encoder else "h,w"
            raise ValueError(f"e_g must be [B,T,{c.d_g},{want}], got {list(e_g.shape)}")
        if e_a.dim() == 5:
            e_a = e_a.mean((-2, -1))  # pool over H_A x W_A, [B,T,D_A]
        B, T = e_g.shape[:2]
        if e_a.dim() != 3 or tuple(e_a.shape) != (B, T, c.d_a):
            raise ValueError(f"e_a must be [B,T,{c.d_a}] (or [B,T,{c.d_a},H_A,W_A]) with B,T = {B},{T}, "
                             f"got {list(e_a.shape)}")
        if T > c.max_frames:
            raise ValueError(f"T={T} frames exceed avgn.max_frames={c.max_frames}")
        if has_audio is None:
            has_audio = torch.ones(B, T, dtype=torch.bool, device=e_a.device)
        has_audio = has_audio.to(device=e_a.device, dtype=torch.bool)
        has_audio = (has_audio[:, None] if has_audio.dim() == 1 else has_audio).expand(B, T)
        if not c.use_audio:  # Table 4 without audio: nothing reads the audio features
            has_audio = torch.zeros_like(has_audio)
        name = (lambda i: repr(ids[i])) if ids is not None else str
        bad_a = (~torch.isfinite(e_a).all(-1) & has_audio).any(1)  # [B]
        if bad_a.any():
            raise ValueError("non-finite audio features in video(s) "
                             + ", ".join(name(i) for i in bad_a.nonzero()[:, 0].tolist())
                             + " (mark them has_audio=False rather than feeding NaN)")
        bad_g = ~torch.isfinite(e_g.flatten(1)).all(1)  # [B]
        if bad_g.any():
            raise ValueError("non-finite visual features in video(s) "
                             + ", ".join(name(i) for i in bad_g.nonzero()[:, 0].tolist()))
        return e_a, has_audio

    # --------------------------------------------------------------------------------- forward
    def forward(self, e_g: Tensor, e_a: Tensor, frames: Tensor | None = None, *, has_audio: Tensor | None = None,
                t_g: int | None = None, frame_idx: Tensor | None = None,
                ids: Sequence | None = None, order: str = "given") -> AVGNOutput:
        """Temporal glance over all T frames; with ``frames [B,K,3,H0,W0]`` also the spatial glance and
        the prediction head on the K frames ``frame_idx [B,K]`` (default: all T in order, K = T).

        ``t_g`` (eq. 14) defaults to ``config.t_g``; ``ids`` names videos in error messages.
        ``order="saliency"`` processes the K frames most salient first (:func:`saliency_order` of this
        pass's detached ``s_t``), the order inference uses; ``"given"`` keeps ``frame_idx``'s order.
        """
        c = self.config
        e_a, has_audio = self._inputs(e_g, e_a, has_audio, ids)
        B, T = e_g.shape[:2]
        token = self.missing_audio[0].to(e_a.dtype)
        a_live = torch.where(has_audio[..., None], e_a, token)  # [B,T,D_A] (ψ, f_C^A, FC^A)
        a_stop = torch.where(has_audio[..., None], e_a.detach(), token)  # stop-gradient to f_A
        g = e_g.mean((-2, -1))  # pooled e^G, [B,T,D_G]
        glance = self.temporal(g.detach(), a_stop, c.t_g if t_g is None else t_g)
        out = AVGNOutput(saliency=glance.pop("saliency"), glance=glance, has_audio=has_audio)
        if frames is None:
            return out
        K, _, H0, W0 = frames.shape[1:]
        if frame_idx is None:
            if K != T:
                raise ValueError(f"frames hold K={K} frames but T={T}: pass frame_idx [B,K]")
            frame_idx = torch.arange(T, device=e_g.device).expand(B, T)
        if tuple(frame_idx.shape) != (B, K):
            raise ValueError(f"frame_idx must be [B,K] = [{B},{K}], got {list(frame_idx.shape)}")
        if order == "saliency":
            perm = saliency_order(_take(out.saliency.detach(), frame_idx))  # [B,K]
            frame_idx, frames = frame_idx.gather(1, perm), frames[torch.arange(B, device=frames.device)[:, None], perm]
        elif order != "given":
            raise ValueError(f"order={order!r} must be 'given' or 'saliency'")
        if c.patch == "centre":  # Table 6: a fixed centre crop, no π
            centre = torch.full((B, K, 2), 0.5, device=e_g.device, dtype=e_g.dtype)
        else:
            e_ga = self.aespa(self._pi_maps(e_g, frames, frame_idx), a_stop if c.use_aespa else None)  # eq. 4
            out.unit = self.pi(e_ga)  # [B,K,2]
            centre = centre_from_unit(out.unit, c.patch_size, H0, W0)  # eq. 5, [B,K,2]
            if c.loss_search and self.training:
                out.frames = frames
        at = centre.detach() if c.loss_search and c.search_detach else centre  # L_search alone trains π
        patches = extract_patches(frames.flatten(0, 1), at.flatten(0, 1), c.patch_size)  # eq. 6, [BK,3,P,P]
        e_l = self.f_l(patches).view(B, K, -1)  # eq. 7, [B,K,D_L]
        g_k = _take(g, frame_idx)  # e^G of the processed frames, [B,K,D_G]
        e_av = torch.cat([g_k, e_l] + ([self.psi(g_k.detach(), a_live)] if c.use_psi else []), -1)  # [B,K,F]
        e_v = torch.cat([g_k, e_l], -1)  # e^V (eq. 9)
        out.frame_idx, out.centre, out.e_av = frame_idx, centre, e_av
        out.logits, out.frame_logits = self.f_av(e_av), self.f_av.per_frame(e_av)  # eqs. 8, 11
        out.aux = {"fc_g": self.fc_g(g_k), "fc_l": self.fc_l(e_l), "f_v": self.f_v(e_v),
                   "fc_a": self.fc_a(a_live), "f_a": self.f_a(a_live)}
        return out

    def _pi_maps(self, e_g: Tensor, frames: Tensor, frame_idx: Tensor) -> Tensor:
        """The map AESPA / π read for the processed frames, detached, ``[B,K,D,H,W]``: e^G (eq. 5 as
        written) or, with a π encoder, its finer map of the same frames (``frames [B,K,3,H0,W0]``)."""
        if not self._pi_encoder:
            return _take(e_g, frame_idx).detach()
        B, K = frames.shape[:2]
        with torch.no_grad():
            m = self._pi_encoder[0](frames.flatten(0, 1))  # [BK,D,H,W]
        if m.shape[1] != self.config.d_pi or tuple(m.shape[2:]) != tuple(self.config.grid):
            raise ValueError(f"the π encoder's map is {list(m.shape[1:])}, config says "
                             f"[{self.config.d_pi},{self.config.grid[0]},{self.config.grid[1]}]")
        return m.view(B, K, *m.shape[1:])

    # ---------------------------------------------------------------------------------- losses
    def loss_terms(self, out: AVGNOutput, labels: Tensor) -> dict[str, Tensor]:
        """The switched-on losses of Sec. 3.4, each a scalar (mean over videos)."""
        on, terms = self.config.enabled(), {}
        if out.logits is None and set(on) - {"mask"}:
            raise ValueError("losses other than L_mask need the spatial glance: call forward with frames")
        if "p" in on:  # L_p: CE of p_t for every t
            terms["p"] = _ce(out.logits, labels).mean()
        if "v" in on:  # eq. 9
            aux = out.aux
            terms["v"] = (_ce(aux["fc_g"], labels) + _ce(aux["fc_l"], labels) + _ce(aux["f_v"], labels)).mean()
        if "a" in on:  # eq. 10, frames with audio only
            w = out.has_audio.to(out.aux["fc_a"].dtype)  # [B,T]
            per = _ce(out.aux["fc_a"], labels) + _ce(out.aux["f_a"], labels)  # [B,T]
            terms["a"] = (per * w).sum() / w.sum().clamp_min(1.0)
        if "mask" in on:
            terms["mask"] = masked_reconstruction_loss(out.glance)
        if "s" in on:  # eqs. 11-12
            s_k = _take(out.saliency, out.frame_idx)  # [B,K]
            terms["s"] = (s_k - saliency_pseudo_labels(out.frame_logits.softmax(-1))).abs().mean()
        if "ord" in on:  # eq. 13
            terms["ord"] = ordered_logits_loss(_take(out.saliency, out.frame_idx), out.e_av, self.f_av, labels,
                                               self.config.ord_k, self.config.gumbel_tau, noise=self.training)
        if "search" in on and out.frames is not None:  # our choice (module docstring); training only
            n = min(self.config.search_frames, out.unit.shape[1])
            target = self.search_target(out.frames[:, :n], labels)  # [B,n,2]
            terms["search"] = (out.unit[:, :n] - target).abs().sum(-1).mean()
        return terms

    def patch_logits(self, patches: Tensor) -> Tensor:
        """Class logits of P×P patches ``[N,3,P,P] -> [N,C]``: f_L's own classifier when it has one (the
        frame recognizer's), else FC^L on f_L's features (eq. 9's ``fc_l``)."""
        f_l = self.f_l
        return f_l.logits(patches) if hasattr(f_l, "logits") else self.fc_l(f_l(patches))

    @torch.no_grad()
    def search_target(self, frames: Tensor, labels: Tensor) -> Tensor:
        """L_search's target (our choice, see the module docstring): ``frames [B,n,3,H0,W0]``, multi-hot
        ``labels [B,C]`` -> ``u* [B,n,2]``, the soft-argmin over a G×G grid of admissible patch positions
        (``u`` in ``linspace(0, 1, G)^2``) of the soft-target cross-entropy of :meth:`patch_logits`:
        ``u* = sum_g softmax_g(-CE_g / tau) u_g``. A frame whose candidates all score alike gets the grid's
        mean, the centre; one where a single patch classifies the video's label gets that patch."""
        c = self.config
        B, n, _, H0, W0 = frames.shape
        G = c.search_grid
        axis = torch.linspace(0.0, 1.0, G, device=frames.device, dtype=frames.dtype)
        cand = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(G * G, 2)  # (u_x, u_y), [G²,2]
        centres = centre_from_unit(cand, c.patch_size, H0, W0)  # [G²,2]
        flat = frames.flatten(0, 1)  # [Bn,3,H0,W0]
        patches = extract_patches(flat.repeat_interleave(G * G, 0), centres.repeat(flat.shape[0], 1), c.patch_size)
        was = self.f_l.training
        self.f_l.eval()
        try:
            logits = self.patch_logits(patches).view(B, n, G * G, -1)  # [B,n,G²,C]
        finally:
            self.f_l.train(was)
        ce = soft_cross_entropy(logits, normalise_labels(labels)[:, None, None])  # [B,n,G²]
        w = (-ce / c.search_tau).softmax(-1)  # [B,n,G²]
        return w @ cand  # [B,n,2]

    def loss(self, out: AVGNOutput, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Weighted sum of the switched-on terms -> (loss, stats: ``loss_<term>``, ``acc``, ``n``)."""
        terms = self.loss_terms(out, labels)
        weights = self.config.enabled()
        total = sum((weights[k] * v for k, v in terms.items()), out.saliency.new_zeros(()))
        stats = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
        if out.logits is not None:
            pred = out.logits[:, -1].argmax(-1)  # [B]
            stats["acc"] = float((labels.gather(1, pred[:, None])[:, 0] > 0).float().mean())
        stats["n"] = float(labels.shape[0])
        return total, stats


def masked_reconstruction_loss(glance: dict[str, Tensor]) -> Tensor:
    """L_mask (Sec. 3.4): squared L2 between ``ê^G_t`` (mask encoder on ``e^TF_t``) and the
    stop-gradient ``ẽ^G_t`` over the masked frames ``t > T_G``, mean over frames and dims (0 if none)."""
    m = glance["masked"].to(glance["recon"].dtype)  # [B,T]
    err = ((glance["recon"] - glance["target"].detach()) ** 2).mean(-1)  # [B,T]
    return (err * m).sum() / m.sum().clamp_min(1.0)


def ordered_logits_loss(saliency: Tensor, e_av: Tensor, f_av: MaxAggClassifier, labels: Tensor, k: int,
                        tau: float, noise: bool = True) -> Tensor:
    """Eq. 13: reorder ``e^AV [B,T,F]`` by saliency ``[B,T]``, keep ``k`` frames by straight-through
    Gumbel top-k (:func:`gumbel_topk`), classify with ``f_C^AV`` (max aggregation) and take the CE.

    Eq. 13 writes one CE of the reordered sequence; with max aggregation its last step does not depend
    on the order, so the CE is averaged over the prefixes 1..k (as L_p averages over t): that is
    what rewards putting the most useful frames first, which early exit relies on.
    """
    w = gumbel_topk(saliency, k, tau, noise)  # [B,k,T]
    x = torch.einsum("bkt,btf->bkf", w, e_av)  # e^AV_{i_1..i_k}, [B,k,F]
    return _ce(f_av(x), labels).mean()


__all__ = ["AVGN", "AVGNConfig", "AVGNOutput", "AVTeST", "AESPA", "AESPALayer", "PatchPolicy", "LocalEncoder",
           "AudioFusion", "CrossBlock", "MaxAggClassifier", "glance_tokens", "saliency_pseudo_labels",
           "patch_centre_bounds", "clamp_centre", "centre_from_unit", "patch_offsets", "extract_patches",
           "gumbel_topk", "early_exit", "saliency_order", "masked_reconstruction_loss", "ordered_logits_loss", "LOSSES"]
