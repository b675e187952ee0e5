"""train_recognizer -> evaluate -> report on the tiny pipeline, the grid against a brute-force
recomputation, and ``salient predict`` against the cached evaluation."""
import csv
import json

import numpy as np
import pytest
import torch

from components.evaluation.sampler_eval import CURVE_COLUMNS, ClipScorer, mean_selected, softmax, summarize
from components.evaluation.metrics import mean_average_precision, top1
from components.models.recognizers import load_recognizer
from components.app.predict import Prediction, PredictError, Predictor
from components.core.selection import average_predictions
from components.stages import evaluate, report, train_recognizer
from components.training.sampler_training import load_sampler
from components.store.feature_store import FeatureStore


@pytest.fixture(scope="module")
def evaluated(tiny_samplers, tiny_params):
    train_recognizer.run(tiny_params, tiny_samplers)
    evaluate.run(tiny_params, tiny_samplers)
    report.run(tiny_params, tiny_samplers)
    return tiny_samplers


def _rows(paths):
    with open(paths.results / "curves.csv") as f:
        return list(csv.DictReader(f))


def _test_logits_labels(paths):
    """Cached frame-recognizer logits [N,T,C] and labels [N,C] of the valid test videos."""
    store = FeatureStore(paths.features)
    valid = np.asarray(store.array("test", "valid"), bool)
    return np.asarray(store.array("test", "rec_logits"))[valid], np.asarray(store.array("test", "labels"))[valid]


def test_curves_cover_the_grid(evaluated, tiny_params):
    rows = _rows(evaluated)
    assert tuple(rows[0]) == CURVE_COLUMNS
    e = tiny_params.evaluate
    frame = {(r["sampler"], int(r["k"]), int(r["seed"])) for r in rows if r["recognizer"] == "frame"
             and "[" not in r["sampler"]}  # branch rows: test_branch_rows_select_by_one_branch_of_the_same_model
    assert frame == {(s, k, 0) for s in (*e.samplers, *tiny_params.ablations) for k in e.budgets}
    tsi = {(r["sampler"], int(r["k"])) for r in rows if r["recognizer"] == "tsi"}
    assert tsi == {(s, k) for s in e.samplers for k in tiny_params.tsi.budgets}
    for r in rows:
        assert 0 <= float(r["map"]) <= 1 and 0 <= float(r["top1"]) <= 1 and float(r["gmacs"]) > 0
    oracle = [r for r in rows if r["sampler"] == "oracle"]
    assert all(float(r["salient_recall"]) == 1.0 for r in oracle)
    share = {(r["sampler"], r["k"]): float(r["distractor_share"]) for r in rows if r["recognizer"] == "frame"}
    assert all(share[("oracle", k)] <= share[("uniform", k)] for s, k in share if s == "oracle")  # salient first


def test_distractor_share_matches_a_brute_force_count(evaluated, tiny_params):
    """The share of picks showing another class's scene, counted frame by frame from the store's ground truth."""
    store = FeatureStore(evaluated.features)
    valid = np.asarray(store.array("test", "valid"), bool)
    gt, labels = np.asarray(store.array("test", "gt"))[valid], np.asarray(store.array("test", "labels"))[valid]
    rows = {(r["sampler"], int(r["k"])): r for r in _rows(evaluated) if r["recognizer"] == "frame"}
    z = np.load(evaluated.features.parent / "samplers" / "maxconf_l" / "saliency_seed0.npz")
    pos = {str(v): i for i, v in enumerate(z["test/ids"])}
    sal = z["test/saliency"][[pos[v] for v, ok in zip(store.ids("test"), valid) if ok]]
    for K in (1, 3):
        idx = np.argsort(-sal, axis=1, kind="stable")[:, :K]
        want = np.mean([[g >= 0 and not labels[n, g] for g in gt[n, idx[n]]] for n in range(len(gt))])
        assert float(rows[("maxconf_l", K)]["distractor_share"]) == pytest.approx(want, abs=1e-5)


