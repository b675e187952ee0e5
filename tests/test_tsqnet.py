"""TSQNet sampler (components/models/samplers/tsqnet.py): eqs. 1-5 against brute force, init,
ablations, object top-k, selection, and a toy problem where the planted frame must win."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from components.models.samplers import SamplerOutput, create_sampler, list_samplers
from components.models.samplers.tsqnet import (Classifier, CrossAttention, TSQNet, aggregate_saliency,
                                               keep_top_objects, soft_cross_entropy)
from components.core.params import TSQNetParams

C, D_LIGHT, E_TXT, N_OBJ = 4, 6, 5, 30


def make(seed: int = 0, C: int = C, light_dim: int = D_LIGHT, **kw) -> TSQNet:
    torch.manual_seed(seed)
    p = TSQNetParams(**{"dim": 8, "dropout": 0.0, **kw})
    return TSQNet(C, light_dim, p, visual_prototypes=torch.randn(C, light_dim),
                  object_text=torch.randn(N_OBJ, E_TXT), class_text=torch.randn(C, E_TXT))


def batch(B: int = 3, T: int = 5, C: int = C, light_dim: int = D_LIGHT, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(B, C)
    labels[torch.arange(B), torch.randint(0, C, (B,), generator=g)] = 1
    return {"light_feats": torch.randn(B, T, light_dim, generator=g),
            "object_scores": torch.randn(B, T, N_OBJ, generator=g).softmax(-1), "labels": labels}


def set_linear(lin: torch.nn.Linear, W: torch.Tensor) -> None:
    """Make ``lin(x) == x @ W`` (the paper's right-multiplied matrices)."""
    with torch.no_grad():
        lin.weight.copy_(W.t())


def test_registered():
    assert "tsqnet" in list_samplers()
    s = create_sampler("tsqnet", num_classes=3, light_dim=4, params=TSQNetParams(dim=8, branches="vqm"),
                       visual_prototypes=torch.randn(3, 4))
    assert isinstance(s, TSQNet) and s.trainable and TSQNet.inputs == ("light_feats", "object_scores")
    assert s.inputs == ("light_feats",) and s.tqm is None


# ------------------------------------------------------------------------------------- eq. 1
def test_eq1_cross_attention_known_matrices():
    torch.manual_seed(0)
    B, Q, T, D = 2, 3, 5, 4
    att = CrossAttention(D, heads=1)
    Wq, Wk, Wv = torch.randn(D, D), torch.randn(D, D), torch.randn(D, D)
    for lin, W in ((att.q, Wq), (att.k, Wk), (att.v, Wv)):
        set_linear(lin, W)
    E, X = torch.randn(B, Q, D), torch.randn(B, T, D)
    A = att.weights(E, X)  # [B,1,Q,T]
    R = att.gather(A, att.values(X))
    for b in range(B):
        for c in range(Q):
            logits = torch.stack([(E[b, c] @ Wq) @ (X[b, i] @ Wk) for i in range(T)]) / math.sqrt(D)
            a = torch.exp(logits - logits.max())
            a = a / a.sum()
            torch.testing.assert_close(A[b, 0, c], a)
            torch.testing.assert_close(R[b, c], sum(a[i] * (X[b, i] @ Wv) for i in range(T)))


def test_eq1_through_the_model_with_identities():
    """Identity projections, zero positions: A = softmax(P X^T / sqrt(d')), R = A X."""
    m = make(light_dim=8, branches="vqm").eval()
    with torch.no_grad():
        for conv in (m.vqm.query_proj, m.vqm.frame_proj):
            conv.weight.copy_(torch.eye(8)[:, :, None])
            conv.bias.zero_()
        m.vqm.pos.zero_()
        for lin in (m.vqm.layers[0].attn.q, m.vqm.layers[0].attn.k, m.vqm.layers[0].attn.v):
            set_linear(lin, torch.eye(8))
    bt = batch(light_dim=8)
    out = m(bt)
    P, X = m.vqm.embed.detach(), bt["light_feats"]  # [C,8], [B,T,8]
    A = torch.softmax(torch.einsum("cd,btd->bct", P, X) / math.sqrt(8), -1)
    torch.testing.assert_close(out.aux["A_v"], A)
    torch.testing.assert_close(out.aux["R_v"], A @ X)


def test_multihead_attention_splits_dims_and_saliency_averages_heads():
    torch.manual_seed(0)
    att = CrossAttention(8, heads=2)
    E, X = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    A = att.weights(E, X)  # [B,2,Q,T]
    q, k, v = att.q(E), att.k(X), att.v(X)
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        Ah = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, -1)
        torch.testing.assert_close(A[:, h], Ah)
        torch.testing.assert_close(att.gather(A, att.values(X))[..., sl], Ah @ v[..., sl])
    m = make(heads=2).eval()
    out = m(batch())
    torch.testing.assert_close(out.aux["A_v"], out.aux["A_v_heads"].mean(1))
    torch.testing.assert_close(out.aux["A_v"].sum(-1), torch.ones(3, C))


