"""One MLflow run per evaluated / trained variant and seed (components/tracking/variant_runs.py; issue 13),
against a real SQLite store, read back through MlflowClient: the same param and metric keys for every
variant, K as the step, the effective (overridden) params of an ablation, the experiment's kind."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.tracking import mlflow_tracking as tracking
from components.training.engine import FitConfig, fit
from components.core.params import load_params
from components.tracking.variant_runs import log_evaluation, training_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(monkeypatch, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("SALIENT_PARENT_RUN_ID", raising=False)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _rows() -> list[dict]:
    """A hand-made evaluation grid: 5 variants (two baselines, learned, ablation, branch), K = 1, 3, 5, as
    evaluate writes it: every variant under each sampler seed; uniform's rows identical in both seeds
    (it draws nothing), random's not."""
    rows = []
    for variant, seeds in (("uniform", [0, 1]), ("random", [0, 1]), ("tsqnet", [0, 1]), ("tsqnet_vqm_only", [0]),
                           ("tsqnet[vqm]", [0, 1])):
        for seed in seeds:
            for k in (1, 3, 5):
                drawn = variant not in ("uniform",)
                rows.append({"sampler": variant, "recognizer": "frame", "k": k, "seed": seed, "gmacs": 0.1 * k,
                             "map": 0.1 * k + 0.01 * seed * drawn + (0.05 if variant != "uniform" else 0.0),
                             "top1": 0.05 * k, "salient_recall": 0.5, "distractor_share": 0.1})
    return rows


def test_one_run_per_variant_and_seed_with_the_same_keys(store):
    p = load_params(ROOT / "params.yaml", ["evaluate.sampler_budgets=[1,3,5]", "evaluate.headroom_k=3"])
    fusion = {"tsqnet": {"lambda_v": 0.4}, "tsqnet_vqm_only": {"lambda_v": 0.6}}
    with tracking.stage_run("evaluate@0", {}, tracking=p) as parent:
        ids = log_evaluation(p, _rows(), trainable={"uniform": False, "random": False, "tsqnet": True,
                                                    "tsqnet_vqm_only": True}, fusion=fusion, pipeline_seed=0)
    assert len(ids) == 8  # uniform x1 (identical in both seeds), random x2, tsqnet x2, ablation x1, branch x2
    runs = [store.get_run(i) for i in ids]
    assert {r.data.tags[tracking.PARENT_TAG] for r in runs} == {parent.run_id}
    by = {(r.data.params["variant"], r.data.params["seed"]): r for r in runs}
    uniform = by[("uniform", "deterministic")]
    assert uniform.data.tags["salient.seeds"] == "0,1" and uniform.info.run_name == "uniform · frame · pipeline seed 0"
    assert {s for v, s in by if v == "random"} == {"0", "1"}  # it draws frames: one run per seed

    # the same metric keys everywhere: summaries at sampler_budgets from K=3, curves vs_k/ at step = K
    want = {"vs_k/map", "vs_k/top1", "vs_k/salient_recall", "vs_k/distractor_share", "vs_k/gmacs", "map_k03",
            "map_k05", "gmacs_k03", "gmacs_k05", "top1_k03", "top1_k05"}
    assert all(set(r.data.metrics) == want for r in runs)
    assert sorted(want)[0] == "gmacs_k03"  # the first key MLflow's run page lists: a K=3 value, no bare last K
    hist = store.get_metric_history(by[("tsqnet", "1")].info.run_id, "vs_k/map")
    assert [(m.step, round(m.value, 6)) for m in sorted(hist, key=lambda m: m.step)] == [(1, 0.16), (3, 0.36), (5, 0.56)]
    assert by[("tsqnet", "1")].data.metrics["map_k03"] == pytest.approx(0.36)
    assert uniform.data.metrics["gmacs_k03"] == pytest.approx(0.3)

    # the same identifying params on every run, and the effective section of the ablation
    common = {"variant", "sampler", "kind", "seed", "pipeline_seed", "recognizer"}
    assert all(common <= set(r.data.params) for r in runs)
    kinds = {v: by[(v, "0" if v != "uniform" else "deterministic")].data.params["kind"]
             for v in ("uniform", "tsqnet", "tsqnet_vqm_only", "tsqnet[vqm]")}
    assert kinds == {"uniform": "baseline", "tsqnet": "learned", "tsqnet_vqm_only": "ablation", "tsqnet[vqm]": "branch"}
    ab = by[("tsqnet_vqm_only", "0")].data.params
    assert ab["sampler"] == "tsqnet" and ab["tsqnet.branches"] == "vqm" and ab["fusion.lambda_v"] == "0.6"
    assert ab["train_sampler.seeds"] == "[0]"
    assert by[("tsqnet", "0")].data.params["tsqnet.branches"] == p.tsqnet.branches == "both"
    assert by[("tsqnet[vqm]", "0")].data.params["branch"] == "vqm"
    assert "tsqnet.branches" not in uniform.data.params
    # lambda_v 0.4 at K=1 takes round(0.4) = 0 frames from VQM: there tsqnet is its TQM branch, and the run says so
    assert "selects exactly its TQM branch's top-K at K=1," in by[("tsqnet", "0")].data.tags["salient.fusion_note"]
    assert "salient.fusion_note" not in by[("tsqnet[vqm]", "0")].data.tags  # a baseline has no sampler section

    # what a user types in the search box finds exactly these
    exp = runs[0].info.experiment_id
    found = store.search_runs([exp], "tags.`salient.kind` = 'variant' and params.recognizer = 'frame'")
    assert {r.info.run_id for r in found} == set(ids)
    assert store.get_experiment(exp).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_experiment_made_before_is_marked_as_training(store):
    exp = store.create_experiment("older")
    p = load_params(ROOT / "params.yaml", ["tracking.experiment=older"])
    with tracking.stage_run("x", {}, tracking=p):
        pass
    assert store.get_experiment(exp).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND


