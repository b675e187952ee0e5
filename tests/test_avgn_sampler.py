"""AVGN as a sampler (components/models/samplers/avgn.py) and its evaluation / cost paths
(components/evaluation/avgn_eval.py, components/evaluation/cost.py, components/store/sampler_data.py): the Table 4 switches, the
glance budget, the frozen recognizer as f_L, std_floor, sampler_keys, the causality of the head that
early exit relies on, the cost bookkeeping and a tiny training run. The network's own equations are
tests/test_avgn.py. Tiny sizes, CPU, fixed seeds."""
import dataclasses
import re
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from components.evaluation.avgn_eval import HeadScorer, avgn_gmacs, exit_predictions, head_predictions
from components.evaluation.sampler_eval import SamplerRun
from components.evaluation.cost import (FrameModel, avgn_flops_rows, frame_calls, sampler_gmacs, total_gmacs,
                              video_gmacs)
from components.models.encoders import create_encoder
from components.models.samplers import SamplerOutput
from components.core.integrity import save_checkpoint
from components.models.samplers.avgn import AVGNSampler, FrozenRecognizer, file_sha256, load_local, std_floor
from components.core.params import AVGNParams
from components.store.sampler_data import SAMPLER_KEYS, sampler_keys

B, T, C, D_G, D_A, GRID, S = 3, 6, 3, 8, 6, (2, 2), 16
BASE = AVGNParams(dim=16, heads=2, cls_hidden=16, patch_size=8, local="scratch", pi_map="glance", t_g=4, train_frames=T, ord_k=3,
                  dropout=0.0)


def _params(**kw) -> AVGNParams:
    return dataclasses.replace(BASE, **kw)


def _sampler(seed: int = 0, **kw) -> AVGNSampler:
    torch.manual_seed(seed)
    return AVGNSampler(C, D_G, GRID, D_A, T, _params(**kw))


def _batch(seed: int = 0, b: int = B, size: int = S) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"light_maps": torch.randn(b, T, D_G, *GRID, generator=g),  # [B,T,D_G,H_G,W_G]
            "audio_emb": torch.randn(b, T, D_A, generator=g),  # [B,T,D_A]
            "has_audio": torch.ones(b, dtype=torch.bool),
            "frames_full": torch.randint(0, 256, (b, T, 3, size, size), generator=g, dtype=torch.uint8),
            "labels": F.one_hot(torch.arange(b) % C, C).float()}


def _glance(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "frames_full"}


def _saliency(s: AVGNSampler, batch: dict) -> torch.Tensor:
    s.eval()
    with torch.no_grad():
        return s(_glance(batch)).saliency  # [B,T]


def _with(batch: dict, key: str, frames, seed: int = 1) -> dict:
    """``batch`` with ``key`` of the frames ``frames`` (one list per video, or one for all) redrawn."""
    out = {k: v.clone() for k, v in batch.items()}
    g = torch.Generator().manual_seed(seed)
    for i in range(out[key].shape[0]):
        for t in (frames[i] if isinstance(frames[0], (list, tuple, np.ndarray)) else frames):
            x = out[key][i, int(t)]
            if x.dtype == torch.uint8:
                out[key][i, int(t)] = torch.randint(0, 256, x.shape, generator=g, dtype=torch.uint8)
            else:
                out[key][i, int(t)] = 3 * torch.randn(x.shape, generator=g)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster than several and does not fight a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def recognizer_file(tmp_path_factory):
    """A frame recognizer saved the way train_encoders saves it ({"role", "cfg", "state_dict"})."""
    torch.manual_seed(0)
    cfg = {"arch": "resnet10t", "num_classes": C}
    rec = create_encoder("recognizer", **cfg)
    path = tmp_path_factory.mktemp("encoders") / "recognizer.pt"
    save_checkpoint({"role": "recognizer", "cfg": cfg, "state_dict": rec.state_dict()}, path)
    return path


def _frozen_sampler(path, patch_size: int = 8, **kw) -> AVGNSampler:
    torch.manual_seed(0)
    return AVGNSampler(C, D_G, GRID, D_A, T, _params(local="recognizer", patch_size=patch_size, **kw),
                       local_path=str(path), local_digest=file_sha256(path))


