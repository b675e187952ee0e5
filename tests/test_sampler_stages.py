"""prototypes -> pseudo_labels -> train_sampler -> sampler_report on the tiny pipeline, and the
bad-input refusals of the sampler data path."""
import json
from dataclasses import replace

import numpy as np
import pytest

from components.store.sampler_data import check_store, load_split
from components.stages import sampler_report, train_sampler
from components.store.feature_store import FeatureStore


@pytest.fixture(scope="module")
def sampler_run(tiny_samplers, tiny_params):
    return tiny_samplers, sampler_report.run(tiny_params, tiny_samplers)


def test_report_covers_every_sampler_and_budget(sampler_run, tiny_params):
    paths, res = sampler_run
    assert set(res["samplers"]) == {*tiny_params.evaluate.samplers, *tiny_params.ablations}
    for name, by_k in res["samplers"].items():
        assert set(by_k) == {str(k) for k in tiny_params.evaluate.sampler_budgets}
        assert all(0 <= by_k[k]["top1"]["mean"] <= 1 for k in by_k)
    assert all(res["samplers"]["oracle"][k]["salient_recall"]["mean"] == 1.0 for k in res["samplers"]["oracle"])
    assert res["costs"]["uniform"]["sampler_gmacs"] == 0 and res["costs"]["tsqnet"]["sampler_gmacs"] > 0
    assert (paths.reports / "samplers.md").read_text().startswith("# Samplers")
    hist = json.loads((paths.reports / "samplers" / "tsqnet_history.json").read_text())
    assert len(hist["0"]) == 2 and "val_loss" in hist["0"][0]
    # steps to the kept epoch, by hand: ceil(train videos / batch size) per epoch
    n_train = len(load_split(FeatureStore(paths.features), "train")[1])
    per_epoch = -(-n_train // tiny_params.train_sampler.batch_size)
    tr = res["training"]["tsqnet"]["0"]
    assert tr["steps_per_epoch"] == per_epoch and tr["steps_to_best"] == per_epoch * (tr["best_epoch"] + 1)
    assert "uniform" not in res["training"] and "| tsqnet | 0 |" in (paths.reports / "samplers.md").read_text()


def test_pseudo_labels_rows_are_distributions(sampler_run):
    paths, _ = sampler_run
    d = np.load(paths.features.parent / "pseudo_labels" / "train.npz")
    assert np.allclose(d["ns"].sum(-1), 1, atol=1e-5) and ((d["g"] >= 0) & (d["g"] <= 1)).all()


def test_store_with_other_T_is_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="T=8 frames per video but frames.T=16"):
        check_store(FeatureStore(tiny_pipeline.features), 16)


def test_nan_features_are_refused_with_video_ids(tiny_pipeline, tmp_path):
    import json
    import shutil

    from components.core.integrity import file_digests

    dst = tmp_path / "features"
    shutil.copytree(tiny_pipeline.features, dst)
    arr = np.load(dst / "val" / "light_feats.npy", mmap_mode="r+")
    arr[1, 3, 0] = np.nan
    arr.flush()
    meta = json.loads((dst / "meta.json").read_text())  # as an extract that wrote the NaN would seal it
    (dst / "meta.json").write_text(json.dumps({**meta, "digests": file_digests(dst)}))
    store = FeatureStore(dst)
    with pytest.raises(ValueError, match=f"val/light_feats: NaN or inf .*{store.ids('val')[1]}"):
        load_split(store, "val")


def test_saliency_from_another_store_is_refused(sampler_run, tiny_params):
    paths, _ = sampler_run
    f = paths.features.parent / "samplers" / "uniform" / "saliency_seed0.npz"
    d = dict(np.load(f))
    d["test/ids"] = d["test/ids"][::-1]
    np.savez(f, **d)
    try:
        with pytest.raises(ValueError, match="do not match the feature store"):
            sampler_report.run(tiny_params, paths)
    finally:
        train_sampler.run(tiny_params, paths, "uniform")


