"""The sampler registry: every member builds from the registry and returns [B,T] saliency and K
distinct frames for tiny random inputs; baselines against hand-computed answers."""
import numpy as np
import pytest
import torch

from components.models.samplers import create_sampler, list_samplers
from components.core.params import AVGNParams, NSNetParams, TSQNetParams

B, T, C, d = 4, 8, 3, 16


def _batch():
    g = torch.Generator().manual_seed(0)
    gt = torch.full((B, T), -1, dtype=torch.int16)
    gt[:, 2:4] = torch.arange(B).remainder(C).view(B, 1).to(torch.int16)  # frames 2,3 salient
    labels = torch.nn.functional.one_hot(torch.arange(B) % C, C).float()
    ns = torch.cat([labels[:, None, :].expand(B, T, C) * 0.5, torch.full((B, T, 1), 0.5)], -1)
    return {"light_feats": torch.randn(B, T, d, generator=g), "light_logits": torch.randn(B, T, C, generator=g),
            "object_scores": torch.rand(B, T, 1000, generator=g).softmax(-1), "rec_feats": torch.randn(B, T, 12, generator=g),
            "rec_logits": torch.randn(B, T, C, generator=g), "audio_emb": torch.zeros(B, T, 4),
            "has_audio": torch.ones(B, dtype=torch.bool), "gt": gt, "labels": labels, "ns_labels": ns,
            "frame_indices": torch.arange(T).repeat(B, 1) * 3,
            "light_maps": torch.randn(B, T, 4, 2, 2, generator=g),  # AVGN's e^G and frame cache
            "frames_full": torch.randint(0, 256, (B, T, 3, 16, 16), generator=g, dtype=torch.uint8)}


def _kwargs(name):
    if name == "tsqnet":
        return {"num_classes": C, "light_dim": d, "params": TSQNetParams(dim=8),
                "visual_prototypes": torch.randn(C, d), "object_text": torch.randn(1000, 6), "class_text": torch.randn(C, 6)}
    if name == "nsnet":
        return {"num_classes": C, "light_dim": d, "params": NSNetParams(dim=8, heads=2)}
    if name == "avgn":
        return {"num_classes": C, "map_dim": 4, "grid": (2, 2), "audio_dim": 4, "T": T,
                "params": AVGNParams(dim=8, heads=2, cls_hidden=8, patch_size=8, local="scratch", pi_map="glance", train_frames=3, t_g=6)}
    return {}


def test_registry_has_every_sampler():
    assert {"uniform", "random", "dense", "maxconf", "maxconf_l", "videoconf_l", "oracle"} <= set(list_samplers())
    with pytest.raises(ValueError, match="unknown sampler 'unifrom' \\(did you mean 'uniform'\\?\\)"):
        create_sampler("unifrom")


@pytest.mark.parametrize("name", list_samplers())
@pytest.mark.parametrize("K", [1, 3, T])
def test_every_sampler_interface(name, K):
    s = create_sampler(name, **_kwargs(name)).eval()
    out = s(_batch())
    assert out.saliency.shape == (B, T) and torch.isfinite(out.saliency).all()
    idx = s.select(out, K)
    want = T if name == "dense" else K
    assert idx.shape == (B, want) and all(len(set(r)) == want for r in idx.tolist())
    assert idx.min() >= 0 and idx.max() < T
    if s.trainable:
        s.train()
        loss, metrics = s.loss(_batch(), s(_batch()))
        loss.backward()
        assert torch.isfinite(loss) and metrics["n"] == B


def test_baselines_by_hand():
    b = _batch()
    assert create_sampler("uniform").select(create_sampler("uniform")(b), 2).tolist() == [[2, 6]] * B
    assert create_sampler("oracle").select(create_sampler("oracle")(b), 2).tolist() == [[2, 3]] * B
    mc = create_sampler("maxconf")(b).saliency
    assert torch.allclose(mc, b["rec_logits"].softmax(-1).amax(-1))
    r1 = create_sampler("random", seed=3)
    r2 = create_sampler("random", seed=3)
    assert np.array_equal(r1.select(r1(b), 3), r2.select(r2(b), 3))
    with pytest.raises(ValueError, match="ground truth"):
        create_sampler("oracle")({**b, "gt": torch.full((B, T), -3, dtype=torch.int16)})


