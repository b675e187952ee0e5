"""AVGN (components/models/avgn_net.py): every equation against a hand-computed or brute-force answer,
the stop-gradients of Sec. 3.4 with autograd, missing audio, bad input, and one training step.
Tiny sizes, CPU, a few seconds."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from components.models.avgn_net import (AVGN, LOSSES, AVGNConfig, centre_from_unit, early_exit, extract_patches,
                                    glance_tokens, gumbel_topk, masked_reconstruction_loss, ordered_logits_loss,
                                    saliency_pseudo_labels)

B, T, C, H0, W0 = 3, 6, 3, 16, 20
CFG = AVGNConfig(num_classes=C, d_g=8, d_a=6, grid=(3, 3), max_frames=8, d_av=8, tf_layers=1, tf_heads=2, t_g=4,
                 d_aespa=8, aespa_layers=2, aespa_heads=2, bottlenecks=2, pi_reduce=2, pi_hidden=8, patch_size=8,
                 d_local=8, d_psi=8, psi_heads=2, psi_layers=1, cls_hidden=16, dropout=0.0, ord_k=3,
                 loss_search=False)  # the paper's network; the L_search tests switch it on


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    e_g = torch.randn(B, T, CFG.d_g, *CFG.grid, generator=g)
    e_a = torch.randn(B, T, CFG.d_a, generator=g)
    frames = torch.rand(B, T, 3, H0, W0, generator=g)
    labels = F.one_hot(torch.arange(B) % C, C).float()
    labels[2, 0] = 1.0  # one multi-label video
    has_audio = torch.tensor([True, False, True])  # video 1 has no audio
    return e_g, e_a, frames, labels, has_audio


def _model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return AVGN(cfg)


# ------------------------------------------------------------------------------ config, eq. 14
def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="d_aespa / aespa_heads"):
        dataclasses.replace(CFG, aespa_heads=3)
    with pytest.raises(ValueError, match="L >= 2"):
        dataclasses.replace(CFG, aespa_layers=1)
    with pytest.raises(ValueError, match="patch_size=0"):
        dataclasses.replace(CFG, patch_size=0)
    assert set(CFG.enabled()) == set(LOSSES)


def test_glance_tokens_substitute_the_mask_token_after_t_g():  # eq. 14
    vis, aud, M = torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.tensor([7.0, 8.0, 9.0])
    tok, masked = glance_tokens(vis, aud, M, t_g=2)
    assert masked.tolist() == [[False, False, True, True, True]] * 2
    assert torch.equal(tok[:, :2, :3], vis[:, :2]) and torch.equal(tok[:, :, 3:], aud)
    assert torch.equal(tok[:, 2:, :3], M.expand(2, 3, 3))
    assert not glance_tokens(vis, aud, M, t_g=5)[1].any()


def test_frames_after_t_g_do_not_reach_the_saliency():  # eq. 14 in the model
    m = _model().eval()
    e_g, e_a, *_ = _inputs()
    s = m(e_g, e_a).saliency
    late, early = e_g.clone(), e_g.clone()
    late[:, CFG.t_g:] = 0.0  # frames t > T_G: never encoded at inference
    early[:, 0] += 1.0
    assert torch.allclose(m(late, e_a).saliency, s, atol=1e-6)
    assert not torch.allclose(m(early, e_a).saliency, s, atol=1e-4)
    assert not torch.allclose(m(late, e_a, t_g=T).saliency, s, atol=1e-4)  # t_g at forward overrides


# --------------------------------------------------------------------------------- eqs. 11-12
def test_pseudo_labels_on_a_hand_made_prediction():  # eq. 12
    p = torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]])  # [1,T=2,C=3]
    assert torch.allclose(saliency_pseudo_labels(p), torch.tensor([[0.5 / 0.8, 1.0]]))
    p.requires_grad_(True)
    assert not saliency_pseudo_labels(p).requires_grad  # detached


# ---------------------------------------------------------------------------------- eqs. 5-6
@pytest.mark.parametrize("x1,y1", [(0, 0), (5, 3), (12, 8)])
def test_integer_aligned_patch_equals_the_slice(x1, y1):  # eq. 6
    P = 4
    frames = torch.rand(2, 3, 12, 16)
    centre = torch.tensor([[(x1 + P / 2) / 16, (y1 + P / 2) / 12]] * 2)
    patch = extract_patches(frames, centre, P)
    assert torch.allclose(patch, frames[:, :, y1:y1 + P, x1:x1 + P], atol=1e-5)


def test_patch_gradient_reaches_the_centre():  # eq. 6, bilinear: derivative = finite difference
    frames = torch.rand(1, 3, 12, 16, dtype=torch.float64)
    centre = torch.tensor([[0.43, 0.55]], dtype=torch.float64, requires_grad=True)
    w = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad((extract_patches(frames, centre, 4) * w).sum(), centre)
    eps = 1e-6
    for k in range(2):
        d = torch.zeros(1, 2, dtype=torch.float64)
        d[0, k] = eps
        fd = ((extract_patches(frames, centre + d, 4) * w).sum() - (extract_patches(frames, centre - d, 4) * w).sum()) / (2 * eps)
        assert torch.isfinite(grad[0, k]) and abs(grad[0, k]) > 0
        assert torch.allclose(grad[0, k], fd, rtol=1e-4)


def test_a_centre_near_the_border_is_clamped_inside():
    P, frames = 4, torch.rand(1, 3, 12, 16)
    patch = extract_patches(frames, torch.tensor([[0.99, 0.01]]), P)  # near the top-right corner
    assert torch.allclose(patch, frames[:, :, 0:P, 16 - P:16], atol=1e-5)
    # π's output range maps onto exactly the admissible centres (eq. 5)
    corners = centre_from_unit(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), P, 12, 16)
    assert torch.allclose(corners, torch.tensor([[2 / 16, 2 / 12], [14 / 16, 10 / 12]]))
    with pytest.raises(ValueError, match="exceeds the frame"):
        extract_patches(frames, corners[:1], 13)


def test_model_centres_keep_the_patch_inside():
    m = _model().eval()
    e_g, e_a, frames, _, has_audio = _inputs()
    c = m(e_g, e_a, frames, has_audio=has_audio).centre  # [B,T,2]
    P = CFG.patch_size
    assert (c[..., 0] >= P / (2 * W0) - 1e-6).all() and (c[..., 0] <= 1 - P / (2 * W0) + 1e-6).all()
    assert (c[..., 1] >= P / (2 * H0) - 1e-6).all() and (c[..., 1] <= 1 - P / (2 * H0) + 1e-6).all()


# ------------------------------------------------------------------------------------- eq. 4
def test_aespa_layer_averages_the_two_bottleneck_outputs():
    m = _model().eval()
    layer = m.aespa.layers[0]
    z_a, z_g, b = torch.randn(4, T, 8), torch.randn(4, 9, 8), torch.randn(4, 2, 8)
    za2, zg2, b2 = layer(z_a, z_g, b)
    out_a = layer.tf_a(torch.cat([z_a, b], 1))  # TF_A^l by hand
    out_g = layer.tf_g(torch.cat([z_g, b], 1))  # TF_G^l by hand
    assert torch.allclose(za2, out_a[:, :T], atol=1e-6) and torch.allclose(zg2, out_g[:, :9], atol=1e-6)
    assert torch.allclose(b2, (out_a[:, T:] + out_g[:, 9:]) / 2, atol=1e-6)
    assert m.aespa.layers[-1].tf_a is None  # TF_A^L feeds nothing in eq. 4


def test_aespa_output_is_the_visual_grid_and_audio_reaches_it():
    m = _model().eval()
    e_g, e_a, *_ = _inputs()
    e_ga = m.aespa(e_g[:, :2], e_a)
    assert e_ga.shape == (B, 2, CFG.d_aespa, *CFG.grid)
    assert not torch.allclose(m.aespa(e_g[:, :2], e_a + 1.0), e_ga, atol=1e-4)


# ---------------------------------------------------------------------------------- eqs. 8, 11
def test_max_aggregation_equals_a_loop():
    f = _model().eval().f_av
    x = torch.randn(2, 5, f.embed[0].in_features)
    out, h = f(x), f.embed(x)
    for t in range(5):
        assert torch.allclose(out[:, t], f.head(h[:, :t + 1].amax(1)), atol=1e-6)
    assert torch.allclose(f.per_frame(x), f.head(h), atol=1e-6)  # eq. 11: no aggregation
    assert torch.allclose(out[:, 0], f.per_frame(x)[:, 0], atol=1e-6)


# ----------------------------------------------------------------------------------- eq. 13
def test_gumbel_topk_without_noise_is_the_top_k_in_order():
    s = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.1]], requires_grad=True)
    w = gumbel_topk(s, 3, tau=1.0, noise=False)  # [2,3,4]
    assert torch.equal(w.argmax(-1), s.detach().topk(3, -1).indices)
    assert torch.allclose(w, F.one_hot(w.argmax(-1), 4).float())  # hard rows forward
    (w * torch.arange(4.0)).sum().backward()
    assert s.grad.abs().sum() > 0  # straight-through gradient to the saliency
    torch.manual_seed(0)
    picks = gumbel_topk(torch.zeros(1, 6), 6, 1.0).argmax(-1)[0]
    assert sorted(picks.tolist()) == list(range(6))  # without replacement


def test_ordered_loss_equals_the_ce_of_the_top_k_frames():
    m = _model().eval()
    s, e_av = torch.randn(2, 5), torch.randn(2, 5, m.f_av.embed[0].in_features)
    labels = torch.eye(C)[:2]
    got = ordered_logits_loss(s, e_av, m.f_av, labels, 3, 1.0, noise=False)
    idx = s.topk(3, -1).indices
    logits = m.f_av(e_av[torch.arange(2)[:, None], idx])  # [2,3,C]
    assert torch.allclose(got, -(logits.log_softmax(-1) * labels[:, None]).sum(-1).mean(), atol=1e-6)


# ------------------------------------------------------------------------------- early exit
def test_early_exit_matches_a_loop():
    probs = torch.rand(5, 4, C).softmax(-1) ** 0.2
    probs = probs / probs.sum(-1, keepdim=True)
    probs[0, 1] = torch.tensor([0.95, 0.03, 0.02])
    for thr in (0.35, 0.5, 0.9, 1.01):
        steps, p = early_exit(probs, thr)
        for b in range(5):
            want = next((t + 1 for t in range(4) if probs[b, t].max() >= thr), 4)
            assert steps[b] == want and torch.equal(p[b], probs[b, want - 1])
    assert early_exit(probs, 0.9)[0][0] == 2


# ------------------------------------------------------------------------- audio, bad input
def test_missing_audio_uses_the_token_never_the_slot():
    m = _model().eval()
    e_g, e_a, frames, _, has_audio = _inputs()
    out = m(e_g, e_a, frames, has_audio=has_audio)
    other = e_a.clone()
    other[1] = 100.0  # video 1 has no audio: whatever its slot holds
    out2 = m(e_g, other, frames, has_audio=has_audio)
    assert torch.allclose(out2.saliency, out.saliency) and torch.allclose(out2.logits, out.logits)
    other[0] += 1.0  # video 0 has audio
    assert not torch.allclose(m(e_g, other, frames, has_audio=has_audio).saliency[0], out.saliency[0])
    # a per-frame mask [B,T]: frame 2 of video 0 without audio
    per_frame = torch.ones(B, T, dtype=torch.bool)
    per_frame[0, 2] = False
    o3 = e_a.clone()
    o3[0, 2] = float("nan")
    assert torch.isfinite(m(e_g, o3, frames, has_audio=per_frame).logits).all()


def test_spatial_audio_is_pooled():
    m = _model().eval()
    e_g, e_a, *_ = _inputs()
    spatial = e_a[..., None, None] + torch.tensor([[-1.0, 1.0], [0.5, -0.5]])  # mean over 2x2 = e_a
    assert torch.allclose(m(e_g, spatial).saliency, m(e_g, e_a).saliency, atol=1e-6)


def test_non_finite_audio_is_refused_with_the_videos():
    m = _model()
    e_g, e_a, _, _, has_audio = _inputs()
    e_a[2, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"video\(s\) 2 "):
        m(e_g, e_a, has_audio=has_audio)
    with pytest.raises(ValueError, match=r"video\(s\) 'v2'"):
        m(e_g, e_a, has_audio=has_audio, ids=["v0", "v1", "v2"])
    e_a[2] = 0.0
    e_a[1, 0, 0] = float("nan")  # video 1 has no audio: its slot is never read
    assert torch.isfinite(m(e_g, e_a, has_audio=has_audio).saliency).all()
    with pytest.raises(ValueError, match="e_g must be"):
        m(e_g[..., :2], e_a)


# --------------------------------------------------------------------------- stop-gradients
def _grads(y, *xs):
    gs = torch.autograd.grad(y, xs, allow_unused=True, retain_graph=True)
    return [0.0 if g is None else float(g.abs().sum()) for g in gs]


def test_stop_gradients_of_section_3_4():
    m = _model().eval()
    e_g, e_a, frames, labels, has_audio = _inputs()
    e_g.requires_grad_(True)
    e_a.requires_grad_(True)
    out = m(e_g, e_a, frames, has_audio=has_audio)
    assert _grads(out.saliency.sum(), e_g, e_a) == [0.0, 0.0]  # TF_AV reads detached e^G, e^A
    assert _grads(out.centre.sum(), e_g, e_a) == [0.0, 0.0]  # π (and AESPA) too
    d_g, d_l = CFG.d_g, CFG.d_local
    g_ea, a_ea = _grads(out.e_av[..., d_g + d_l:].sum(), e_g, e_a)  # e^AT = ψ(...)
    assert g_ea == 0.0 and a_ea > 0  # ψ stops towards f_G only
    terms = m.loss_terms(out, labels)
    assert _grads(terms["s"], e_g, e_a) == [0.0, 0.0]  # L_s: s through TF_AV, s̃ detached
    assert _grads(terms["mask"], e_g, e_a) == [0.0, 0.0]
    assert all(v > 0 for v in _grads(terms["p"], e_g, e_a))  # f_C^AV trains both encoders
    # L_ord: its path through the saliency (TF_AV) adds nothing to e^G's gradient
    s_k = out.saliency
    full = torch.autograd.grad(ordered_logits_loss(s_k, out.e_av, m.f_av, labels, 3, 1.0, noise=False), e_g,
                               retain_graph=True)[0]
    cut = torch.autograd.grad(ordered_logits_loss(s_k.detach(), out.e_av, m.f_av, labels, 3, 1.0, noise=False),
                              e_g, retain_graph=True)[0]
    assert full.abs().sum() > 0 and torch.equal(full, cut)
    assert m.temporal.fc_s.weight in {p for p in m.parameters()}
    assert torch.autograd.grad(terms["ord"], m.temporal.fc_s.weight, retain_graph=True)[0].abs().sum() > 0


# ------------------------------------------------------------------------ losses, training
def test_each_loss_can_be_switched_off():
    e_g, e_a, frames, labels, has_audio = _inputs()
    full = _model().eval()
    terms = full.loss_terms(full(e_g, e_a, frames, has_audio=has_audio), labels)
    assert set(terms) == set(LOSSES) and all(torch.isfinite(v) for v in terms.values())
    assert terms["mask"] > 0  # frames 5, 6 > T_G = 4 are masked
    for off in LOSSES:
        m = _model(dataclasses.replace(CFG, **{f"loss_{off}": False})).eval()
        loss, stats = m.loss(m(e_g, e_a, frames, has_audio=has_audio), labels)
        assert f"loss_{off}" not in stats and len([k for k in stats if k.startswith("loss_")]) == len(LOSSES) - 1
        assert torch.allclose(loss, sum(v for k, v in terms.items() if k != off), atol=1e-5)
    glance_only = _model(dataclasses.replace(CFG, **{f"loss_{k}": False for k in LOSSES if k != "mask"}))
    loss, _ = glance_only.loss(glance_only(e_g, e_a, has_audio=has_audio), labels)  # no frames needed
    assert loss > 0
    weighted = _model(dataclasses.replace(CFG, w_s=3.0)).eval()
    loss, _ = weighted.loss(weighted(e_g, e_a, frames, has_audio=has_audio), labels)
    assert torch.allclose(loss, sum(terms.values()) + 2 * terms["s"], atol=1e-5)


def test_a_frame_subset_runs_the_head_on_those_frames():
    m = _model().eval()
    e_g, e_a, frames, labels, has_audio = _inputs()
    idx = torch.tensor([[5, 0], [2, 3], [1, 4]])
    out = m(e_g, e_a, frames[torch.arange(B)[:, None], idx], has_audio=has_audio, frame_idx=idx)
    assert out.logits.shape == (B, 2, C) and out.centre.shape == (B, 2, 2)
    assert torch.isfinite(m.loss(out, labels)[0])
    with pytest.raises(ValueError, match="frame_idx"):
        m(e_g, e_a, frames[:, :2], has_audio=has_audio)


def test_one_training_step_gives_every_parameter_a_finite_gradient_and_lowers_the_loss():
    m = _model()
    e_g, e_a, frames, labels, has_audio = _inputs()
    torch.manual_seed(1)
    m.train()
    loss, stats = m.loss(m(e_g, e_a, frames, has_audio=has_audio), labels)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert set(stats) >= {"loss_p", "loss_ord", "acc", "n"}

    def eval_loss():
        m.eval()
        with torch.no_grad():
            return m.loss(m(e_g, e_a, frames, has_audio=has_audio), labels)[0]

    before = eval_loss()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(5):
        m.train()
        opt.zero_grad()
        m.loss(m(e_g, e_a, frames, has_audio=has_audio), labels)[0].backward()
        opt.step()
    assert eval_loss() < before


# ------------------------------------------------------------------- L_search (our choice, not the paper's)
class _BrightScorer(torch.nn.Module):
    """f_L whose class-0 logit is 20 x the patch's mean brightness (class 1: 0): a patch classifies class 0
    best where the frame is brightest."""

    patch_size, out_dim = CFG.patch_size, 4

    def forward(self, patch):
        return patch.mean((1, 2, 3))[:, None].expand(-1, self.out_dim)

    def logits(self, patch):
        b = patch.mean((1, 2, 3))
        return torch.stack([20 * b, torch.zeros_like(b), torch.zeros_like(b)], -1)


def test_search_target_is_the_soft_argmin_over_the_candidate_grid():
    cfg = dataclasses.replace(CFG, loss_search=True, search_grid=3, search_tau=0.05)
    m = AVGN(cfg, local_encoder=_BrightScorer())
    frames = torch.zeros(2, 1, 3, H0, W0)
    frames[0, 0, :, H0 - 8:, W0 - 8:] = 1.0  # a bright square in the bottom-right corner: u = (1, 1) covers it
    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    got = m.search_target(frames, labels)
    # brute force: every candidate's CE, softmax(-CE / tau), weighted mean of the candidates' u
    axis = torch.linspace(0, 1, 3)
    cand = torch.tensor([[x, y] for y in axis for x in axis])
    want = []
    for b in range(2):
        ce = []
        for u in cand:
            patch = extract_patches(frames[b], centre_from_unit(u[None], CFG.patch_size, H0, W0), CFG.patch_size)
            ce.append(-F.log_softmax(_BrightScorer().logits(patch), -1)[0, 0])
        w = torch.softmax(-torch.stack(ce) / 0.05, 0)
        want.append(w @ cand)
    assert torch.allclose(got[:, 0], torch.stack(want), atol=1e-5)
    assert got[0, 0].min() > 0.75  # towards the bright corner (neighbours half-cover it too)
    assert torch.allclose(got[1, 0], torch.tensor([0.5, 0.5]), atol=1e-5)  # a flat frame: the centre


def test_search_loss_trains_pi_only_in_training_and_pulls_it_to_the_target():
    cfg = dataclasses.replace(CFG, loss_search=True, search_frames=2, w_search=2.0)
    e_g, e_a, frames, labels, has_audio = _inputs()
    m = AVGN(cfg, local_encoder=_BrightScorer())
    assert "search" not in m.eval().loss_terms(m(e_g, e_a, frames, has_audio=has_audio), labels)  # eval: none
    m.train()
    out = m(e_g, e_a, frames, has_audio=has_audio)
    terms = m.loss_terms(out, labels)
    want = (out.unit[:, :2] - m.search_target(frames[:, :2], labels)).abs().sum(-1).mean()
    assert torch.allclose(terms["search"], want)
    loss, stats = m.loss(out, labels)
    assert "loss_search" in stats
    g_pi = torch.autograd.grad(terms["search"], m.pi.out.weight)[0]
    assert g_pi.abs().sum() > 0  # π gets the gradient
    with pytest.raises(ValueError, match="patch: policy"):
        AVGNConfig(**{**dataclasses.asdict(cfg), "patch": "centre"})


def test_with_search_detach_only_l_search_trains_pi():
    e_g, e_a, frames, labels, has_audio = _inputs()
    for detach in (True, False):
        m = AVGN(dataclasses.replace(CFG, loss_search=True, search_detach=detach), local_encoder=_BrightScorer())
        m.train()
        terms = m.loss_terms(m(e_g, e_a, frames, has_audio=has_audio), labels)
        others = sum(v for k, v in terms.items() if k != "search")
        g = torch.autograd.grad(others, m.pi.out.weight, allow_unused=True)[0]
        assert (g is None or g.abs().sum() == 0) == detach


def test_the_network_config_is_built_from_the_params_section_and_shares_its_defaults():
    """One definition: AVGNConfig's fields that mirror ``avgn`` params default to AVGNParams' values, and
    from_params maps every one of them (T_G capped at T, ord_k at train_frames, L_search off with a centre crop)."""
    from components.core.params import AVGNParams
    from components.models.avgn_net import FROM_PARAMS

    fields = {f.name: f for f in dataclasses.fields(AVGNConfig)}
    p = AVGNParams()
    assert set(FROM_PARAMS) <= set(fields) and set(FROM_PARAMS.values()) <= set(AVGNParams.__dataclass_fields__)
    for f, k in FROM_PARAMS.items():
        assert fields[f].default == getattr(p, k), f
    a = dataclasses.replace(p, dim=16, heads=2, t_g=40, ord_k=9, train_frames=4, patch="centre", w_v=0.5)
    c = AVGNConfig.from_params(a, num_classes=5, d_g=8, d_a=6, grid=(2, 2), max_frames=16)
    assert (c.d_av, c.d_aespa, c.d_psi, c.tf_heads, c.aespa_heads, c.psi_heads) == (16, 16, 16, 2, 2, 2)
    assert (c.t_g, c.ord_k, c.loss_search, c.patch, c.w_v, c.num_classes) == (16, 4, False, "centre", 0.5, 5)

