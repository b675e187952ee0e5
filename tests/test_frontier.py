"""The efficiency frontier (components/evaluation/frontier.py, components/reporting/aggregate.frontier, the summary stage) against
answers worked out by hand: uniform read at a sampler's cost between two of its K, the cost at which a
curve reaches dense, an extrapolation flagged, a target not reached flagged, a missing cost refused by
name, and the bootstrap carried resample by resample (deterministic, holding its point estimate)."""
import json
import math

import numpy as np
import pytest

from components.core.atomic import atomic_savez
from components.evaluation.frontier import (Run, bracket, checked_gmacs, crossing, interpolate, pooled, run_metrics,
                                 tables)
from components.evaluation.metrics import percentile_ci
from components.core.params import load_params
from components.core.paths import Paths
from components.stages import summary as summary_stage
from components.reporting.aggregate import frontier, load_seed

# uniform's curve by hand: K=1, 2, 3 at 1, 2, 3 GMACs with mAP 0.4, 0.6, 0.7
UK, UX, UY = (1, 2, 3), (1.0, 2.0, 3.0), (0.4, 0.6, 0.7)
OFF_U = np.array([0.0, 0.01, -0.01, 0.02])  # uniform's mAP on 4 "resamples": its mAP + these, at every K


def _runs(ps: int = 0, lift: float = 0.0) -> dict:
    """Hand-made runs of one pipeline seed: uniform above, tsqnet at K=1 (2.5 GMACs, between uniform's K=2
    and K=3) and K=2 (3.5 GMACs, beyond uniform's dearest point), dense at 10 GMACs, and a weak sampler."""
    r = {("uniform", "frame", k): [Run(ps, 0, x, y + lift, y + lift + OFF_U)] for k, x, y in zip(UK, UX, UY)}
    off_t = np.array([0.0, 0.03, 0.01, 0.02])
    r[("tsqnet", "frame", 1)] = [Run(ps, 1000 * ps, 2.5, 0.70 + lift, 0.70 + lift + off_t)]
    r[("tsqnet", "frame", 2)] = [Run(ps, 1000 * ps, 3.5, 0.80 + lift, 0.80 + lift + off_t)]
    r[("dense", "frame", 1)] = [Run(ps, 0, 10.0, 0.78 + lift, 0.78 + lift + OFF_U)]
    r[("weak", "frame", 1)] = [Run(ps, 0, 1.5, 0.30 + lift, 0.30 + lift + OFF_U)]
    r[("weak", "frame", 2)] = [Run(ps, 0, 2.5, 0.50 + lift, 0.50 + lift + OFF_U)]
    return r


def test_uniform_read_between_its_points_and_extrapolated_outside_them():
    # 2.5 GMACs: halfway between K=2 (0.6) and K=3 (0.7) -> 0.65
    assert bracket(UX, 2.5) == (1, 2, 0.5, False)
    v, ex = interpolate(UX, UY, 2.5)
    assert v == pytest.approx(0.65) and ex is False
    assert interpolate(UX, UY, 2.0) == (pytest.approx(0.6), False)  # on a point: that point
    # 3.5 GMACs: beyond K=3, along the last segment (slope 0.1 per GMAC) -> 0.75, flagged, not clipped to 0.7
    v, ex = interpolate(UX, UY, 3.5)
    assert v == pytest.approx(0.75) and ex is True
    v, ex = interpolate(UX, UY, 0.5)  # below K=1, along the first segment (slope 0.2) -> 0.3
    assert v == pytest.approx(0.3) and ex is True
    # one curve per resample: the same weights on every row
    ys = np.array(UY) + OFF_U[:, None]
    assert interpolate(UX, ys, 2.5)[0] == pytest.approx(0.65 + OFF_U)
    with pytest.raises(ValueError, match="at least 2"):
        bracket([1.0], 1.0)


def test_crossing_by_hand_and_not_reached():
    xs, ys = [1.0, 2.0, 4.0], [0.5, 0.6, 0.8]
    assert crossing(xs, ys, 0.7) == pytest.approx(3.0)  # 2 + (0.7 - 0.6) / (0.8 - 0.6) × (4 - 2)
    assert crossing(xs, ys, 0.45) == 1.0  # the cheapest point already reaches it
    assert crossing(xs, ys, 0.9) == math.inf  # never: not a made-up number
    # points given out of cost order are read in cost order; one target per resample
    out = crossing([4.0, 1.0, 2.0], np.array([[0.8, 0.5, 0.6], [0.8, 0.5, 0.6]]), np.array([0.7, 0.85]))
    assert out[0] == pytest.approx(3.0) and out[1] == math.inf