def test_frame_rows_match_a_brute_force_recomputation(evaluated, tiny_params):
    """Re-select with each stored sampler and average the cached logits with the selection module."""
    logits, labels = _test_logits_labels(evaluated)
    rows = {(r["sampler"], int(r["k"])): r for r in _rows(evaluated) if r["recognizer"] == "frame"}
    for name in ("uniform", "tsqnet", "nsnet"):
        model = load_sampler(evaluated.features.parent / "samplers" / name / "seed0.pt")
        sal = np.load(evaluated.features.parent / "samplers" / name / "saliency_seed0.npz")
        from components.models.samplers import SamplerOutput

        out = SamplerOutput(torch.from_numpy(sal["test/saliency"]),
                            {k.split("/", 1)[1]: torch.from_numpy(sal[k]) for k in sal.files
                             if k.startswith("test/") and k not in ("test/ids", "test/saliency")})
        for K in tiny_params.evaluate.budgets:
            scores = average_predictions(logits, model.select(out, K))
            r = rows[(name, K)]
            assert float(r["top1"]) == pytest.approx(top1(scores, labels), abs=1e-5)
            assert float(r["map"]) == pytest.approx(mean_average_precision(scores, labels), abs=1e-5)


def test_gmacs_grow_with_k_and_tsi_costs_what_it_runs(evaluated):
    rows = _rows(evaluated)
    uni = sorted((int(r["k"]), float(r["gmacs"])) for r in rows if r["sampler"] == "uniform" and r["recognizer"] == "frame")
    steps = np.diff([g for _, g in uni])
    assert (steps > 0).all() and np.allclose(steps, steps[0], rtol=1e-3)  # recognizer x K, nothing else
    m = json.loads((evaluated.results / "metrics.json").read_text())
    assert m["map_definition"] and m["recognizers"] == ["frame", "tsi", "avgn"]  # avgn: its own head
    assert m["tsi_clips_run"] > 0
    assert set(m["headline"]["nsnet"]["tsi"]) == {"2"}  # K=4 is not in evaluate.sampler_budgets
    cell = m["headline"]["tsqnet"]["frame"]["3"]
    assert cell["map_ci"][0] <= cell["map"] <= cell["map_ci"][1]


def test_summarize_is_mean_and_std_over_seeds():
    rows = [{"sampler": "a", "recognizer": "frame", "k": 1, "seed": s, "map": v, "top1": v, "salient_recall": v,
             "gmacs": 1.0} for s, v in ((0, 0.2), (1, 0.4))]
    (s,) = summarize(rows)
    assert s["map"] == pytest.approx(0.3) and s["map_std"] == pytest.approx(0.1) and s["seeds"] == 2


def test_clip_scorer_memoises_identical_frame_sets():
    class Count(torch.nn.Module):
        def forward(self, x):  # [B,K,3,s,s] -> [B,2]: mean pixel decides the class
            m = x.mean((1, 2, 3, 4))
            return torch.stack([m, 1 - m], 1)

    frames = np.random.default_rng(0).integers(0, 255, (3, 6, 3, 4, 4), dtype=np.uint8)
    sc = ClipScorer(Count(), frames, batch_size=2)
    a = sc.scores(np.array([[0, 2], [1, 3], [5, 4]]))
    b = sc.scores(np.array([[2, 0], [1, 3], [4, 5]]))  # the same sets, other order
    assert sc.calls == 3 and np.allclose(a, b)
    want = softmax(np.stack([[frames[0, [0, 2]].mean() / 255, 1 - frames[0, [0, 2]].mean() / 255]]))
    assert np.allclose(a[0], want[0], atol=1e-6)


def test_mean_selected_equals_average_predictions():
    rng = np.random.default_rng(1)
    logits, idx = rng.normal(size=(4, 6, 3)), np.array([[0, 1], [5, 2], [3, 3], [4, 0]])
    assert np.allclose(mean_selected(softmax(logits), idx), average_predictions(logits, idx))