# -------------------------------------------------------------------------- Table 4 switches
def test_without_audio_nothing_depends_on_the_audio_embedding():
    b = _batch()
    b2 = {**b, "audio_emb": 5 * torch.randn(B, T, D_A)}
    on = _sampler()
    assert not torch.allclose(_saliency(on, b), _saliency(on, b2), atol=1e-4)  # the check can fail

    s = _sampler(audio=False)
    assert torch.equal(_saliency(s, b), _saliency(s, b2))
    h, h2 = s.predict_head(b, K=4), s.predict_head(b2, K=4)
    assert np.array_equal(h["idx"], h2["idx"])
    np.testing.assert_array_equal(h["probs"], h2["probs"])
    np.testing.assert_array_equal(h["centre"], h2["centre"])
    s.train()
    torch.manual_seed(0)
    _, stats = s.loss(b, s(b))
    assert stats.get("loss_a", 0.0) == 0.0  # L_A: no frame has audio


def test_without_tf_av_a_frames_saliency_ignores_the_other_frames():
    b = _batch()
    changed = _with(b, "light_maps", [2])  # frame 2's light maps, every video
    others = [t for t in range(T) if t != 2]

    s = _sampler(av_test=False, t_g=T)  # no frame masked: only attention could carry frame 2 over
    s0, s1 = _saliency(s, b), _saliency(s, changed)
    torch.testing.assert_close(s1[:, others], s0[:, others], rtol=0, atol=1e-6)
    assert (s1[:, 2] - s0[:, 2]).abs().min() > 1e-6  # frame 2 itself does move

    s = _sampler(av_test=True, t_g=T)
    s0, s1 = _saliency(s, b), _saliency(s, changed)
    assert (s1[:, others] - s0[:, others]).abs().amax() > 1e-4  # attention across time


def test_without_psi_the_classifier_reads_visual_and_local_features_only():
    for psi in (False, True):
        s = _sampler(psi=psi)
        d_l = s.net.f_l.out_dim
        assert s.net.f_av.embed[0].in_features == D_G + d_l + (BASE.dim if psi else 0)
        s.train()
        out = s(_batch()).aux["avgn"]
        assert out.e_av.shape == (B, T, D_G + d_l + (BASE.dim if psi else 0))


def test_centre_patch_is_the_frame_centre():
    s = _sampler(patch="centre")
    h = s.predict_head(_batch(), K=4)
    assert h["centre"].shape == (B, 4, 2) and np.all(h["centre"] == 0.5)
    s.train()
    assert torch.all(s(_batch()).aux["avgn"].centre == 0.5)


def test_without_aespa_the_patch_centre_ignores_audio():
    b = _batch()
    b2 = {**b, "audio_emb": 5 * torch.randn(B, T, D_A)}
    idx = torch.tensor([[0, 2, 4], [5, 1, 3], [1, 0, 2]])  # fixed: audio also moves the saliency ranking
    s = _sampler(aespa=False)
    np.testing.assert_array_equal(s.predict_head(b, 3, idx=idx)["centre"], s.predict_head(b2, 3, idx=idx)["centre"])
    s = _sampler(aespa=True)
    assert np.abs(s.predict_head(b, 3, idx=idx)["centre"] - s.predict_head(b2, 3, idx=idx)["centre"]).max() > 1e-6


# ------------------------------------------------------------------------------ glance budget
@pytest.mark.parametrize("t_g", [2, 4])
def test_saliency_reads_the_light_maps_of_the_first_t_g_frames_only(t_g):  # eq. 14
    s = _sampler(t_g=4)
    s.glance_frames = t_g  # evaluate sweeps T_G on the trained model
    b = _batch()
    s0 = _saliency(s, b)
    late = _saliency(s, _with(b, "light_maps", list(range(t_g, T))))
    torch.testing.assert_close(late, s0, rtol=0, atol=1e-6)
    for t in range(t_g):
        assert (_saliency(s, _with(b, "light_maps", [t])) - s0).abs().amax() > 1e-4
    h = s.predict_head(b, K=2)  # the head's glance uses the same budget
    np.testing.assert_allclose(h["saliency"], s0.numpy(), atol=1e-6)


