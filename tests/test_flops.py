import torch

from components.flops import count_macs, frame_model_gmacs
from components.models.encoders import create_encoder


def test_linear_and_conv_macs_by_hand():
    lin = torch.nn.Linear(10, 7)
    assert count_macs(lambda: lin(torch.zeros(3, 10))) == 3 * 10 * 7
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    assert count_macs(lambda: conv(torch.zeros(1, 4, 5, 5))) == 5 * 5 * 8 * 4 * 9


def test_resnet50_at_224_is_about_4_1_gmacs():
    m = create_encoder("recognizer", arch="resnet50", num_classes=1000)
    assert abs(frame_model_gmacs(m, 224) - 4.11) < 0.05  # the papers' 4.109G
