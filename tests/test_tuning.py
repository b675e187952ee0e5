"""Optuna tuning (components/tuning/, the tune_fusion stage, flows/sweep.py) on real storages.

* fusion tuning on a hand-built val set whose best lambda_v is known by construction;
* two worker processes filling one SQLite study and one JournalStorage study;
* a loss-weight sweep on the tiny pipeline with a failing trial, pruner reports and MLflow child runs;
* the Pareto front against brute force;
* the tune_fusion stage end to end on the tiny pipeline, and evaluate / sampler_report using its output.
No mocks: real Optuna storages, real training through the engine, a real MLflow SQLite store.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from components.evaluation import fusion

from components import tuning
from components.core.integrity import file_digests
from components.core.params import AVGNParams, NSNetParams, ParamsError, SweepParams, TSQNetParams, load_params, to_dict
from components.core.paths import Paths
try:
    from tests.conftest import ROOT, TINY
except ModuleNotFoundError:  # `pytest` without the project root on sys.path
    from conftest import ROOT, TINY

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------ a hand-built val set
def hand_built(root: Path, n: int = 12, T: int = 8, C: int = 3, seeds=(0, 1)) -> Paths:
    """A feature store with only what the fusion objective reads (val labels, valid, rec_logits) and
    trained-looking TSQNet seeds whose stored val branches make lambda_v's answer known.

    Every video has 4 *good* frames (the frame recognizer gives its class 0.5, the others 0.25) and
    4 *bad* ones (0.9 on the next class). With one selected bad frame among K=4, a video of class
    y-1 outscores every video of class y on class y ((3 * 0.25 + 0.9) / 4 > (3 * 0.5 + 0.05) / 4),
    so val mAP is 1 only when all 4 selected frames are good. VQM ranks good g0, g1, then bad
    b0, b1; TQM ranks good g2, g3, then bad b2, b3: the union takes k_v = round(4 lambda_v) frames
    from VQM and 4 - k_v from TQM, which are all good only for k_v = 2, i.e. lambda_v in [0.375, 0.625).
    """
    rng = np.random.default_rng(0)
    paths = Paths().under(root)
    val = paths.features / "val"
    val.mkdir(parents=True)
    y = np.arange(n) % C
    ids = [f"v{i:02d}" for i in range(n)]
    logits = np.zeros((n, T, C), np.float32)
    perms = [rng.permutation(T) for _ in range(n)]
    for v, perm in enumerate(perms):
        good, bad = np.full(C, 0.25), np.full(C, 0.05)
        good[y[v]], bad[(y[v] + 1) % C] = 0.5, 0.9
        logits[v, perm[:4]], logits[v, perm[4:]] = np.log(good), np.log(bad)
    arrays = {"valid": np.ones(n, bool), "labels": np.eye(C, dtype=np.float32)[y], "rec_logits": logits}
    for k, a in arrays.items():
        np.save(val / f"{k}.npy", a)
    (val / "ids.txt").write_text("\n".join(ids) + "\n")
    meta = {"version": 1, "complete": True, "T": T, "classes": [f"c{c}" for c in range(C)],
            "splits": {"val": {"arrays": {k: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)}
                                          for k, a in arrays.items()}}},
            "digests": file_digests(paths.features)}
    (paths.features / "meta.json").write_text(json.dumps(meta))
    out = paths.features.parent / "samplers" / "tsqnet"
    out.mkdir(parents=True)
    for seed in seeds:
        vqm, tqm = np.zeros((n, T), np.float32), np.zeros((n, T), np.float32)
        for v, perm in enumerate(perms):
            g, b = perm[:4] if seed == 0 else perm[:4][[2, 3, 0, 1]], perm[4:] if seed == 0 else perm[4:][[2, 3, 0, 1]]
            for rank, t in enumerate([g[0], g[1], b[0], b[1], b[2], b[3], g[2], g[3]]):
                vqm[v, t] = T - rank
            for rank, t in enumerate([g[2], g[3], b[2], b[3], b[0], b[1], g[0], g[1]]):
                tqm[v, t] = T - rank
        kwargs = {"num_classes": C, "light_dim": 4, "params": TSQNetParams(dim=8, init="random"),
                  "object_text": torch.zeros(1000, 4), "lambda_v": 0.1}  # a stale lambda_v: dropped on load
        torch.save({"name": "tsqnet", "kwargs": kwargs, "state_dict": None, "seed": seed,
                    "classes": meta["classes"]}, out / f"seed{seed}.pt")
        np.savez(out / f"saliency_seed{seed}.npz", **{"val/saliency": vqm, "val/vqm": vqm, "val/tqm": tqm,
                                                      "val/ids": np.array(ids)})
    return paths


def hand_params(tmp: Path, *extra: str):
    return load_params(ROOT / "params.yaml", [*TINY, "fusion.budgets=[4]", "fusion.lambda_v=0.9", "fusion.trials=25",
                                              f"fusion.storage=sqlite:///{tmp / 'optuna.db'}",
                                              "evaluate.samplers=[uniform,tsqnet]", "train_sampler.seeds=[0,1]", *extra])  # the 2 seeds hand_built writes


def test_tune_fusion_finds_the_known_lambda(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="components.tuning")
    paths = hand_built(tmp_path)
    p = hand_params(tmp_path)
    data = tuning.fusion_objective_data(p, paths)
    assert list(data.runs) == ["tsqnet"] and len(data.runs["tsqnet"]) == 2  # nsnet: not in evaluate.samplers
    assert "nsnet is not in evaluate.samplers: skipped" in caplog.text
    assert data.runs["tsqnet"][0].model.lambda_v == 0.6  # the checkpoint's stale lambda_v=0.1 was dropped
    for lam, expect in [(0.0, False), (0.3, False), (0.4, True), (0.5, True), (0.6, True), (0.7, False), (1.0, False)]:
        assert (data.score("tsqnet", {"lambda_v": lam}) == 1.0) is expect, lam

    res = tuning.tune_fusion(p, paths, data)
    lam = res["tsqnet"]["lambda_v"]
    assert 0.375 <= lam < 0.625
    assert res["best_value"]["tsqnet"] == 1.0 > res["default_value"]["tsqnet"]  # default 0.9: 2 bad frames
    assert res["default_value"]["tsqnet"] == data.score("tsqnet", {"lambda_v": 0.9})
    assert res["trials"]["tsqnet"] == 25 and "nsnet" not in res and res["trials_per_second"]["tsqnet"] > 0
    written = fusion.tuned_fusion_path(paths)
    assert json.loads(written.read_text()) == json.loads(json.dumps({k: v for k, v in res.items()
                                                                     if k != "trials_per_second"}))
    assert [f.name for f in written.parent.iterdir() if f.name.endswith(".tmp")] == []  # atomic: no leftovers

    # the study persists in its storage and is topped up, not redone, on the same inputs
    again = tuning.tune_fusion(p, paths, tuning.fusion_objective_data(p, paths))
    assert again["tsqnet"] == res["tsqnet"] and again["trials"]["tsqnet"] == 25
    assert again["study"]["tsqnet"] == res["study"]["tsqnet"]
    st = optuna.load_study(study_name=res["study"]["tsqnet"], storage=tuning.storage_from_url(p.fusion.storage))
    assert st.trials[0].params == {"lambda_v": 0.9}  # the first trial is the params' value

    # what evaluate uses: the tuned file with source: tuned, the params with source: params
    tuned = fusion.fusion_values(replace(p, fusion=replace(p.fusion, source="tuned", lambda_v=None)), paths)
    assert tuned["tsqnet"] == {"lambda_v": lam}
    assert tuned["nsnet"] == {"nsnet_strategy": "index_union", "nsnet_ratio": 0.6}  # not tuned: the params'
    assert fusion.fusion_values(p, paths)["tsqnet"] == {"lambda_v": 0.9}

    # retrained saliencies: the tuned values are refused, not silently reused
    f = paths.features.parent / "samplers" / "tsqnet" / "saliency_seed1.npz"
    d = dict(np.load(f))
    d["val/tqm"] = d["val/tqm"][:, ::-1].copy()
    np.savez(f, **d)
    with pytest.raises(ValueError, match="tuned on other tsqnet saliencies.*rerun tune_fusion"):
        fusion.fusion_values(replace(p, fusion=replace(p.fusion, source="tuned", lambda_v=None)), paths)


def test_missing_tuned_file_is_a_clear_error(tmp_path):
    paths = hand_built(tmp_path)
    p = hand_params(tmp_path, "fusion.source=tuned", "fusion.lambda_v=null")  # the fixed value is not read: unset
    with pytest.raises(FileNotFoundError, match=r"fusion.source is 'tuned' but .*tuned_fusion.json does not exist: "
                                                r"run the tune_fusion stage"):
        fusion.fusion_values(p, paths)


def test_fusion_params_and_settings_validate():
    with pytest.raises(ParamsError, match="fusion.nsnet_strategy: 'score_sum' is not one of"):
        load_params(ROOT / "params.yaml", ["fusion.nsnet_strategy=score_sum"])
    with pytest.raises(ParamsError, match="fusion.source: 'best' is not one of"):
        load_params(ROOT / "params.yaml", ["fusion.source=best"])
    with pytest.raises(ParamsError, match=r"fusion.budgets\[1\]: K=17 must satisfy"):
        load_params(ROOT / "params.yaml", ["fusion.budgets=[3,17]"])
    with pytest.raises(ParamsError, match="sweep.pruner: 'hyperband' is not one of"):
        load_params(ROOT / "params.yaml", ["sweep.pruner=hyperband"])
    with pytest.raises(ParamsError, match="nsnet.fusion: unknown key"):  # moved to fusion.nsnet_strategy
        load_params(ROOT / "params.yaml", ["nsnet.fusion=index_union"])
    from components.models.samplers import list_samplers, sampler_class, sweep_space

    swept = [n for n in list_samplers() if sampler_class(n).sweep_space]
    assert swept == ["avgn", "nsnet", "tsqnet"]
    with pytest.raises(ValueError, match="'uniform' has no loss weights to sweep"):
        sweep_space("uniform")
    for name in swept:  # each swept range lies inside the field's own range
        for section, key, lo, hi in sweep_space(name):
            meta = {"tsqnet": TSQNetParams, "nsnet": NSNetParams, "avgn": AVGNParams}[section].__dataclass_fields__[key].metadata
            assert meta["lo"] <= lo < hi <= meta["hi"]
    from components.models.samplers.nsnet import NSNet

    m = NSNet(3, 6, replace(NSNetParams(), dim=8, heads=2))
    assert (m.strategy, m.ratio) == ("index_union", 0.6)
    m.set_fusion({"nsnet_strategy": "score_add", "nsnet_ratio": 0.3})
    assert (m.strategy, m.ratio) == ("score_add", 0.3)
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        m.set_fusion({"nsnet_strategy": "bogus"})
    with pytest.raises(ValueError, match=r"nsnet_ratio=1.5 must lie in \[0, 1\]"):
        m.set_fusion({"nsnet_ratio": 1.5})
    with pytest.raises(ValueError, match="unknown setting"):
        m.set_fusion({"lambda_v": 0.5})
    assert sampler_class("uniform").check_fusion({}) == {}  # baselines: nothing to set
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['lambda_v'\]; valid: none"):
        sampler_class("uniform").check_fusion({"lambda_v": 0.5})
    with pytest.raises(ValueError, match="expected sqlite"):
        tuning.storage_from_url("mysql-ish")


# ------------------------------------------------------------------------ many workers, one study
WORKER = """
import sys, optuna
from components.tuning import storage_from_url
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, n, wid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
study = optuna.create_study(study_name=name, storage=storage_from_url(url), load_if_exists=True,
                            sampler=optuna.samplers.TPESampler(seed=wid, n_startup_trials=3))
