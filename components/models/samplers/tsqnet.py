"""TSQNet: Temporal Saliency Query Network (Xia, Wang, Wu et al., ECCV 2022), "Temporal Saliency Query Network for Efficient Video Recognition",
arXiv:2207.10379 (Sec. 3.1-3.3, eqs. 1-5; supplementary A, C.1, C.3).

Two instantiations of one **TSQ mechanism** (Sec. 3.1) over cached features:

* **VQM** (visual, Sec. 3.2) reads ``light_feats [B,T,d]``; its TSQ embeddings ``E^v [C,d]`` start
  from the visual class prototypes (supp. A) and are projected d -> d' by a 1D conv (kernel 1), like
  the frames.
* **TQM** (textual, Sec. 3.2) reads ``object_scores O [B,T,N_o]`` (ImageNet softmax scores, N_o =
  1000) and turns each frame into ``x^t_i = O_i W`` with the frozen object-name embeddings
  ``W = object_text [N_o,e]``; only the top ``object_topk`` scores per frame are kept, the rest set to
  0 (Table 9 "Top10"; 0 keeps all). The kept scores are **not renormalised**: the paper writes
  ``O_i W`` with the recognizer's scores, and an unconfident frame keeping a small-norm embedding is
  part of the signal. ``E^t [C,e]`` starts from the class-name embeddings ``class_text``.

A TSQ layer (eq. 1) is single-head cross-attention of the C queries over the T frames
(``Q = E W_q``, ``K = X W_k``, ``V = X W_v``, no biases, as written)::

    A_c = softmax(Q_c K^T / sqrt(d')),  R_c = A_c V                                  (1)

followed by the FFN of the Transformer decoder it is built on (ref. [39]): post-norm
``R_hat = LayerNorm(R + FFN(R))``, FFN = Linear(d', 4d') -> ReLU -> Linear(4d', d'), dropout on the
sublayer outputs. The paper only says "sequential linear layers with residual connections"; the
LayerNorm and the 4x width are [39]'s. Eq. 1 is kept literally: the response is ``A V`` with no
residual from the query. A learnable positional embedding (supp. A) is added to the projected frame
sequence (keys and values). The class-specific classifier (eq. 2) is one einsum over a ``[C,d']``
weight::

    z_c = W_c R_hat_c + b_c                                                          (2)

**Swap attention** (eq. 3), training only: each module's (last-layer, per-head) attention gathers the
*other* module's value sequence, i.e. with ``V^v = X_hat^v W_v^v`` and ``V^t = X_hat^t W_v^t`` (each
module's own value projection of its own projected, position-embedded frames)::

    R^{t->v} = A^t V^v,   R^{v->t} = A^v V^t                                         (3)

and each swapped response goes through the FFN + classifier of the module whose features it gathered
(``R^{t->v}``: VQM's -> ``z^{t->v}``; ``R^{v->t}``: TQM's -> ``z^{v->t}``). The objective is::

    L = L_v + L_t + alpha L_{t->v} + beta L_{v->t}                                   (4)

each term a cross-entropy of the coarse prediction ``z`` against the label distribution
``labels / labels.sum()`` (= the paper's "regular cross entropy" for one-hot labels). Single-branch
models have only their own term.

**Inference** (Sec. 3.3, eq. 5): per module, the attention rows of the ``top_classes`` most probable
classes are summed, weighted by the coarse prediction::

    s_i = sum_{c in top-k(z)} p_c A_{c,i},   p = softmax(z)                           (5)

The paper writes ``z_c`` ("coarse video prediction"); raw logits can be negative and would flip a
class's attention row into an anti-saliency, so we use the softmax probabilities. ``select`` fuses the
two modules by the index union of supp. A (``components.core.selection.tsqnet_union_select``, ratio
``lambda_v`` of VQM frames); ``saliency`` is the VQM score (or the only branch's). ``lambda_v`` is an
inference-time setting (``fusion.lambda_v``, tuned on val by ``tune_fusion``): it is set on a loaded
model with :meth:`TSQNet.set_fusion`, so changing it never retrains the sampler (the constructor
argument only gives the initial value and is not stored in checkpoints by ``train_sampler``).

Ablations (``TSQNetParams``): ``attention="class_agnostic"`` uses one query (initialised from the mean
prior) whose attention row is the saliency directly (Table 7); with one response, both classifier
kinds are one FC d' -> C ("CA+CA", supp. C.1). ``classifier="class_agnostic"`` with C queries shares
one weight vector over classes, ``z_c = w R_hat_c + b_c`` (``b`` in R^C, Sec. 3.1). ``self_attention``
adds post-norm query self-attention before the cross-attention in every layer (supp. C.3).
``layers > 1`` stacks TSQ layers, each layer's responses being the next layer's queries; saliency,
swap attention and classification use the LAST layer. ``heads > 1`` splits d' into heads (scale
``sqrt(d'/h)``, heads concatenated, no output projection, as eq. 1 has none); the saliency uses the
head-averaged map (still a distribution over frames), swap attention uses the per-head maps.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from components.core import selection
from components.evaluation.metrics import salient_recall
from components.models.samplers import SAMPLERS, Batch, FeatureNorm, Sampler, SamplerOutput, light_stats
from components.core.params import TSQNetParams


# ------------------------------------------------------------------------------------- helpers
def soft_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over videos of ``-sum_c y_c log softmax(z)_c`` with ``y = labels / labels.sum()``."""
    y = labels / labels.sum(-1, keepdim=True).clamp_min(1e-12)  # [B,C]
    return -(y * logits.log_softmax(-1)).sum(-1).mean()


