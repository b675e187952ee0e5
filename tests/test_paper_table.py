"""The paper table (reports/table.csv, table.tex) and the summary README's mAP table: no ± where a value
has no spread ("deterministic"), GMACs at K=3/5/8, CIs vs uniform; from hand-made pooled cells."""
import csv
import io

from components.evaluation.paper_table import spread, table_rows, to_csv, to_latex
from components.core.params import load_params
from components.stages.summary import tables
from tests.conftest import ROOT


def _cell(m, std_runs, runs=3, g=1.0, diff=None):
    c = {"map": m, "map_std_pipeline": 0.0, "map_std_runs": std_runs, "pipeline_seeds": 1, "runs": runs,
         "gmacs": g, "salient_recall": 0.5, "distractor_share": 0.1}
    if diff is not None:
        c.update(map_minus_uniform=diff[0], map_minus_uniform_ci=list(diff[1:]))
    return c


HEADLINE = {
    "uniform": {"frame": {str(k): _cell(0.1 * k, 0.0, g=0.3 * k) for k in (1, 2, 3, 5, 8)}},
    "tsqnet": {"frame": {str(k): _cell(0.1 * k + 0.05, 0.02, g=0.3 * k + 0.5, diff=(0.05, 0.01, 0.09))
                         for k in (1, 2, 3, 5, 8)}},
    "tsqnet_vqm_only": {"frame": {str(k): _cell(0.1 * k, 0.0, runs=1, g=0.3 * k + 0.4, diff=(0.0, -0.02, 0.02))
                                  for k in (1, 2, 3, 5, 8)}},
    "tsqnet[vqm]": {"frame": {"3": _cell(0.3, 0.01)}},
}


def test_spread_names_what_the_plus_minus_is():
    assert spread(_cell(0.5, 0.0)) == (None, "deterministic")
    assert spread(_cell(0.5, 0.0, runs=1)) == (None, "single run")
    assert spread(_cell(0.5, 0.02)) == (0.02, "over sampler seeds")
    assert spread({**_cell(0.5, 0.02), "pipeline_seeds": 3, "map_std_pipeline": 0.04}) == (0.04, "over pipeline seeds")


def test_csv_rows_at_k3_and_k5_without_branches():
    rows = list(csv.DictReader(io.StringIO(to_csv(table_rows(HEADLINE, [1, 2, 3, 5, 8])))))
    assert [(r["sampler"], r["k"]) for r in rows] == [("uniform", "3"), ("uniform", "5"), ("tsqnet", "3"),
                                                      ("tsqnet", "5"), ("tsqnet_vqm_only", "3"), ("tsqnet_vqm_only", "5")]
    u3, t5, v3 = rows[0], rows[3], rows[4]
    assert u3["map_pct"] == "30.0" and u3["map_std_pct"] == "" and u3["spread"] == "deterministic"
    assert u3["minus_uniform_pct"] == "" and float(u3["gmacs"]) == 0.9
    assert float(t5["map_pct"]) == 55.0 and float(t5["map_std_pct"]) == 2.0 and float(t5["gmacs"]) == 2.0
    assert (float(t5["minus_uniform_pct"]), float(t5["minus_uniform_ci_lo_pct"]), float(t5["minus_uniform_ci_hi_pct"])) \
        == (5.0, 1.0, 9.0) and t5["resolved_vs_uniform"] == "True"
    assert v3["spread"] == "single run" and v3["resolved_vs_uniform"] == "False"


def test_latex_table():
    tex = to_latex(table_rows(HEADLINE, [3, 5]), "a caption with 95% and an_underscore")
    assert r"\begin{tabular}{lrrrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"uniform & 30.0 & 50.0 & 0.900 & 1.500 & -- & -- \\" in tex
    assert r"tsqnet & 35.0 $\pm$ 2.0 & 55.0 $\pm$ 2.0 & 1.400 & 2.000 & +5.0 [+1.0, +9.0] & +5.0 [+1.0, +9.0] \\" in tex
    assert r"tsqnet\_vqm\_only & 30.0 & 50.0" in tex and r"\textit{+0.0 [-2.0, +2.0]}" in tex
    assert r"95\% and an\_underscore" in tex


def test_readme_table_has_gmacs_at_3_5_8_and_no_plus_minus_zero():
    p = load_params(ROOT / "params.yaml")
    out = {"headline": HEADLINE, "pipeline_seeds": [0], "failed_seeds": {}, "videos": 36, "map_variant": "sklearn",
           "map_definition": "AP", "frontier": {}}
    text = "\n".join(tables(p, out))
    assert "| sampler | K=1 | K=2 | K=3 | K=5 | K=8 | GMACs K=3 | GMACs K=5 | GMACs K=8 |" in text
    assert "| uniform (deterministic) | 10.0 | 20.0 | 30.0 | 50.0 | 80.0 | 0.900 | 1.500 | 2.400 |" in text
    assert "| tsqnet | 15.0 ± 2.0 | 25.0 ± 2.0 | 35.0 ± 2.0 | 55.0 ± 2.0 | 85.0 ± 2.0 | 1.400 | 2.000 | 2.900 |" in text
    assert "± 0.0" not in text and "`table.csv`" in text
