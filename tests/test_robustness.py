"""`salient robustness`: one whole run per value of a param, collected into tables and a figure. The
collector is checked on recorded summaries written by hand; a failed value is named, never dropped."""
import json
from pathlib import Path

import pytest

from components.app.profile_run import profile_params
from components.core.params import ParamsError
from components.app.robustness import DEFAULT_KEY, collect, tables


def _summary(folder: Path, maps: dict[str, float], share: dict[str, float]) -> None:
    head = {}
    for n, m in maps.items():
        cell = {"map": m, "map_std_runs": 0.01, "map_ci": [m - 0.05, m + 0.05], "distractor_share": share[n]}
        if n != "uniform":
            d = m - maps["uniform"]
            cell.update(map_minus_uniform=d, map_minus_uniform_ci=[d - 0.03, d + 0.03])
        head[n] = {"frame": {"3": cell}}
    head["tsqnet[vqm]"] = {"frame": {"3": {"map": 0.1}}}  # branch rows are not tabulated
    (folder / "reports").mkdir(parents=True)
    (folder / "reports/summary.json").write_text(json.dumps({"videos": 84, "pipeline_seeds": [0], "failed_seeds": {},
                                                             "headline": head}))


def test_collect_tabulates_each_value_and_names_a_missing_one(tmp_path):
    _summary(tmp_path / "0", {"uniform": 0.5, "tsqnet": 0.7}, {"uniform": 0.0, "tsqnet": 0.0})
    _summary(tmp_path / "0.3", {"uniform": 0.4, "tsqnet": 0.42}, {"uniform": 0.3, "tsqnet": 0.25})
    out = collect(tmp_path, DEFAULT_KEY, ["0", "0.3", "0.6"], k=3)
    assert set(out["by_value"]) == {"0", "0.3"} and "0.6" in out["failed_values"]
    assert out["by_value"]["0.3"]["samplers"]["tsqnet"]["distractor_share"] == 0.25
    assert "tsqnet[vqm]" not in out["by_value"]["0"]["samplers"]
    text = (tmp_path / "README.md").read_text()
    assert "| tsqnet | 70.0 ± 1.0 | 42.0 ± 1.0 |" in text
    assert "+20.0 [+17.0, +23.0]" in text and "+2.0 [-1.0, +5.0] not resolved" in text  # 2 ± 3 contains 0
    assert "| tsqnet | 0.000 | 0.250 |" in text
    assert "Failed values" in text and "0.6" in text
    assert json.loads((tmp_path / "robustness.json").read_text())["values"] == ["0", "0.3", "0.6"]
    assert (tmp_path / "figures/robustness.png").stat().st_size > 10_000
    assert tables(out)[0].startswith("# Robustness along `data.synthetic.distractor_fraction`")


def test_the_shipped_profile_is_valid_at_every_default_value():
    root = Path(__file__).resolve().parents[1]
    for v in (0.0, 0.1, 0.2, 0.3):
        t = profile_params(root, root / "profiles/distractors.yaml", {DEFAULT_KEY: v})
        assert t["data"]["synthetic"]["distractor_fraction"] == v and t["ablations"] == {}
    with pytest.raises(ParamsError, match="distractor_fraction"):  # past what the generator can hold
        profile_params(root, root / "profiles/distractors.yaml", {DEFAULT_KEY: 0.7})