def test_training_run_holds_the_epoch_rows_unprefixed(store, tmp_path):
    p = load_params(ROOT / "params.yaml", [])
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(8, 2), torch.randn(8, 1)) for _ in range(2)]

    def step(m, batch, train):  # noqa: ARG001
        x, y = batch
        loss = ((m(x) - y) ** 2).mean()
        return loss, {"loss": loss.item()}

    with tracking.stage_run("train_sampler@0-tsqnet", {}, tracking=p):
        with training_run(p, "tsqnet", 3, trainable=True, pipeline_seed=0) as run:
            fit(model, step, lambda ep: data, lambda: data,
                FitConfig(epochs=3, lr=0.1, desc="train tsqnet seed 3", log_prefix=""), tmp_path / "ck", "fp",
                log_metrics=tracking.log_metrics)
    r = store.get_run(run.run_id)
    assert {"train_loss", "val_loss", "lr", "steps"} <= set(r.data.metrics)
    assert not any("/" in k for k in r.data.metrics)
    assert [m.step for m in store.get_metric_history(run.run_id, "val_loss")] == [0, 1, 2]
    assert r.data.params["variant"] == "tsqnet" and r.data.params["seed"] == "3" and "recognizer" not in r.data.params


def test_nothing_is_logged_outside_a_run_or_with_tracking_off(store, monkeypatch):
    p = load_params(ROOT / "params.yaml", [])
    assert log_evaluation(p, _rows(), trainable={}, fusion={}, pipeline_seed=None) == []
    monkeypatch.setenv("SALIENT_TRACKING", "0")
    with tracking.stage_run("evaluate", {}, tracking=p):
        assert log_evaluation(p, _rows(), trainable={}, fusion={}, pipeline_seed=None) == []


def test_evaluation_saves_the_variant_view_and_the_experiment_note(store, monkeypatch):
    """log_evaluation leaves MLflow 3.17's saved view of the variant runs on the experiment (the tag the UI's
    *Views* menu lists and ``viewStateShareKey`` opens; tests/test_browser.py opens it in Chromium): its filter
    finds exactly the evaluated variant runs with a K=3 value, groups of this run's variants closed, a later
    evaluation adds its groups, and a description someone else wrote is never replaced."""
    from components.tracking.variant_runs import MAX_CLOSED, VIEW_ID, group_id, save_variant_view, view_name, view_url

    p = load_params(ROOT / "params.yaml", ["evaluate.sampler_budgets=[1,3,5]", "evaluate.headroom_k=3"])
    with tracking.stage_run("evaluate@0", {}, tracking=p) as parent:
        ids = log_evaluation(p, _rows(), trainable={"uniform": False, "random": False, "tsqnet": True,
                                                    "tsqnet_vqm_only": True}, fusion={}, pipeline_seed=0)
    with training_run(p, "tsqnet", 0, trainable=True, pipeline_seed=0):  # a variant run without map_k03
        pass
    exp = store.get_experiment(parent.experiment_id)
    view = tracking.saved_view(exp.experiment_id, VIEW_ID)
    assert view["name"] == view_name(p) == "Variant runs: mAP@3, GMACs@3 (salient)"
    assert isinstance(view["createdAt"], int) and view["updatedAt"] >= view["createdAt"]
    state = view["state"]
    found = store.search_runs([exp.experiment_id], state["searchFilter"])
    assert sorted(r.info.run_id for r in found) == sorted(ids)  # no stage run, no training run
    assert state["orderByKey"] == "metrics.`map_k03`" and state["orderByAsc"] is False
    assert state["selectedColumns"][:2] == ["metrics.`map_k03`", "metrics.`gmacs_k03`"]
    assert state["groupsExpanded"] == {group_id(v, "workspace"): False for v in
                                       ("random", "tsqnet", "tsqnet[vqm]", "tsqnet_vqm_only", "uniform")}
    assert group_id("tsqnet", "workspace") == "param.variant.tsqnet,tag.salient.experiment.workspace"
    note = exp.tags[tracking.NOTE_TAG]
    assert note.startswith("**salient**:") and f"viewStateShareKey={VIEW_ID}" in note and view_name(p) in note
    assert view_url(p, 5000, exp.experiment_id) == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                                                    f"?workflowType=machine_learning&viewStateShareKey={VIEW_ID}")

    # a second evaluation (another DVC experiment) adds its groups; a description of the user's stays
    store.set_experiment_tag(exp.experiment_id, tracking.NOTE_TAG, "my notes")
    monkeypatch.setenv(tracking.ENV_EXPERIMENT, "exp-1")  # as a parent run in a DVC experiment exports it
    with tracking.stage_run("evaluate@0", {}, tracking=p):
        log_evaluation(p, [r for r in _rows() if r["sampler"] == "tsqnet"], trainable={"tsqnet": True},
                       fusion={}, pipeline_seed=0)
    again = tracking.saved_view(exp.experiment_id, VIEW_ID)
    assert again["createdAt"] == view["createdAt"]
    assert set(again["state"]["groupsExpanded"]) == {*state["groupsExpanded"], group_id("tsqnet", "exp-1")}
    assert store.get_experiment(exp.experiment_id).tags[tracking.NOTE_TAG] == "my notes"

    # an experiment tag holds at most 20,000 characters: the groups of the latest evaluation are kept first
    many = [group_id(f"v{i}", "exp-2") for i in range(MAX_CLOSED + 50)]
    save_variant_view(p, exp.experiment_id, many)
    assert list(tracking.saved_view(exp.experiment_id, VIEW_ID)["state"]["groupsExpanded"]) == many[:MAX_CLOSED]
