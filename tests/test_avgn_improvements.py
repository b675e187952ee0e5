"""AVGN's issue-24 changes: π's finer input map (components/models/samplers/avgn.py ``StageMap``), the same
frame order in training and inference, f_L fine-tuned on patches, and the calibrated early exit and
linear probes (components/evaluation/avgn_calibration.py). Hand-computed answers; tiny sizes, CPU, fixed seeds."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.evaluation.avgn_calibration import (calibrate, choose_gate, fit_temperature, gate_candidates, probe_accuracy,
                                         soft_nll, step_temperatures)
from components.core.integrity import save_checkpoint
from components.models.avgn_net import _take, saliency_order
from components.models.encoders import create_encoder
from components.models.samplers.avgn import AVGNSampler, FrozenRecognizer, StageMap, file_sha256
from components.core.params import AVGNParams

B, T, C, D_G, D_A, S = 3, 6, 3, 8, 6, 32
BASE = AVGNParams(dim=16, heads=2, cls_hidden=16, patch_size=8, local="scratch", pi_map="glance", t_g=4,
                  train_frames=4, ord_k=3, dropout=0.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(seed: int = 0, grid=(2, 2)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"light_maps": torch.randn(B, T, D_G, *grid, generator=g), "audio_emb": torch.randn(B, T, D_A, generator=g),
            "has_audio": torch.ones(B, dtype=torch.bool),
            "frames_full": torch.randint(0, 256, (B, T, 3, S, S), generator=g, dtype=torch.uint8),
            "labels": F.one_hot(torch.arange(B) % C, C).float()}


def _light(arch: str = "tf_efficientnet_lite0"):
    torch.manual_seed(0)
    return create_encoder("light", arch=arch, num_classes=C).eval()


# ------------------------------------------------------------------------------------ π's map
@pytest.mark.parametrize("size,stride,side,chans", [(48, 8, 6, 40), (32, 8, 4, 40), (48, 32, 2, 320), (32, 32, 1, 320),
                                                    (48, 16, 3, 112)])
def test_stage_map_size_of_efficientnet_lite0(size, stride, side, chans):
    """EfficientNet-Lite0 ('same' padding): a stride-s stage of an n² input is ceil(n / s)² (48/8 = 6, 32/8 = 4);
    the last stage (stride 32) is e^G's 2×2 (demo, 48²) and 1×1 (benchmark, 32²)."""
    m = StageMap(_light(), size, stride)
    assert m.grid() == (side, side) and m.out_dim == chans
    out = m(torch.rand(2, 3, 112, 112))  # any frame-cache side: resized to the encoder's input first
    assert tuple(out.shape) == (2, chans, side, side)


def test_stage_map_refuses_a_stride_the_encoder_lacks():
    with pytest.raises(ValueError, match="pi_stride=12.*2, 4, 8, 16, 32"):
        StageMap(_light(), 48, 12)


def _fine_sampler(**kw) -> AVGNSampler:
    torch.manual_seed(0)
    pi = StageMap(_light(), 32, 8)  # 4×4 map for π
    return AVGNSampler(C, D_G, (2, 2), D_A, T, dataclasses.replace(BASE, pi_map="fine", **kw), pi_module=pi)


def test_fine_pi_reads_the_stage_map_and_stays_out_of_the_checkpoint():
    s = _fine_sampler()
    assert s.config.grid == (4, 4) and s.config.d_pi == 40
    assert not any(k.startswith("light") or "pi_encoder" in k for k in s.state_dict())
    assert s.net.aespa.pos_g.shape[0] == 16  # one AESPA position per cell of the 4×4 map
    s.train()
    out = s(_batch()).aux["avgn"]
    loss, _ = s.loss(_batch(), s(_batch()))
    loss.backward()
    assert all(q.grad is None for q in s.net._pi_encoder[0].parameters())  # frozen
    assert tuple(out.centre.shape) == (B, 4, 2)
    # the head (inference) reads the same map; the light maps may have any grid (only pooled e^G is read)
    h = s.predict_head(_batch(grid=(3, 3)), 3)
    assert h["probs"].shape == (B, 3, C)


