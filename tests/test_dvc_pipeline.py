"""The real DVC pipeline on the shrunk real config: `dvc repro` end to end in a copy of the project,
a no-op rerun, and that a recognizer param change does not invalidate `prepare`."""
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


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    dst = copy_tiny_project(tmp_path_factory.mktemp("proj"))
    _run([str(BIN / "dvc"), "repro"], dst)
    return dst


def test_repro_builds_every_stage(project):
    assert (project / "data/prepared/manifest.csv").exists()
    assert json.loads((project / "data/features/meta.json").read_text())["complete"]
    assert (project / "data/encoders/recognizer.pt").exists()
    head = json.loads((project / "reports/headroom.json").read_text())
    assert head["k"] == 3 and 0 <= head["oracle_top1"] <= 1
    metrics = _run([str(BIN / "dvc"), "metrics", "show", "--json"], project).stdout
    assert "headroom.json" in metrics and "prepare.json" in metrics and "metrics.json" in metrics
    for f in ("reports/curves.csv", "reports/README.md", "reports/flops.csv", "reports/figures/curves.png",
              "data/tuned_fusion.json", "data/recognizers/tsi.pt", "data/samplers/nsnet_mlp/seed0.pt"):
        assert (project / f).exists(), f


def test_plots_render_offline(project):
    """`dvc plots show` resolves the plots; vl-convert renders them with Vega bundled (no CDN)."""
    from components.plots import render_dvc_plots

    out = render_dvc_plots(project / "rendered", fmt="html", cwd=project)
    assert len(out) == 3
    html = out[0].read_text()
    assert "cdn.jsdelivr" not in html and len(html) > 100_000  # the Vega libraries are in the page
    svg = render_dvc_plots(project / "rendered", fmt="svg", cwd=project)
    assert all(f.read_text().lstrip().startswith("<svg") for f in svg)


def test_fusion_change_reruns_only_what_reads_it(project):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["fusion"]["lambda_v"] = 0.3
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout)
        assert set(status) == {"tune_fusion", "sampler_report", "evaluate", "report"}
    finally:
        p["fusion"]["lambda_v"] = 0.6
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
    before = (project / "data/features/train/light_feats.npy").read_bytes()
    shutil.rmtree(project / "data/features")
    shutil.rmtree(project / ".dvc/cache")
    _run([str(BIN / "dvc"), "pull"], project)
    assert (project / "data/features/train/light_feats.npy").read_bytes() == before
    out = _run([str(BIN / "dvc"), "status"], project)
    assert "changed" not in out.stdout


def test_concurrent_repro_fails_fast_with_the_lock_message(project):
    import time

    first = subprocess.Popen([str(BIN / "dvc"), "repro", "-f", "-s", "evaluate"], cwd=project, env=_env(),
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
    out = _run([str(BIN / "dvc"), "repro"], project)
    assert "Running stage" not in out.stdout and "up to date" in out.stdout


def test_recognizer_param_does_not_invalidate_prepare(project):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["encoders"]["recognizer_arch"] = "resnet18"
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout)
        assert "train_encoders" in status and "extract" in status
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
