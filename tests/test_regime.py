"""The benchmark profile is in the papers' cost regime, measured by the project's own counter
(components/evaluation/cost.py) on the real modules at the profile's resolutions (random weights: same cost).

The papers: the recognizer (ResNet-50 at 224², 4.109 GMACs) costs 18.7x the light encoder (MobileNetV2 at
188², 0.220) and about 12x everything a sampler runs per candidate frame (TSQNet: (3.52 + 1.56 + 0.46) / 16
= 0.346; NSNet: (5.12 + 0.32) / 16 = 0.340). Here: recognizer / light >= 15 and recognizer / candidate >= 12
for TSQNet, NSNet and AVGN (AVGN: its light encoder, its audio encoder per window and its temporal glance
amortised over T), with T >= 16 and the benchmark's K in {1, 2, 3, 5, 8}.
"""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from components.app.profile_run import profile_params
from components.data.synthetic import object_boxes, plan_video
from components.evaluation.cost import (REGIME_MIN_CANDIDATE_RATIO, REGIME_MIN_LIGHT_RATIO, FrameModel,
                              UncountedSamplerError, audio_model, flops_table_for_params, frame_calls, prediction_flops,
                              regime_markdown, regime_samplers, regime_table, total_gmacs, video_gmacs)
from components.models.samplers import Sampler, SamplerOutput
from components.core.params import params_from_dict

ROOT = Path(__file__).resolve().parents[1]
C = 12
REGIME_SAMPLERS = ("tsqnet", "nsnet", "avgn")  # the benchmark profile's learned samplers


@pytest.fixture(scope="module")
def bench():
    return params_from_dict(profile_params(ROOT, ROOT / "profiles" / "benchmark.yaml"))


@pytest.fixture(scope="module")
def regime(bench):
    return {r.sampler: r for r in regime_table(bench, C)}


def test_profile_shape(bench):
    assert bench.frames.T >= 16
    assert set(bench.evaluate.sampler_budgets) <= {1, 2, 3, 5, 8}
    assert regime_samplers(bench) == list(REGIME_SAMPLERS)  # the learned samplers of evaluate.samplers
    # the recognizer sees many more pixels than the light encoder (and the object recognizer)
    assert bench.frames.recognizer_size >= 160 and bench.frames.light_size <= 48 and bench.frames.object_size <= 48
    # frames are rendered at least at the recognizer's size, and AVGN crops its patches at that density
    assert bench.data.synthetic.size >= bench.frames.recognizer_size
    assert bench.frames.full_size >= bench.frames.recognizer_size and bench.avgn.patch_size < bench.frames.full_size


def test_recognizer_is_at_least_15x_the_light_encoder(regime):
    r = regime["tsqnet"]
    assert r.light_ratio >= REGIME_MIN_LIGHT_RATIO == 15, f"recognizer / light = {r.light_ratio:.1f}"


@pytest.mark.parametrize("name", REGIME_SAMPLERS)
def test_a_candidate_frame_costs_at_most_a_twelfth_of_a_recognizer_call(regime, name):
    r = regime[name]
    assert r.candidate_ratio >= REGIME_MIN_CANDIDATE_RATIO == 12, (
        f"{name}: per candidate {r.per_candidate:.4f} GMACs ({r.per_frame}, sampler / T {r.sampler_gmacs / r.T:.4f}) "
        f"= 1/{r.candidate_ratio:.1f} of the recognizer's {r.recognizer:.4f}")
    assert r.in_regime


def test_what_each_sampler_pays_per_candidate(regime):
    assert set(regime["tsqnet"].per_frame) == {"light", "object"}
    assert set(regime["nsnet"].per_frame) == {"light"}
    assert set(regime["avgn"].per_frame) == {"light", "audio"}  # light counted in full (it glances at T_G <= T)
    for r in regime.values():
        assert r.sampler_gmacs > 0
        assert r.per_candidate == pytest.approx(sum(r.per_frame.values()) + r.sampler_gmacs / r.T)