def test_a_missing_or_infinite_cost_is_an_error_naming_the_sampler():
    with pytest.raises(ValueError, match="'nsnet'.*GMACs missing"):
        checked_gmacs(None, "nsnet", "frame", 3)
    runs = _runs()
    runs[("nsnet", "frame", 3)] = [Run(0, 0, float("nan"), 0.5, np.zeros(4))]
    with pytest.raises(ValueError, match="'nsnet'.*K=3"):
        pooled(runs, 3)
    rows = [{"sampler": "uniform", "recognizer": "frame", "k": k, "seed": 0, "gmacs": x, "map": y}
            for k, x, y in zip(UK, UX, UY)]
    rows.append({"sampler": "avgn", "recognizer": "frame", "k": 1, "seed": 0, "gmacs": float("inf"), "map": 0.5})
    with pytest.raises(ValueError, match="'avgn'"):
        run_metrics(rows, [1], 3)


def test_pooled_frontier_by_hand():
    fr = pooled(_runs(), reference_k=3)
    assert fr["reference"] == {"sampler": "uniform", "recognizer": "frame", "ks": [1, 2, 3], "gmacs": [1, 2, 3],
                               "map": [0.4, 0.6, 0.7]}
    t1 = fr["samplers"]["tsqnet"]["frame"]["matched"]["1"]
    assert t1["uniform_at_matched_gmacs"] == pytest.approx(0.65) and t1["diff"] == pytest.approx(0.05)
    assert t1["uniform_between_k"] == [2, 3] and t1["extrapolated"] is False
    # per resample: 0.05 + (tsqnet's offset − uniform's) = 0.05, 0.07, 0.07, 0.05
    assert t1["ci"] == pytest.approx(list(percentile_ci(np.array([0.05, 0.07, 0.07, 0.05]))))
    assert t1["ci"][0] <= t1["diff"] <= t1["ci"][1] and t1["resolved"] is True
    t2 = fr["samplers"]["tsqnet"]["frame"]["matched"]["2"]
    assert t2["extrapolated"] is True and t2["uniform_at_matched_gmacs"] == pytest.approx(0.75)
    assert t2["diff"] == pytest.approx(0.05)
    # GMACs to reach dense (0.78) along tsqnet's (2.5, 0.70) -> (3.5, 0.80): 2.5 + 0.08 / 0.10 = 3.3
    td = fr["samplers"]["tsqnet"]["frame"]["to_dense"]
    assert td["reached"] and td["gmacs"] == pytest.approx(3.3) and not td["at_first_point"]
    assert td["saving_pct"] == pytest.approx(67.0)  # 100 × (1 − 3.3 / 10)
    # per resample: target 0.78 + OFF_U (0.78, 0.79, 0.77, 0.80), curve + (0, .03, .01, .02): the crossing
    # 2.5 + (target − curve at 2.5) / 0.1 -> 3.3, 3.1, 3.1, 3.3
    lo, hi = percentile_ci(np.array([3.3, 3.1, 3.1, 3.3]))
    assert td["ci"] == pytest.approx([lo, hi]) and td["reached_share"] == 1.0
    assert td["saving_pct_ci"] == pytest.approx([100 * (1 - hi / 10), 100 * (1 - lo / 10)], abs=0.01)
    # uniform at K=3 (0.7) is met by tsqnet's cheapest point: its cost, flagged as an upper bound
    tu = fr["samplers"]["tsqnet"]["frame"]["to_uniform_k3"]
    assert tu["gmacs"] == 2.5 and tu["at_first_point"]
    # the weak sampler tops out at 0.5: dense not reached, never a number
    weak = fr["samplers"]["weak"]["frame"]
    assert weak["to_dense"]["reached"] is False and weak["to_dense"]["gmacs"] is None
    assert weak["to_dense"]["saving_pct"] is None and weak["to_dense"]["ci"] == [None, None]
    assert weak["to_dense"]["reached_share"] == 0.0
    assert "matched" not in fr["samplers"]["uniform"]["frame"] and "dense" not in fr["samplers"]
    assert fr["dense"]["gmacs"] == 10.0 and fr["uniform_k3"]["map"] == pytest.approx(0.7)
    text = "\n".join(tables(fr))
    assert "| tsqnet | 2 | 3.500 | 80.0 | 75.0 (**extrapolated** from K=2–3) | +5.0 [" in text
    assert "yes, extrapolated" in text and "| weak | not reached | – |" in text
    assert "| tsqnet | 3.300 [" in text and "≤ 2.500" in text


