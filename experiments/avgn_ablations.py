"""AVGN's ablations (its Tables 4, 6 and 7) against AVGN, over every pipeline seed that trained them.

    python experiments/avgn_ablations.py [WORKSPACE] [K]   # default .salient/bench/benchmark, K=3

For every ablation of ``params.yaml``'s ``ablations`` whose base is AVGN and every pipeline seed with a
trained ``data/s<seed>/samplers/<ablation>/`` in WORKSPACE, on the test split at K frames:

* **head** - AVGN's own prediction after its K most salient frames (what the paper's tables report);
* **sampler** - the frame recognizer's mean softmax over the same K frames (AVGN as a sampler).

π's hit rate against the key object, for the centre-crop and no-AESPA variants, and the audio split are
in ``avgn_report`` (``reports/s<seed>/avgn.md``).

Each ablation is paired with AVGN of the same pipeline seed on the same test videos: per seed the
difference and its 95% bootstrap CI (:func:`components.evaluation.metrics.map_ci`), and pooled over the
seeds (mean over seeds, one paired bootstrap over the shared test videos, as the summary stage pools).
A difference is resolved when its CI excludes 0. Nothing here is chosen on test.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from components.core.params import for_pipeline_seed, load_params, variant_params
from components.core.paths import Paths
from components.evaluation.avgn_eval import head_predictions
from components.evaluation.metrics import map_ci, mean_average_precision
from components.evaluation.sampler_eval import seed_checkpoints
from components.reporting.avgn_tables import Variant, load_inputs
from components.training.sampler_training import load_sampler, sampler_seeds

ws = Path(sys.argv[1] if len(sys.argv) > 1 else ".salient/bench/benchmark").resolve()
K = int(sys.argv[2]) if len(sys.argv) > 2 else 3
p = load_params(ws / "params.yaml")
MAPV, BOOT = p.evaluate.map_variant, p.evaluate.bootstrap
ABLATIONS = [n for n in p.ablations if variant_params(p, n)[0] == "avgn"]


def trained(seed: int, name: str) -> bool:
    return any((ws / "data" / f"s{seed}" / "samplers" / name).glob("seed*.pt"))


def one_seed(seed: int, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """{variant: {"head" [N,C], "sampler" [N,C], "labels" [N,C]}} at pipeline seed ``seed``."""
    paths, q = Paths().under(ws).seeded(seed), for_pipeline_seed(p, seed)
    variants = {}
    for name in ["avgn", *names]:
        cks = seed_checkpoints(paths.data / "samplers", name, sampler_seeds(q, name))
        variants[name] = Variant(name, variant_params(q, name)[1], [s for s, _ in cks], [load_sampler(cks[0][1])])
    inp = load_inputs(q, paths, "test", variants=variants)
    out = {}
    for name, v in variants.items():
        h = head_predictions(v.models[0], inp.data, K)
        frame = inp.frame_probs[np.arange(len(h["idx"]))[:, None], h["idx"][:, :K]].mean(1)  # [N,C]
        out[name] = {"head": h["probs"][:, K - 1].astype(np.float64), "sampler": frame.astype(np.float64),
                     "labels": inp.labels}
    return out


def pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def ci(c) -> str:
    lo, hi = c
    return f"[{pct(lo)}, {pct(hi)}]" + ("" if lo > 0 or hi < 0 else " not resolved")


def main() -> None:
    seeds = sorted(int(d.name[1:]) for d in (ws / "data").glob("s[0-9]*"))
    per = {}
    for s in seeds:
        names = [n for n in ABLATIONS if trained(s, n)]
        if names and trained(s, "avgn"):
            per[s] = one_seed(s, names)
    if not per:
        sys.exit(f"no trained AVGN ablation under {ws}/data/s<seed>/samplers/")
    print(f"# AVGN ablations − AVGN at K={K} ({ws.name}; test split; mAP points, paired 95% CIs)\n")
    print("| ablation | seeds | head mAP: ablation / AVGN | head − AVGN, pooled [CI] | per seed [CI] "
          "| as a sampler (frame recognizer) − AVGN, pooled [CI] |")
    print("|---|---|---|---|---|---|")
    for name in ABLATIONS:
        ss = [s for s in per if name in per[s]]
        if not ss:
            continue
        labels = per[ss[0]]["avgn"]["labels"]
        cells = {}
        for kind in ("head", "sampler"):
            a = [per[s][name][kind] for s in ss]
            b = [per[s]["avgn"][kind] for s in ss]
            m_a = np.mean([mean_average_precision(x, labels, MAPV) for x in a])
            m_b = np.mean([mean_average_precision(x, labels, MAPV) for x in b])
            cells[kind] = (m_a, m_b, map_ci(a, labels, MAPV, BOOT, minus=b),
                           [(mean_average_precision(x, labels, MAPV) - mean_average_precision(y, labels, MAPV),
                             map_ci([x], labels, MAPV, BOOT, minus=[y])) for x, y in zip(a, b)])
        h, sm = cells["head"], cells["sampler"]
        seeds_txt = "; ".join(f"{pct(d)} {ci(c)}" for d, c in h[3])
        print(f"| {name} | {', '.join(map(str, ss))} | {100 * h[0]:.1f} / {100 * h[1]:.1f} | {pct(h[0] - h[1])} {ci(h[2])} "
              f"| {seeds_txt} | {pct(sm[0] - sm[1])} {ci(sm[2])} |")


if __name__ == "__main__":
    main()
