"""``salient`` as a user meets it: real subprocesses, real argparse output (issue 13, CLI polish).

* ``predict --help`` shows defaults and the registry's sampler names;
* a sampler typo names the valid samplers and the closest one; a missing checkpoint suggests only a
  stage DVC really has (checked against ``dvc stage list``);
* the table lists the ``--top`` classes with scores and every error in full;
* ``serve --help`` lists flows.serve's options;
* ``ui`` killed with SIGTERM stops the MLflow server's whole process group and frees the port.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from components.app.cli import prediction_table
from components.models.samplers import list_samplers
from components.app.predict import Prediction, PredictError
from components.ops.processes import dvc_command, free_port, port_in_use, venv_env, wait_healthy
from tests.conftest import ROOT, copy_tiny_project

SALIENT = str(Path(sys.executable).with_name("salient"))


def salient(*args: str, cwd: Path = ROOT, check_rc: int | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([SALIENT, *args], cwd=cwd, capture_output=True, text=True, env=venv_env(), timeout=300)
    if check_rc is not None:
        assert out.returncode == check_rc, f"rc {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def test_predict_help_shows_defaults_and_the_registered_samplers():
    out = salient("predict", "--help", check_rc=0).stdout
    flat = " ".join(out.split())  # argparse wraps at the terminal width
    for name in list_samplers():
        assert re.search(rf"\b{name}\b", flat), name
    for default in ("(default: tsqnet)", "(default: 5)", "(default: data/s0)", "(default: frame)", "(default: params.yaml)"):
        assert default in flat, default
    assert "(default: None)" not in flat and "(default: False)" not in flat  # no noise for unset options


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    """A git + DVC project with the TINY params (one ablation: nsnet_mlp), nothing trained."""
    return copy_tiny_project(tmp_path_factory.mktemp("cli") / "proj")


def test_a_sampler_typo_names_the_valid_samplers(tiny_project):
    err = salient("predict", "clip.mp4", "--sampler", "nsnett", cwd=tiny_project, check_rc=2).stderr
    assert "unknown sampler 'nsnett' (did you mean 'nsnet'?)" in err
    assert all(name in err for name in list_samplers()) and "nsnet_mlp" in err  # registered + ablations
    assert "dvc repro" not in err  # no stage to suggest for a name that does not exist
    err = salient("predict", "clip.mp4", "--sampler", "nsnet_mpl", cwd=tiny_project, check_rc=2).stderr
    assert "did you mean 'nsnet_mlp'?" in err


def test_a_missing_checkpoint_suggests_a_stage_dvc_has(tiny_project):
    """Learned sampler, baseline and ablation are trained by three different stages."""
    stages = subprocess.run([*dvc_command(), "stage", "list", "--name-only"], cwd=tiny_project, capture_output=True,
                            text=True, check=True).stdout.split()
    expected = {"nsnet": "train_sampler@0-nsnet", "uniform": "baselines@0", "nsnet_mlp": "ablate@0-nsnet_mlp"}
    for sampler, stage in expected.items():
        err = salient("predict", "clip.mp4", "--sampler", sampler, cwd=tiny_project, check_rc=2).stderr
        suggested = re.findall(r"dvc repro (\S+?)`", err)
        assert suggested == [stage] and stage in stages, err
    err = salient("predict", "clip.mp4", "--sampler", "nsnet", "--checkpoint-dir", str(tiny_project / "elsewhere"),
                  cwd=tiny_project, check_rc=2).stderr
    assert "dvc repro" not in err and "--checkpoint" in err  # no stage writes there


def test_prediction_table_lists_the_top_classes_and_errors_in_full():
    detail = "moov atom not found; the file ends after 100 bytes (a truncated upload?) " * 2  # > 60 characters
    ok = Prediction("/v/a.mp4", [("dog", 0.61), ("cat", 0.25), ("bird", 0.14)], [1, 4], [0.04, 0.16], 1.234)
    table = prediction_table([ok, PredictError("/v/broken.mp4", "unreadable", detail)])
    lines = table.splitlines()
    assert lines[0].split() == ["video", "rank", "class", "prob", "frames", "seconds", "GMACs"]
    assert [ln.split()[:4] for ln in lines[2:3]] == [["a.mp4", "1", "dog", "0.610"]]
    assert [ln.split() for ln in lines[3:5]] == [["2", "cat", "0.250"], ["3", "bird", "0.140"]]
    assert "1 4" in lines[2] and "1.234" in lines[2]
    assert "ERROR unreadable" in lines[5]
    assert f"/v/broken.mp4: unreadable: {detail}" in table  # whole, not cut at 60 characters


@pytest.fixture(scope="module")
def trained_uniform(tiny_pipeline, tiny_params, tmp_path_factory):
    """The tiny pipeline's encoders + a trained ``uniform`` checkpoint, and the params as a file."""
    import yaml

    from components.core.params import to_dict
    from components.stages import train_sampler

    train_sampler.run(tiny_params, tiny_pipeline, "uniform")
    params = tmp_path_factory.mktemp("cli_params") / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(tiny_params)))
    return tiny_pipeline, params


