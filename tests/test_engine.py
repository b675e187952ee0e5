"""The one training engine: learning, resume after an interruption equals an uninterrupted run,
early stopping, and refusal of another config's checkpoint."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from components.training.engine import CheckpointMismatch, FitConfig, fit


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _step(model, batch, train):
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    return loss, {"acc": (logits.argmax(1) == y).float().mean().item(), "n": len(y)}


def _batches(epoch):
    x, y = _data()
    perm = np.random.default_rng([0, epoch]).permutation(len(x))
    for i in range(0, len(x), 16):
        j = torch.from_numpy(perm[i:i + 16])
        yield x[j], y[j]


def _val():
    yield _data()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))


def test_fit_learns(tmp_path):
    m = _model()
    res = fit(m, _step, _batches, _val, FitConfig(epochs=30, lr=0.05, patience=100), tmp_path, "fp")
    assert res.history[-1]["val_acc"] > 0.9
    assert res.history[0]["train_loss"] > res.history[-1]["train_loss"]
    # optimizer steps, cumulative: 64 samples in batches of 16 = 4 per epoch, by hand
    assert [r["steps"] for r in res.history] == [4.0 * (e + 1) for e in range(30)]


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    cfg = FitConfig(epochs=6, lr=0.05, patience=100)
    ref = _model()
    fit(ref, _step, _batches, _val, cfg, tmp_path / "ref", "fp")

    class Killed(Exception):
        pass

    def die_after_2(epoch, row):
        if epoch == 2:
            raise Killed

    m = _model()
    with pytest.raises(Killed):
        fit(m, _step, _batches, _val, cfg, tmp_path / "run", "fp", on_epoch=die_after_2)
    m2 = _model()  # a fresh process: new model, same checkpoint dir
    res = fit(m2, _step, _batches, _val, cfg, tmp_path / "run", "fp")
    assert res.resumed_from == 2  # epoch 2 was not checkpointed (killed before the save) and is redone
    assert len(res.history) == 6
    assert res.history[-1]["steps"] == 24.0  # the count carries across the resume
    for a, b in zip(ref.state_dict().values(), m2.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_early_stopping_restores_best(tmp_path):
    m = _model()

    def bad_val():  # val loss that only gets worse after epoch 0
        x, y = _data()
        yield x, 1 - y

    res = fit(m, _step, _batches, bad_val, FitConfig(epochs=50, lr=0.05, patience=3), tmp_path, "fp")
    assert res.stopped_early and len(res.history) == res.best_epoch + 4


def test_other_config_checkpoint_is_refused(tmp_path):
    fit(_model(), _step, _batches, _val, FitConfig(epochs=1, lr=0.05), tmp_path, "fp-a")
    with pytest.raises(CheckpointMismatch, match="another configuration"):
        fit(_model(), _step, _batches, _val, FitConfig(epochs=2, lr=0.05), tmp_path, "fp-b")


def test_non_finite_loss_is_an_error(tmp_path):
    def nan_batches(epoch):
        x, y = _data()
        yield x * float("nan"), y

    with pytest.raises(FloatingPointError, match="non-finite loss"):
        fit(_model(), _step, nan_batches, None, FitConfig(epochs=1, lr=0.05), tmp_path, "fp")


def test_monitor_max_metric(tmp_path):
    m = _model()
    res = fit(m, _step, _batches, _val, FitConfig(epochs=8, lr=0.05, patience=100, monitor="val_acc", mode="max"),
              tmp_path, "fp")
    accs = [r["val_acc"] for r in res.history]
    assert res.best_epoch == int(np.argmax(accs))  # first epoch reaching the max
    with pytest.raises(ValueError, match="mode"):
        FitConfig(epochs=1, lr=0.1, mode="up")


def test_val_metrics_join_the_row_and_can_be_monitored(tmp_path):
    """A task metric computed after the val pass (a sampler's val mAP) is logged as val_<name> and
    picks the best epoch; the weights restored are those of that epoch."""
    m = _model()
    scripted = iter([0.2, 0.9, 0.5, 0.4, 0.3])
    snapshots = []

    def metric():
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"map": next(scripted)}

    res = fit(m, _step, _batches, _val, FitConfig(epochs=5, lr=0.05, patience=3, monitor="val_map", mode="max"),
              tmp_path, "fp", val_metrics=metric)
    assert [r["val_map"] for r in res.history] == [0.2, 0.9, 0.5, 0.4, 0.3][:len(res.history)]
    assert res.best_epoch == 1 and res.stopped_early and len(res.history) == 5
    assert all(torch.equal(v, snapshots[1][k]) for k, v in m.state_dict().items())


def _conv_batches(epoch):
    g = torch.Generator().manual_seed(epoch)
    for _ in range(3):
        x = torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8)
        yield x, (x[:, 0].float().mean((1, 2)) > 127.5).long()


def _conv_step(model, batch, train):
    x, y = batch
    logits = model(x.float() / 255.0)
    return nn.functional.cross_entropy(logits, y), {"n": len(y)}


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 2))


def test_compute_channels_last_and_bf16_autocast_on_cpu(tmp_path):
    """The compute section's layout and autocast paths, on the CPU: channels_last trains the same
    curve as the default (to float32 rounding); bfloat16 autocast trains with finite losses within 5%
    of float32 in the first epoch; either way the model comes back float32, contiguous, on the CPU."""
    from components.training.engine import Compute, to_device

    cfg = FitConfig(epochs=2, lr=1e-2, seed=0, patience=5)
    runs = {}
    for name, compute in (("default", None), ("channels_last", Compute(channels_last=True)),
                          ("bf16", Compute(amp=True, amp_dtype="bfloat16"))):
        model = _conv_model()
        res = fit(model, _conv_step, _conv_batches, lambda: _conv_batches(99), cfg, tmp_path / name, "c",
                  compute=compute)
        runs[name] = [r["train_loss"] for r in res.history]
        w = model[0].weight
        assert w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous()
    np.testing.assert_allclose(runs["channels_last"], runs["default"], rtol=1e-4)
    assert np.isfinite(runs["bf16"]).all() and runs["bf16"][0] == pytest.approx(runs["default"][0], rel=0.05)
    x = to_device((torch.zeros(2, 3, 4, 4), {"a": torch.zeros(2, 5)}), Compute(channels_last=True))
    assert x[0].is_contiguous(memory_format=torch.channels_last) and x[1]["a"].is_contiguous()
