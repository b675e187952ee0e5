"""No silently ignored setting: an override of a value that its switch makes unused (the README's
`fusion.lambda_v=0.4` under the default `fusion.source: tuned`) is refused at params load, naming the
switch, on every path a researcher changes params through (the Prefect deployment's overrides, `dvc exp
run -S`, `--set`); with the switch set to use it, the value changes the result."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.core import selection
from components.evaluation.fusion import fusion_values
from components.core.params import FIXED_FUSION_DEFAULTS, UNUSED_WHEN, ParamsError, load_params
from components.core.paths import Paths
from tests.conftest import ROOT, copy_tiny_project

README_OVERRIDE = {"fusion.lambda_v": 0.4}  # README "Tracking, tuning and orchestration": the deployment example
REFUSAL = "fusion.lambda_v=0.4 is not used while fusion.source=tuned; set fusion.source=params to use it"


def test_shipped_params_leave_the_fixed_fusion_values_unset():
    p = load_params(ROOT / "params.yaml")
    assert p.fusion.source == "tuned"
    assert (p.fusion.lambda_v, p.fusion.nsnet_strategy, p.fusion.nsnet_ratio) == (None, None, None)
    assert p.fusion.fixed() == {"lambda_v": 0.6, "nsnet_strategy": "index_union", "nsnet_ratio": 0.6}


@pytest.mark.parametrize("overrides", [README_OVERRIDE, ["fusion.lambda_v=0.4"]])
def test_the_readme_override_is_refused_naming_the_switch(overrides):
    with pytest.raises(ParamsError) as e:
        load_params(ROOT / "params.yaml", overrides)
    assert REFUSAL in str(e.value)


def test_the_deployment_checks_overrides_before_anything_runs(tmp_path):
    """The pipeline flow's first step with overrides (``check_overrides``), on a project whose params.yaml
    is the shipped one."""
    from flows.pipeline import check_overrides

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    with pytest.raises(ParamsError, match=REFUSAL):
        check_overrides(tmp_path, README_OVERRIDE)
    check_overrides(tmp_path, {"fusion.source": "params", **README_OVERRIDE})  # accepted


def test_with_source_params_the_override_changes_the_selection(tmp_path):
    """fusion.source=params + lambda_v=0.4: evaluate's fusion values carry 0.4, and TSQNet's union at
    K=5 takes round(0.4*5)=2 VQM frames instead of the default's round(0.6*5)=3 (hand-made scores)."""
    p = load_params(ROOT / "params.yaml", {"fusion.source": "params", **README_OVERRIDE})
    got = fusion_values(p, Paths(features=tmp_path / "features"))
    assert got["tsqnet"] == {"lambda_v": 0.4}
    assert got["nsnet"] == {"nsnet_strategy": "index_union", "nsnet_ratio": 0.6}  # unset: the paper values
    s_v = np.array([[9, 8, 7, 6, 5, 0, 0, 0, 0, 0]], float)  # VQM prefers frames 0..4
    s_t = np.array([[0, 0, 0, 0, 0, 9, 8, 7, 6, 5]], float)  # TQM prefers frames 5..9
    new = set(selection.tsqnet_union_select(s_v, s_t, 5, got["tsqnet"]["lambda_v"])[0].tolist())
    old = set(selection.tsqnet_union_select(s_v, s_t, 5, FIXED_FUSION_DEFAULTS["lambda_v"])[0].tolist())
    assert new == {0, 1, 5, 6, 7} and old == {0, 1, 2, 5, 6}


#: a value other than the default for each key a switch can make unused
OTHER = {"fusion.lambda_v": "0.3", "fusion.nsnet_strategy": "score_add", "fusion.nsnet_ratio": "0.3",
         "train_sampler.val_budgets": "[2]", "pseudo_labels.distance": "cosine"}


@pytest.mark.parametrize("rule", UNUSED_WHEN, ids=lambda r: f"{r[0]}={r[1][0]}->{r[2]}")
def test_every_switch_refuses_the_settings_it_makes_unused(rule):
    switch, off, key, _ = rule
    value = OTHER[key]
    # under fusion.source=params the strategy must read the ratio for the nsnet_ratio rule to be the only one hit
    pre = ["fusion.source=params"] if switch != "fusion.source" else []
    with pytest.raises(ParamsError) as e:
        load_params(ROOT / "params.yaml", [*pre, f"{switch}={off[0]}", f"{key}={value}"])
    assert f"{key}={value} is not used while {switch}={off[0]}" in str(e.value)
    load_params(ROOT / "params.yaml", [*pre, f"{switch}={off[0]}"])  # the switch alone is fine


def test_a_used_setting_is_accepted():
    p = load_params(ROOT / "params.yaml", ["fusion.source=params", "fusion.nsnet_strategy=score_add",
                                           "fusion.nsnet_ratio=0.3", "train_sampler.val_budgets=[2]",
                                           "pseudo_labels.distance=cosine"])
    assert p.fusion.fixed() == {"lambda_v": 0.6, "nsnet_strategy": "score_add", "nsnet_ratio": 0.3}


@pytest.mark.slow
def test_dvc_exp_run_refuses_the_readme_override_before_any_stage_works(tmp_path):
    """`dvc exp run -S fusion.lambda_v=0.4` on the tiny project under fusion.source=tuned: the first stage
    fails at params load with the switch named, and nothing is written."""
    project = copy_tiny_project(tmp_path / "proj", ["fusion.source=tuned"])
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(bindir / "dvc"), "exp", "run", "--temp", "-S", "fusion.lambda_v=0.4"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert REFUSAL in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    assert not (project / "data" / "prepared").exists()
