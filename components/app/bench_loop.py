"""``salient bench loop`` -> ``reports/bench_loop.json``: the three waits of the development loop, as a
new user and a contributor meet them, so a regression is seen.

* ``demo``: ``make demo`` in a fresh clone of this checkout's ``HEAD`` (its own ``.venv``: the install is
  included), the wall time, and the demo's own per-stage table (``reports/demo_timing.json``);
* ``noop``: ``dvc repro`` three times on that finished demo (nothing may run; each must say so), the
  wall times;
* ``test``: ``make test`` in another fresh clone (install, browser and PostgreSQL checks, the whole
  suite), the wall time and pytest's counts.

Targets (the README's "Benchmarks" table): demo <= 15 min, test <= 15 min, no-op <= 3 s. Each part
records the machine's load average just before and after it, and the commit it ran: a number read on
a busy machine says so. Parts not asked for keep their previous entry in the output file.
Nothing is mocked: these are the real commands, timed from outside.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.core.atomic import atomic_write_json
from components.ops.processes import dvc_command
from components.ops.stage_runner import always_changed_stages

TARGETS_S = {"demo": 15 * 60, "test": 15 * 60, "noop": 3.0}
#: What a pipeline that ran nothing prints (DVC 3): a no-op that ran a stage is an error, not a time.
NOOP_TEXT = re.compile(r"(Data and pipelines are up to date|didn't change, skipping)")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _timed(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> tuple[int, float, str]:
    """Run ``cmd`` in ``cwd`` with stdout + stderr into ``log``; (exit status, wall seconds, output)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    return rc, wall, log.read_text(errors="replace")


def fresh_clone(root: Path, dst: Path) -> str:
    """``git clone`` of ``root``'s HEAD into ``dst`` (committed files only, as a user's clone); its commit."""
    subprocess.run(["git", "clone", "-q", str(root), str(dst)], check=True)
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=dst, capture_output=True, text=True,
                          check=True).stdout.strip()


def pytest_counts(output: str) -> dict[str, int]:
    """The counts of pytest's last summary line (``600 passed, 2 skipped in 1218.3s``)."""
    lines = [ln for ln in output.splitlines() if re.search(r"\b(passed|failed|error)s?\b", ln) and " in " in ln]
    if not lines:
        return {}
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)",
                                           lines[-1])}


def bench_demo(root: Path, work: Path) -> tuple[dict, Path]:
    clone = work / "demo"
    commit = fresh_clone(root, clone)
    before = _load()
    rc, wall, out = _timed(["make", "demo"], clone, work / "demo.log")
    res = {"command": "make demo (fresh clone, install included)", "commit": commit, "rc": rc,
           "wall_seconds": round(wall, 1), "target_seconds": TARGETS_S["demo"], "load_before": before,
           "load_after": _load()}
    timing = clone / "reports/demo_timing.json"
    if rc == 0 and timing.exists():
        res["pipeline"] = json.loads(timing.read_text())
    else:
        res["log_tail"] = out[-3000:]
    return res, clone


def ran_stages(out: str, project: Path) -> list[str]:
    """The stages a ``dvc repro`` log says it ran, but those ``dvc.yaml`` marks ``always_changed``
    (``sources``: it runs on every repro by design, and changes nothing when nothing changed)."""
    always = always_changed_stages(Path(project) / "dvc.yaml")
    return [s for s in re.findall(r"Running stage '([^']+)'", out) if s not in always]


def bench_noop(project: Path, work: Path, repeats: int = 3) -> dict:
    """``dvc repro`` ``repeats`` times on a finished demo; each must run nothing."""
    dvc = project / ".venv/bin/dvc"  # the demo clone's own install, else this one's
    cmd = [*([str(dvc)] if dvc.exists() else dvc_command()), "repro"]
    env = dict(os.environ)  # dvc.yaml's `python -m ...` (the always-run `sources` stage) in that install too
    env["PATH"] = str(dvc.parent if dvc.exists() else Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    before, walls, ran = _load(), [], []
    for i in range(repeats):
        rc, wall, out = _timed(cmd, project, work / f"noop{i}.log", env)
        walls.append(round(wall, 2))
        if rc or not NOOP_TEXT.search(out) or ran_stages(out, project):
            ran.append({"run": i, "rc": rc, "tail": out[-1500:]})
    return {"command": "dvc repro (on the finished demo, nothing to run)", "wall_seconds": walls,
            "median_seconds": sorted(walls)[len(walls) // 2], "target_seconds": TARGETS_S["noop"],
            "load_before": before, "load_after": _load(), "not_a_noop": ran}


def bench_test(root: Path, work: Path) -> dict:
    clone = work / "test"
    commit = fresh_clone(root, clone)
    before = _load()
    rc, wall, out = _timed(["make", "test"], clone, work / "test.log")
    return {"command": "make test (fresh clone, install included)", "commit": commit, "rc": rc,
            "wall_seconds": round(wall, 1), "target_seconds": TARGETS_S["test"], "counts": pytest_counts(out),
            "load_before": before, "load_after": _load(), **({} if rc == 0 else {"log_tail": out[-3000:]})}


def build_parser() -> argparse.ArgumentParser:
    """``salient bench loop``'s options."""
    ap = argparse.ArgumentParser(prog="salient bench loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="*", default=["demo", "noop", "test"], choices=["demo", "noop", "test"],
                    help="what to time (default: all three; noop needs demo, or --project)")
    ap.add_argument("--project", help="noop on this finished demo instead of the fresh clone's")
    ap.add_argument("--out", default="reports/bench_loop.json", help="where the timings are recorded (merged "
                    "with the parts already there)")
    ap.add_argument("--keep", action="store_true", help="keep the clones (printed) instead of removing them")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                               check=True).stdout.strip())
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res["machine"] = {"cpu_threads": os.cpu_count(), "note": "load averages are 1 / 5 / 15 min; a quiet machine "
                      "reads < 0.5 before a part starts"}
    work = Path(tempfile.mkdtemp(prefix="salient-loop-"))
    project = Path(args.project) if args.project else None
    try:
        if "demo" in args.parts:
            res["demo"], project = bench_demo(root, work)
            print(json.dumps({k: v for k, v in res["demo"].items() if k != "pipeline"}, indent=1))
        if "noop" in args.parts:
            if project is None:
                print("noop needs a finished demo: run it with `demo` or pass --project DIR", file=sys.stderr)
                return 2
            res["noop"] = bench_noop(project, work)
            print(json.dumps(res["noop"], indent=1))
        if "test" in args.parts:
            res["test"] = bench_test(root, work)
            print(json.dumps(res["test"], indent=1))
    finally:
        if args.keep:
            print(f"clones kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)
    print(f"wrote {out}")
    failed = [p for p in ("demo", "test") if p in args.parts and res[p]["rc"]]
    return 1 if failed or ("noop" in args.parts and res["noop"]["not_a_noop"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