def test_fine_pi_costs_more_than_the_glance_map_and_is_counted():
    from components.evaluation.avgn_eval import avgn_gmacs

    enc = {"light": 0.0, "audio": 0.0, "recognizer": 0.0}
    fine, coarse = _fine_sampler(), AVGNSampler(C, D_G, (2, 2), D_A, T, BASE)
    b = _batch()
    stage = StageMap(_light(), 32, 8)
    from components.evaluation.cost import count_macs
    one = count_macs(lambda: stage(torch.zeros(1, 3, S, S))) / 1e9
    assert one > 0
    assert avgn_gmacs(fine, enc, b, 3) - avgn_gmacs(coarse, enc, b, 3) > 3 * one * 0.99  # K = 3 frames' stage maps


# ------------------------------------------------------------------------------ frame order
def test_saliency_order_is_most_salient_first_and_stable():
    s = torch.tensor([[0.1, 0.5, 0.3, 0.5], [2.0, -1.0, 0.0, 1.0]])
    assert saliency_order(s).tolist() == [[1, 3, 2, 0], [0, 3, 2, 1]]


@pytest.mark.parametrize("order", ["saliency", "temporal"])
def test_training_processes_frames_in_the_order_inference_uses(order):
    torch.manual_seed(0)
    s = AVGNSampler(C, D_G, (2, 2), D_A, T, dataclasses.replace(BASE, train_order=order)).train()
    b = _batch()
    out = s(b).aux["avgn"]
    sal = _take(out.saliency.detach(), out.frame_idx)  # [B,K] saliency of the processed frames, in order
    if order == "saliency":
        assert (sal[:, :-1] >= sal[:, 1:]).all()  # most salient first, as inference
    else:
        assert (out.frame_idx[:, :-1] < out.frame_idx[:, 1:]).all()  # temporal order (the earlier behaviour)
    # inference: the head's top-K, most salient first
    h = s.predict_head(b, 4)
    sal_h = np.take_along_axis(h["saliency"], h["idx"], axis=1)
    assert (sal_h[:, :-1] >= sal_h[:, 1:]).all()
    assert s.training  # predict_head restores the mode


# ------------------------------------------------------------------------------ f_L fine-tuned
@pytest.fixture(scope="module")
def recognizer_file(tmp_path_factory):
    torch.manual_seed(0)
    cfg = {"arch": "resnet10t", "num_classes": C}
    rec = create_encoder("recognizer", **cfg)
    path = tmp_path_factory.mktemp("encoders") / "recognizer.pt"
    save_checkpoint({"role": "recognizer", "cfg": cfg, "state_dict": rec.state_dict()}, path)
    return path


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_finetuned_f_l_is_trained_at_its_own_lr_and_saved(recognizer_file, mode):
    torch.manual_seed(0)
    s = AVGNSampler(C, D_G, (2, 2), D_A, T, dataclasses.replace(BASE, local="recognizer", local_mode=mode,
                                                                local_lr=3e-5),
                    local_path=str(recognizer_file), local_digest=file_sha256(recognizer_file))
    groups = s.optimizer_groups(1e-3, 0.01)
    in_state = any(k.startswith("net.f_l_trained.") for k in s.state_dict())
    f_l = s.net.f_l
    assert isinstance(f_l, FrozenRecognizer) and f_l.frozen == (mode == "frozen")
    if mode == "frozen":
        assert len(groups) == 1 and not in_state
    else:
        assert [g["lr"] for g in groups] == [1e-3, 3e-5] and in_state
        assert {id(q) for q in groups[1]["params"]} == {id(q) for q in f_l.parameters()}
        assert not {id(q) for q in groups[0]["params"]} & {id(q) for q in f_l.parameters()}
    before = [q.detach().clone() for q in f_l.parameters()]
    bn = next(m for m in f_l.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    opt = torch.optim.AdamW(groups)
    s.train()
    b = _batch()
    loss, _ = s.loss(b, s(b))
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = any(not torch.equal(a, q) for a, q in zip(before, f_l.parameters()))
    assert changed == (mode == "finetune")
    assert torch.equal(bn.running_mean, stats)  # the recognizer's BatchNorm statistics are kept either way


# -------------------------------------------------------------------------- temperature scaling
def test_temperature_minimising_the_nll_by_hand():
    """4 videos, 2 classes, logits (2, 0), 3 labelled class 0: NLL(τ) = -(3/4) log σ(2/τ) - (1/4) log σ(-2/τ),
    minimal where σ(2/τ) = 3/4, i.e. τ = 2 / ln 3 = 1.8205."""
    logits = np.array([[2.0, 0.0]] * 4)
    y = np.array([[1, 0], [1, 0], [1, 0], [0, 1]])
    tau = fit_temperature(logits, y)
    assert tau == pytest.approx(2 / math.log(3), rel=1e-4)
    sig = 1 / (1 + math.exp(-2 / tau))
    assert sig == pytest.approx(0.75, rel=1e-4)
    nll = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # the entropy of (3/4, 1/4) at the optimum
    assert soft_nll(logits, y, tau) == pytest.approx(nll, rel=1e-6)
    assert soft_nll(logits, y, 1.0) > soft_nll(logits, y, tau) < soft_nll(logits, y, 3.0)


def test_step_temperatures_and_calibrate_per_step():
    """Step 1 over-confident (logits (4, 0), half right) -> τ large (-> p = 1/2); step 2 exactly calibrated
    (p = 3/4, 3 of 4 right) -> τ = 1; calibrate with τ = 1 is the identity."""
    p1 = np.array([[math.exp(4), 1.0]]) / (math.exp(4) + 1)
    p2 = np.array([[0.75, 0.25]])
    probs = np.stack([np.repeat(np.concatenate([p1, p2])[None], 4, 0)[i] for i in range(4)])  # [4,2,2]
    y = np.array([[1, 0], [0, 1], [1, 0], [1, 0]])  # step 1: logit gap 4 in every video; 3 of 4 right too
    y1 = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    t = step_temperatures(probs[:, 1:], y)
    assert t[0] == pytest.approx(1.0, rel=1e-4)
    t = step_temperatures(probs[:, :1], y1)
    assert t[0] > 40  # half right: the flattest temperature of the search range
    np.testing.assert_allclose(calibrate(probs, [1.0, 1.0]), probs, atol=1e-12)
    cal = calibrate(probs, [2.0, 1.0])  # τ = 2 halves the log-odds: 4 -> 2
    np.testing.assert_allclose(cal[0, 0], [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)], rtol=1e-9)


