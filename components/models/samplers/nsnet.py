"""NSNet: Non-saliency Suppression Network (Xia, Wu et al., ECCV 2022), "NSNet: Non-saliency Suppression
Sampler for Efficient Video Recognition", arXiv:2207.10388.

A cheap sampler over stored light features ``light_feats [B,T,d]``; three modules (Sec. 3.2):

* **FEM** (Sec. 3.3, Table 6c): input projection d -> dim, learnable positional embedding, dropout
  (App. A.1: "dropout after the positional encoding layer"), then a temporal encoder chosen by
  ``params.fem``: ``transformer`` (the paper's; FFN width = dim, App. A.1), ``conv1d``, ``lstm``
  (bidirectional, projected back to dim) or ``mlp`` (per frame, no temporal mixing).
* **FSM** (Sec. 3.4): a frame classifier trained on the NS pseudo labels
  ``y_i^ns = [g_i y_v, 1 - g_i]`` (eq. 1 gives ``g_i``; the labels are prepared upstream and arrive as
  ``batch["ns_labels"] [B,T,C+1]``) with the soft cross-entropy of eq. 2

      L_f = - sum_i sum_j y_ij^ns log yhat_ij^ns        (summed over frames, mean over videos).

  Saliency (Sec. 3.4, last paragraph): max over the C real classes of the (C+1)-way softmax, then a
  softmax over time -> ``s^f [B,T]``. The other ``fsm_objective`` values are the Table 6d ablations,
  defined in :class:`FSM`.
* **VGM** (Sec. 3.5): temporal attention ``alpha_i = TempAttn(x_i)`` = FC -> sigmoid -> L1
  normalisation over T (the sigmoid makes the weights non-negative, as in the background-modelling
  attention of the paper's ref. [29]; the L1 normalisation makes them sum to 1), salient
  representation ``x_sal = sum_i alpha_i x_i``, non-salient representation
  ``x_ns = sum_i (1 - alpha_i) / T * x_i`` (exactly the paper's ``alpha_bar_i``), both through ONE
  shared (C+1)-way classifier, and eq. 3

      L_v = L_cls + gamma * L_ns,

  ``L_cls`` = CE(yhat_sal, [y_v, 0]), ``L_ns`` = CE(yhat_ns, [0, ..., 0, 1]). Saliency ``s^v = alpha``.
  Dropout (App. A.1): ``vgm_dropout_in`` before the classification FC (on both representations),
  ``vgm_dropout_attn`` on the attention weights after the attention layer (training only).
* **Objective** (eq. 4): ``L = L_v + L_f``.
* **Inference** (Sec. 4.2, App. A.2-A.3): FSM and VGM saliency are fused by the strategy ``strategy``
  with ``ratio`` the FSM share (``components.core.selection.fuse_select``). Both are inference-time settings
  (``fusion.nsnet_strategy`` / ``fusion.nsnet_ratio``, tuned on val by ``tune_fusion``), not
  constructor arguments: :meth:`NSNet.set_fusion` sets them on a loaded model, so changing them
  never retrains it. ``forward`` returns the fused score as ``saliency`` for the score fusions
  (add / mul / max) and the FSM score for the index fusions (which only exist as index sets;
  :meth:`NSNet.select` performs them).

Multi-hot video labels (``labels [B,C]``) are normalised to sum 1 wherever a single video label
distribution is needed (``L_cls``, the "baseline" frame target); for one-hot labels this is the paper.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from components.core import selection
from components.models.samplers import SAMPLERS, Batch, FeatureNorm, Sampler, SamplerOutput, light_stats
from components.core.params import FusionParams, NSNetParams

RANK_MARGIN = 1.0  # hinge margin of the "ranking" FSM objective (SCSampler-style, paper silent)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-sum_j target_j log softmax(logits)_j`` over the last axis ([..., n], [..., n] -> [...])."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def normalise_labels(labels: torch.Tensor) -> torch.Tensor:
    """Multi-hot [B,C] -> a distribution over C per video (one-hot stays one-hot; all-zero stays 0)."""
    return labels / labels.sum(-1, keepdim=True).clamp_min(1e-8)


def guiding_score(ns_labels: torch.Tensor) -> torch.Tensor:
    """g [B,T] from NS pseudo labels [B,T,C+1]: the last column is 1 - g."""
    return 1.0 - ns_labels[..., -1]


# ------------------------------------------------------------------------------------- FEM
class FEM(nn.Module):
    """Feature Embedding Module: [B,T,d] light features -> [B,T,dim] (Sec. 3.3, Table 6c)."""

    def __init__(self, light_dim: int, p: NSNetParams, max_frames: int):
        super().__init__()
        self.kind, self.max_frames = p.fem, max_frames
        self.proj = nn.Linear(light_dim, p.dim)
        self.pos = nn.Parameter(torch.zeros(max_frames, p.dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(p.dropout)
        if p.fem == "transformer":
            if p.dim % p.heads:
                raise ValueError(f"nsnet.dim={p.dim} must be divisible by nsnet.heads={p.heads}")
            layer = nn.TransformerEncoderLayer(p.dim, p.heads, dim_feedforward=p.dim, dropout=p.dropout,
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, p.layers, enable_nested_tensor=False)
        elif p.fem == "conv1d":
            self.encoder = nn.ModuleList(nn.Conv1d(p.dim, p.dim, kernel_size=3, padding=1) for _ in range(p.layers))
        elif p.fem == "lstm":
            self.encoder = nn.LSTM(p.dim, p.dim, num_layers=p.layers, batch_first=True, bidirectional=True,
                                   dropout=p.dropout if p.layers > 1 else 0.0)
            self.out = nn.Linear(2 * p.dim, p.dim)
        elif p.fem == "mlp":
            self.encoder = nn.ModuleList(nn.Linear(p.dim, p.dim) for _ in range(p.layers))
        else:
            raise ValueError(f"unknown nsnet.fem {p.fem!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if T > self.max_frames:
            raise ValueError(f"T={T} frames exceed max_frames={self.max_frames}")
        h = self.drop(self.proj(x) + self.pos[:T])  # [B,T,d] -> [B,T,dim]
        if self.kind == "transformer":
            return self.encoder(h)  # [B,T,dim]
        if self.kind == "conv1d":
            h = h.transpose(1, 2)  # [B,dim,T]
            for conv in self.encoder:
                h = h + self.drop(F.relu(conv(h)))  # residual temporal conv, [B,dim,T]
            return h.transpose(1, 2)  # [B,T,dim]
        if self.kind == "lstm":
            h, _ = self.encoder(h)  # [B,T,2*dim]
            return self.out(h)  # [B,T,dim]
        for fc in self.encoder:  # mlp: per frame, no temporal mixing
            h = h + self.drop(F.gelu(fc(h)))  # [B,T,dim]
        return h


# ------------------------------------------------------------------------------------- FSM
class FSM(nn.Module):
    """Frame Scrutinize Module: frame head + the ``fsm_objective`` of Table 6d.

    Objectives (all frame-level losses summed over frames, averaged over videos, as eq. 2 is written
    per video; ranking averages over the ordered pairs instead):

    * ``ns`` (ours, eq. 2): (C+1)-way head, soft CE against ``ns_labels = [g y, 1 - g]``.
    * ``baseline`` (Table 6a/6d, SCSampler-like): C-way head, every frame's target is the video label
      (normalised multi-hot), CE.
    * ``baseline_plus`` (Table 6d): "transforming the hard one-hot video label to a soft one-hot label
      using the guiding saliency score": C-way head, soft target ``g y`` (= ``ns_labels[..., :C]``), no
      non-salient class. (Paper definition; NOT a (C+1)-way hard-label variant.)
    * ``regression`` (SMART [10]): 1-output head, ``g_hat = sigmoid(r)``, squared error to g.
    * ``ranking`` (SCSampler [20]): 1-output head ``r``; hinge ``max(0, m - (r_i - r_j))`` over every
      ordered pair of frames of a video with ``g_i > g_j`` (m = :data:`RANK_MARGIN`), mean over pairs.

    Frame confidence -> saliency, uniformly: the confidence is in [0, 1] (max real-class softmax
    probability for the classification heads; ``sigmoid(r)`` for regression / ranking, monotone in r),
    and ``s^f = softmax over T`` of it, so every variant yields a distribution over frames like ``alpha``.
    """

    def __init__(self, dim: int, num_classes: int, objective: str):
        super().__init__()
        self.objective, self.C = objective, num_classes
        out = {"ns": num_classes + 1, "baseline": num_classes, "baseline_plus": num_classes,
               "regression": 1, "ranking": 1}
        if objective not in out:
            raise ValueError(f"unknown nsnet.fsm_objective {objective!r}")
        self.head = nn.Linear(dim, out[objective])

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,T,dim] -> (frame logits [B,T,out], saliency s^f [B,T])."""
        logits = self.head(h)  # [B,T,out]
        if self.objective in ("regression", "ranking"):
            conf = torch.sigmoid(logits[..., 0])  # [B,T]
        else:
            conf = logits.softmax(-1)[..., :self.C].amax(-1)  # max over the C real classes, [B,T]
        return logits, conf.softmax(-1)  # softmax over time, [B,T]

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        obj = self.objective
        if obj == "baseline":
            y = normalise_labels(batch["labels"].to(logits.dtype))  # [B,C]
            per_frame = soft_cross_entropy(logits, y[:, None, :].expand_as(logits))  # [B,T]
            return per_frame.sum(1).mean()
        if "ns_labels" not in batch:
            raise KeyError(f"nsnet fsm_objective={obj!r} needs batch['ns_labels'] [B,T,C+1]")
        ns = batch["ns_labels"].to(logits.dtype)  # [B,T,C+1]
        if obj == "ns":
            return soft_cross_entropy(logits, ns).sum(1).mean()  # eq. 2
        if obj == "baseline_plus":
            return soft_cross_entropy(logits, ns[..., :self.C]).sum(1).mean()  # target g*y, [B,T] -> []
        g = guiding_score(ns)  # [B,T]
        r = logits[..., 0]  # [B,T]
        if obj == "regression":
            return ((torch.sigmoid(r) - g) ** 2).sum(1).mean()
        # ranking: pairs (i, j) of one video with g_i > g_j should score r_i >= r_j + margin
        diff = r[:, :, None] - r[:, None, :]  # r_i - r_j, [B,T,T]
        valid = (g[:, :, None] > g[:, None, :]).to(r.dtype)  # [B,T,T]
        hinge = F.relu(RANK_MARGIN - diff) * valid  # [B,T,T]
        return hinge.sum() / valid.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------- VGM