def keep_top_objects(scores: Tensor, k: int) -> Tensor:
    """Keep the ``k`` highest object scores per frame, zero the rest (k = 0 or >= N_o keeps all)."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    vals, idx = scores.topk(k, dim=-1)  # [B,T,k]
    return torch.zeros_like(scores).scatter(-1, idx, vals)  # [B,T,N_o]


def aggregate_saliency(z: Tensor, A: Tensor, top_classes: int) -> Tensor:
    """Eq. 5: ``z [B,C]``, ``A [B,Q,T]`` -> ``s [B,T]``; a single query's row (CA attention) as is."""
    if A.shape[1] == 1:
        return A[:, 0]  # [B,T]
    p = z.softmax(-1)  # [B,C]
    pk, idx = p.topk(min(top_classes, p.shape[1]), dim=-1)  # [B,k]
    Ak = A.gather(1, idx[:, :, None].expand(-1, -1, A.shape[-1]))  # [B,k,T]
    return (pk[:, :, None] * Ak).sum(1)  # [B,T]


# -------------------------------------------------------------------------------------- blocks
class CrossAttention(nn.Module):
    """Eq. 1 with ``h`` heads: queries ``[B,Q,D]`` attend over frames ``[B,T,D]``.

    ``nn.Linear`` computes ``x W^T``, so the paper's right-multiplied ``W_q`` is ``q.weight.T``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)  # W_q
        self.k = nn.Linear(dim, dim, bias=False)  # W_k
        self.v = nn.Linear(dim, dim, bias=False)  # W_v

    def _split(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        return x.view(B, N, self.heads, D // self.heads).transpose(1, 2)  # [B,h,N,D/h]

    def weights(self, q: Tensor, x: Tensor) -> Tensor:
        Q, K = self._split(self.q(q)), self._split(self.k(x))  # [B,h,Q,dh], [B,h,T,dh]
        return torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1]), dim=-1)  # [B,h,Q,T]

    def values(self, x: Tensor) -> Tensor:
        return self._split(self.v(x))  # [B,h,T,dh]

    @staticmethod
    def gather(A: Tensor, V: Tensor) -> Tensor:
        """Responses ``R = A V`` with heads concatenated: ``[B,h,Q,T] x [B,h,T,dh] -> [B,Q,D]``."""
        return (A @ V).transpose(1, 2).flatten(2)  # [B,h,Q,dh] -> [B,Q,h,dh] -> [B,Q,D]


class FFN(nn.Module):
    """The decoder FFN with residual and post-norm (ref. [39]): ``R_hat = LN(R + FFN(R))``."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.ln = nn.LayerNorm(dim)

    def forward(self, R: Tensor) -> Tensor:
        return self.ln(R + self.net(R))  # [B,Q,D]


