import time

import pytest
import torch

from components.evaluation.cost import (FlopsRow, FrameModel, count_macs, flops_table_for_params, frame_calls, frame_model_gmacs,
                              paper_setting_rows, prediction_flops, total_gmacs)
from components.evaluation.cost_table import CSV_COLUMNS, read_flops_table, write_flops_table
from components.models.encoders import create_encoder


def test_linear_and_conv_macs_by_hand():
    lin = torch.nn.Linear(10, 7)
    assert count_macs(lambda: lin(torch.zeros(3, 10))) == 3 * 10 * 7
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    assert count_macs(lambda: conv(torch.zeros(1, 4, 5, 5))) == 5 * 5 * 8 * 4 * 9


def test_resnet50_at_224_is_about_4_1_gmacs():
    m = create_encoder("recognizer", arch="resnet50", num_classes=1000)
    assert abs(frame_model_gmacs(m, 224) - 4.11) < 0.05  # the papers' 4.109G


def test_mobilenetv2_at_224_is_0_30_to_0_32_gmacs():
    m = create_encoder("light", arch="mobilenetv2_100", num_classes=1000)
    assert 0.30 <= frame_model_gmacs(m, 224) <= 0.32  # NSNet: 0.320 (Sec. 4.1), 0.31G (supp. Table 3)


class TinyFrameNet(torch.nn.Module):
    """[1,3,s,s] -> (features [1,c], logits [1,C]): a 3x3 conv (s*s*c*3*9 MACs) + an FC (c*C MACs)."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.fc = torch.nn.Linear(c, num_classes)
        self.num_features, self.num_classes = c, num_classes

    def forward(self, x):
        f = self.conv(x).mean((2, 3))
        return f, self.fc(f)


def test_total_is_the_sum_of_the_rows_by_hand():
    light = FrameModel(TinyFrameNet(4, 3), 8, "tiny-light")  # 8*8*4*3*9 + 4*3 = 6912 + 12 = 6924 MACs / frame
    rec = FrameModel(TinyFrameNet(2, 3), 6, "tiny-rec")  # 6*6*2*3*9 + 2*3 = 1944 + 6 = 1950 MACs / frame
    rows = prediction_flops("maxconf_l", T=4, K=2, recognizer=rec, light=light)  # sampler: a softmax, 0 MACs
    assert [(r.component, r.calls) for r in rows] == [("light encoder", 4), ("sampler", 1), ("recognizer", 2)]
    assert [r.gmacs_per_call * 1e9 for r in rows] == pytest.approx([6924, 0, 1950])
    # 4 * 6924 + 0 + 2 * 1950 = 27696 + 3900 = 31596 MACs
    assert total_gmacs(rows) * 1e9 == pytest.approx(31596)
    dense = prediction_flops("dense", T=4, K=2, recognizer=rec, light=light)  # recognizer on all T frames only
    assert total_gmacs(dense) * 1e9 == pytest.approx(4 * 1950)


def test_costs_scale_with_calls():
    light, rec = FrameModel(TinyFrameNet(4, 3), 8, "l"), FrameModel(TinyFrameNet(2, 3), 6, "r")
    small = {r.component: r for r in prediction_flops("maxconf_l", 4, 2, rec, light)}
    big = {r.component: r for r in prediction_flops("maxconf_l", 8, 4, rec, light)}
    for c in ("light encoder", "recognizer"):
        assert big[c].gmacs_per_call == small[c].gmacs_per_call and big[c].gmacs == pytest.approx(2 * small[c].gmacs)


def test_frame_calls_per_sampler():
    T, K = 16, 5

    def Branches(b):  # a TSQNet with some branches: the store arrays it reads decide (light: VQM, objects: TQM)
        from components.models.samplers.tsqnet import TSQNet
        from components.core.params import TSQNetParams

        return TSQNet(3, 4, TSQNetParams(dim=8, init="random", branches=b), object_text=torch.zeros(10, 4))

    want = {"uniform": (0, 0, K), "random": (0, 0, K), "oracle": (0, 0, K), "dense": (0, 0, T),
            "maxconf": (0, 0, T), "maxconf_l": (T, 0, K), "nsnet": (T, 0, K)}
    for name, (light, obj, rec) in want.items():
        c = frame_calls(name, None, T, K)
        assert (c["light"], c["object"], c["recognizer"], c["audio"]) == (light, obj, rec, 0), name
    for b, (light, obj) in {"both": (T, T), "vqm": (T, 0), "tqm": (0, T)}.items():
        c = frame_calls("tsqnet", Branches(b), T, K)
        assert (c["light"], c["object"], c["recognizer"]) == (light, obj, K)
    audio = type("AudioSampler", (), {"inputs": ("light_feats", "audio_emb")})()
    assert frame_calls("avgn", audio, T, K) == {"light": T, "object": 0, "audio": T, "recognizer": K}


def test_tiny_config_table_builds_fast(tiny_params):
    t0 = time.perf_counter()
    rows = flops_table_for_params(tiny_params, num_classes=3, sampler_name="tsqnet", k=3)
    took = time.perf_counter() - t0
    T = tiny_params.frames.T
    assert [(r.component, r.calls) for r in rows] == [("light encoder", T), ("object recognizer", T), ("sampler", 1),
                                                      ("recognizer", 3)]
    assert rows[0].resolution == f"{tiny_params.frames.light_size}x{tiny_params.frames.light_size}"
    rec = create_encoder("recognizer", arch=tiny_params.encoders.recognizer_arch, num_classes=3)
    assert rows[-1].gmacs_per_call == pytest.approx(frame_model_gmacs(rec, tiny_params.frames.recognizer_size))
    assert rows[2].gmacs_per_call > 0 and total_gmacs(rows) == pytest.approx(sum(r.gmacs for r in rows))
    assert took < 60, f"tiny flops table took {took:.1f}s"


def test_csv_round_trip_and_markdown_total(tmp_path):
    rows = [FlopsRow("light encoder", "mobilenetv2_100", "188x188", 0.2177, 16, 3.52),
            FlopsRow("sampler", "tsqnet", "light_feats[1,16,1280]", 0.0123456789, 1, None),
            FlopsRow("recognizer", "resnet50", "224x224", 4.0875, 5, 20.55)]
    write_flops_table(rows, tmp_path / "flops.csv", tmp_path / "flops.md", paper_total=26.09)
    assert (tmp_path / "flops.csv").read_text().splitlines()[0] == ",".join(("setting", *CSV_COLUMNS))
    assert read_flops_table(tmp_path / "flops.csv") == rows
    md = (tmp_path / "flops.md").read_text()
    assert f"**{total_gmacs(rows):.3f}**" in md and "**26.09**" in md and "| sampler | tsqnet |" in md


@pytest.mark.slow
def test_paper_setting_tables():
    for method, light_res in (("tsqnet", "188x188"), ("nsnet", "224x224")):
        rows = paper_setting_rows(method)
        by = {r.component: r for r in rows}
        assert by["light encoder"].resolution == light_res and by["light encoder"].calls == 16
        assert by["recognizer"].calls == 5 and by["recognizer"].gmacs == pytest.approx(by["recognizer"].paper_gmacs,
                                                                                        rel=0.01)
        assert by["light encoder"].gmacs == pytest.approx(by["light encoder"].paper_gmacs, rel=0.07)
        assert all(r.paper_gmacs is not None for r in rows)
        assert ("object recognizer" in by) == (method == "tsqnet")
