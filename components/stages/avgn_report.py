"""Stage ``avgn_report``: AVGN's own tables on the **test** split, per pipeline seed
(:mod:`components.reporting.avgn_tables` computes them).

1. spatial ground truth: π's patches vs a centre crop and a random patch against the key-object boxes
   (hit rate, IoU, paired π − centre), with the Table 6 ablations where configured;
2. early exit (AVGN⁺) vs fixed K: frames used, GMACs per video, mAP / top-1 per threshold;
3. glance budget T_G (Table 3): head and frame-recognizer mAP / GMACs per T_G and K;
4. videos with and without audio, separately;
5. the val split: π against the key object, head vs frame recognizer, the early-exit temperatures and
   gates (applied to test in 2), linear probes of the audio / visual features.

Writes ``reports/s<seed>/avgn.md``, ``reports/s<seed>/avgn.json`` (DVC metrics) and
``reports/s<seed>/figures/avgn_exit.png``, ``avgn_patches.png``; logs headline numbers to MLflow
(the fixed-K head curve at step = K).
"""
from __future__ import annotations

import logging

from components.tracking import mlflow_tracking as tracking
from components.core.atomic import atomic_write_text
from components.reporting.avgn_tables import compute, headline, load_inputs, markdown, write_figures
from components.core.params import Params
from components.core.paths import Paths, write_report
from components.ops.stage_runner import stage_main
from components.store.feature_store import FeatureStore

log = logging.getLogger(__name__)


def run(p: Params, paths: Paths) -> dict:
    inp = load_inputs(p, paths)
    val = load_inputs(p, paths, "val", variants=inp.variants)  # section 5 and the exit calibration: val only
    result, heads = compute(p, inp, val, FeatureStore(paths.features))
    write_report(paths, "avgn.json", result)
    atomic_write_text(paths.reports / "avgn.md", markdown(result))
    figures = write_figures(result, inp, heads, p, paths.reports / "figures")
    fixed = result["early_exit"]["fixed"]  # MLflow: K is a step, not a name part
    tracking.log_budget_curve("avgn_head", [r["k"] for r in fixed],
                              {"map": [r["map"]["mean"] for r in fixed], "gmacs": [r["gmacs"] for r in fixed]})
    tracking.log_artifacts([paths.reports / "avgn.md", paths.reports / "avgn.json", *figures])
    log.info("avgn_report: %d test videos, AVGN seeds %s", result["videos"], result["seeds"]["avgn"])
    return headline(result)


def main(argv: list[str] | None = None) -> int:
    return stage_main("avgn_report", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
