"""``salient``: the user-facing command line.

    salient validate PATH...        check video files / folders, print a table (exit 1 if any is bad)
    salient params [--explain]      load and validate params.yaml, print the resolved values
    salient stage NAME [--set k=v]  run one pipeline stage outside DVC (train_sampler: --sampler NAME)
    salient demo                    `dvc repro` the demo pipeline on the synthetic benchmark
    salient bench extract|samplers  benchmarks -> reports/bench_extract.json, reports/bench_samplers.json
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("prepare", "train_encoders", "extract", "headroom", "prototypes", "pseudo_labels", "train_sampler",
          "sampler_report")


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in cols}
    out = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


def cmd_validate(args) -> int:
    from components.data.video import validate_paths

    rows = validate_paths(args.paths, min_frames=args.min_frames, max_frames=args.max_frames)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        for r in rows:
            r["status"] = "ok" if r["ok"] else "BAD"
            if r.get("duration") is not None:
                r["duration"] = f"{r['duration']:.2f}"
        print(_table(rows, ["status", "path", "reason", "num_frames", "fps", "duration", "width", "height", "has_audio"]))
        bad = sum(not r["ok"] for r in rows)
        print(f"\n{len(rows)} files, {len(rows) - bad} ok, {bad} unusable")
    return 1 if any(not r["ok"] for r in rows) else 0


def cmd_params(args) -> int:
    from components.params import ParamsError, load_params, to_dict

    try:
        p = load_params(args.params, args.set)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.explain:
        def walk(obj, prefix=""):
            for f in dataclasses.fields(obj):
                v = getattr(obj, f.name)
                if dataclasses.is_dataclass(v):
                    walk(v, f"{prefix}{f.name}.")
                    continue
                m = f.metadata
                rng = f" in [{m.get('lo')}, {m.get('hi')}]" if m.get("lo") is not None or m.get("hi") is not None else ""
                ch = f" one of {list(m['choices'])}" if m.get("choices") else ""
                print(f"{prefix}{f.name} = {v!r}{rng}{ch}  {m.get('help', '')}".rstrip())
        walk(p)
    else:
        import yaml

        print(yaml.safe_dump(to_dict(p), sort_keys=False), end="")
    return 0


def cmd_stage(args) -> int:
    mod = importlib.import_module(f"components.stages.{args.name}")
    argv = ["--params", args.params] + [x for s in args.set for x in ("--set", s)]
    if args.name == "train_sampler":
        if not args.sampler:
            print("error: train_sampler needs --sampler NAME", file=sys.stderr)
            return 2
        argv += ["--sampler", args.sampler]
    return mod.main(argv)


def _dvc() -> list[str]:
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.exists() else [shutil.which("dvc") or "dvc"]


def venv_env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH, so dvc.yaml's ``python -m ...`` runs in this venv."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def cmd_demo(args) -> int:
    t0 = time.perf_counter()
    if not Path(".dvc").exists():
        scm = ["--no-scm"] if subprocess.run(["git", "rev-parse"], capture_output=True).returncode else []
        subprocess.run(_dvc() + ["init", "-q", *scm], check=True)
    rc = subprocess.run(_dvc() + ["repro", *args.targets], env=venv_env()).returncode
    if rc:
        print(f"dvc repro failed (exit {rc})", file=sys.stderr)
        return rc
    wall = time.perf_counter() - t0
    Path("reports").mkdir(exist_ok=True)
    Path("reports/demo_timing.json").write_text(json.dumps(
        {"command": "salient demo (dvc repro " + " ".join(args.targets or ["<all>"]) + ")", "wall_seconds": round(wall, 1),
         "cpu_threads": os.cpu_count(), "note": "includes only stages DVC found out of date"}, indent=1) + "\n")
    print(f"\nDemo pipeline finished in {wall:.0f} s.")
    for f in ("reports/headroom.md", "reports/prepare.json", "reports/train_encoders.json"):
        if Path(f).exists():
            print(f"\n== {f}\n{Path(f).read_text()}")
    print("Reports: reports/   Feature store: data/features/   Metrics: `dvc metrics show`")
    return 0


def cmd_bench(args) -> int:
    from components import bench

    return bench.main([args.what, *args.rest])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="salient", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check video files or folders")
    v.add_argument("paths", nargs="+")
    v.add_argument("--min-frames", type=int, default=2)
    v.add_argument("--max-frames", type=int, default=500_000)
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_validate)
    pr = sub.add_parser("params", help="validate params.yaml and print it")
    pr.add_argument("--params", default="params.yaml")
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pr.add_argument("--explain", action="store_true", help="one line per key: value, range, meaning")
    pr.set_defaults(fn=cmd_params)
    st = sub.add_parser("stage", help="run one stage outside DVC")
    st.add_argument("name", choices=STAGES)
    st.add_argument("--params", default="params.yaml")
    st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    st.add_argument("--sampler", help="for train_sampler: the registered sampler to train")
    st.set_defaults(fn=cmd_stage)
    d = sub.add_parser("demo", help="dvc repro the demo pipeline")
    d.add_argument("targets", nargs="*", help="dvc repro targets (default: the whole pipeline)")
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("bench", help="benchmarks -> reports/bench_*.json")
    b.add_argument("what", choices=["extract", "samplers"])
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_bench)
    args = ap.parse_args(argv)
    from components.stages import setup_logging

    setup_logging()
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