# -------------------------------------------------------------------- frozen recognizer as f_L
def test_frozen_recognizer_is_outside_the_checkpoint_and_gets_no_gradient(recognizer_file):
    s = _frozen_sampler(recognizer_file)
    f_l = s.net.f_l
    assert isinstance(f_l, FrozenRecognizer)
    sd = s.state_dict()
    assert not any("f_l" in k or "backbone" in k for k in sd)
    own = {id(p) for p in s.parameters()}
    assert not any(id(p) in own for p in f_l.parameters())
    s2 = _frozen_sampler(recognizer_file)
    s2.load_state_dict(sd, strict=True)  # a checkpoint reloads without f_L's weights

    bn = next(m for m in f_l.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    s.train()
    assert not f_l.training  # its BatchNorm statistics stay the recognizer's
    torch.manual_seed(0)
    out = s(_batch())
    loss, _ = s.loss(_batch(), out)
    loss.backward()
    assert torch.equal(bn.running_mean, stats)
    assert all(not p.requires_grad and p.grad is None for p in f_l.parameters())
    g = s.net.pi.out.weight.grad  # π's centre reaches the loss only through the patch f_L reads
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_load_local_refuses_a_changed_or_missing_file(recognizer_file, tmp_path):
    digest = file_sha256(recognizer_file)
    assert isinstance(load_local("recognizer", 8, str(recognizer_file), digest), FrozenRecognizer)
    changed = tmp_path / "recognizer.pt"
    ck = torch.load(recognizer_file, weights_only=False)
    ck["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    torch.save(ck, changed)
    with pytest.raises(ValueError, match=re.escape(str(changed))):
        load_local("recognizer", 8, str(changed), digest)
    with pytest.raises(ValueError, match=re.escape(str(changed))):
        AVGNSampler(C, D_G, GRID, D_A, T, _params(local="recognizer"), local_path=str(changed), local_digest=digest)
    missing = tmp_path / "nope" / "recognizer.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_local("recognizer", 8, str(missing), digest)
    with pytest.raises(FileNotFoundError, match="f_L"):
        load_local("recognizer", 8, None, None)


# ---------------------------------------------------------------------------------- std_floor
def test_std_floor_lifts_a_dead_channel_to_a_tenth_of_the_median():
    std = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # median 2 -> floor 0.2
    torch.testing.assert_close(std_floor(std), torch.tensor([0.2, 1.0, 2.0, 3.0, 4.0]))
    assert std[0] == 0.0  # the input is not modified
    torch.testing.assert_close(std_floor(torch.tensor([0.0, 0.0, 0.0, 5.0, 5.0])),
                               torch.tensor([1e-3, 1e-3, 1e-3, 5.0, 5.0]))  # median 0: the absolute floor

    map_std = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])  # median (lower) 3 -> floor 0.3
    map_mean = torch.arange(D_G, dtype=torch.float32)
    torch.manual_seed(0)
    s = AVGNSampler(C, D_G, GRID, D_A, T, BASE, map_mean=map_mean, map_std=map_std,
                    audio_std=torch.tensor([0.0, 2.0, 2.0, 2.0, 2.0, 2.0]))
    torch.testing.assert_close(s.map_std, torch.tensor([0.3, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
    torch.testing.assert_close(s.audio_std, torch.tensor([0.2, 2.0, 2.0, 2.0, 2.0, 2.0]))
    b = _batch()
    g, a, _ = s._features(b)
    torch.testing.assert_close(g[:, :, 0], b["light_maps"][:, :, 0] / 0.3)  # (x - 0) / 0.3, never / 1e-4
    torch.testing.assert_close(a[..., 0], b["audio_emb"][..., 0] / 0.2)


# ------------------------------------------------------------------------------- sampler_keys
def test_sampler_keys_of_avgn_and_of_a_feature_sampler():
    for model in ("avgn", _sampler()):
        train, infer = sampler_keys(model, training=True), sampler_keys(model)
        assert "light_maps" in train and "frames_full" in train
        assert "light_maps" in infer and "frames_full" not in infer
        assert train[:len(SAMPLER_KEYS)] == SAMPLER_KEYS and len(set(train)) == len(train)
    assert sampler_keys("tsqnet") == SAMPLER_KEYS
    assert sampler_keys("tsqnet", training=True) == SAMPLER_KEYS


# ----------------------------------------------------------------------------- the head, causal
def test_step_t_of_the_head_depends_on_the_first_t_frames_only():
    s = _sampler()
    b = _batch()
    h = s.predict_head(b, K=T)
    idx = h["idx"]  # [B,T], most salient first
    assert np.array_equal(idx, np.argsort(-h["saliency"], axis=1, kind="stable"))
    for t in range(T - 1):
        nxt = [[int(idx[i, t + 1])] for i in range(B)]  # the frame processed at step t+1 (0-based)
        for key in ("frames_full", "light_maps"):
            h2 = s.predict_head(_with(b, key, nxt, seed=t), K=T, idx=torch.as_tensor(idx))
            np.testing.assert_allclose(h2["probs"][:, :t + 1], h["probs"][:, :t + 1], rtol=0, atol=1e-6)
            np.testing.assert_allclose(h2["centre"][:, :t + 1], h["centre"][:, :t + 1], rtol=0, atol=1e-6)
            assert np.abs(h2["probs"][:, t + 1:] - h["probs"][:, t + 1:]).max() > 1e-7, (t, key)


def test_head_extras_are_the_gate_inputs_step_by_step():
    """``extras`` (early-exit gate inputs): eq. 8's running max reproduces p_t through the classifier; the
    frame-t-alone probabilities (eq. 11) are brute-forced one frame at a time, the visual head (eq. 9) as a
    max over the first t frames in any order; the audio head reads all T segments; the base outputs do not change."""
    s = _sampler()
    b = _batch()
    K = 4
    h, plain = s.predict_head(b, K, extras=True), s.predict_head(b, K)
    for k in plain:
        np.testing.assert_array_equal(h[k], plain[k])
    f_av = s.net.f_av
    with torch.no_grad():
        p_from_z = f_av.head(torch.as_tensor(h["embedding"])).softmax(-1).numpy()
    np.testing.assert_allclose(p_from_z, h["probs"], rtol=0, atol=1e-6)
    assert np.all(np.diff(h["embedding"], axis=1) >= 0)  # a running max never decreases
    c = _sampler(patch="centre")  # no π: frame t's patch does not depend on the frames before it (π's GRU)
    hc = c.predict_head(b, K, extras=True)
    idx = torch.as_tensor(hc["idx"])
    for t in range(K):  # frame t alone: the head on a one-frame selection
        one = c.predict_head(b, 1, idx=idx[:, t:t + 1], extras=True)
        np.testing.assert_allclose(hc["frame_probs"][:, t], one["probs"][:, 0], rtol=0, atol=1e-5)
        first = c.predict_head(b, t + 1, idx=idx[:, :t + 1].flip(1), extras=True)  # eq. 9 max-aggregates
        np.testing.assert_allclose(hc["visual_probs"][:, t], first["visual_probs"][:, -1], rtol=0, atol=1e-5)
    assert h["audio_probs"].shape == (B, C)
    np.testing.assert_allclose(h["audio_probs"].sum(-1), 1.0, atol=1e-6)
    louder = dict(b, audio_emb=b["audio_emb"].clone())
    louder["audio_emb"][:, -1] += 5.0  # the last audio segment counts
    assert np.abs(s.predict_head(louder, K, extras=True)["audio_probs"] - h["audio_probs"]).max() > 1e-6


def test_head_with_given_frames_processes_them_in_that_order():
    s = _sampler()
    b = _batch()
    K = 4
    perm = torch.tensor([[5, 0, 3, 1], [2, 4, 0, 5], [1, 3, 2, 0]])  # [B,K]
    h = s.predict_head(b, K, idx=perm)
    assert np.array_equal(h["idx"], perm.numpy())
    # brute force: move each video's chosen frames (maps and pixels) to the front, audio untouched
    moved = {k: v.clone() for k, v in b.items()}
    for i in range(B):
        for key in ("light_maps", "frames_full"):
            moved[key][i, :K] = b[key][i, perm[i]]
    ref = s.predict_head(moved, K, idx=torch.arange(K).expand(B, K))
    np.testing.assert_allclose(h["probs"], ref["probs"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(h["centre"], ref["centre"], rtol=0, atol=1e-5)
    assert np.abs(s.predict_head(b, K, idx=perm.flip(1))["probs"] - h["probs"]).max() > 1e-6  # order matters


def test_top_k_is_a_prefix_of_top_k_max_and_the_head_scorer_reads_it():
    s = _sampler()
    b = _batch()
    h6, h2 = s.predict_head(b, K=T), s.predict_head(b, K=2)
    assert np.array_equal(h2["idx"], h6["idx"][:, :2])
    np.testing.assert_allclose(h2["probs"], h6["probs"][:, :2], rtol=0, atol=1e-6)

    run = SamplerRun("avgn", 0, s, SamplerOutput(saliency=_saliency(s, b)))
    scorer = HeadScorer(b, k_max=T)
    bound = scorer.bind(run)
    for K in (1, 2, 4):
        np.testing.assert_allclose(bound.scores(run.select(K)), s.predict_head(b, K)["probs"][:, K - 1],
                                   rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="prefix"):
        bound.scores(run.select(2)[:, ::-1].copy())
    assert scorer.bind(dataclasses.replace(run, branch="x")) is None
    assert scorer.bind(types.SimpleNamespace(model=nn.Linear(2, 2), branch=None)) is None
    # batched over the split (batch_size < N) with the run's selection: the same as one pass
    hp = head_predictions(s, b, T, batch_size=2, idx=run.select(T))
    np.testing.assert_allclose(hp["probs"], h6["probs"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="frames_full"):
        head_predictions(s, _glance(b), 2)


# ------------------------------------------------------------------------------------- cost
def _cost_models() -> tuple[FrameModel, FrameModel, dict[str, float]]:
    torch.manual_seed(0)
    light = FrameModel(nn.Conv2d(3, 4, 3, padding=1), S, "tiny_light")  # 16*16*4*27 MACs
    audio = FrameModel(nn.Linear(8, 5), (7, 8), "tiny_audio")  # 7*8*5 MACs
    return light, audio, {"light": light.gmacs(), "audio": audio.gmacs(), "recognizer": 1e-3}


@pytest.mark.parametrize("kw", [{}, {"audio": False}, {"patch": "centre"}, {"psi": False, "aespa": False}])
def test_avgn_gmacs_is_the_sum_of_the_flops_rows(kw):
    light, audio, enc = _cost_models()
    assert enc["light"] == pytest.approx(16 * 16 * 4 * 27 / 1e9) and enc["audio"] == pytest.approx(7 * 8 * 5 / 1e9)
    s = _sampler(**kw)
    b = _batch()
    for K, t_g in ((3, 4), (5, 2)):
        rows = avgn_flops_rows(s, K, S, light, audio, t_g=t_g)
        total = avgn_gmacs(s, enc, b, K, t_g=t_g)
        assert total == pytest.approx(total_gmacs(rows), rel=1e-6)
        assert rows[0].calls == min(t_g, T) and rows[0].gmacs_per_call == enc["light"]
        assert any(r.component == "audio encoder" for r in rows) == kw.get("audio", True)
        assert {r.calls for r in rows[-3:]} == {K}
    assert s.glance_frames == 4 and s.training  # both restored (built with t_g=4, in train mode)


def test_light_encoder_calls_scale_with_the_glance_budget():
    light, audio, enc = _cost_models()
    s = _sampler()
    b = _batch()
    for g in (1, 2, 4, 6, 10):
        s.glance_frames = g
        assert frame_calls("avgn", s, T, 3) == {"light": min(g, T), "object": 0, "audio": T, "recognizer": 3}
    s.glance_frames = 4
    # only the light encoder's calls depend on T_G: the glance itself embeds every frame (mask or not)
    for head in (True, False):
        d = avgn_gmacs(s, enc, b, 3, t_g=5, head=head) - avgn_gmacs(s, enc, b, 3, t_g=2, head=head)
        assert d == pytest.approx(3 * enc["light"], rel=1e-6)
    assert avgn_gmacs(s, enc, b, 4, head=False) - avgn_gmacs(s, enc, b, 2, head=False) == pytest.approx(
        2 * enc["recognizer"], rel=1e-6)


def _frame_recognizer_cost_agrees(audio: bool):
    _, _, enc = _cost_models()
    s = _sampler(audio=audio)
    b = _batch()
    own = sampler_gmacs(s, {k: v[:1] for k, v in _glance(b).items()})
    return video_gmacs("avgn", s, enc, own, T, 3), avgn_gmacs(s, enc, b, 3, head=False)


def test_frame_recognizer_cost_of_avgn_agrees_between_video_gmacs_and_avgn_gmacs():
    got, want = _frame_recognizer_cost_agrees(audio=True)
    assert got == pytest.approx(want, rel=1e-6)


def test_avgn_without_audio_is_not_charged_for_the_audio_encoder():
    s = _sampler(audio=False)
    assert frame_calls("avgn", s, T, 3)["audio"] == 0
    got, want = _frame_recognizer_cost_agrees(audio=False)
    assert got == pytest.approx(want, rel=1e-6)


def test_the_local_encoder_row_is_priced_at_the_patch(recognizer_file):
    P, full = 32, 64
    s = _frozen_sampler(recognizer_file, patch_size=P)
    light, audio, _ = _cost_models()
    rows = avgn_flops_rows(s, 3, full, light, audio)
    row = next(r for r in rows if r.component == "local encoder")
    assert row.resolution == f"{P}x{P}" and row.calls == 3 and row.model == "FrameClassifier"
    at_full = FrameModel(s.net.f_l.net, full).gmacs()  # the same recognizer on the whole frame
    ratio = row.gmacs_per_call / at_full
    assert 0.5 * (P / full) ** 2 < ratio < 2 * (P / full) ** 2, ratio


def test_early_exit_bookkeeping_on_hand_made_probabilities():
    probs = np.array([[[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.5, 0.5]],  # confident at step 1
                      [[0.5, 0.5], [0.4, 0.6], [0.3, 0.7], [0.25, 0.75]],  # never passes 0.8
                      [[0.5, 0.5], [0.4, 0.6], [0.15, 0.85], [0.05, 0.95]]])  # passes at step 3
    used, pred = exit_predictions(probs, 0.8)
    assert used.tolist() == [1, 4, 3]
    np.testing.assert_array_equal(pred, probs[[0, 1, 2], [0, 3, 2]])
    assert exit_predictions(probs, 0.85)[0].tolist() == [1, 4, 3]  # >= the gate exits
    assert exit_predictions(probs, 0.0)[0].tolist() == [1, 1, 1]
    used, pred = exit_predictions(probs, 1.01)  # never: every video uses all K frames, p_K
    assert used.tolist() == [4, 4, 4]
    np.testing.assert_array_equal(pred, probs[:, -1])
    assert exit_predictions(probs, 0.7)[0].tolist() == [1, 3, 3]


# ------------------------------------------------------------------------------- tiny training
def _train(s: AVGNSampler, batch: dict, steps: int = 3, lr: float = 0.05) -> list[tuple[float, dict]]:
    opt = torch.optim.SGD(s.parameters(), lr=lr)
    s.train()
    hist = []
    for _ in range(steps + 1):
        torch.manual_seed(0)  # the same frame subsets and Gumbel noise every step
        loss, stats = s.loss(batch, s(batch))
        hist.append((float(loss.detach()), stats))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return hist


def test_three_sgd_steps_lower_the_loss_and_report_every_enabled_term():
    b = _batch()
    hist = _train(_sampler(), b)
    losses = [h[0] for h in hist]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    terms = {"loss_p", "loss_v", "loss_a", "loss_mask", "loss_s", "loss_ord"}
    assert terms <= set(hist[0][1]) and all(np.isfinite(hist[0][1][k]) for k in terms)
    assert hist[0][1]["loss_mask"] > 0  # t_g = 4 < T = 6: two frames are masked

    stats = _train(_sampler(loss_ord=False), b, steps=0)[0][1]
    assert "loss_ord" not in stats and terms - {"loss_ord"} <= set(stats)
