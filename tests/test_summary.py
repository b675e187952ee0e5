"""The summary over pipeline seeds (components.reporting.aggregate / stages.summary) against brute force: the
pooled mAP, the paired difference to uniform and fused − branch, their bootstrap CIs recomputed
resample by resample, and a missing seed named as failed, never averaged away."""
import json

import numpy as np
import pytest

from components.core.atomic import atomic_savez
from components.evaluation.metrics import mean_average_precision
from components.core.params import load_params
from components.core.paths import Paths
from components.stages import summary as summary_stage
from components.reporting.aggregate import load_seed, pool

N, C, K = 30, 4, 3


def _write_seed(root, seed: int, rng) -> dict:
    """results/s<seed>/ as evaluate writes it: scores of uniform (1 run), tsqnet and its branch (2 runs)."""
    labels = np.eye(C, dtype=np.int64)[np.arange(N) % C]
    scores = {("uniform", "frame", K, 0): rng.random((N, C)) + 0.3 * labels}
    for sd in (seed * 1000, seed * 1000 + 1):
        scores[("tsqnet", "frame", K, sd)] = rng.random((N, C)) + 0.8 * labels
        scores[("tsqnet[vqm]", "frame", K, sd)] = rng.random((N, C)) + 0.5 * labels
    folder = root / f"s{seed}"
    folder.mkdir(parents=True)
    atomic_savez(folder / "scores.npz", labels=labels, ids=np.array([f"v{i}" for i in range(N)]),
                 **{"|".join(map(str, k)): v.astype(np.float32) for k, v in scores.items()})
    lines = ["sampler,recognizer,k,seed,gmacs,map,top1,salient_recall"]
    for (name, rec, k, sd), sc in scores.items():
        m = mean_average_precision(sc.astype(np.float32).astype(np.float64), labels)
        lines.append(f"{name},{rec},{k},{sd},1.5,{m:.6g},0.5,0.4")
    (folder / "curves.csv").write_text("\n".join(lines) + "\n")
    (folder / "metrics.json").write_text("{}")
    return {k: v.astype(np.float32).astype(np.float64) for k, v in scores.items()}, labels


def test_pool_matches_brute_force(tmp_path):
    rng = np.random.default_rng(7)
    data = {s: _write_seed(tmp_path, s, rng) for s in (0, 1)}
    labels = data[0][1]
    out = pool([load_seed(tmp_path, s) for s in (0, 1)], [K], "sklearn", n_boot=40)
    cell = out["tsqnet"]["frame"][str(K)]

    def runs(s, name):
        return [v for (nm, _, _, _), v in data[s][0].items() if nm == name]

    seed_means = [np.mean([mean_average_precision(v, labels) for v in runs(s, "tsqnet")]) for s in (0, 1)]
    assert cell["map"] == pytest.approx(np.mean(seed_means), abs=1e-5)
    assert cell["map_std_pipeline"] == pytest.approx(np.std(seed_means), abs=1e-5)
    assert cell["pipeline_seeds"] == 2 and cell["runs"] == 4
    pairs = [(a, runs(s, "uniform")[0]) for s in (0, 1) for a in runs(s, "tsqnet")]

    def diff(ix):
        return np.mean([mean_average_precision(a[ix], labels[ix]) - mean_average_precision(b[ix], labels[ix])
                        for a, b in pairs])

    assert cell["map_minus_uniform"] == pytest.approx(diff(np.arange(N)), abs=1e-5)
    idx = np.random.default_rng(0).integers(0, N, (40, N))  # bootstrap_ci's resamples (seed 0)
    stats = np.array([diff(i) for i in idx])
    assert cell["map_minus_uniform_ci"] == pytest.approx([np.quantile(stats, 0.025), np.quantile(stats, 0.975)], abs=1e-5)
    assert cell["resolved_vs_uniform"] == (cell["map_minus_uniform_ci"][0] > 0 or cell["map_minus_uniform_ci"][1] < 0)
    # fused − branch: the same (pipeline seed, sampler seed) on both sides
    fb = [(data[s][0][("tsqnet", "frame", K, sd)], data[s][0][("tsqnet[vqm]", "frame", K, sd)])
          for s in (0, 1) for sd in (1000 * s, 1000 * s + 1)]
    want = np.mean([mean_average_precision(a, labels) - mean_average_precision(b, labels) for a, b in fb])
    assert out["tsqnet[vqm]"]["frame"][str(K)]["fused_minus_branch"] == pytest.approx(want, abs=1e-5)


def test_summary_stage_names_a_missing_seed(tmp_path):
    rng = np.random.default_rng(1)
    _write_seed(tmp_path / "results", 0, rng)
    p = load_params("params.yaml", ["pipeline.seeds=[0,1]", f"evaluate.sampler_budgets=[{K}]", "evaluate.bootstrap=20"])
    paths = Paths().under(tmp_path)
    summary_stage.run(p, paths)
    out = json.loads((paths.reports / "summary.json").read_text())
    assert out["pipeline_seeds"] == [0] and "1" in out["failed_seeds"]
    assert "results/s1/curves.csv missing" in out["failed_seeds"]["1"]
    text = (paths.reports / "README.md").read_text()
    assert "Failed pipeline seeds" in text and "1: " in text
    assert "not resolved" in text or "[+" in text or "[-" in text
    assert (paths.reports / "figures/curves.png").stat().st_size > 5000
    assert (paths.reports / "curves.csv").read_text().startswith("pipeline_seed,sampler")


def test_seeds_evaluated_on_different_videos_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    _write_seed(tmp_path, 0, rng)
    _write_seed(tmp_path, 1, rng)
    with np.load(tmp_path / "s1/scores.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["ids"] = arrays["ids"][::-1]
    atomic_savez(tmp_path / "s1/scores.npz", **arrays)
    with pytest.raises(ValueError, match="different test videos"):
        pool([load_seed(tmp_path, s) for s in (0, 1)], [K], "sklearn", n_boot=10)


def test_paired_comparisons_with_references_and_bases(tmp_path):
    """vs[ref]: the same paired statistic as map_minus_uniform; a branch against its fused model is
    minus fused − branch (same runs); the reference's runs pair by (pipeline seed, sampler seed)."""
    rng = np.random.default_rng(3)
    for s in (0, 1):
        _write_seed(tmp_path, s, rng)
    seeds = [load_seed(tmp_path, s) for s in (0, 1)]
    out = pool(seeds, [K], "sklearn", n_boot=40, references=("uniform",), bases={"tsqnet[vqm]": "tsqnet"})
    cell = out["tsqnet"]["frame"][str(K)]
    assert cell["vs"]["uniform"]["diff"] == cell["map_minus_uniform"]
    assert cell["vs"]["uniform"]["ci"] == cell["map_minus_uniform_ci"] and cell["vs"]["uniform"]["pairs"] == 4
    assert "vs" not in out["uniform"]["frame"][str(K)]  # never against itself
    br = out["tsqnet[vqm]"]["frame"][str(K)]
    assert br["vs"]["tsqnet"]["diff"] == pytest.approx(-br["fused_minus_branch"], abs=2e-5)
    assert br["vs"]["tsqnet"]["ci"] == pytest.approx(sorted(-x for x in br["fused_minus_branch_ci"]), abs=2e-5)