class VGM(nn.Module):
    """Video Glimpse Module: temporal attention, salient / non-salient pooling, shared (C+1)-way FC."""

    def __init__(self, dim: int, num_classes: int, p: NSNetParams):
        super().__init__()
        self.attn = nn.Linear(dim, 1)
        self.drop_attn = nn.Dropout(p.vgm_dropout_attn)
        self.drop_in = nn.Dropout(p.vgm_dropout_in)
        self.cls = nn.Linear(dim, num_classes + 1)  # ONE classifier for both representations

    @staticmethod
    def pool(h: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_sal = sum_i alpha_i h_i and x_ns = sum_i (1 - alpha_i) / T h_i ([B,T,dim],[B,T] -> 2x[B,dim])."""
        T = h.shape[1]
        x_sal = torch.einsum("bt,btd->bd", alpha, h)  # [B,dim]
        x_ns = torch.einsum("bt,btd->bd", (1.0 - alpha) / T, h)  # [B,dim]
        return x_sal, x_ns

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B,T,dim] -> (alpha [B,T], salient logits [B,C+1], non-salient logits [B,C+1])."""
        w = torch.sigmoid(self.attn(h)[..., 0])  # non-negative, [B,T]
        alpha = w / w.sum(-1, keepdim=True)  # L1 normalisation over T, [B,T]
        x_sal, x_ns = self.pool(h, self.drop_attn(alpha))  # 2x [B,dim]
        return alpha, self.cls(self.drop_in(x_sal)), self.cls(self.drop_in(x_ns))  # [B,T], 2x [B,C+1]

    @staticmethod
    def loss(logits_sal: torch.Tensor, logits_ns: torch.Tensor, labels: torch.Tensor,
             gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 3: (L_v, L_cls, L_ns), each averaged over videos."""
        y = normalise_labels(labels.to(logits_sal.dtype))  # [B,C]
        y_sal = F.pad(y, (0, 1))  # [y_v, 0], [B,C+1]
        l_cls = soft_cross_entropy(logits_sal, y_sal).mean()
        l_ns = -F.log_softmax(logits_ns, dim=-1)[:, -1].mean()  # target [0,...,0,1]
        return l_cls + gamma * l_ns, l_cls, l_ns


# ------------------------------------------------------------------------------------ model
class NSNet(Sampler):
    trainable = True
    inputs = ("light_feats",)
    #: inference-time fusion settings (the ``fusion.*`` param names), see :meth:`select`
    fusion_keys = ("nsnet_strategy", "nsnet_ratio")
    branch_names = ("fsm", "vgm")  # fused in this order (the ratio is the FSM share)
    sweep_space = (("nsnet", "gamma", 0.0, 1.0),)  # eq. 3's non-salient weight
    pseudo_labels = ("ns",)  # eq. 1's soft labels [g y, 1 - g] (the pseudo_labels stage), batch key ns_labels
    strategy: str = FusionParams().fixed()["nsnet_strategy"]  # index_union (the paper default)
    ratio: float = FusionParams().fixed()["nsnet_ratio"]  # 0.6

    def __init__(self, num_classes: int, light_dim: int, params: NSNetParams = NSNetParams(),
                 max_frames: int = 512, light_mean: torch.Tensor | None = None,
                 light_std: torch.Tensor | None = None):
        super().__init__()
        self.C, self.params = num_classes, params
        self.light_norm = FeatureNorm(light_mean, light_std)  # train-split stats (see FeatureNorm)
        self.fem = FEM(light_dim, params, max_frames)
        self.fsm = FSM(params.dim, num_classes, params.fsm_objective)
        self.vgm = VGM(params.dim, num_classes, params)

    def forward(self, batch: Batch) -> SamplerOutput:
        h = self.fem(self.light_norm(batch["light_feats"].float()))  # [B,T,d] -> [B,T,dim]
        fsm_logits, s_f = self.fsm(h)  # [B,T,out], [B,T]
        alpha, logits_sal, logits_ns = self.vgm(h)  # [B,T], [B,C+1], [B,C+1]
        return SamplerOutput(
            saliency=self.fused(s_f, alpha),  # [B,T]
            branches={"fsm": s_f, "vgm": alpha},
            logits={"vgm": logits_sal[:, :self.C]},  # real classes, [B,C]
            aux={"fsm_logits": fsm_logits, "vgm_logits_sal": logits_sal, "vgm_logits_ns": logits_ns},
        )

    def loss(self, batch: Batch, out: SamplerOutput) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]  # [B,C]
        l_f = self.fsm.loss(out.aux["fsm_logits"], batch)
        l_v, l_cls, l_ns = self.vgm.loss(out.aux["vgm_logits_sal"], out.aux["vgm_logits_ns"], labels,
                                         self.params.gamma)
        pred = out.aux["vgm_logits_sal"][:, :self.C].argmax(-1)  # [B]
        acc = (labels.gather(1, pred[:, None])[:, 0] > 0).float().mean()  # top-1 hit of the label set
        loss = l_v + l_f  # eq. 4
        return loss, {"loss_f": float(l_f.detach()), "loss_cls": float(l_cls.detach()),
                      "loss_ns": float(l_ns.detach()), "acc": float(acc), "n": float(labels.shape[0])}

    @classmethod
    def build_kwargs(cls, p, store, seed: int) -> dict:
        mean, std = light_stats(store)
        return {"num_classes": len(store.classes), "light_dim": store.array("train", "light_feats").shape[-1],
                "params": p.nsnet, "light_mean": mean, "light_std": std}

    @classmethod
    def untrained(cls, p, num_classes: int, light: nn.Module, text_dim: int = 384) -> "NSNet":
        return nsnet(num_classes, light.num_features, p.nsnet, max_frames=max(p.frames.T, 512))

    @classmethod
    def suggest_fusion(cls, trial, defaults) -> dict:
        """Strategy in ``FUSION_STRATEGIES`` and, for the strategies that read it, ratio in [0, 1] (else the default)."""
        s = trial.suggest_categorical("nsnet_strategy", list(selection.FUSION_STRATEGIES))
        r = (trial.suggest_float("nsnet_ratio", 0.0, 1.0) if s in selection.RATIO_STRATEGIES
             else float(defaults["nsnet_ratio"]))
        return {"nsnet_strategy": s, "nsnet_ratio": r}

    @classmethod
    def fusion_trial_defaults(cls, defaults) -> dict:
        fixed = dict(defaults)
        if fixed["nsnet_strategy"] not in selection.RATIO_STRATEGIES:
            fixed.pop("nsnet_ratio")
        return fixed

    @classmethod
    def fusion_probe(cls, i: int, n: int) -> dict:
        return {"nsnet_strategy": "score_add", "nsnet_ratio": i / n}

    @classmethod
    def fusion_rule(cls, values) -> tuple[str, float, str]:
        strategy, ratio = str(values["nsnet_strategy"]), float(values["nsnet_ratio"])
        return strategy, ratio, f"{strategy} ratio={ratio:.3f}"

    def fused(self, s_f: torch.Tensor, s_v: torch.Tensor) -> torch.Tensor:
        """Score fusion (App. A.3) of the two [B,T] saliencies at the current strategy / ratio, with
        :func:`components.core.selection.fuse_scores` on the tensors (both are already distributions over
        time: softmax, L1-normalised attention); index fusions keep the FSM score."""
        if not self.strategy.startswith("score_"):
            return s_f
        return selection.fuse_scores(s_f, s_v, self.strategy[len("score_"):], self.ratio, normalize=False)

    def set_fusion(self, values: dict) -> "NSNet":
        """Set ``nsnet_strategy`` / ``nsnet_ratio`` (either or both) for later :meth:`select` calls."""
        self.strategy, self.ratio = self._fusion(values)
        return self

    def _fusion(self, values) -> tuple[str, float]:
        """``(strategy, ratio)``: ``values`` checked, each one not given at the model's."""
        values = self.check_fusion(values)
        strategy, ratio = self.strategy, self.ratio
        if "nsnet_strategy" in values:
            if values["nsnet_strategy"] not in selection.FUSION_STRATEGIES:
                raise ValueError(f"nsnet fusion: unknown strategy {values['nsnet_strategy']!r}; "
                                 f"valid: {', '.join(selection.FUSION_STRATEGIES)}")
            strategy = str(values["nsnet_strategy"])
        if "nsnet_ratio" in values:
            ratio = selection.check_ratio(values["nsnet_ratio"], "nsnet_ratio")
        return strategy, ratio

    def select(self, out: SamplerOutput, K: int, fusion=None) -> np.ndarray:
        """K distinct frames per video: FSM and VGM fused by ``fusion``'s strategy / ratio (else the
        model's; App. A.2-A.3)."""
        strategy, ratio = self._fusion(fusion)
        fsm = out.branches["fsm"].detach().float().cpu().numpy()  # [B,T]
        vgm = out.branches["vgm"].detach().float().cpu().numpy()  # [B,T]
        return selection.fuse_select(fsm, vgm, K, strategy, ratio)


@SAMPLERS.register("nsnet")
def nsnet(num_classes: int, light_dim: int, params: NSNetParams = NSNetParams(), max_frames: int = 512,
          light_mean: torch.Tensor | None = None, light_std: torch.Tensor | None = None) -> NSNet:
    return NSNet(num_classes, light_dim, params, max_frames, light_mean, light_std)


__all__ = ["NSNet", "FEM", "FSM", "VGM", "nsnet", "soft_cross_entropy", "RANK_MARGIN"]