class TSQLayer(nn.Module):
    """(optional query self-attention) -> cross-attention (eq. 1) -> FFN."""

    def __init__(self, dim: int, heads: int, dropout: float, self_attention: bool):
        super().__init__()
        self.sa = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) if self_attention else None
        self.ln_sa = nn.LayerNorm(dim) if self_attention else None
        self.attn = CrossAttention(dim, heads)
        self.drop = nn.Dropout(dropout)
        self.ffn = FFN(dim, dropout)

    def respond(self, R: Tensor) -> Tensor:
        """Response ``[B,Q,D]`` -> ``R_hat [B,Q,D]`` (shared by the swap responses of eq. 3)."""
        return self.ffn(self.drop(R))

    def forward(self, q: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q [B,Q,D]``, ``x [B,T,D]`` -> ``(R_hat [B,Q,D], A [B,h,Q,T], R [B,Q,D])``."""
        if self.sa is not None:
            q = self.ln_sa(q + self.drop(self.sa(q, q, q, need_weights=False)[0]))
        A = self.attn.weights(q, x)  # [B,h,Q,T]
        R = self.attn.gather(A, self.attn.values(x))  # [B,Q,D]
        return self.respond(R), A, R


class Classifier(nn.Module):
    """Eq. 2. ``class_specific``: ``z_c = W_c R_hat_c + b_c`` (weight ``[C,D]``); ``class_agnostic``:
    ``z_c = w R_hat_c + b_c`` (weight ``[D]``); one query: one FC ``D -> C`` (either kind, supp. C.1)."""

    def __init__(self, dim: int, num_classes: int, num_queries: int, kind: str):
        super().__init__()
        self.kind = "single" if num_queries == 1 else kind
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default init range
        if self.kind == "single":
            self.fc = nn.Linear(dim, num_classes)
            return
        shape = (num_classes, dim) if self.kind == "class_specific" else (dim,)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))  # [C,D] or [D]
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))  # [C]

    def forward(self, R_hat: Tensor) -> Tensor:
        if self.kind == "single":
            return self.fc(R_hat[:, 0])  # [B,D] -> [B,C]
        if self.kind == "class_specific":
            return torch.einsum("bcd,cd->bc", R_hat, self.weight) + self.bias  # [B,C,D] -> [B,C]
        return R_hat @ self.weight + self.bias  # [B,C,D] -> [B,C]


class TSQModule(nn.Module):
    """One TSQ instantiation (VQM or TQM): projections, TSQ embeddings, TSQ layers, classifier."""

    def __init__(self, in_dim: int, num_classes: int, p: TSQNetParams, prior: Tensor | None,
                 max_frames: int, name: str):
        super().__init__()
        D, self.max_frames = p.dim, max_frames
        nq = num_classes if p.attention == "class_specific" else 1
        if p.init == "prior":
            if prior is None:
                raise ValueError(f"tsqnet {name}: init='prior' needs its prior "
                                 f"({'visual_prototypes' if name == 'vqm' else 'class_text'}) [C,{in_dim}]")
            if tuple(prior.shape) != (num_classes, in_dim):
                raise ValueError(f"tsqnet {name}: prior has shape {tuple(prior.shape)}, "
                                 f"expected [{num_classes},{in_dim}]")
            E = prior.detach().float().clone()  # [C,in]
            if nq == 1:
                E = E.mean(0, keepdim=True)  # [1,in]: the class-agnostic query starts at the mean prior
        else:
            E = torch.randn(nq, in_dim)  # [Q,in] (nn.Embedding's N(0,1))
        self.embed = nn.Parameter(E)  # E: TSQ embeddings [Q,in]
        self.query_proj = nn.Conv1d(in_dim, D, 1)  # E -> d'
        self.frame_proj = nn.Conv1d(in_dim, D, 1)  # frames -> d'
        self.pos = nn.Parameter(torch.randn(max_frames, D) * 0.02)  # [T_max,D]
        self.layers = nn.ModuleList(TSQLayer(D, p.heads, p.dropout, p.self_attention) for _ in range(p.layers))
        self.classifier = Classifier(D, num_classes, nq, p.classifier)

    def frames(self, x: Tensor) -> Tensor:
        """Input sequence ``[B,T,in]`` -> projected, position-embedded ``X_hat [B,T,D]``."""
        T = x.shape[1]
        if T > self.max_frames:
            raise ValueError(f"tsqnet: T={T} frames exceed max_frames={self.max_frames}")
        return self.frame_proj(x.transpose(1, 2)).transpose(1, 2) + self.pos[:T]  # [B,in,T] -> [B,D,T] -> [B,T,D]

    def queries(self) -> Tensor:
        return self.query_proj(self.embed.t()[None])[0].t()  # [1,in,Q] -> [1,D,Q] -> [Q,D]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        X = self.frames(x)  # [B,T,D]
        q = self.queries()[None].expand(X.shape[0], -1, -1)  # [B,Q,D]
        for layer in self.layers:
            q, A, R = layer(q, X)  # [B,Q,D], [B,h,Q,T], [B,Q,D]
        return {"X": X, "A": A, "R": R, "z": self.classifier(q)}  # z [B,C] from the last layer

    def swap(self, A_other: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 3: the other module's last-layer attention ``[B,h,Q,T]`` gathers this module's values;
        -> ``(R [B,Q,D], z [B,C])`` through this module's FFN and classifier."""
        last = self.layers[-1]
        R = last.attn.gather(A_other, last.attn.values(X))  # [B,Q,D]
        return R, self.classifier(last.respond(R))


# --------------------------------------------------------------------------------------- model
class TSQNet(Sampler):
    trainable = True
    inputs = ("light_feats", "object_scores")
    fusion_keys = ("lambda_v",)  # inference-time fusion setting (``fusion.lambda_v``), see :meth:`select`
    branch_names = ("vqm", "tqm")  # the union takes round-half-up lambda_v K frames from VQM, the rest from TQM
    sweep_space = (("tsqnet", "alpha", 0.0, 1.5), ("tsqnet", "beta", 0.0, 1.5))  # eq. 4's swap-loss weights

    @classmethod
    def build_kwargs(cls, p, store, seed: int) -> dict:
        """Light-space prototypes (VQM init), object / class-name text embeddings (TQM), train-split light
        statistics (:class:`FeatureNorm`)."""
        import numpy as np

        mean, std = light_stats(store)
        protos = np.load(store.folder.parent / "prototypes.npz")["light"]
        return {"num_classes": len(store.classes), "light_dim": store.array("train", "light_feats").shape[-1],
                "params": p.tsqnet, "visual_prototypes": torch.from_numpy(protos),
                "object_text": torch.from_numpy(store.load("text_objects")),
                "class_text": torch.from_numpy(store.load("text_classes")), "light_mean": mean, "light_std": std}

    @classmethod
    def untrained(cls, p, num_classes: int, light: nn.Module, text_dim: int = 384) -> "TSQNet":
        import dataclasses

        return tsqnet(num_classes, light.num_features, dataclasses.replace(p.tsqnet, init="random"),
                      object_text=torch.zeros(1000, text_dim), lambda_v=p.fusion.fixed()["lambda_v"],
                      max_frames=max(p.frames.T, 512))

    @classmethod
    def suggest_fusion(cls, trial, defaults) -> dict:
        return {"lambda_v": trial.suggest_float("lambda_v", 0.0, 1.0)}

    @classmethod
    def fusion_probe(cls, i: int, n: int) -> dict:
        return {"lambda_v": i / n}

    @classmethod
    def fusion_rule(cls, values) -> tuple[str, float, str]:
        return "tsqnet_union", float(values["lambda_v"]), f"lambda_v={float(values['lambda_v']):.3f}"

    def __init__(self, num_classes: int, light_dim: int, params: TSQNetParams = TSQNetParams(),
                 visual_prototypes: Tensor | None = None, object_text: Tensor | None = None,
                 class_text: Tensor | None = None, lambda_v: float = 0.6, max_frames: int = 512,
                 light_mean: Tensor | None = None, light_std: Tensor | None = None):
        super().__init__()
        self.light_norm = FeatureNorm(_tensor(light_mean), _tensor(light_std))  # train-split stats (see FeatureNorm)
        p = self.params = params
        if p.dim % p.heads:
            raise ValueError(f"tsqnet: dim={p.dim} is not divisible by heads={p.heads}")
        self.num_classes = num_classes
        self.set_fusion({"lambda_v": lambda_v})
        self.vqm = self.tqm = None
        if p.branches in ("both", "vqm"):
            protos = _tensor(visual_prototypes)
            protos = None if protos is None else self.light_norm(protos.float())  # prior in the normalised space
            self.vqm = TSQModule(light_dim, num_classes, p, protos, max_frames, "vqm")
        if p.branches in ("both", "tqm"):
            if object_text is None:
                raise ValueError("tsqnet: the TQM branch needs object_text [N_o,e] (object-name embeddings)")
            self.register_buffer("object_text", _tensor(object_text).detach().float().clone())  # frozen W [N_o,e]
            self.tqm = TSQModule(self.object_text.shape[1], num_classes, p, _tensor(class_text), max_frames, "tqm")
        self.inputs = {"both": TSQNet.inputs, "vqm": ("light_feats",), "tqm": ("object_scores",)}[p.branches]

    def text_frames(self, object_scores: Tensor) -> Tensor:
        """``x^t_i = O_i W`` over the top-``object_topk`` scores: ``[B,T,N_o] -> [B,T,e]``.

        With k kept scores the product only touches k rows of W, so it is computed as a weighted
        gather of those rows (k x e MACs per frame instead of N_o x e; identical result).
        """
        O, k = object_scores.float(), self.params.object_topk
        if k <= 0 or k >= O.shape[-1]:
            return O @ self.object_text  # [B,T,N_o] @ [N_o,e] -> [B,T,e]
        vals, idx = O.topk(k, dim=-1)  # [B,T,k]
        return (vals.unsqueeze(-1) * self.object_text[idx]).sum(-2)  # [B,T,k,e] -> [B,T,e]

    def forward(self, batch: Batch) -> SamplerOutput:
        mods = {}
        if self.vqm is not None:
            mods["vqm"] = self.vqm(self.light_norm(batch["light_feats"].float()))
        if self.tqm is not None:
            mods["tqm"] = self.tqm(self.text_frames(batch["object_scores"]))
        branches, logits, aux = {}, {}, {}
        for name, m in mods.items():
            key = name[0]  # "v" / "t"
            A = m["A"].mean(1)  # heads averaged: [B,h,Q,T] -> [B,Q,T]
            branches[name] = aggregate_saliency(m["z"], A, self.params.top_classes)  # [B,T]
            logits[name] = m["z"]  # [B,C]
            aux.update({f"A_{key}": A, f"A_{key}_heads": m["A"], f"R_{key}": m["R"], f"X_{key}": m["X"]})
        if len(mods) == 2 and self.training:  # eq. 3 only feeds the loss: inference skips it
            self.swap_attention(aux)
        saliency = branches["vqm"] if "vqm" in branches else branches["tqm"]
        return SamplerOutput(saliency=saliency, branches=branches, logits=logits, aux=aux)

    def swap_attention(self, aux: dict[str, Tensor]) -> None:
        """Eq. 3: R^{t->v} = A^t X^v and R^{v->t} = A^v X^t, classified by the receiving module."""
        aux["R_tv"], aux["z_tv"] = self.vqm.swap(aux["A_t_heads"], aux["X_v"])  # [B,Q,D], [B,C]
        aux["R_vt"], aux["z_vt"] = self.tqm.swap(aux["A_v_heads"], aux["X_t"])  # [B,Q,D], [B,C]

    def loss(self, batch: Batch, out: SamplerOutput) -> tuple[Tensor, dict[str, float]]:
        y = batch["labels"].float()  # [B,C]
        if len(out.logits) == 2 and "z_tv" not in out.aux:  # evaluated in eval mode (val loss)
            self.swap_attention(out.aux)
        terms = {}
        if "vqm" in out.logits:
            terms["loss_v"] = soft_cross_entropy(out.logits["vqm"], y)
        if "tqm" in out.logits:
            terms["loss_t"] = soft_cross_entropy(out.logits["tqm"], y)
        if "z_tv" in out.aux:
            terms["loss_tv"] = soft_cross_entropy(out.aux["z_tv"], y)
            terms["loss_vt"] = soft_cross_entropy(out.aux["z_vt"], y)
        weights = {"loss_v": 1.0, "loss_t": 1.0, "loss_tv": self.params.alpha, "loss_vt": self.params.beta}
        total = sum(weights[k] * v for k, v in terms.items())  # eq. 4
        probs = torch.stack([z.softmax(-1) for z in out.logits.values()]).mean(0)  # fused z: [B,C]
        hit = y.gather(1, probs.argmax(-1, keepdim=True)) > 0  # [B,1]
        metrics = {k: float(v.detach()) for k, v in terms.items()}
        metrics.update(acc=float(hit.float().mean()), n=int(y.shape[0]))
        return total, metrics

    def set_fusion(self, values: dict) -> "TSQNet":
        """Set ``lambda_v`` (the VQM share of the union, in [0, 1]) for later :meth:`select` calls."""
        if "lambda_v" in self.check_fusion(values):
            self.lambda_v = selection.check_ratio(values["lambda_v"], "lambda_v")
        return self

    def select(self, out: SamplerOutput, K: int, fusion=None) -> np.ndarray:
        """K distinct frames per video: the VQM / TQM union at ``fusion["lambda_v"]`` (else the model's)."""
        fusion = self.check_fusion(fusion)
        lambda_v = selection.check_ratio(fusion["lambda_v"], "lambda_v") if "lambda_v" in fusion else self.lambda_v
        if len(out.branches) == 2:
            s_v = out.branches["vqm"].detach().cpu().numpy()  # [B,T]
            s_t = out.branches["tqm"].detach().cpu().numpy()  # [B,T]
            return selection.tsqnet_union_select(s_v, s_t, K, lambda_v)  # [B,K]
        return super().select(out, K)

    @torch.no_grad()
    def attention_diagnostics(self, batch: Batch, labels: np.ndarray, salient: np.ndarray, K: int) -> dict:
        """Where a branch loses salient frames (diagnostic only: it reads the ground truth). Per branch:
        top-1 of its coarse prediction ``z``, and recall@K (``|top-K ∩ salient| / min(K, |salient|)``)
        of the eq. 5 saliency, of the attention row of the predicted class, and of the row of the
        ground-truth class. A good ground-truth row with a poor eq. 5 score blames the coarse
        prediction; a poor ground-truth row blames the attention itself."""
        was = self.training
        out = self.eval()(batch)
        self.train(was)
        y = np.asarray(labels).argmax(1)  # [B] (first label of a multi-label video)
        rows = np.arange(len(y))
        res = {}
        for name, z in out.logits.items():
            A = out.aux[f"A_{name[0]}"].numpy()  # [B,Q,T]
            zp = z.argmax(-1).numpy()
            row = (lambda c: A[rows, c]) if A.shape[1] > 1 else (lambda c: A[:, 0])
            res[name] = {"video_top1": float(np.mean(np.asarray(labels)[rows, zp] > 0)),
                         "recall_eq5": salient_recall(selection.topk_select(out.branches[name].numpy(), K), salient),
                         "recall_predicted_row": salient_recall(selection.topk_select(row(zp), K), salient),
                         "recall_true_row": salient_recall(selection.topk_select(row(y), K), salient)}
        return res


def _tensor(x) -> Tensor | None:
    return None if x is None else torch.as_tensor(x)


@SAMPLERS.register("tsqnet")
def tsqnet(num_classes: int, light_dim: int, params: TSQNetParams = TSQNetParams(),
           visual_prototypes: Tensor | None = None, object_text: Tensor | None = None,
           class_text: Tensor | None = None, lambda_v: float = 0.6, max_frames: int = 512,
           light_mean: Tensor | None = None, light_std: Tensor | None = None) -> TSQNet:
    return TSQNet(num_classes, light_dim, params, visual_prototypes, object_text, class_text, lambda_v, max_frames,
                  light_mean, light_std)
