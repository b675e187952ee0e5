"""Stage ``flops``: the cost of one prediction, measured, in the papers' table style.

For every sampler of ``evaluate.samplers`` (its trained seed-0 checkpoint) at K = 5 on this
project's configuration, and for the papers' headline settings (TSQNet and NSNet on ActivityNet:
MobileNetV2, EfficientNet-B0 at 112², ResNet-50 at 224², T = 16, K = 5) measured by the same
counter next to the numbers the papers print. Writes ``reports/flops.csv`` (one row per component
and setting) and ``reports/flops.md``, which ends with the "Cost regime" section: per frame, the recognizer
against the light encoder and against everything TSQNet / NSNet / AVGN run per candidate frame
(:func:`components.evaluation.cost.regime_table`), judged against the papers' regime.
"""
from __future__ import annotations

import logging

from components.tracking import mlflow_tracking as tracking
from components.data.manifest import read_manifest
from components.evaluation.cost import (PAPER_SETTINGS, avgn_flops_rows, encoder_models, flops_table_for_params,
                              paper_setting_rows, regime_markdown, regime_samplers, regime_table, total_gmacs)
from components.models.samplers import sampler_class
from components.evaluation.cost_table import write_flops_tables
from components.core.params import Params
from components.core.paths import Paths
from components.ops.stage_runner import stage_main
from components.training.sampler_training import load_sampler, sampler_seeds

log = logging.getLogger(__name__)
K_TABLE = 5


def run(p: Params, paths: Paths) -> dict:
    _, classes = read_manifest(paths.prepared)
    K = min(K_TABLE, p.frames.T)
    tables, totals, loaded = {}, {}, {}
    for name in p.evaluate.samplers:
        ck = paths.features.parent / "samplers" / name / f"seed{sampler_seeds(p, name)[0]}.pt"  # this seed's first
        sampler = loaded[name] = load_sampler(ck) if ck.exists() else None
        if sampler_class(name).own_recognizer:  # AVGN: as a sampler, and its own head
            if sampler is None:
                raise FileNotFoundError(f"{ck} missing: {name}'s cost is counted on its trained modules")
            rows = flops_table_for_params(p, len(classes), name, K, sampler=sampler)
            tables[f"{name} as a sampler (frame recognizer on K frames), this project (T={p.frames.T}, K={K})"] = (rows, None)
            totals[name] = total_gmacs(rows)
            light, audio = encoder_models(p, len(classes))
            rows = avgn_flops_rows(sampler, K, p.frames.full_size, light, audio)
            tables[f"avgn, its own head (glance T_G={sampler.glance_frames}, patches {sampler.config.patch_size}x"
                   f"{sampler.config.patch_size}, K={K})"] = (rows, None)
            totals[f"{name}_head"] = total_gmacs(rows)
            continue
        rows = flops_table_for_params(p, len(classes), name, K, sampler=sampler)
        tables[f"{name}, this project (T={p.frames.T}, K={K})"] = (rows, None)
        totals[name] = total_gmacs(rows)
    for method in PAPER_SETTINGS:
        rows = paper_setting_rows(method)
        tables[f"{method}, the paper's ActivityNet setting (T=16, K=5)"] = (rows, None)
        totals[f"{method}_paper_setting"] = total_gmacs(rows)
    names = regime_samplers(p)
    regime = regime_table(p, len(classes), {n: loaded[n] for n in names if loaded[n] is not None}, names)
    e, f = p.encoders, p.frames
    appendix = regime_markdown(regime, f"{e.recognizer_arch} {f.recognizer_size}x{f.recognizer_size}",
                               f"{e.light_arch} {f.light_size}x{f.light_size}")
    write_flops_tables(tables, paths.reports / "flops.csv", paths.reports / "flops.md", appendix)
    tracking.log_artifacts([paths.reports / "flops.csv", paths.reports / "flops.md"])
    return {"gmacs": totals}


def main(argv: list[str] | None = None) -> int:
    return stage_main("flops", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