# ------------------------------------------------------------------------------------- eq. 2
@pytest.mark.parametrize("kind", ["class_specific", "class_agnostic"])
def test_eq2_classifier_vs_loop(kind):
    torch.manual_seed(0)
    B, D = 3, 6
    clf = Classifier(D, C, C, kind)
    R = torch.randn(B, C, D)
    z = clf(R)
    for b in range(B):
        for c in range(C):
            w = clf.weight[c] if kind == "class_specific" else clf.weight
            torch.testing.assert_close(z[b, c], w @ R[b, c] + clf.bias[c])


def test_eq2_single_query_is_one_fc():
    for kind in ("class_specific", "class_agnostic"):
        clf = Classifier(6, C, 1, kind)
        R = torch.randn(3, 1, 6)
        torch.testing.assert_close(clf(R), R[:, 0] @ clf.fc.weight.t() + clf.fc.bias)


# ------------------------------------------------------------------------------------- eq. 3
@pytest.mark.parametrize("heads", [1, 2])
def test_eq3_swap_attention_explicit(heads):
    m = make(heads=heads).eval()
    bt = batch()
    out = m(bt)
    assert "R_tv" not in out.aux  # inference skips eq. 3 (it only feeds the loss) ...
    m.loss(bt, out)  # ... which computes it on demand
    Xv = m.vqm.frames(bt["light_feats"])  # [B,T,d']
    Xt = m.tqm.frames(m.text_frames(bt["object_scores"]))
    Vv = Xv @ m.vqm.layers[-1].attn.v.weight.t()  # X^v W_v^v
    Vt = Xt @ m.tqm.layers[-1].attn.v.weight.t()
    dh = 8 // heads
    for h in range(heads):
        sl = slice(dh * h, dh * (h + 1))
        torch.testing.assert_close(out.aux["R_tv"][..., sl], out.aux["A_t_heads"][:, h] @ Vv[..., sl])
        torch.testing.assert_close(out.aux["R_vt"][..., sl], out.aux["A_v_heads"][:, h] @ Vt[..., sl])
    if heads == 1:
        torch.testing.assert_close(out.aux["R_tv"], out.aux["A_t"] @ Vv)
    # fed to the FFN + classifier of the module whose features they gathered
    torch.testing.assert_close(out.aux["z_tv"], m.vqm.classifier(m.vqm.layers[-1].respond(out.aux["R_tv"])))
    torch.testing.assert_close(out.aux["z_vt"], m.tqm.classifier(m.tqm.layers[-1].respond(out.aux["R_vt"])))
    # and the own responses go the same way
    torch.testing.assert_close(out.logits["vqm"], m.vqm.classifier(m.vqm.layers[-1].respond(out.aux["R_v"])))