def test_choose_gate_is_the_cheapest_reaching_the_target():
    curve = {0.3: (0.60, 1.0), 0.5: (0.70, 1.2), 0.7: (0.79, 1.5), 0.9: (0.80, 1.9)}
    g = choose_gate(lambda t: curve[t], list(curve), best_fixed=0.80, target=0.98)  # needs >= 0.784
    assert g == {"threshold": 0.7, "map": 0.79, "gmacs": 1.5, "target_map": pytest.approx(0.784), "reached": True}
    g = choose_gate(lambda t: curve[t], list(curve), best_fixed=0.90, target=1.0)  # nobody reaches 0.9
    assert g["threshold"] == 0.9 and not g["reached"]
    assert 0.05 in gate_candidates([0.33]) and 0.33 in gate_candidates([0.33]) and max(gate_candidates([])) <= 0.995


def test_probe_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    centres = np.eye(3) * 5
    x = centres[y] + rng.normal(size=(60, 3))
    assert probe_accuracy(x[::2], y[::2], x[1::2], y[1::2]) == 1.0
    noise = rng.normal(size=(600, 3))
    yn = rng.integers(0, 3, 600)
    assert probe_accuracy(noise[::2], yn[::2], noise[1::2], yn[1::2]) < 0.45  # chance 1/3
    assert math.isnan(probe_accuracy(x, y, x[:0], y[:0]))


def test_flops_rows_of_fine_pi_sum_to_avgn_gmacs():
    """The AVGN cost rows (components/evaluation/cost.py) price the stage map in the spatial-glance row; their sum is
    the cost counted on the whole head."""
    import torch.nn as nn

    from components.evaluation.avgn_eval import avgn_gmacs
    from components.evaluation.cost import FrameModel, avgn_flops_rows, count_macs, total_gmacs

    light, audio = FrameModel(nn.Conv2d(3, 4, 3, padding=1), S, "tiny_light"), FrameModel(nn.Linear(8, 5), (7, 8), "a")
    enc = {"light": light.gmacs(), "audio": audio.gmacs(), "recognizer": 1e-3}
    s, b = _fine_sampler(), _batch()
    rows = avgn_flops_rows(s, 3, S, light, audio)
    assert avgn_gmacs(s, enc, b, 3) == pytest.approx(total_gmacs(rows), rel=1e-6)
    spatial = next(r for r in rows if r.component == "spatial glance")
    stage = count_macs(lambda: s.net._pi_encoder[0](torch.zeros(1, 3, S, S))) / 1e9
    assert spatial.model.startswith("stage map") and spatial.gmacs_per_call > stage
