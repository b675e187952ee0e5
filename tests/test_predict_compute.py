"""``salient predict`` honours the params' ``compute`` section (device, autocast, channels-last, pinned
memory) on random-weight models and synthetic videos (``components.app.bench_extract.synthetic_predict_setup``, what
``benchmarks/gpu_predict.sh`` runs at the papers' sizes); CPU only. That the CPU defaults change no
output is checked by the predict-vs-cache tests in test_evaluate.py / test_predict_avgn.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.app.bench_extract import synthetic_predict_setup
from components.core.params import load_params
from components.app.predict import Prediction, Predictor, resolve_device

ROOT = Path(__file__).resolve().parents[1]
TINY = ["frames.T=16", "frames.light_size=32", "frames.object_size=32", "frames.recognizer_size=32",
        "data.synthetic.size=48", "data.synthetic.num_classes=3", "encoders.light_arch=mobilenetv2_050",
        "encoders.light_weights=none", "encoders.recognizer_arch=resnet10t", "tsqnet.dim=32"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return synthetic_predict_setup(str(ROOT / "params.yaml"), tmp_path_factory.mktemp("gpu_bench"), 3,
                                   frames=32, overrides=tuple(TINY))


def _load(ck: Path, *sets: str, device=None) -> Predictor:
    p = load_params(ROOT / "params.yaml", [*TINY, *sets])
    return Predictor.load(p, ck / "samplers" / "tsqnet" / "seed0.pt", ck / "encoders", 5, device=device)


def test_device_comes_from_compute_and_the_argument_wins(setup):
    ck, _ = setup
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert _load(ck, "compute.device=auto").device == resolve_device("auto")
    assert _load(ck, "compute.device=auto", device="cpu").device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            _load(ck, "compute.device=cuda")


def test_cpu_defaults_are_float32_and_leave_the_layout(setup):
    ck, files = setup
    pred = _load(ck)
    assert pred.amp_dtype is None and not pred.pin_memory and pred.device == "cpu"
    # channels_last false keeps each model's own layout (the frame classifiers are NHWC already, as extract)
    assert [m.channels_last for m in pred._frame_cnns()] == [True, True, True]
    again = _load(ck, device="cpu").predict(files)
    first = pred.predict(files)
    assert [r.as_dict() for r in first] == [r.as_dict() for r in again]


def test_amp_and_channels_last_run_and_keep_the_sampler_in_float32(setup):
    ck, files = setup
    ref = _load(ck)
    pred = _load(ck, "compute.amp=true", "compute.amp_dtype=bfloat16", "compute.channels_last=true",
                 "compute.pin_memory=true")  # pinned memory only acts on a CUDA device
    assert pred.amp_dtype == torch.bfloat16 and pred.pin_memory
    assert pred.gmacs == ref.gmacs  # counted in float32 before autocast
    seen = {}
    select = pred.sampler.forward

    def spy(batch):
        seen.update({k: v.dtype for k, v in batch.items()})
        return select(batch)

    pred.sampler.forward = spy
    res = pred.predict(files)
    assert all(isinstance(r, Prediction) for r in res)
    assert seen["light_feats"] == seen["light_logits"] == seen["object_scores"] == torch.float32
    # bfloat16 moves the scores a little, not the shape of the answer
    assert [len(r.frames) for r in res] == [5] * len(files)
    assert all(abs(sum(p for _, p in r.top) - sum(p for _, p in q.top)) < 0.2 for r, q in zip(res, ref.predict(files)))
