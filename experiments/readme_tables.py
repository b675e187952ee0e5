"""The README's "Measured results" tables, printed from a finished workspace's reports (nothing is
typed by hand; rerun it after `make demo` to check the README against your run).

    python experiments/readme_tables.py [workspace]      # default: this checkout

Reads ``reports/summary.json`` (the summary stage: every pipeline seed pooled; mAP mean ± std over
pipeline seeds, or over sampler seeds when there is one pipeline seed; paired bootstrap CIs of mAP
differences over all runs) and, per pipeline seed, ``reports/s<seed>/headroom.json`` and
``reports/s<seed>/train_encoders.json``. A difference is called resolved only when its 95% CI excludes 0.
"""
import json
import sys
from pathlib import Path

ROWS = [("uniform", "uniform"), ("random", "random"), ("dense", "dense (all T)"), ("maxconf", "MaxConf"),
        ("maxconf_l", "MaxConf-L"), ("videoconf_l", "VideoConf-L (no training)"), ("tsqnet", "**TSQNet**"),
        ("nsnet", "**NSNet**"), ("oracle", "oracle")]
ABLATIONS = ["tsqnet_vqm_only", "tsqnet_tqm_only", "tsqnet_class_agnostic", "tsqnet_random_init", "nsnet_fem_mlp",
             "nsnet_fsm_baseline", "tsqnet[vqm]", "tsqnet[tqm]", "nsnet[fsm]", "nsnet[vgm]"]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(c) -> str:
    if not c:
        return "–"
    lo, hi = 100 * c[0], 100 * c[1]
    verdict = "" if lo > 0 or hi < 0 else " (not resolved)"
    return f"[{lo:+.1f}, {hi:+.1f}]{verdict}"


def cell(h: dict, name: str, k: int) -> str:
    c = h.get(name, {}).get("frame", {}).get(str(k))
    if c is None:
        return "–"
    std = c["map_std_pipeline"] if c["pipeline_seeds"] > 1 else c["map_std_runs"]
    return pct(c["map"]) + (f" ± {pct(std)}" if c["runs"] > 1 and std > 0 else "")


def main(ws: Path) -> None:
    m = json.loads((ws / "reports/summary.json").read_text())
    seeds = m["pipeline_seeds"]
    h = m["headline"]
    ks = sorted({int(k) for v in h.values() for k in v.get("frame", {})})
    spread = "std over pipeline seeds" if len(seeds) > 1 else "std over sampler seeds (one pipeline seed)"
    print(f"Test split: {m['videos']} videos; pipeline seeds {seeds}"
          + (f" (failed: {m['failed_seeds']})" if m["failed_seeds"] else "")
          + f"; mAP = {m['map_variant']}; mean ± {spread}.\n")
    for s in seeds:
        enc = json.loads((ws / f"reports/s{s}/train_encoders.json").read_text())
        hr = json.loads((ws / f"reports/s{s}/headroom.json").read_text())
        print(f"Pipeline seed {s}: encoders (val video accuracy) " + ", ".join(
            f"{r} {100 * v['val_video_acc']:.1f}% (best epoch {v['best_epoch']})" for r, v in enc.items())
            + f"; headroom at K={hr['k']}: oracle top-1 {pct(hr['oracle_top1'])}, uniform {pct(hr['uniform_top1'])}, "
              f"dense top-1 {pct(hr['dense_top1'])} / mAP {pct(hr['dense_map'])}.\n")
    print("| sampler | " + " | ".join(f"K={k}" for k in ks) + " | GMACs at K=5 | recall@3 |")
    print("|---|" + "---|" * len(ks) + "---|---|")
    for name, label in ROWS:
        c5, c3 = h.get(name, {}).get("frame", {}).get("5", {}), h.get(name, {}).get("frame", {}).get("3", {})
        print(f"| {label} | " + " | ".join(cell(h, name, k) for k in ks)
              + f" | {c5.get('gmacs', c5.get('gflops', float('nan'))):.2f} | {c3.get('salient_recall', float('nan')):.2f} |")
    print("\nmAP difference to uniform, paired bootstrap 95% CI over test videos (all runs pooled):\n")
    print("| sampler | " + " | ".join(f"K={k}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    for name, label in ROWS[1:]:
        if name == "oracle" or name in h:
            print(f"| {label} | " + " | ".join(ci(h.get(name, {}).get("frame", {}).get(str(k), {}).get("map_minus_uniform_ci"))
                                           for k in ks) + " |")
    print("\nAblations and branches, K=3 (mAP; fused − branch CI for branch rows):\n")
    print("| variant | mAP at K=3 | fused − branch [95% CI] |")
    print("|---|---|---|")
    for name in ABLATIONS:
        if name in h:
            c = h[name]["frame"].get("3", {})
            print(f"| {name} | {cell(h, name, 3)} | {ci(c.get('fused_minus_branch_ci')) if '[' in name else '–'} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