def test_the_audio_encoder_fits_and_its_default_is_unchanged(bench, regime):
    default = dataclasses.replace(bench, encoders=dataclasses.replace(bench.encoders, audio_width=32))
    assert audio_model(default, C).gmacs() == pytest.approx(0.0584, abs=5e-4)  # the demo's audio CNN, as before
    audio = regime["avgn"].per_frame["audio"]
    assert audio == pytest.approx(audio_model(bench, C).gmacs()) and audio <= regime["avgn"].recognizer / 12 / 2


def test_a_narrow_audio_encoder_round_trips_through_its_checkpoint(tmp_path, bench):
    """train_encoders saves ``width`` in the audio cfg only when it is not the default (a default run's
    checkpoint holds what it always held); load_frame_model rebuilds the narrow CNN from it."""
    from components.store.features import load_frame_model
    from components.core.integrity import save_checkpoint
    from components.models.encoders import create_encoder

    cfg = {"num_classes": C, "dim": bench.encoders.audio_dim, "width": bench.encoders.audio_width}
    m = create_encoder("audio", **cfg)
    save_checkpoint({"role": "audio", "cfg": cfg, "state_dict": m.state_dict()}, tmp_path / "audio.pt")
    back = load_frame_model(tmp_path / "audio.pt")
    assert back.body[0][0].out_channels == bench.encoders.audio_width == 8
    x = torch.randn(2, bench.audio.window_frames, bench.audio.n_mels)
    assert torch.equal(back(x)[0], m.eval()(x)[0])
    default = create_encoder("audio", num_classes=C, dim=128)  # the default keeps the 32-64-128 CNN
    assert [b[0].out_channels for b in default.body] == [32, 64, 128] and default.proj[0].in_features == 128


def test_regime_rows_agree_with_the_cost_tables(bench, regime):
    """The regime's per-frame numbers are the flops stage's rows; at K=5 every sampler beats dense by far."""
    K, T = 5, bench.frames.T
    dense = total_gmacs(flops_table_for_params(bench, C, "dense", K))
    for name in REGIME_SAMPLERS:
        rows = {r.component: r for r in flops_table_for_params(bench, C, name, K)}
        assert rows["recognizer"].gmacs_per_call == pytest.approx(regime[name].recognizer)
        assert rows["light encoder"].gmacs_per_call == pytest.approx(regime[name].per_frame["light"])
        assert rows["sampler"].gmacs == pytest.approx(regime[name].sampler_gmacs)
        assert total_gmacs(rows.values()) < 0.5 * dense
    assert dense == pytest.approx(T * regime["tsqnet"].recognizer)


def test_regime_markdown_prints_the_ratios(regime):
    md = "\n".join(regime_markdown(list(regime.values()), "lite0 176x176", "lite0 32x32"))
    assert "## Cost regime" in md and f"**{regime['tsqnet'].light_ratio:.1f}**" in md
    for r in regime.values():
        assert f"| {r.sampler} |" in md and f"| {r.candidate_ratio:.1f} | yes |" in md


def test_the_previous_benchmark_is_not_in_the_regime():
    """The same table on the previous profile (Lite0 at 96² vs Lite0 at 48², audio width 32) says no."""
    demo = params_from_dict(profile_params(ROOT, ROOT / "profiles" / "benchmark.yaml",
                                           {"frames.light_size": 48, "frames.object_size": 48,
                                            "frames.recognizer_size": 96, "encoders.audio_width": 32}))
    rows = regime_table(demo, C, names=("tsqnet",))
    assert not rows[0].in_regime and rows[0].light_ratio < 5