def objective(trial):
    trial.set_user_attr("worker", wid)
    x = trial.suggest_float("x", -1.0, 1.0)
    return (x - 0.3) ** 2
study.optimize(objective, n_trials=n)
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_worker_processes_fill_one_study(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'db' / 'optuna.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'j' / 'optuna.log'}"
    want = {0: 14, 1: 11}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, "shared", str(n), str(w)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w, n in want.items()]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=tuning.storage_from_url(url))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(trials) == sum(want.values()) and sorted(numbers) == list(range(len(trials)))  # none lost, no dupes
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    per_worker = {w: sum(t.user_attrs["worker"] == w for t in trials) for w in want}
    assert per_worker == want


# ------------------------------------------------------------------------------------ Pareto front
def brute_front(pts: np.ndarray) -> list[int]:
    out = []
    for i, (a, c) in enumerate(pts):
        if np.isnan(a) or np.isnan(c):
            continue
        dominated = any((a2 >= a and c2 <= c and (a2 > a or c2 < c)) for j, (a2, c2) in enumerate(pts)
                        if j != i and not (np.isnan(a2) or np.isnan(c2)))
        if not dominated:
            out.append(i)
    return out


def test_pareto_front_equals_brute_force():
    pts = np.array([[0.5, 1.0], [0.6, 2.0], [0.55, 2.0], [0.6, 2.0], [0.4, 0.5], [0.7, 5.0], [0.65, 6.0],
                    [np.nan, 0.1], [0.4, 0.7], [0.7, 4.0]])
    assert tuning.pareto_front(pts).tolist() == brute_front(pts) == [0, 1, 3, 4, 9]
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 30))
        pts = rng.integers(0, 6, size=(n, 2)).astype(float)  # many ties and duplicates
        if rng.random() < 0.2:
            pts[rng.integers(0, n), 0] = np.nan
        assert tuning.pareto_front(pts).tolist() == brute_front(pts)
    assert tuning.pareto_front(np.zeros((0, 2))).tolist() == []


