"""The real DVC pipeline on the shrunk real config with two pipeline seeds: `dvc repro` end to end in a
copy of the project (every stage after prepare once per seed, the summary pooling both), a no-op
rerun, that a recognizer param change does not invalidate `prepare`, and that two runs of the same
commit and params in two directories give byte-identical outputs, stage by stage."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_tiny_project

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _env():
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _run(args, cwd, check=True):
    out = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    if check and out.returncode:
        raise AssertionError(f"{args} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


#: Outputs that hold measured wall times, and only those: the one thing allowed to differ between runs.
TIMING_OUTS = ("reports/timings/", "reports/s0/timings/", "reports/s1/timings/")
SEEDS = ["pipeline.seeds=[0,1]"]
_LOCKS: dict[str, dict] = {}  # dvc.lock right after each project's first `dvc repro`
_TWIN: dict = {}  # the twin project's directory, its `dvc repro` process and log


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny project after a full `dvc repro`; its twin (the same commit and params in another
    directory, for the byte-identity test) runs at the same time in a second process: the two runs
    are independent and mostly single-threaded, so together they take little more than one."""
    dst = copy_tiny_project(tmp_path_factory.mktemp("proj"), SEEDS)
    twin = copy_tiny_project(tmp_path_factory.mktemp("twin"), SEEDS)
    log = open(twin.parent / "twin_repro.log", "w+")
    _TWIN["dir"], _TWIN["log"] = twin, log
    _TWIN["proc"] = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=twin, env=_env(), stdout=log,
                                     stderr=subprocess.STDOUT)
    try:
        _run([str(BIN / "dvc"), "repro"], dst)
        _LOCKS["project"] = yaml.safe_load((dst / "dvc.lock").read_text())
        yield dst
    finally:
        proc = _TWIN["proc"]
        if proc.poll() is None:  # the twin test did not run (deselected) or failed early
            proc.kill()
            proc.wait()
        log.close()


def _twin_lock() -> dict:
    """The twin's dvc.lock once its run (started by ``project``) has finished successfully."""
    proc, log = _TWIN["proc"], _TWIN["log"]
    rc = proc.wait(timeout=1800)
    log.seek(0)
    assert rc == 0, f"the twin's dvc repro failed ({rc}):\n{log.read()[-3000:]}"
    return yaml.safe_load((_TWIN["dir"] / "dvc.lock").read_text())


def _stage_outs(lock: dict) -> dict[str, dict[str, str]]:
    """stage -> {out path: content hash} from a dvc.lock (timing files left out)."""
    return {stage: {o["path"]: o.get("md5") or o.get("hash") or str(o) for o in spec.get("outs", [])
                    if not o["path"].startswith(TIMING_OUTS)}
            for stage, spec in lock["stages"].items()}


def first_difference(a: dict, b: dict, order: list[str]) -> tuple[str, list[str]] | None:
    """The first stage (in ``order``) whose outputs differ between two dvc.lock files, and which."""
    sa, sb = _stage_outs(a), _stage_outs(b)
    for stage in order:
        oa, ob = sa.get(stage, {}), sb.get(stage, {})
        diff = sorted(k for k in set(oa) | set(ob) if oa.get(k) != ob.get(k))
        if diff:
            return stage, diff
    return None


def test_first_difference_names_the_stage():
    a = {"stages": {"prepare": {"outs": [{"path": "data/prepared", "md5": "1.dir"}]},
                    "extract": {"outs": [{"path": "data/features", "md5": "2.dir"},
                                         {"path": "reports/timings/extract.json", "md5": "t1"}]}}}
    b = {"stages": {"prepare": {"outs": [{"path": "data/prepared", "md5": "1.dir"}]},
                    "extract": {"outs": [{"path": "data/features", "md5": "3.dir"},
                                         {"path": "reports/timings/extract.json", "md5": "t2"}]}}}
    assert first_difference(a, a, ["prepare", "extract"]) is None
    assert first_difference(a, b, ["prepare", "extract"]) == ("extract", ["data/features"])


def test_two_runs_in_two_directories_give_byte_identical_outputs(project):
    """The same commit and params, run again from scratch in another directory (another absolute path,
    another process, another hash seed): every stage's outputs hash the same, wall times excepted."""
    mine, theirs = _LOCKS["project"], _twin_lock()
    order = list(mine["stages"])
    assert len(order) > 15 and set(order) == set(theirs["stages"])
    diff = first_difference(mine, theirs, order)
    assert diff is None, f"first stage whose outputs differ between two runs: {diff[0]} ({diff[1]})"


