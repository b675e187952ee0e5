"""NSNet sampler (components/models/samplers/nsnet.py): equations against hand computations, every FEM
variant and FSM objective, dropout, fusion hand-off, and a toy training run."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.models.samplers import SamplerOutput, create_sampler, list_samplers
from components.models.samplers.nsnet import FSM, RANK_MARGIN, VGM, NSNet
from components.core.params import NSNetParams

FEMS = ("transformer", "conv1d", "lstm", "mlp")
OBJECTIVES = ("ns", "baseline", "baseline_plus", "regression", "ranking")
FUSIONS = ("index_union", "index_intersection", "index_join", "score_add", "score_mul", "score_max")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small(**kw) -> NSNetParams:
    base = dict(dim=16, heads=2, layers=2, dropout=0.1, vgm_dropout_in=0.5, vgm_dropout_attn=0.2)
    return dataclasses.replace(NSNetParams(), **{**base, **kw})


def make_batch(B=3, T=5, C=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, C, (B,), generator=g)
    labels = F.one_hot(cls, C).float()  # [B,C]
    gs = torch.rand(B, T, generator=g)  # guiding scores
    ns = torch.cat([gs[..., None] * labels[:, None, :], (1 - gs)[..., None]], -1)  # [B,T,C+1]
    return {"light_feats": torch.randn(B, T, d, generator=g), "labels": labels, "ns_labels": ns}


# ----------------------------------------------------------------------------------- FSM
def test_eq2_soft_cross_entropy_by_hand():
    fsm = FSM(dim=4, num_classes=2, objective="ns")
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]])  # B=1, T=2, C+1=3
    g = [0.8, 0.3]
    ns = torch.tensor([[[g[0], 0.0, 1 - g[0]], [g[1], 0.0, 1 - g[1]]]])  # class 0 video
    expect = 0.0
    for i in range(2):
        row = logits[0, i].tolist()
        z = sum(math.exp(v) for v in row)
        expect -= sum(ns[0, i, j].item() * math.log(math.exp(row[j]) / z) for j in range(3))
    got = fsm.loss(logits, {"ns_labels": ns, "labels": torch.tensor([[1.0, 0.0]])})
    assert got.item() == pytest.approx(expect, rel=1e-6)


def test_fsm_saliency_matches_brute_force():
    torch.manual_seed(0)
    B, T, C, dim = 2, 5, 3, 8
    fsm = FSM(dim, C, "ns")
    h = torch.randn(B, T, dim)
    logits, s = fsm(h)
    assert logits.shape == (B, T, C + 1) and s.shape == (B, T)
    for b in range(B):
        conf = []
        for t in range(T):
            e = [math.exp(v) for v in logits[b, t].tolist()]
            conf.append(max(e[c] / sum(e) for c in range(C)))  # real classes only
        z = sum(math.exp(c) for c in conf)
        for t in range(T):
            assert s[b, t].item() == pytest.approx(math.exp(conf[t]) / z, rel=1e-5)


def test_other_fsm_objectives_by_hand():
    T, C = 3, 2
    labels = torch.tensor([[0.0, 1.0]])
    g = torch.tensor([[0.9, 0.1, 0.5]])
    ns = torch.cat([g[..., None] * labels[:, None], (1 - g)[..., None]], -1)
    batch = {"labels": labels, "ns_labels": ns}
    logits_c = torch.tensor([[[0.2, 1.0], [1.5, -0.5], [0.0, 0.0]]])  # C-way heads
    logp = F.log_softmax(logits_c, -1)
    assert FSM(4, C, "baseline").loss(logits_c, batch).item() == pytest.approx(-logp[0, :, 1].sum().item(), rel=1e-6)
    bp = -(g[0] * logp[0, :, 1]).sum().item()  # soft one-hot g*y, no non-salient class
    assert FSM(4, C, "baseline_plus").loss(logits_c, batch).item() == pytest.approx(bp, rel=1e-6)
    r = torch.tensor([[[0.3], [-1.0], [2.0]]])
    reg = sum((1 / (1 + math.exp(-r[0, t, 0].item())) - g[0, t].item()) ** 2 for t in range(T))
    assert FSM(4, C, "regression").loss(r, batch).item() == pytest.approx(reg, rel=1e-6)
    hinge, pairs = 0.0, 0
    for i in range(T):
        for j in range(T):
            if g[0, i] > g[0, j]:
                hinge += max(0.0, RANK_MARGIN - (r[0, i, 0] - r[0, j, 0]).item())
                pairs += 1
    assert FSM(4, C, "ranking").loss(r, batch).item() == pytest.approx(hinge / pairs, rel=1e-6)


# ----------------------------------------------------------------------------------- VGM
def test_vgm_attention_and_representations():
    torch.manual_seed(1)
    B, T, C, dim = 2, 6, 3, 5
    vgm = VGM(dim, C, small()).eval()
    h = torch.randn(B, T, dim)
    alpha, ls, ln = vgm(h)
    assert (alpha >= 0).all()
    assert torch.allclose(alpha.sum(-1), torch.ones(B), atol=1e-6)
    x_sal, x_ns = VGM.pool(h, alpha)
    for b in range(B):
        sal = torch.zeros(dim)
        nsr = torch.zeros(dim)
        for i in range(T):
            sal += alpha[b, i] * h[b, i]
            nsr += (1 - alpha[b, i]) / T * h[b, i]
        assert torch.allclose(x_sal[b], sal, atol=1e-6)
        assert torch.allclose(x_ns[b], nsr, atol=1e-6)
    # one shared classifier for both representations
    assert torch.allclose(ls, vgm.cls(x_sal), atol=1e-6) and torch.allclose(ln, vgm.cls(x_ns), atol=1e-6)


def test_eq3_loss_by_hand():
    ls = torch.tensor([[2.0, 0.5, -1.0, 0.0]])  # C=3, +1 non-salient
    ln = torch.tensor([[0.1, 0.2, 0.3, 1.5]])
    labels = torch.tensor([[0.0, 1.0, 0.0]])

    def ce(row, k):
        z = sum(math.exp(v) for v in row)
        return -math.log(math.exp(row[k]) / z)

    l_cls, l_ns = ce(ls[0].tolist(), 1), ce(ln[0].tolist(), 3)
    for gamma in (0.2, 0.0):
        lv, c, n = VGM.loss(ls, ln, labels, gamma)
        assert c.item() == pytest.approx(l_cls, rel=1e-6) and n.item() == pytest.approx(l_ns, rel=1e-6)
        assert lv.item() == pytest.approx(l_cls + gamma * l_ns, rel=1e-6)
    assert VGM.loss(ls, ln, labels, 0.0)[0].item() == pytest.approx(l_cls, rel=1e-6)  # gamma=0 drops L_ns


# ----------------------------------------------------------------------------------- model
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("fem", FEMS)
def test_variants_build_and_backprop(fem, objective):
    torch.manual_seed(0)
    B, T, C, d = 3, 5, 4, 6
    m = create_sampler("nsnet", num_classes=C, light_dim=d, params=small(fem=fem, fsm_objective=objective),
                       max_frames=16)
    assert isinstance(m, NSNet) and m.trainable and m.inputs == ("light_feats",)
    batch = make_batch(B, T, C, d)
    out = m(batch)
    assert out.saliency.shape == (B, T) and torch.isfinite(out.saliency).all()
    assert out.branches["fsm"].shape == (B, T) and out.branches["vgm"].shape == (B, T)
    assert out.logits["vgm"].shape == (B, C)
    loss, stats = m.loss(batch, out)
    assert torch.isfinite(loss)
    assert set(stats) == {"loss_f", "loss_cls", "loss_ns", "acc", "n"} and stats["n"] == B
    assert loss.item() == pytest.approx(stats["loss_f"] + stats["loss_cls"] + 0.2 * stats["loss_ns"], rel=1e-5)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for n, p in m.named_parameters() if n != "fem.pos")


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = NSNet(4, 6, small(dropout=0.5, vgm_dropout_in=0.9, vgm_dropout_attn=0.5))
    batch = make_batch()
    m.eval()
    a, b = m(batch), m(batch)
    for x, y in [(a.saliency, b.saliency), (a.logits["vgm"], b.logits["vgm"]),
                 (a.aux["vgm_logits_ns"], b.aux["vgm_logits_ns"])]:
        assert torch.equal(x, y)
    m.train()
    assert not torch.equal(m(batch).aux["vgm_logits_sal"], m(batch).aux["vgm_logits_sal"])


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        NSNet(3, 6, small(dim=10, heads=4))
    with pytest.raises(ValueError, match="max_frames"):
        NSNet(3, 6, small(), max_frames=4)(make_batch(T=5, C=3))
    assert "nsnet" in list_samplers()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_select_hands_branches_to_fuse_select(fusion, monkeypatch):
    import components.core.selection as sel

    calls = []

    def stand_in(a, b, K, strategy, ratio):  # the real one is added by a sibling task
        calls.append((a, b, K, strategy, ratio))
        return np.argsort(-(a + b), axis=1)[:, :K].astype(np.int64)

    monkeypatch.setattr(sel, "fuse_select", stand_in, raising=False)
    m = NSNet(3, 6, small()).eval().set_fusion({"nsnet_strategy": fusion, "nsnet_ratio": 0.7})
    with torch.no_grad():
        out = m(make_batch(C=3))
    idx = m.select(out, 2)
    assert idx.shape == (3, 2)
    a, b, K, strategy, ratio = calls[0]
    assert isinstance(a, np.ndarray) and np.allclose(a, out.branches["fsm"].numpy())
    assert np.allclose(b, out.branches["vgm"].numpy()) and (K, strategy, ratio) == (2, fusion, 0.7)
    s_f, s_v = out.branches["fsm"], out.branches["vgm"]
    expect = {"score_add": 0.7 * s_f + 0.3 * s_v, "score_mul": s_f * s_v,
              "score_max": torch.maximum(s_f, s_v)}.get(fusion, s_f)
    assert torch.allclose(out.saliency, expect)


def test_acc_counts_top1_in_label_set():
    m = NSNet(3, 6, small())
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    sal = torch.tensor([[3.0, 0.0, 0.0, 9.0], [5.0, 0.0, 1.0, 0.0]])  # non-salient column ignored
    out = SamplerOutput(saliency=torch.zeros(2, 4), aux={
        "fsm_logits": torch.zeros(2, 4, 4), "vgm_logits_sal": sal, "vgm_logits_ns": torch.zeros(2, 4)})
    batch = {"labels": labels, "ns_labels": torch.full((2, 4, 4), 0.25)}
    assert m.loss(batch, out)[1]["acc"] == 0.5


# ----------------------------------------------------------------------------------- toy run
def toy(n, T=8, C=3, d=16, seed=0, protos=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, d, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    planted = torch.argsort(torch.rand(n, T, generator=g), 1)[:, :2]  # 2 salient frames per video
    gt = torch.zeros(n, T).scatter_(1, planted, 1.0)
    x = x + gt[..., None] * protos[y][:, None, :]  # class vector at the planted frames
    labels = F.one_hot(y, C).float()
    ns = torch.cat([gt[..., None] * labels[:, None], (1 - gt)[..., None]], -1)  # [g*y, 1-g]
    return {"light_feats": x, "labels": labels, "ns_labels": ns}, gt


def test_toy_training_finds_planted_frames():
    torch.manual_seed(0)
    C, d = 3, 16
    protos = 4.0 * F.normalize(torch.randn(C, d, generator=torch.Generator().manual_seed(7)), dim=-1)
    train, _ = toy(1024, C=C, d=d, seed=1, protos=protos)
    test, gt = toy(256, C=C, d=d, seed=2, protos=protos)
    m = NSNet(C, d, small(dim=32, heads=4, layers=1, dropout=0.1))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for step in range(150):
        i = torch.randint(0, 1024, (64,), generator=torch.Generator().manual_seed(step))
        batch = {k: v[i] for k, v in train.items()}
        loss, _ = m.loss(batch, m(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        s = m(test).branches["fsm"]
    top2 = s.topk(2, dim=1).indices
    recall = gt.gather(1, top2).mean().item()
    assert recall > 0.8, recall  # chance: 2/8 = 0.25


@pytest.mark.parametrize("fusion", FUSIONS)
def test_select_with_real_fuse_select(fusion):
    sel = pytest.importorskip("components.core.selection")
    if not hasattr(sel, "fuse_select"):
        pytest.skip("components.core.selection.fuse_select not available yet")
    m = NSNet(3, 6, small()).eval().set_fusion({"nsnet_strategy": fusion})
    with torch.no_grad():
        out = m(make_batch(B=4, T=7, C=3))
    for K in (1, 3, 7):
        idx = m.select(out, K)
        assert idx.shape == (4, K) and idx.dtype == np.int64
        for row in idx:
            assert len(set(row.tolist())) == K and 0 <= row.min() and row.max() < 7