def test_feature_norm_standardises_and_is_identity_without_stats():
    from components.models.samplers import FeatureNorm

    x = torch.tensor([[1.0, 10.0], [3.0, 14.0]])
    n = FeatureNorm(x.mean(0), x.std(0, unbiased=False))
    assert torch.allclose(n(x), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert torch.equal(FeatureNorm()(x), x)
    assert "mean" in n.state_dict()  # travels with the checkpoint


def test_videoconf_l_scores_frames_by_the_video_class_by_hand():
    """Frame 0 is confidently class 1 (a distractor), frames 1-2 lean to class 0, which wins the mean:
    MaxConf-L ranks frame 0 first, VideoConf-L ranks it last."""
    probs = torch.tensor([[[0.05, 0.9, 0.05], [0.7, 0.2, 0.1], [0.6, 0.1, 0.3]]])  # mean: 0.45, 0.40, 0.15
    b = {"light_logits": probs.log()}
    vc = create_sampler("videoconf_l")(b).saliency
    assert torch.allclose(vc, torch.tensor([[0.05, 0.7, 0.6]]), atol=1e-6)
    assert create_sampler("maxconf_l")(b).saliency.argmax().item() == 0
    assert create_sampler("videoconf_l").select(create_sampler("videoconf_l")(b), 2).tolist() == [[1, 2]]


def test_a_plugins_settings_are_typed_checked_and_defaulted_by_its_settings_dataclass():
    """Params ``plugins.<name>`` is typed by the class's ``settings`` dataclass like a built-in section."""
    from dataclasses import dataclass, field
    from pathlib import Path

    from components.core.params import ParamsError, load_params
    from components.models.samplers import Sampler

    @dataclass
    class MotionSettings:
        power: float = field(default=1.0, metadata={"lo": 0.0})
        norm: str = field(default="l2", metadata={"choices": ("l1", "l2")})

    class Motion(Sampler):
        settings = MotionSettings

    params = Path(__file__).resolve().parents[1] / "params.yaml"

    def settings(text: str, cls=Motion) -> dict:
        return cls.plugin_settings(load_params(params, [f"plugins={{motion: {text}}}"]), "motion")

    assert settings("{power: 2}") == {"power": 2.0, "norm": "l2"}  # an int read as the float it declares
    assert settings("{}") == {"power": 1.0, "norm": "l2"}  # the defaults filled in
    with pytest.raises(ParamsError, match=r"plugins.motion.powr: unknown key \(did you mean plugins.motion.power\?\)"):
        settings("{powr: 2}")
    with pytest.raises(ParamsError, match=r"plugins.motion.power: -1.0 is outside the allowed range \[0.0, inf\]"):
        settings("{power: -1.0}")
    with pytest.raises(ParamsError, match=r"plugins.motion.power: expected a number, got str 'high'"):
        settings("{power: high}")
    with pytest.raises(ParamsError, match=r"plugins.motion.norm: 'l3' is not one of \['l1', 'l2'\]"):
        settings("{norm: l3}")

    class Untyped(Sampler):  # no settings: a setting given would be ignored, so it is refused
        pass

    with pytest.raises(ParamsError, match=r"plugins.motion: \['power'\] given, but Untyped declares no `settings`"):
        settings("{power: 2}", Untyped)
    assert settings("{}", Untyped) == {}

    class ReadsItsOwn(Sampler):  # its own build_kwargs reads them: allowed, nothing added here
        @classmethod
        def build_kwargs(cls, p, store, seed):
            return dict(p.plugins["motion"])

    assert settings("{power: 2}", ReadsItsOwn) == {}
    with pytest.raises(ParamsError, match=r"plugins.motion.power: expected a finite number"):
        settings("{power: .nan}")