def test_report_writes_figures_and_tables(evaluated):
    for f in ("curves.png", "saliency.png", "frames.png"):
        assert (evaluated.reports / "figures" / f).stat().st_size > 5000
    text = (evaluated.reports / "README.md").read_text()
    assert "mAP definition" in text and "| tsqnet |" in text and "tsi recognizer" in text


def test_train_recognizer_report(evaluated, tiny_params):
    r = json.loads((evaluated.reports / "train_recognizer.json").read_text())
    assert r["init"].startswith("frame recognizer") and 1.0 < r["gmacs_ratio_tsi_over_tsn"] <= 1.05
    assert r["consensus"] == tiny_params.tsi.consensus == "probs"
    for k in ("val_clip_acc_tsi", "val_clip_map_tsi", "val_clip_acc_tsn", "val_clip_map_tsn"):
        assert 0.0 <= r[k] <= 1.0, k
    tsi = load_recognizer(evaluated.features.parent / "recognizers" / "tsi.pt")
    assert tsi.consensus == "probs"  # the saved config rebuilds the trained consensus
    assert (evaluated.features.parent / "recognizers" / "tsi.pt").exists()


# --------------------------------------------------------------------------------------- predict
def _cached_selection(paths, name, K):
    model = load_sampler(paths.features.parent / "samplers" / name / "seed0.pt")
    from components.evaluation.sampler_eval import load_runs

    store = FeatureStore(paths.features)
    valid = np.asarray(store.array("test", "valid"), bool)
    ids = [i for i, v in zip(store.ids("test"), valid) if v]
    run = load_runs(paths.features.parent / "samplers", name, "test", ids, load_sampler)[0]
    fidx = np.asarray(store.array("test", "frame_indices"))[valid]
    probs = softmax(np.asarray(store.array("test", "rec_logits"))[valid])
    idx = np.sort(run.select(K), 1)
    return ids, np.take_along_axis(fidx, idx, 1), mean_selected(probs, idx), model


@pytest.mark.parametrize("name", ["tsqnet", "nsnet", "uniform"])
def test_predict_matches_the_cached_evaluation(evaluated, tiny_params, name):
    from components.data.manifest import read_manifest

    K = 3
    ids, frames, scores, _ = _cached_selection(evaluated, name, K)
    recs = {r.video_id: r for r in read_manifest(evaluated.prepared)[0]}
    pred = Predictor.load(tiny_params, evaluated.features.parent / "samplers" / name / "seed0.pt",
                          evaluated.encoders, K)
    out = pred.predict([recs[v].path for v in ids], top=3)
    classes = FeatureStore(evaluated.features).classes
    for o, fr, sc in zip(out, frames, scores):
        assert isinstance(o, Prediction)
        assert o.frames == fr.tolist()
        assert o.top[0][0] == classes[int(sc.argmax())]
        assert o.top[0][1] == pytest.approx(float(sc.max()), abs=1e-4)
    assert pred.gmacs > 0 and all(v >= 0 for v in pred.timings.values())
    if name == "uniform":
        assert pred.light is None and pred.objects is None  # nothing looks at the video before the recognizer


def test_predict_reports_bad_files_and_goes_on(evaluated, tiny_params, tmp_path):
    from components.data.manifest import read_manifest

    good = [r.path for r in read_manifest(evaluated.prepared)[0] if r.split == "test"][:1]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    pred = Predictor.load(tiny_params, evaluated.features.parent / "samplers" / "nsnet" / "seed0.pt", evaluated.encoders, 2)
    out = pred.predict([str(bad), good[0], str(tmp_path / "missing.mp4")])
    assert isinstance(out[0], PredictError) and isinstance(out[1], Prediction) and out[2].reason == "missing"