# ------------------------------------------------------------------------------------- eq. 4
def test_eq4_total_loss_is_weighted_sum():
    m = make(alpha=0.3, beta=0.7)
    bt = batch()
    out = m(bt)
    loss, met = m.loss(bt, out)
    y = bt["labels"] / bt["labels"].sum(-1, keepdim=True)
    parts = {k: float(-(y * z.detach().log_softmax(-1)).sum(-1).mean()) for k, z in
             (("loss_v", out.logits["vqm"]), ("loss_t", out.logits["tqm"]),
              ("loss_tv", out.aux["z_tv"]), ("loss_vt", out.aux["z_vt"]))}
    for k, v in parts.items():
        assert met[k] == pytest.approx(v, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(parts["loss_v"] + parts["loss_t"] + 0.3 * parts["loss_tv"]
                                        + 0.7 * parts["loss_vt"], rel=1e-5)
    assert met["n"] == 3 and 0.0 <= met["acc"] <= 1.0

    m0 = make(alpha=0.0, beta=0.0)
    out0 = m0(bt)
    loss0, met0 = m0.loss(bt, out0)
    assert float(loss0.detach()) == pytest.approx(met0["loss_v"] + met0["loss_t"], rel=1e-5)


def test_eq4_gradients_reach_both_tsq_embeddings_through_the_swap():
    m = make(alpha=0.6, beta=0.6)
    bt = batch()
    out = m(bt)
    loss, _ = m.loss(bt, out)
    loss.backward()
    for mod in (m.vqm, m.tqm):
        assert mod.embed.grad is not None and mod.embed.grad.abs().sum() > 0
        assert torch.isfinite(mod.embed.grad).all()
    # the cross-modal paths alone: L_{t->v} reaches E^t, L_{v->t} reaches E^v
    m.zero_grad()
    out = m(bt)
    g_t, = torch.autograd.grad(soft_cross_entropy(out.aux["z_tv"], bt["labels"]), m.tqm.embed)
    g_v, = torch.autograd.grad(soft_cross_entropy(out.aux["z_vt"], bt["labels"]), m.vqm.embed)
    assert g_t.abs().sum() > 0 and g_v.abs().sum() > 0


def test_single_branch_loss_has_only_its_term():
    for br, key in (("vqm", "loss_v"), ("tqm", "loss_t")):
        m = make(branches=br)
        bt = batch()
        out = m(bt)
        loss, met = m.loss(bt, out)
        assert set(out.branches) == {br} and torch.equal(out.saliency, out.branches[br])
        assert {k for k in met if k.startswith("loss")} == {key}
        assert float(loss.detach()) == pytest.approx(met[key], rel=1e-6)


# ------------------------------------------------------------------------------------- eq. 5
def test_eq5_aggregation_brute_force():
    torch.manual_seed(0)
    B, Cn, T = 3, 8, 6
    z, A = torch.randn(B, Cn), torch.rand(B, Cn, T).softmax(-1)
    s = aggregate_saliency(z, A, 5)
    for b in range(B):
        p = torch.softmax(z[b], 0)
        top = sorted(range(Cn), key=lambda c: -float(p[c]))[:5]
        ref = torch.zeros(T)
        for c in top:
            for i in range(T):
                ref[i] += p[c] * A[b, c, i]
        torch.testing.assert_close(s[b], ref)
    torch.testing.assert_close(aggregate_saliency(z, A, 50), (z.softmax(-1)[:, :, None] * A).sum(1))
    torch.testing.assert_close(aggregate_saliency(z, A[:, :1], 5), A[:, 0])  # CA attention: the row


def test_eq5_in_forward():
    m = make(C=7, top_classes=5).eval()
    out = m(batch(C=7))
    for key, name in (("v", "vqm"), ("t", "tqm")):
        torch.testing.assert_close(out.branches[name], aggregate_saliency(out.logits[name], out.aux[f"A_{key}"], 5))
    assert torch.equal(out.saliency, out.branches["vqm"])


# --------------------------------------------------------------------------------------- init
def test_prior_init_copies_priors_before_projection():
    torch.manual_seed(0)
    P, W, Ct = torch.randn(C, D_LIGHT), torch.randn(N_OBJ, E_TXT), torch.randn(C, E_TXT)
    m = TSQNet(C, D_LIGHT, TSQNetParams(dim=8), visual_prototypes=P, object_text=W, class_text=Ct)
    assert torch.equal(m.vqm.embed.data, P) and torch.equal(m.tqm.embed.data, Ct)
    assert torch.equal(m.object_text, W) and "object_text" not in dict(m.named_parameters())
    assert m.vqm.embed.data_ptr() != P.data_ptr()  # a copy: training does not write into the prior
    ca = TSQNet(C, D_LIGHT, TSQNetParams(dim=8, attention="class_agnostic"), P, W, Ct)
    torch.testing.assert_close(ca.vqm.embed.data, P.mean(0, keepdim=True))
    rnd = TSQNet(C, D_LIGHT, TSQNetParams(dim=8, init="random"), P, W, Ct)
    assert not torch.allclose(rnd.vqm.embed.data, P) and not torch.allclose(rnd.tqm.embed.data, Ct)
    with pytest.raises(ValueError, match="visual_prototypes"):
        TSQNet(C, D_LIGHT, TSQNetParams(dim=8), None, W, Ct)
    with pytest.raises(ValueError, match="object_text"):
        TSQNet(C, D_LIGHT, TSQNetParams(dim=8), P, None, Ct)
    with pytest.raises(ValueError, match="shape"):
        TSQNet(C, D_LIGHT, TSQNetParams(dim=8), P, W, torch.randn(C, E_TXT + 1))
    TSQNet(C, D_LIGHT, TSQNetParams(dim=8, init="random", branches="vqm"))  # no priors needed


# ---------------------------------------------------------------------------------- ablations
def _ablations():
    """Every attention x classifier x branches x init combination (each with one of the 8 decoder
    structures self_attention x layers x heads, cycling), plus every decoder structure with both
    branches and class-specific attention: 32 tiny models."""
    structs = list(itertools.product((False, True), (1, 2), (1, 2)))
    heads = itertools.product(("class_specific", "class_agnostic"), ("class_specific", "class_agnostic"),
                              ("both", "vqm", "tqm"), ("prior", "random"))
    for n, (att, clf, br, init) in enumerate(heads):
        yield (att, clf, *structs[n % len(structs)], br, init)
    for sa, layers, h in structs:
        yield ("class_specific", "class_specific", sa, layers, h, "both", "prior")


def test_every_ablation_builds_and_scores():
    bt = batch(B=2, T=5)
    for n, (att, clf, sa, layers, heads, br, init) in enumerate(_ablations()):
        cfg = dict(attention=att, classifier=clf, self_attention=sa, layers=layers, heads=heads, branches=br, init=init)
        m = make(seed=n, dropout=0.1, **cfg)
        out = m(bt)
        assert out.saliency.shape == (2, 5) and torch.isfinite(out.saliency).all(), cfg
        nq = C if att == "class_specific" else 1
        for name, s in out.branches.items():
            assert s.shape == (2, 5) and torch.isfinite(s).all(), cfg
            assert out.logits[name].shape == (2, C)
            assert out.aux[f"A_{name[0]}"].shape == (2, nq, 5)
        assert len(m.vqm.layers if m.vqm is not None else m.tqm.layers) == layers
        loss, met = m.loss(bt, out)
        assert torch.isfinite(loss), cfg
        loss.backward()
        if br == "both":
            assert out.aux["z_tv"].shape == (2, C) and out.aux["z_vt"].shape == (2, C)


def test_too_many_frames_and_bad_heads_raise():
    m = TSQNet(C, D_LIGHT, TSQNetParams(dim=8, branches="vqm", init="random"), max_frames=4)
    with pytest.raises(ValueError, match="max_frames"):
        m(batch(T=5))
    with pytest.raises(ValueError, match="divisible"):
        TSQNet(C, D_LIGHT, TSQNetParams(dim=8, heads=3, branches="vqm", init="random"))


# ----------------------------------------------------------------------------------- objects
def test_object_topk_keeps_ten_scores_per_frame():
    torch.manual_seed(0)
    O = torch.randn(2, 3, 1000).softmax(-1)
    kept = keep_top_objects(O, 10)
    assert ((kept > 0).sum(-1) == 10).all()
    top_vals, top_idx = O.topk(10, dim=-1)
    torch.testing.assert_close(kept.gather(-1, top_idx), top_vals)  # not renormalised
    assert kept.sum() == pytest.approx(float(top_vals.sum()), rel=1e-5)
    assert torch.equal(keep_top_objects(O, 0), O)


def test_object_topk_is_applied_in_the_model():
    m = make(object_topk=10, branches="tqm").eval()
    bt = batch()
    pre = dict(bt, object_scores=keep_top_objects(bt["object_scores"], 10))
    torch.testing.assert_close(m(bt).saliency, m(pre).saliency)
    torch.testing.assert_close(m.text_frames(bt["object_scores"]), pre["object_scores"] @ m.object_text)
    m_all = make(object_topk=0, branches="tqm").eval()
    assert not torch.allclose(m_all(bt).saliency, m_all(pre).saliency)


# ------------------------------------------------------------------------------------ select
def test_select_fuses_both_branches_and_topk_for_one(monkeypatch):
    import components.core.selection as selection

    calls = []

    def stand_in(s_v, s_t, K, lambda_v):
        calls.append((s_v, s_t, K, lambda_v))
        return np.argsort(-s_v, axis=1)[:, :K].astype(np.int64)

    monkeypatch.setattr(selection, "tsqnet_union_select", stand_in, raising=False)
    m = make()
    m.lambda_v = 0.4
    out = m(batch())
    idx = m.select(out, 2)
    assert idx.shape == (3, 2) and len(calls) == 1
    s_v, s_t, K, lam = calls[0]
    assert isinstance(s_v, np.ndarray) and K == 2 and lam == 0.4
    np.testing.assert_allclose(s_v, out.branches["vqm"].detach().numpy())
    np.testing.assert_allclose(s_t, out.branches["tqm"].detach().numpy())

    one = make(branches="tqm")
    o = one(batch())
    np.testing.assert_array_equal(one.select(o, 2), np.argsort(-o.saliency.detach().numpy(), 1, kind="stable")[:, :2])


# ------------------------------------------------------------------------------ toy training
def test_toy_training_finds_the_planted_frame():
    """One frame per video carries its class vector (the rest is noise): after a short training run
    the VQM saliency argmax hits that frame far above chance (1/T)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        B, T, Cn, d = 64, 8, 3, 16
        protos = torch.randn(Cn, d)
        protos = 4.0 * protos / protos.norm(dim=1, keepdim=True)

        def sample(n):
            y = torch.randint(0, Cn, (n,))
            pos = torch.randint(0, T, (n,))
            x = torch.randn(n, T, d)
            x[torch.arange(n), pos] += protos[y]
            return {"light_feats": x, "labels": torch.nn.functional.one_hot(y, Cn).float()}, pos

        def hit_rate(m):
            m.eval()
            with torch.no_grad():
                bt, pos = sample(512)
                out = m(bt)
            m.train()
            return (out.saliency.argmax(1) == pos).float().mean().item(), m.loss(bt, out)[1]["acc"]

        m = TSQNet(Cn, d, TSQNetParams(dim=32, branches="vqm", init="random", dropout=0.0))
        before, _ = hit_rate(m)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for _ in range(300):
            bt, _ = sample(B)
            loss, _ = m.loss(bt, m(bt))
            opt.zero_grad()
            loss.backward()
            opt.step()
        hit, acc = hit_rate(m)
        assert hit > 0.8, f"planted-frame hit rate {hit:.3f} (chance {1 / T:.3f})"
        assert hit > before + 0.4 and acc > 0.8, (before, hit, acc)
    finally:
        torch.set_num_threads(threads)


def test_output_type():
    out = make()(batch())
    assert isinstance(out, SamplerOutput) and set(out.branches) == {"vqm", "tqm"}
    assert dataclasses.is_dataclass(out)


def test_select_with_the_real_union_helper():
    import components.core.selection as selection

    if not hasattr(selection, "tsqnet_union_select"):
        pytest.skip("components.core.selection.tsqnet_union_select not available")
    m = make()
    out = m(batch(B=3, T=6))
    for K in (1, 3, 6):
        idx = m.select(out, K)
        assert idx.shape == (3, K) and idx.dtype == np.int64
        assert all(len(set(row)) == K and row.min() >= 0 and row.max() < 6 for row in idx)
    np.testing.assert_array_equal(m.select(out, 5), selection.tsqnet_union_select(
        out.branches["vqm"].detach().numpy(), out.branches["tqm"].detach().numpy(), 5, m.lambda_v))


def test_sparse_text_frames_equal_dense_product():
    """x^t = O W with top-k filtering: the gather path equals the dense product of the zeroed scores."""
    import torch

    from components.models.samplers.tsqnet import keep_top_objects, tsqnet
    from components.core.params import TSQNetParams

    g = torch.Generator().manual_seed(0)
    W = torch.randn(1000, 6, generator=g)
    m = tsqnet(3, 4, TSQNetParams(dim=8, object_topk=10, init="random"), object_text=W)
    O = torch.rand(2, 5, 1000, generator=g).softmax(-1)
    assert torch.allclose(m.text_frames(O), keep_top_objects(O, 10) @ W, atol=1e-6)


def test_attention_diagnostics_brute_force():
    """Per branch: top-1 of z, and recall@K of eq. 5, of the predicted-class row and of the true-class
    row, each recomputed here from the model's own outputs with plain loops."""
    m = make().eval()
    b = batch(B=4, T=6)
    labels = b["labels"].numpy()
    salient = np.zeros((4, 6), bool)
    salient[:, 1] = salient[:, 4] = True
    salient[0, 2] = True
    K = 2
    got = m.attention_diagnostics(b, labels, salient, K)
    with torch.no_grad():
        out = m(b)

    def recall(scores):
        hits = [len(set(np.argsort(-s, kind="stable")[:K]) & set(np.flatnonzero(sv))) / min(K, sv.sum())
                for s, sv in zip(scores, salient)]
        return float(np.mean(hits))

    for name, key in (("vqm", "A_v"), ("tqm", "A_t")):
        z, A, y = out.logits[name].numpy(), out.aux[key].numpy(), labels.argmax(1)
        want = {"video_top1": float(np.mean([labels[i, z[i].argmax()] for i in range(4)])),
                "recall_eq5": recall(out.branches[name].numpy()),
                "recall_predicted_row": recall([A[i, z[i].argmax()] for i in range(4)]),
                "recall_true_row": recall([A[i, y[i]] for i in range(4)])}
        assert got[name] == pytest.approx(want)