def test_each_run_is_read_against_uniform_of_its_own_pipeline_seed():
    """Seed 1's uniform and tsqnet are 0.1 higher and its tsqnet 0.1 higher again: each difference is
    taken within its pipeline seed (0.05 and 0.15), then averaged (0.10)."""
    runs = _runs(0)
    for key, rs in _runs(1, lift=0.1).items():
        if key[0] == "tsqnet":
            rs = [r._replace(map=r.map + 0.1, boot=r.boot + 0.1) for r in rs]
        runs[key] = runs.get(key, []) + rs
    cell = pooled(runs, 3)["samplers"]["tsqnet"]["frame"]["matched"]["1"]
    assert cell["diff"] == pytest.approx(0.10) and cell["runs"] == 2


def test_run_metrics_by_hand():
    rows = [{"sampler": "uniform", "recognizer": "frame", "k": k, "seed": 0, "gmacs": x, "map": y}
            for k, x, y in zip(UK, UX, UY)]
    rows += [{"sampler": "tsqnet", "recognizer": "frame", "k": k, "seed": 7, "gmacs": x, "map": y}
             for k, x, y in ((1, 2.5, 0.70), (2, 3.5, 0.80), (4, 9.0, 0.95))]  # K=4 not a sampler budget
    rows += [{"sampler": "dense", "recognizer": "frame", "k": k, "seed": 0, "gmacs": 10.0, "map": 0.78} for k in UK]
    rows += [{"sampler": "tsqnet", "recognizer": "tsi", "k": 1, "seed": 7, "gmacs": 5.0, "map": 0.9}]
    m = run_metrics(rows, budgets=[1, 2], reference_k=3)
    t = m[("tsqnet", "frame", 7)]
    assert t["matched_uniform_map_k1"] == pytest.approx(0.65) and t["matched_uniform_diff_k1"] == pytest.approx(0.05)
    assert t["matched_extrapolated_k1"] == 0.0 and t["matched_extrapolated_k2"] == 1.0
    assert t["gmacs_to_dense"] == pytest.approx(3.3) and t["reaches_dense"] == 1.0
    assert t["saving_vs_dense_pct"] == pytest.approx(67.0) and t["gmacs_to_uniform_k3"] == 2.5
    assert ("tsqnet", "tsi", 7) not in m  # the clip recognizer has no curve
    m = run_metrics([r for r in rows if r["sampler"] != "tsqnet" or r["k"] == 1], [1, 2], 3)
    t = m[("tsqnet", "frame", 7)]
    assert t["reaches_dense"] == 0.0 and "gmacs_to_dense" not in t and "saving_vs_dense_pct" not in t
    assert run_metrics(rows[:1], [1], 3) == {}  # uniform at one K: no curve, nothing logged
    # a sampler's own head (the own_recognizer its class declares) has a curve; named by the caller, not here
    head = [{**r, "recognizer": "avgn", "sampler": "avgn"} for r in rows if r["sampler"] == "tsqnet" and r["recognizer"] == "frame"]
    assert ("avgn", "avgn", 7) not in run_metrics(rows + head, [1, 2], 3)
    m = run_metrics(rows + head, [1, 2], 3, heads=("avgn",))
    assert m[("avgn", "avgn", 7)] == m[("tsqnet", "frame", 7)]  # the same curve reads the same
    from components.models.samplers import own_recognizers

    assert own_recognizers() == ("avgn",)  # the shipped samplers: AVGN's head only


def test_percentile_ci_with_resamples_that_never_reach():
    assert percentile_ci(np.array([1.0, 2.0, 3.0, 4.0])) == tuple(np.quantile([1, 2, 3, 4], [0.025, 0.975]))
    lo, hi = percentile_ci(np.array([1.0, 2.0, np.inf, np.inf]))
    assert lo == pytest.approx(1.075) and hi == math.inf  # position 0.075 between 1 and 2; the top on inf
    assert percentile_ci(np.array([np.inf] * 4)) == (math.inf, math.inf)