def test_repro_builds_every_stage(project):
    assert (project / "data/prepared/manifest.csv").exists()
    for s in (0, 1):  # one full pipeline per seed
        assert json.loads((project / f"data/s{s}/features/meta.json").read_text())["complete"]
        assert (project / f"data/s{s}/encoders/recognizer.pt").exists()
        head = json.loads((project / f"reports/s{s}/headroom.json").read_text())
        assert head["k"] == 3 and 0 <= head["oracle_top1"] <= 1
        for f in ("reports/s{s}/README.md", "reports/s{s}/flops.csv", "reports/s{s}/figures/curves.png",
                  "results/s{s}/curves.csv", "results/s{s}/scores.npz", "data/s{s}/tuned_fusion.json",
                  "data/s{s}/recognizers/tsi.pt", "data/s{s}/samplers/nsnet_mlp/seed{o}.pt"):
            assert (project / f.format(s=s, o=1000 * s)).exists(), f.format(s=s, o=1000 * s)
    # the two seeds trained different encoders (seed 1 offsets every training seed by 1000)
    a, b = ((project / f"data/s{s}/encoders/light.pt").read_bytes() for s in (0, 1))
    assert a != b
    metrics = _run([str(BIN / "dvc"), "metrics", "show", "--json"], project).stdout
    assert "headroom.json" in metrics and "prepare.json" in metrics and "summary.json" in metrics
    for f in ("reports/curves.csv", "reports/README.md", "reports/summary.json", "reports/figures/curves.png"):
        assert (project / f).exists(), f
    summary = json.loads((project / "reports/summary.json").read_text())
    assert summary["pipeline_seeds"] == [0, 1] and summary["failed_seeds"] == {}
    cell = summary["headline"]["nsnet"]["frame"]["3"]
    assert cell["pipeline_seeds"] == 2 and set(cell["map_by_pipeline_seed"]) == {"0", "1"}
    assert "0,uniform" in (project / "reports/curves.csv").read_text() and "1,uniform" in (project / "reports/curves.csv").read_text()
    # every stage process left its wall time (what `salient demo` prints, slowest first)
    from components.ops.stage_runner import stage_time_table, stage_times

    rows = stage_times(0.0, project / ".salient/stage_times")
    assert {r["stage"] for r in rows} == set(_LOCKS["project"]["stages"])
    assert all(float(r["process_seconds"]) >= float(r["run_seconds"]) > 0 for r in rows)
    assert [float(r["process_seconds"]) for r in rows] == sorted((float(r["process_seconds"]) for r in rows), reverse=True)
    assert stage_time_table(rows).count("\n") == len(rows) + 2


def test_plots_render_offline(project):
    """`dvc plots show` resolves the plots; vl-convert renders them with Vega bundled (no CDN)."""
    from components.reporting.dvc_plots import render_dvc_plots

    out = render_dvc_plots(project / "rendered", fmt="html", cwd=project)
    assert len(out) == len(yaml.safe_load((project / "dvc.yaml").read_text())["plots"])
    html = out[0].read_text()
    assert "cdn.jsdelivr" not in html and len(html) > 100_000  # the Vega libraries are in the page
    svg = render_dvc_plots(project / "rendered", fmt="svg", cwd=project)
    assert all(f.read_text().lstrip().startswith("<svg") for f in svg)


def test_fusion_change_reruns_only_what_reads_it(project):
    p = yaml.safe_load((project / "params.yaml").read_text())
    old, p["fusion"]["lambda_v"] = p["fusion"]["lambda_v"], 0.3
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout)
        assert set(status) - {"sources"} == {f"{st}@{s}" for st in ("tune_fusion", "sampler_report", "evaluate", "report")
                               for s in (0, 1)}
    finally:
        p["fusion"]["lambda_v"] = old
        (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def test_exp_run_and_a_local_remote(project, tmp_path):
    """`dvc exp run -S` runs an experiment that `dvc exp show` lists; outputs round-trip through a
    local-directory remote (dvc push, delete, dvc pull)."""
    _run([str(BIN / "dvc"), "exp", "run", "-n", "lam03", "-S", "fusion.lambda_v=0.3"], project)
    shown = _run([str(BIN / "dvc"), "exp", "show", "--json"], project).stdout
    assert "lam03" in shown
    _run([str(BIN / "dvc"), "exp", "apply", "lam03"], project, check=False)
    _run(["git", "checkout", "--", "params.yaml", "dvc.lock"], project, check=False)
    _run([str(BIN / "dvc"), "checkout", "-f"], project)
    _run([str(BIN / "dvc"), "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    _run([str(BIN / "dvc"), "push"], project)
    before = (project / "data/s0/features/train/light_feats.npy").read_bytes()
    shutil.rmtree(project / "data/s0/features")
    shutil.rmtree(project / ".dvc/cache")
    _run([str(BIN / "dvc"), "pull"], project)
    assert (project / "data/s0/features/train/light_feats.npy").read_bytes() == before
    out = _run([str(BIN / "dvc"), "status"], project)
    assert "changed" not in out.stdout.replace("always changed", "")  # `sources` runs on every repro


def test_concurrent_repro_fails_fast_with_the_lock_message(project):
    import time

    first = subprocess.Popen([str(BIN / "dvc"), "repro", "-f", "-s", "evaluate@0"], cwd=project, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:  # the stage is running: the first process holds the repo lock
            if "Running stage" in line:
                break
        t0 = time.time()
        second = _run([str(BIN / "dvc"), "repro"], project, check=False)
        assert time.time() - t0 < 60
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower()
    finally:
        first.communicate(timeout=300)
    assert first.returncode == 0


def test_noop_repro_runs_nothing(project):
    from components.app.bench_loop import ran_stages

    out = _run([str(BIN / "dvc"), "repro"], project)
    assert ran_stages(out.stdout, project) == [] and "didn't change, skipping" in out.stdout  # `sources` always runs
    assert "Running stage 'sources'" in out.stdout


def test_recognizer_param_does_not_invalidate_prepare(project):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["encoders"]["recognizer_arch"] = "resnet18"
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout)
        assert {"train_encoders@0", "train_encoders@1", "extract@0", "extract@1"} <= set(status)
        assert "prepare" not in status
    finally:
        p["encoders"]["recognizer_arch"] = "resnet10t"
        (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def test_demo_refuses_bad_params_before_any_work(project):
    p = yaml.safe_load((project / "params.yaml").read_text())
    bad = dict(p, fusion={"lambda_v": 1.5})
    (project / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = _run([str(BIN / "salient"), "params", "--params", "bad.yaml"], project, check=False)
    assert out.returncode == 2 and "fusion.lambda_v: 1.5 is outside the allowed range [0.0, 1.0]" in out.stderr