def test_predict_table_shows_top_k_in_a_real_run(trained_uniform, tmp_path):
    from components.data.manifest import read_manifest

    paths, params = trained_uniform
    video = next(r.path for r in read_manifest(paths.prepared)[0] if r.split == "test")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    out = salient("predict", video, str(broken), "--sampler", "uniform", "--k", "2", "--top", "3",
                  "--checkpoint-dir", str(paths.features.parent), "--params", str(params), check_rc=1)
    rows = out.stdout.splitlines()
    first = next(i for i, ln in enumerate(rows) if ln.startswith(Path(video).name))
    ranks = [ln.split()[0] if i else ln.split()[1] for i, ln in enumerate(rows[first:first + 3])]
    assert ranks == ["1", "2", "3"], out.stdout
    probs = [float(ln.split()[3 if i == 0 else 2]) for i, ln in enumerate(rows[first:first + 3])]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert any(ln.startswith("broken.mp4") and "ERROR" in ln for ln in rows)
    assert f"{broken}:" in out.stdout.split("errors:")[1]


def test_serve_help_lists_its_options():
    out = salient("serve", "--help", check_rc=0).stdout
    assert out.startswith("usage: salient serve")
    for opt in ("--host", "--port", "--pool", "--workers", "--project-dir", "--deployment", "--no-ui"):
        assert opt in out, opt
    err = salient("serve", "--bogus", check_rc=2).stderr
    assert "salient serve: error: unrecognized arguments: --bogus" in err
    assert "serve" in salient("--help", check_rc=0).stdout
    assert "unrecognized arguments: --bogus" in salient("params", "--bogus", check_rc=2).stderr


def test_ui_stops_its_whole_process_group_on_sigterm(tmp_path):
    """Issue 13: ``salient ui`` killed with SIGTERM left the MLflow server (and its uvicorn worker)
    serving on the port."""
    port = free_port()
    env = venv_env({**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    ui = subprocess.Popen([SALIENT, "ui", "--port", str(port), "--params", str(ROOT / "params.yaml")], cwd=tmp_path,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)  # a group of the test's own, to clean up whatever survives
    children: list[psutil.Process] = []
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", timeout=120)
        children = psutil.Process(ui.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "mlflow" in names and ("uvicorn" in names or "gunicorn" in names), names
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(30) == 0, ui.stderr.read()
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        deadline = time.monotonic() + 10
        while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not port_in_use("127.0.0.1", port)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
        for c in children:  # nothing of ours may outlive the test, whatever failed
            if c.is_running():
                c.kill()


def test_bench_loop_reads_pytest_counts_and_refuses_a_noop_that_ran_something(tmp_path):
    """The loop benchmark's parsers: pytest's summary line, and a `dvc repro` that ran a stage is not
    timed as a no-op (a real DVC project: one stage, run once, then repro twice)."""
    import subprocess

    from components.app.bench_loop import bench_noop, pytest_counts
    from components.ops.processes import dvc_command

    assert pytest_counts("....\n== 598 passed, 2 skipped, 1 deselected in 1218.30s (0:20:18) ==\n") == {
        "passed": 598, "skipped": 2, "deselected": 1}
    assert pytest_counts("1 failed, 3 passed in 2.0s") == {"failed": 1, "passed": 3}
    assert pytest_counts("no summary") == {}
    proj = tmp_path / "p"
    proj.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([*dvc_command(), "init", "-q"], cwd=proj, check=True)
    (proj / "dvc.yaml").write_text("stages:\n  one:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    first = bench_noop(proj, tmp_path, repeats=1)  # the stage runs: not a no-op
    assert len(first["not_a_noop"]) == 1 and "Running stage" in first["not_a_noop"][0]["tail"]
    again = bench_noop(proj, tmp_path, repeats=2)
    assert again["not_a_noop"] == [] and len(again["wall_seconds"]) == 2