def test_every_seed_is_trained_on_the_train_split(tiny_samplers, tiny_params, tmp_path):
    """Regression: a later seed once trained on the previous seed's test rows (a shadowed name)."""
    from dataclasses import replace as dc_replace

    import torch

    from components.training.sampler_training import load_sampler

    p = dc_replace(tiny_params, train_sampler=dc_replace(tiny_params.train_sampler, seeds=(0, 1), epochs=1))
    import shutil

    paths = dc_replace(tiny_samplers, reports=tmp_path / "reports", work=tmp_path / "work",
                       features=tmp_path / "data" / "features")
    src = tiny_samplers.features.parent
    for d in ("features", "pseudo_labels"):
        shutil.copytree(src / d, paths.features.parent / d)
    shutil.copy2(src / "prototypes.npz", paths.features.parent / "prototypes.npz")
    hist = train_sampler.run(p, paths, "nsnet")
    assert set(hist) == {0, 1} and all(len(h) == 1 for h in hist.values())
    assert all(np.isfinite(h[0]["train_loss"]) for h in hist.values())
    a, b = (load_sampler(paths.features.parent / "samplers" / "nsnet" / f"seed{s}.pt") for s in (0, 1))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_samplers_stop_on_val_map_of_each_branch_top_k(tiny_samplers, tiny_params):
    """train_sampler.monitor=val_map: every epoch row carries val_map, the kept epoch is its arg-max,
    and branch_val_score is the mean over branches and val_budgets of the val mAP of each branch's
    top-K, recomputed here by hand from the stored val branch scores of the kept model."""
    from components.core.selection import topk_select
    from components.training.sampler_training import load_sampler
    from components.training.val_objective import branch_val_score, load_val

    assert tiny_params.train_sampler.monitor == "val_map"
    root = tiny_samplers.features.parent / "samplers" / "nsnet"
    hist = json.loads((tiny_samplers.reports / "samplers" / "nsnet_history.json").read_text())["0"]
    maps = [r["val_map"] for r in hist]
    store = FeatureStore(tiny_samplers.features)
    val = load_val(tiny_params, tiny_samplers, store)
    data, _ = load_split(store, "val")
    model = load_sampler(root / "seed0.pt")
    got = branch_val_score(model, data, val, tiny_params.train_sampler.val_budgets)
    sal = np.load(root / "saliency_seed0.npz")
    ks = [k for k in tiny_params.train_sampler.val_budgets]
    want = np.mean([val.map_at(topk_select(sal[f"val/{b}"], k)) for b in ("fsm", "vgm") for k in ks])
    assert got == pytest.approx(want, abs=1e-9)
    assert got == pytest.approx(max(maps), abs=1e-9)  # the restored weights are the best epoch's


def test_a_damaged_sampler_checkpoint_is_named_never_loaded(tiny_samplers, tmp_path):
    """Issue 12 item 5: random bytes, a truncated file and weights partly zeroed with the zip layout
    intact (which loaded silently and gave wrong predictions) each raise naming the file."""
    import torch

    from components.training.sampler_training import CheckpointError, load_sampler

    good = tiny_samplers.features.parent / "samplers" / "nsnet" / "seed0.pt"
    load_sampler(good)  # the real one loads
    data = good.read_bytes()
    bad = tmp_path / "seed0.pt"
    for damaged in (np.random.default_rng(0).bytes(len(data)), data[: len(data) // 2]):
        bad.write_bytes(damaged)
        with pytest.raises(CheckpointError, match=r"seed0\.pt: not a loadable sampler checkpoint"):
            load_sampler(bad)
    ck = torch.load(good, weights_only=False)
    first = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    ck["state_dict"][first][: max(1, len(ck["state_dict"][first]) // 2)] = 0
    torch.save(ck, bad)
    with pytest.raises(CheckpointError, match=r"seed0\.pt: weights changed since they were saved"):
        load_sampler(bad)


def test_a_sampler_folder_missing_a_configured_seed_is_refused(tiny_samplers, tiny_params, tmp_path):
    """Issue 12 item 7: tune_fusion used a folder holding 1 of 3 seeds (after a kill) without a word."""
    import shutil

    from components.evaluation.sampler_eval import load_runs
    from components.training.sampler_training import load_sampler, sampler_seeds

    store = FeatureStore(tiny_samplers.features)
    valid = np.asarray(store.array("val", "valid"), bool)
    ids = [i for i, v in zip(store.ids("val"), valid) if v]
    root = tmp_path / "samplers"
    shutil.copytree(tiny_samplers.features.parent / "samplers" / "tsqnet", root / "tsqnet")
    have = sampler_seeds(tiny_params, "tsqnet")
    assert [r.seed for r in load_runs(root, "tsqnet", "val", ids, load_sampler, have)] == list(have)
    with pytest.raises(FileNotFoundError, match=r"tsqnet: seed\(s\) \[7\] of the configured .* missing"):
        load_runs(root, "tsqnet", "val", ids, load_sampler, (*have, 7))