def test_predict_cli_writes_its_result_whole_or_not_at_all(evaluated, tiny_params, tmp_path):
    """Issue 12 item 6 / 13: ``--output`` writes the JSON atomically (a full disk leaves no truncated
    file), and the result names the sampler the checkpoint holds, not the flag's default."""
    import subprocess

    import yaml

    from components.app.cli import main
    from components.data.manifest import read_manifest
    from components.core.params import to_dict

    video = [r.path for r in read_manifest(evaluated.prepared)[0] if r.split == "test"][0]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(tiny_params)))
    ck = evaluated.features.parent / "samplers" / "nsnet" / "seed0.pt"
    args = ["predict", video, "--checkpoint-dir", str(evaluated.features.parent), "--checkpoint", str(ck),
            "--k", "2", "--params", str(params)]
    out = tmp_path / "pred.json"
    assert main([*args, "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["sampler"] == "nsnet" and doc["checkpoint"] == str(ck) and len(doc["results"]) == 1
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(full)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        (full / "filler").write_bytes(b"x" * 4096)  # nothing left
        assert main([*args, "--output", str(full / "pred.json")]) == 2
        assert sorted(f.name for f in full.iterdir()) == ["filler"]  # no partial JSON, no temp file
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_predict_refuses_bad_requests_before_any_work(evaluated, tiny_params):
    ck = evaluated.features.parent / "samplers"
    with pytest.raises(ValueError, match="K"):
        Predictor.load(tiny_params, ck / "nsnet" / "seed0.pt", evaluated.encoders, tiny_params.frames.T + 1)
    with pytest.raises(ValueError, match="K"):
        Predictor.load(tiny_params, ck / "nsnet" / "seed0.pt", evaluated.encoders, 0)
    with pytest.raises(ValueError, match="ground truth"):
        Predictor.load(tiny_params, ck / "oracle" / "seed0.pt", evaluated.encoders, 2)
    bad = evaluated.features.parent / "other_classes.pt"
    d = torch.load(ck / "nsnet" / "seed0.pt", weights_only=False)
    d["classes"] = list(d["classes"])[::-1]
    torch.save(d, bad)
    with pytest.raises(ValueError, match="another class list"):
        Predictor.load(tiny_params, bad, evaluated.encoders, 2)


def test_predict_with_tsi_runs_one_clip(evaluated, tiny_params):
    from components.data.manifest import read_manifest

    path = [r.path for r in read_manifest(evaluated.prepared)[0] if r.split == "test"][0]
    pred = Predictor.load(tiny_params, evaluated.features.parent / "samplers" / "tsqnet" / "seed0.pt",
                          evaluated.encoders, 3, recognizer="tsi")
    (o,) = pred.predict([path])
    assert isinstance(o, Prediction) and len(o.frames) == 3 and o.frames == sorted(o.frames)
    assert abs(sum(p for _, p in pred.predict([path], top=100)[0].top) - 1) < 1e-6


def test_flops_stage_tables(evaluated, tiny_params):
    from components.evaluation.cost_table import read_flops_table
    from components.stages import flops

    res = flops.run(tiny_params, evaluated)
    rows = read_flops_table(evaluated.reports / "flops.csv")
    assert {r.component for r in rows} >= {"light encoder", "object recognizer", "sampler", "recognizer"}
    md = (evaluated.reports / "flops.md").read_text()
    assert "the paper's ActivityNet setting" in md and "| **total** |" in md
    assert "## Cost regime (per frame)" in md and all(f"| {n} |" in md for n in ("tsqnet", "nsnet", "avgn"))
    # uniform = recognizer x K only; tsqnet adds light x T + object x T + its own layers
    assert res["gmacs"]["tsqnet"] > res["gmacs"]["uniform"] > 0
    assert 25.0 < res["gmacs"]["tsqnet_paper_setting"] < 27.0


def test_ablations_are_evaluated_beside_their_base(evaluated, tiny_params):
    rows = _rows(evaluated)
    abl = [r for r in rows if r["sampler"] == "nsnet_mlp"]
    assert {int(r["k"]) for r in abl} == set(tiny_params.evaluate.budgets)
    assert {r["recognizer"] for r in abl} == {"frame"}  # the clip recognizer runs for evaluate.samplers only
    text = (evaluated.reports / "README.md").read_text()
    assert "## Ablations" in text and "| nsnet_mlp | nsnet.fem=mlp, train_sampler.epochs=1 |" in text
    model = load_sampler(evaluated.features.parent / "samplers" / "nsnet_mlp" / "seed0.pt")
    assert model.params.fem == "mlp"


def test_branch_rows_select_by_one_branch_of_the_same_model(evaluated, tiny_params):
    """tsqnet[vqm] etc.: top-K of that branch's stored scores, brute-forced here."""
    logits, labels = _test_logits_labels(evaluated)
    rows = {(r["sampler"], int(r["k"])): r for r in _rows(evaluated) if r["recognizer"] == "frame"}
    assert {s for s, _ in rows if "[" in s} == {"tsqnet[vqm]", "tsqnet[tqm]", "nsnet[fsm]", "nsnet[vgm]"}
    sal = np.load(evaluated.features.parent / "samplers" / "nsnet" / "saliency_seed0.npz")
    for K in tiny_params.evaluate.budgets:
        idx = np.argsort(-sal["test/fsm"], axis=1, kind="stable")[:, :K]
        assert float(rows[("nsnet[fsm]", K)]["map"]) == pytest.approx(
            mean_average_precision(average_predictions(logits, idx), labels), abs=1e-5)
        assert float(rows[("nsnet[fsm]", K)]["gmacs"]) == pytest.approx(float(rows[("nsnet", K)]["gmacs"]))
    assert "## Fusion vs its branches" in (evaluated.reports / "README.md").read_text()


def test_fused_minus_branch_ci_is_the_paired_bootstrap_of_the_two_selections(evaluated, tiny_params):
    """metrics.json's fused − branch CI, recomputed by brute force: NSNet's fused ``select`` and its FSM
    top-K on the stored saliency, the cached logits, and the paired percentile bootstrap."""
    from components.evaluation.metrics import bootstrap_ci
    from components.models.samplers import SamplerOutput
    from components.evaluation.fusion import fusion_values, select

    logits, labels = _test_logits_labels(evaluated)
    m = json.loads((evaluated.results / "metrics.json").read_text())["headline"]
    root = evaluated.features.parent / "samplers" / "nsnet"
    model = load_sampler(root / "seed0.pt")
    values = fusion_values(tiny_params, evaluated).get("nsnet")
    sal = np.load(root / "saliency_seed0.npz")
    out = SamplerOutput(torch.from_numpy(sal["test/saliency"]),
                        {k.split("/", 1)[1]: torch.from_numpy(sal[k]) for k in sal.files
                         if k.startswith("test/") and k not in ("test/ids", "test/saliency")})
    assert set(m["nsnet[fsm]"]["frame"])
    for k, cell in m["nsnet[fsm]"]["frame"].items():
        fused = average_predictions(logits, select(model, out, int(k), values))
        branch = average_predictions(logits, np.argsort(-sal["test/fsm"], axis=1, kind="stable")[:, :int(k)])
        want = bootstrap_ci(lambda ix: mean_average_precision(fused[ix], labels[ix])
                            - mean_average_precision(branch[ix], labels[ix]), len(labels),
                            n_boot=tiny_params.evaluate.bootstrap)
        assert cell["fused_minus_branch_ci"] == pytest.approx(list(want), abs=5e-6)  # reported to 5 decimals
    assert "fused_minus_branch_ci" not in m["nsnet"]["frame"]["3"]  # only branch rows carry it
    assert "| nsnet − nsnet[fsm] |" in (evaluated.reports / "README.md").read_text()


def test_saliency_and_frames_figures_show_every_learned_sampler(evaluated, tiny_params):
    """Issue 26: AVGN was left out of saliency.png and frames.png (a hard-coded TSQNet / NSNet list)."""
    on_saliency, on_frames = report.figure_samplers(tiny_params)
    assert on_saliency == ["tsqnet", "nsnet", "avgn", "maxconf_l"]
    assert on_frames == ["uniform", "maxconf_l", "tsqnet", "nsnet", "avgn", "oracle"]
    for name in ("saliency.png", "frames.png"):
        assert (evaluated.reports / "figures" / name).stat().st_size > 10_000