def test_pareto_study_front_matches_optuna_and_is_written(tmp_path):
    paths = hand_built(tmp_path)
    p = hand_params(tmp_path)
    data = tuning.fusion_objective_data(p, paths)
    cost = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    study, rows, front = tuning.pareto_study(data, [1, 2, 3, 4], lambda name, k: cost[k], n_trials=30, seed=0,
                                             defaults=fusion.params_fusion(p))
    assert len(rows) == 30 and {r["k"] for r in rows} == {1, 2, 3, 4}
    assert {rows[i]["number"] for i in front} == {t.number for t in study.best_trials}
    top = max(r["map"] for r in rows)
    assert any(rows[i]["map"] == top for i in front) and min(rows[i]["gmacs"] for i in front) == min(r["gmacs"] for r in rows)
    r = rows[front[-1]]
    assert r["map"] == data.score("tsqnet", {"lambda_v": r["lambda_v"]}, budgets=(r["k"],))
    tuning.write_pareto(rows, front, tmp_path / "reports" / "pareto.csv", tmp_path / "reports" / "figures" / "pareto.png")
    lines = (tmp_path / "reports" / "pareto.csv").read_text().splitlines()
    assert lines[0].split(",") == list(tuning.PARETO_COLUMNS) and len(lines) == 31
    assert sum(line.split(",")[5] == "1" for line in lines[1:]) == len(front)
    assert (tmp_path / "reports" / "figures" / "pareto.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------- on the tiny pipeline
@pytest.fixture(scope="module")
def trained(tiny_samplers, tmp_path_factory):
    """A private copy of the tiny pipeline's store, encoders, priors and trained uniform / TSQNet / NSNet / AVGN
    (this module writes data/tuned_*.json, and must not touch the shared session folders)."""
    root = tmp_path_factory.mktemp("tuning")
    paths = Paths().under(root)
    src = tiny_samplers.features.parent
    for d in ("prepared", "features", "encoders", "pseudo_labels",
              *(f"samplers/{n}" for n in ("uniform", "tsqnet", "nsnet", "nsnet_mlp", "avgn"))):
        shutil.copytree(src / d, paths.features.parent / d)
    shutil.copy2(src / "prototypes.npz", paths.features.parent / "prototypes.npz")
    return paths


def test_tune_fusion_stage_and_evaluate_use_it(trained, tiny_params, tmp_path):
    from components.stages import evaluate, sampler_report, tune_fusion

    over = {"fusion.trials": 8, "fusion.storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "evaluate.samplers": ["uniform", "tsqnet", "nsnet"], "tsi.enabled": False}
    p = load_params(ROOT / "params.yaml", [*TINY, *(f"{k}={json.dumps(v)}" for k, v in over.items())])
    metrics = tune_fusion.run(p, trained)
    tuned = json.loads(fusion.tuned_fusion_path(trained).read_text())
    assert set(tuned) >= {"tsqnet", "nsnet", "objective", "best_value", "default_value", "trials", "study"}
    for name in ("tsqnet", "nsnet"):
        assert tuned["best_value"][name] >= tuned["default_value"][name]
        assert metrics["best_value"][name] == tuned["best_value"][name]
    rep = json.loads((trained.reports / "tune_fusion.json").read_text())
    timings = json.loads((trained.reports / "timings" / "tune_fusion.json").read_text())  # wall times: own file
    assert rep["samplers"]["nsnet"]["trials"] == 8 and timings["objective_ms_uncached"] > 0
    assert "objective_ms_uncached" not in rep and "trials_per_second" not in rep["samplers"]["nsnet"]
    front = rep["pareto"]["front"]
    assert front and all(r["sampler"] in ("tsqnet", "nsnet") and r["gmacs"] > 0 for r in front)
    assert (trained.reports / "pareto.csv").exists() and (trained.reports / "figures" / "pareto.png").exists()

    pt = replace(p, fusion=replace(p.fusion, source="tuned", lambda_v=None))
    res = evaluate.run(pt, trained)
    metrics_json = json.loads((trained.results / "metrics.json").read_text())
    assert metrics_json["fusion"]["source"] == "tuned"
    assert metrics_json["fusion"]["tsqnet"] == {"lambda_v": tuned["tsqnet"]["lambda_v"]}
    assert res["videos"] > 0
    assert set(sampler_report.run(pt, trained)["samplers"]) == {"uniform", "tsqnet", "nsnet", "nsnet_mlp"}


def test_sweep_records_failures_prunes_and_tracks(trained, tiny_params, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from components.training.sampler_training import load_sampler

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("SALIENT_PARENT_RUN_ID", raising=False)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    p = load_params(ROOT / "params.yaml", [*TINY, "sweep.epochs=2", "sweep.trials=3", f"sweep.storage={storage}",
                                           "sweep.study=t"])
    paths = replace(trained, work=tmp_path / "work")

    def inject(objective):  # trial 1 fails as a broken training run would
        def wrapped(trial):
            if trial.number == 1:
                raise RuntimeError("injected failure")
            return objective(trial)
        return wrapped

    best = tuning.run_sweep(p, paths, objective_wrapper=inject)
    study = optuna.load_study(study_name="t-tsqnet", storage=tuning.storage_from_url(storage))
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    for t in study.trials:
        if t.state.name == "COMPLETE":
            assert set(t.intermediate_values) == {0, 1}  # val mAP reported every epoch (pruner calls)
            assert set(t.params) == {"tsqnet.alpha", "tsqnet.beta"}
            assert all(0 <= v <= 1.5 for v in t.params.values())
            assert load_sampler(Path(t.user_attrs["checkpoint"])).params.alpha == t.params["tsqnet.alpha"]
    saved = json.loads((trained.features.parent / "tuned_losses.json").read_text())
    assert saved == json.loads(json.dumps(best))
    assert saved["params"] == study.best_params and saved["trials"] == {"COMPLETE": 2, "FAIL": 1}
    assert saved["apply"].startswith("dvc exp run -S tsqnet.alpha=")
    assert (paths.work / "sweep" / "t-tsqnet" / "0" / "sampler.pt").exists()

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.info.run_name == "sweep t-tsqnet"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"t-tsqnet trial 0", "t-tsqnet trial 2"}  # the injected failure never opened one
    child = children["t-tsqnet trial 0"]
    assert child.info.status == "FINISHED" and "tsqnet.alpha" in child.data.params
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_map")] == [0, 1]


def test_sweep_nsnet_with_halving_pruner_through_the_flow_body(trained, tmp_path):
    from flows.sweep import split_trials, sweep_flow

    assert split_trials(5, 2) == [3, 2] and split_trials(1, 4) == [1] and sum(split_trials(12, 5)) == 12
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    over = [*TINY, "sweep.sampler=nsnet", "sweep.pruner=halving", "sweep.epochs=2", f"sweep.storage={storage}"]
    project = tmp_path / "proj"  # a project whose pipeline seed 0 is the fixture's data
    (project / "data").mkdir(parents=True)
    (project / "data/s0").symlink_to(trained.features.parent.resolve(), target_is_directory=True)
    (project / "data/prepared").symlink_to(Path(trained.prepared).resolve(), target_is_directory=True)
    res = sweep_flow.fn(n_trials=2, workers=1, overrides=over, params_file=str(ROOT / "params.yaml"),
                        project=str(project))  # no Prefect server: tasks run as plain calls
    assert set(res["params"]) == {"nsnet.gamma"} and 0 <= res["params"]["nsnet.gamma"] <= 1
    assert res["trials"].get("COMPLETE", 0) + res["trials"].get("PRUNED", 0) == 2
    study = optuna.load_study(study_name="sweep-nsnet", storage=tuning.storage_from_url(storage))
    assert len(study.trials) == 2 and all(t.intermediate_values for t in study.trials)
    assert json.loads((trained.features.parent / "tuned_losses.json").read_text())["sampler"] == "nsnet"


def test_best_sampler_is_registered_and_predict_loads_it(trained, tiny_params, tmp_path, monkeypatch):
    """tune_fusion under an MLflow run registers the best-on-val sampler among **every** learned sampler
    (AVGN too, scored by the same val objective without fusion settings) as models:/salient-sampler@best:
    a real MLflow model (MLmodel, pyfunc flavour) whose model page states the rule and every candidate's
    value; mlflow.pyfunc loads it and selects the frames the checkpoint selects with the tuned fusion;
    predict finds its checkpoint and names the model's real sampler (issues 13, 26)."""
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from components.tracking import mlflow_tracking as tracking
    from components.data.manifest import read_manifest
    from components.evaluation.sampler_eval import load_runs
    from components.app.predict import Prediction, Predictor
    from components.store.sampler_data import load_split
    from components.training.sampler_training import load_sampler, resolve_checkpoint
    from components.stages import tune_fusion
    from components.store.feature_store import FeatureStore
    from components.training.val_objective import load_val

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    p = load_params(ROOT / "params.yaml", [*TINY, "fusion.trials=3", f"fusion.storage=sqlite:///{tmp_path / 'o.db'}",
                                           "evaluate.samplers=[uniform,tsqnet,nsnet,avgn]"])
    with tracking.stage_run("tune_fusion", {}, tracking=p):
        tune_fusion.run(p, trained)
    tuned = json.loads(fusion.tuned_fusion_path(trained).read_text())
    # AVGN's val objective by hand: mean softmax of the cached logits over its top-K frames, mAP, mean over K
    val = load_val(p, trained)
    (avgn,) = load_runs(trained.data / "samplers", "avgn", "val", val.ids, load_sampler, [0])
    def hand_map(idx):  # idx [N,K] -> sklearn AP per class with a positive, averaged
        from sklearn.metrics import average_precision_score
        scores = np.stack([val.probs[i, row].mean(0) for i, row in enumerate(idx)])  # [N,C]
        return np.mean([average_precision_score(val.labels[:, c], scores[:, c])
                        for c in range(val.labels.shape[1]) if val.labels[:, c].any()])

    candidates = {**tuned["best_value"], "avgn": float(np.mean([hand_map(avgn.select(k)) for k in val.budgets]))}
    best = max(candidates, key=candidates.get)
    client = MlflowClient(uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("salient-sampler", "best")
    assert mv.tags["sampler"] == best and mv.tags["seed"] == "0"  # TINY trains one seed
    assert float(mv.tags["val_objective"]) == pytest.approx(candidates[best], abs=1e-6)
    assert mv.tags["candidates"] == ", ".join(f"{n} {candidates[n]:.4f}" for n in ("tsqnet", "nsnet", "avgn"))
    model_page = client.get_registered_model("salient-sampler").description
    for text in (mv.description, model_page):  # the rule and every candidate show on the model page
        assert "highest val objective" in text and "avgn" in text and mv.tags["candidates"] in text
    assert mv.tags["data_fingerprint"] and best in mv.description
    assert client.get_experiment(client.get_run(mv.run_id).info.experiment_id).tags[
        tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    tuned.setdefault(best, {})  # AVGN has no fusion settings

    ck, meta = resolve_checkpoint("models:/salient-sampler@best", seed=7, tracking_params=p)  # seed: the model's
    assert meta["sampler"] == best and meta["seed"] == 0 and torch.load(ck, weights_only=False)["name"] == best
    model = mlflow.pyfunc.load_model("models:/salient-sampler@best")
    test, _ = load_split(FeatureStore(trained.features), "test")
    out = model.predict({k: v.numpy() for k, v in test.items()}, params={"k": 2})
    ref = load_sampler(ck)
    with torch.no_grad():
        ref_out = ref(test)
    assert np.array_equal(out["frames"], np.asarray(fusion.select(ref, ref_out, 2, tuned[best])))
    np.testing.assert_allclose(out["saliency"], ref_out.saliency.numpy(), rtol=1e-6)

    video = [r.path for r in read_manifest(trained.prepared)[0] if r.split == "test"][0]
    pred = Predictor.load(p, ck, trained.encoders, 2, fusion={best: tuned[best]})  # the model's fusion
    assert pred.sampler_name == best
    (res,) = pred.predict([video])
    assert isinstance(res, Prediction)

    # the CLI: the flag's default sampler is tsqnet; the result names the model's own sampler and seed
    import yaml

    from components.app.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(p)))
    out = tmp_path / "pred.json"
    assert main(["predict", video, "--checkpoint-dir", str(trained.features.parent), "--checkpoint",
                 "models:/salient-sampler@best", "--k", "2", "--params", str(params), "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["sampler"] == best and doc["model"]["seed"] == 0 and doc["model"]["uri"] == "models:/salient-sampler@best"
    assert doc["results"][0]["frames"] == res.frames


def test_a_rerun_or_extension_of_a_sweep_proposes_new_trials(tmp_path, monkeypatch):
    """Issue 12 item 3: the same command run again on the same study must not repeat its trials (TPE's
    startup trials are random draws from its seed), while the seed stays a function of the study state."""
    from components.tuning.loss_sweep import sampler_seed, suggest_losses

    monkeypatch.setenv("SALIENT_TRACKING", "0")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    p = load_params(ROOT / "params.yaml", [*TINY, "sweep.trials=3", f"sweep.storage={storage}", "sweep.study=re"])
    paths = Paths().under(tmp_path)

    def cheap(objective):  # the real search space, no training: only the proposals matter here
        return lambda trial: sum(suggest_losses(trial, "tsqnet").values())

    for _ in range(2):
        tuning.run_sweep(p, paths, worker_id=1, parent=False, write_best=False, objective_wrapper=cheap)
    study = optuna.load_study(study_name="re-tsqnet", storage=tuning.storage_from_url(storage))
    proposals = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(proposals) == 6 and len(set(proposals)) == 6
    assert sampler_seed(0, 1, 3) == sampler_seed(0, 1, 3) != sampler_seed(0, 1, 0) != sampler_seed(0, 2, 0)


HANGING_WORKER = """
import sys, time
from components import tuning
from components.core.params import load_params
from components.core.paths import Paths
from components.tuning.loss_sweep import suggest_losses
from tests.conftest import ROOT, TINY
storage, root = sys.argv[1], sys.argv[2]
p = load_params(ROOT / "params.yaml", [*TINY, "sweep.trials=1", f"sweep.storage={storage}", "sweep.study=kill",
                                       "sweep.heartbeat=1"])
def hang(objective):
    def trial_fn(trial):
        suggest_losses(trial, "tsqnet")
        print("RUNNING", trial.number, flush=True)
        time.sleep(600)  # killed here
    return trial_fn
tuning.run_sweep(p, Paths().under(root), worker_id=1, parent=False, write_best=False, objective_wrapper=hang)
"""


def test_a_sigkilled_sweep_worker_leaves_no_trial_running(tmp_path, monkeypatch):
    """Issue 12 item 2: kill -9 a worker mid-trial; the next worker fails the silent trial (heartbeat)
    and retries its parameters, so nothing stays RUNNING and nothing is lost."""
    import os
    import signal
    import time

    from components.tuning.loss_sweep import suggest_losses

    monkeypatch.setenv("SALIENT_TRACKING", "0")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = subprocess.Popen([sys.executable, "-c", HANGING_WORKER, storage, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SALIENT_TRACKING": "0"})
    try:
        assert proc.stdout.readline().split() == ["RUNNING", "0"], proc.stderr.read()[-2000:]
        time.sleep(1.5)  # at least one heartbeat recorded
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    study = optuna.load_study(study_name="kill-tsqnet", storage=tuning.storage_from_url(storage))
    (killed,) = study.get_trials()
    assert killed.state.name == "RUNNING"  # what SIGKILL leaves: nobody said otherwise
    time.sleep(2.5)  # past the grace period (2 x heartbeat)
    p = load_params(ROOT / "params.yaml", [*TINY, "sweep.trials=2", f"sweep.storage={storage}", "sweep.study=kill",
                                           "sweep.heartbeat=1"])
    tuning.run_sweep(p, Paths().under(tmp_path), worker_id=2, parent=False, write_best=False,
                     objective_wrapper=lambda obj: lambda trial: sum(suggest_losses(trial, "tsqnet").values()))
    trials = {t.number: t for t in study.get_trials()}
    assert trials[0].state.name == "FAIL" and not [t for t in trials.values() if t.state.name == "RUNNING"]
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE" and retried[0].params == trials[0].params


FILLER = """
import sys, time
import optuna
from components.tuning import storage_from_url, study_lock
from components.tuning.storage import _complete, _study
url, use_lock = sys.argv[1], sys.argv[2] == "1"
from pathlib import Path
print("ready", flush=True)
while not Path(url.split(":///")[1] + ".go").exists():  # both start together
    time.sleep(0.01)
def fill():
    study = _study("fill", storage_from_url(url), optuna.samplers.RandomSampler(seed=int(sys.argv[3])))
    todo = max(0, 20 - len(_complete(study)))  # top up to 20, as tune_fusion and the Pareto study do
    print("todo", todo, flush=True)
    if not use_lock:  # both read the study before either fills it: the race, made certain on a busy machine
        db = url.split(":///")[1]
        Path(db + ".read" + sys.argv[3]).touch()
        while not all(Path(db + ".read" + i).exists() for i in ("0", "1")):
            time.sleep(0.01)
    study.optimize(lambda t: (time.sleep(0.05), t.suggest_float("x", 0, 1))[1], n_trials=todo)
if use_lock:
    with study_lock(url, "fill"):
        fill()
else:
    fill()
"""


@pytest.mark.parametrize("locked", [True, False])
def test_two_concurrent_fillers_of_one_study(tmp_path, locked):
    """Issue 12 item 7: two tune_fusion runs at once on one study database gave 92 and 119 trials
    instead of 60. Under study_lock the second waits and finds the study full; without it both fill."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="fill", storage=tuning.storage_from_url(url))  # no schema race in the test
    procs = [subprocess.Popen([sys.executable, "-c", FILLER, url, "1" if locked else "0", str(i)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
    (tmp_path / "optuna.db.go").touch()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    n = len(optuna.load_study(study_name="fill", storage=tuning.storage_from_url(url)).trials)
    assert n == 20 if locked else n > 20  # the unlocked case shows what the lock prevents


def test_sweep_of_avgn_loss_weights_through_the_flow_body(trained, tmp_path):
    """Issue 14: AVGN's loss weights (L_V, L_A, L_mask, L_s, L_ord) are sweepable through flows/sweep.py: each
    trial trains AVGN on its maps, audio and frame cache for sweep.epochs (avgn.epochs overridden, not
    train_sampler.epochs) and reports val mAP per epoch."""
    from flows.sweep import sweep_flow

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    over = [*TINY, "sweep.sampler=avgn", "sweep.epochs=1", f"sweep.storage={storage}"]
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    (project / "data/s0").symlink_to(trained.features.parent.resolve(), target_is_directory=True)
    (project / "data/prepared").symlink_to(Path(trained.prepared).resolve(), target_is_directory=True)
    res = sweep_flow.fn(n_trials=2, workers=1, overrides=over, params_file=str(ROOT / "params.yaml"),
                        project=str(project))
    assert set(res["params"]) == {f"avgn.{k}" for k in ("w_v", "w_a", "w_mask", "w_s", "w_ord")}
    assert all(0 <= v <= 2 for v in res["params"].values())
    study = optuna.load_study(study_name="sweep-avgn", storage=tuning.storage_from_url(storage))
    assert len(study.trials) == 2 and all(len(t.intermediate_values) == 1 for t in study.trials)  # 1 epoch each
    assert json.loads((trained.features.parent / "tuned_losses.json").read_text())["sampler"] == "avgn"


def test_avgn_registered_as_best_carries_its_own_inputs(trained, tmp_path, monkeypatch):
    """When AVGN wins @best (as on the benchmark), its model's input example and signature hold what AVGN
    reads (light_maps, audio_emb, has_audio), not the arrays TSQNet / NSNet read: the registered model
    answers on the store's arrays exactly as the checkpoint does."""
    import mlflow.pyfunc

    from components.tracking import mlflow_tracking as tracking
    from components.store.sampler_data import load_split
    from components.training.sampler_training import load_sampler
    from components.stages.tune_fusion import register_best
    from components.store.feature_store import FeatureStore

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    p = load_params(ROOT / "params.yaml", [*TINY, "evaluate.samplers=[uniform,tsqnet,nsnet,avgn]"])
    with tracking.stage_run("tune_fusion", {}, tracking=p):
        assert register_best(p, trained, {"tsqnet": {"value": 0.1, "fusion": {}},
                                          "avgn": {"value": 0.9, "fusion": None}}, "val_map") is not None
    model = mlflow.pyfunc.load_model("models:/salient-sampler@best")
    ref = load_sampler(trained.data / "samplers" / "avgn" / "seed0.pt")
    assert set(model.metadata.get_input_schema().input_names()) == set(ref.inputs) and "light_maps" in ref.inputs
    test, _ = load_split(FeatureStore(trained.features), "test", keys=tuple(ref.inputs))
    out = model.predict({k: v.numpy().astype(np.float32) for k, v in test.items()}, params={"k": 2})  # float32 in
    with torch.no_grad():
        ref_out = ref(test)
    np.testing.assert_allclose(out["saliency"], ref_out.saliency.numpy(), rtol=1e-5)
    assert np.array_equal(out["frames"], np.asarray(ref.select(ref_out, 2)))