# ------------------------------------------------------------------------------------------ from results/
N, C = 40, 4
COST = {"uniform": {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}, "tsqnet": {1: 1.6, 2: 2.6, 3: 3.6},
        "dense": {1: 6.0, 2: 6.0, 3: 6.0}, "maxconf": {1: 6.0, 2: 6.0, 3: 6.0}}
STRENGTH = {"uniform": 0.3, "tsqnet": 0.6, "dense": 0.9, "maxconf": 0.5}


def _write_seed(root, seed: int, rng, missing_cost: str | None = None) -> None:
    """results/s<seed>/ as evaluate writes it, uniform at every K, the others at the sampler budgets."""
    labels = np.eye(C, dtype=np.int64)[np.arange(N) % C]
    scores = {(name, "frame", k, sd): rng.random((N, C)) + STRENGTH[name] * (0.7 + 0.15 * k) * labels
              for name, by_k in COST.items() for k in by_k
              for sd in ((1000 * seed, 1000 * seed + 1) if name == "tsqnet" else (0,))}
    folder = root / f"s{seed}"
    folder.mkdir(parents=True)
    atomic_savez(folder / "scores.npz", labels=labels, ids=np.array([f"v{i}" for i in range(N)]),
                 **{"|".join(map(str, k)): v.astype(np.float32) for k, v in scores.items()})
    lines = ["sampler,recognizer,k,seed,gmacs,map,top1,salient_recall"]
    for (name, rec, k, sd) in scores:
        g = "" if name == missing_cost else COST[name][k]
        lines.append(f"{name},{rec},{k},{sd},{g},{0.5 + 0.05 * k},0.5,0.4")
    (folder / "curves.csv").write_text("\n".join(lines) + "\n")
    (folder / "metrics.json").write_text("{}")


def test_from_results_deterministic_and_holding_the_point(tmp_path):
    rng = np.random.default_rng(5)
    for s in (0, 1):
        _write_seed(tmp_path, s, rng)
    seeds = [load_seed(tmp_path, s) for s in (0, 1)]
    a = frontier(seeds, "sklearn", 60, reference_k=3)
    assert a == frontier(seeds, "sklearn", 60, reference_k=3)  # the same resamples every time
    assert a["reference"]["ks"] == [1, 2, 3, 4]
    for k, c in a["samplers"]["tsqnet"]["frame"]["matched"].items():
        assert c["ci"][0] <= c["diff"] <= c["ci"][1] and c["runs"] == 4
        assert c["extrapolated"] is False and c["uniform_between_k"] == [int(k), int(k) + 1]
    assert a["samplers"]["maxconf"]["frame"]["matched"]["1"]["extrapolated"] is True  # 6 GMACs > uniform's 4
    td = a["samplers"]["tsqnet"]["frame"]["to_dense"]
    if td["reached"] and td["ci"][1] is not None:
        assert td["ci"][0] <= td["gmacs"] <= td["ci"][1]
    _write_seed(tmp_path / "bad", 0, np.random.default_rng(1), missing_cost="tsqnet")
    with pytest.raises(ValueError, match="'tsqnet'.*GMACs"):
        frontier([load_seed(tmp_path / "bad", 0)], "sklearn", 10, reference_k=3)


def test_summary_stage_writes_the_frontier(tmp_path):
    rng = np.random.default_rng(6)
    _write_seed(tmp_path / "results", 0, rng)
    p = load_params("params.yaml", ["pipeline.seeds=[0]", "evaluate.sampler_budgets=[1,2,3]",
                                    "evaluate.bootstrap=30", "evaluate.references=[uniform]"])
    paths = Paths().under(tmp_path)
    summary_stage.run(p, paths)
    out = json.loads((paths.reports / "summary.json").read_text())
    fr = out["frontier"]
    assert fr["reference_k"] == 3 and set(fr["samplers"]) == {"uniform", "tsqnet", "maxconf"}
    text = (paths.reports / "README.md").read_text()
    assert "## Efficiency frontier" in text and "uniform at matched GMACs" in text
    assert "GMACs to reach dense" in text and "**extrapolated**" in text
    assert (paths.reports / "figures/frontier.png").stat().st_size > 5000