def test_larger_frames_keep_the_ground_truth(bench):
    """data.synthetic.size only scales the picture: the same plans (codes, segments, splits, audio), the key
    objects' boxes at the same relative places (within 2% of the frame side)."""
    big = bench.data.synthetic
    small = dataclasses.replace(big, size=112, jitter=3)
    errs = []
    for c in range(0, C, 5):
        for i in (0, big.videos_per_class - 1):
            a, b = plan_video(small, i, c), plan_video(big, i, c)
            assert (a.codes == b.codes).all() and a.segments == b.segments
            assert (a.split, a.has_audio, a.num_frames) == (b.split, b.has_audio, b.num_frames)
            ba, bb = object_boxes(small, a).boxes, object_boxes(big, b).boxes
            assert (np.isnan(ba) == np.isnan(bb)).all()
            m = ~np.isnan(ba[..., 0])
            ca = (ba[..., :2] + ba[..., 2:]) / 2 / small.size
            cb = (bb[..., :2] + bb[..., 2:]) / 2 / big.size
            errs.append(np.abs(ca - cb)[m].ravel())
    e = np.concatenate(errs)
    assert e.size and np.median(e) < 0.01 and e.max() < 0.03


# ----------------------------------------------------------------------------- what cannot be counted
class Mystery(Sampler):
    """A learned sampler reading a store array no per-frame model of the cost table produces."""
    trainable = True
    inputs = ("depth_maps",)

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, batch):
        return SamplerOutput(saliency=self.fc(batch["depth_maps"]).squeeze(-1))


class NoInputs(Sampler):
    trainable = True

    def forward(self, batch):
        return SamplerOutput(saliency=torch.zeros(1, 4))


class Numpy(Sampler):
    """Learned, but computes outside torch: the counter would see 0 MACs."""
    trainable = True
    inputs = ("light_feats",)

    def forward(self, batch):
        return SamplerOutput(saliency=torch.from_numpy(batch["light_feats"].numpy().sum(-1)))


class Tiny(torch.nn.Module):
    num_features, num_classes = 2, 3

    def forward(self, x):
        return torch.zeros(x.shape[0], 2), torch.zeros(x.shape[0], 3)


def test_a_sampler_reading_unknown_arrays_is_refused_by_name():
    with pytest.raises(UncountedSamplerError, match=r"'mystery'.*Mystery.*depth_maps"):
        frame_calls("mystery", Mystery(), 16, 5)
    with pytest.raises(UncountedSamplerError, match=r"'mystery'"):
        video_gmacs("mystery", Mystery(), {"light": 1.0, "object": 1.0, "audio": 1.0, "recognizer": 1.0}, 0.0, 16, 5)
    with pytest.raises(UncountedSamplerError, match=r"'blank'.*declares no store inputs"):
        frame_calls("blank", NoInputs(), 16, 5)
    with pytest.raises(UncountedSamplerError, match=r"'ghost'"):
        frame_calls("ghost", None, 16, 5)


def test_a_learned_sampler_the_counter_cannot_see_is_refused_by_name():
    rec = FrameModel(Tiny(), 4, "tiny")
    with pytest.raises(UncountedSamplerError, match=r"'numpy_sampler'.*Numpy.*no matrix product"):
        prediction_flops("numpy_sampler", 4, 2, rec, light=FrameModel(Tiny(), 4, "tiny"), sampler=Numpy())


def test_a_per_frame_cost_that_is_not_given_is_refused_not_counted_as_zero():
    with pytest.raises(UncountedSamplerError, match=r"'nsnet'.*light encoder"):
        video_gmacs("nsnet", None, {"recognizer": 1.0}, 0.0, 16, 5)
    assert video_gmacs("nsnet", None, {"light": 0.5, "recognizer": 1.0}, 0.25, 16, 5) == pytest.approx(
        0.25 + 16 * 0.5 + 5 * 1.0)


def test_the_known_samplers_still_count(bench):
    for name in ("uniform", "random", "oracle", "dense", "maxconf", "maxconf_l", "videoconf_l"):
        frame_calls(name, None, 16, 5)
    with pytest.raises(ValueError, match="avgn"):  # AVGN must be passed instantiated, never built blind
        prediction_flops("avgn", 16, 5, FrameModel(Tiny(), 4, "tiny"))
