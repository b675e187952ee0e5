"""A new sampler in one file (README "Add your own sampler"): a frame-difference *motion* sampler written
as one new module of ``components/models/samplers/`` in a copy of the tiny project, plus its name in
params (``plugins`` and ``evaluate.samplers``), nothing else edited; the real ``dvc repro`` trains it
(``train_plugin@0-motion``) and evaluates it, and it shows up in ``curves.csv``, the FLOPs table, its
MLflow variant runs and the figures."""
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import copy_tiny_project

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

#: The whole new sampler, as a user would write it (the README's "Add your own sampler" shows the same file).
MOTION = textwrap.dedent('''
    """Motion: a frame is salient where the light features change most from the previous frame."""
    from dataclasses import dataclass, field

    import torch

    from components.models.samplers import SAMPLERS, Batch, Sampler, SamplerOutput


    @dataclass
    class MotionSettings:
        power: float = field(default=1.0, metadata={"lo": 0.0})  # saliency = frame difference ** power


    class Motion(Sampler):
        inputs = ("light_feats",)  # read from the store; its cost: the light encoder on all T frames
        settings = MotionSettings  # params `plugins.motion`, typed and checked (an unknown key names the closest)

        def __init__(self, power: float = 1.0):
            super().__init__()
            self.power = power

        def forward(self, batch: Batch) -> SamplerOutput:
            x = batch["light_feats"].float()  # [B,T,d]
            d = (x[:, 1:] - x[:, :-1]).norm(dim=-1)  # [B,T-1]
            return SamplerOutput(saliency=torch.cat([d[:, :1], d], 1) ** self.power)  # [B,T]


    @SAMPLERS.register("motion")
    def motion(power: float = 1.0, **_) -> Motion:
        return Motion(power)
''')


def _env(tmp: Path) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SALIENT_TRACKING": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}


def test_a_sampler_added_as_one_module_runs_through_the_whole_pipeline(tmp_path):
    names = ["uniform", "random", "dense", "maxconf", "maxconf_l", "videoconf_l", "oracle", "tsqnet", "nsnet", "avgn",
             "motion"]
    dst = copy_tiny_project(tmp_path / "proj", [f"evaluate.samplers=[{','.join(names)}]",
                                                "plugins={motion: {power: 2}}"])
    (dst / "components" / "models" / "samplers" / "motion.py").write_text(MOTION)  # the one new file
    edited = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=dst, capture_output=True,
                            text=True, check=True)
    changed = [line[3:] for line in edited.stdout.splitlines() if not line[3:].startswith(".dvc")]
    assert changed == ["components/models/samplers/motion.py"]  # nothing else edited
    r = subprocess.run([str(BIN / "dvc"), "repro"], cwd=dst, env=_env(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "train_plugin@0-motion" in r.stdout

    check_project(dst, tmp_path / "mlflow.db")


def in_project(dst: Path, code: str) -> str:
    """``code``'s stdout, run by the project's own Python code (its sampler folder holds motion.py)."""
    r = subprocess.run([sys.executable, "-c", code], cwd=dst, env={**os.environ, "MPLBACKEND": "Agg"},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


def check_project(dst: Path, db: Path) -> None:
    """What the README promises of a sampler added as one module, in the project after `dvc repro`."""
    # trained (training-free: its saliency only) by its own stage, with its settings
    out = dst / "data" / "s0" / "samplers" / "motion"
    assert (out / "seed0.pt").exists() and (out / "saliency_seed0.npz").exists()
    assert in_project(dst, "from components.training.sampler_training import load_sampler; "
                           "print(load_sampler('data/s0/samplers/motion/seed0.pt').power)") == "2.0"

    # curves.csv: every K, the frame recognizer and TSI, the whole prediction's GMACs (light encoder x T)
    rows = [r for r in csv.DictReader(open(dst / "results" / "s0" / "curves.csv")) if r["sampler"] == "motion"]
    assert {r["recognizer"] for r in rows} == {"frame", "tsi"}
    assert {int(r["k"]) for r in rows if r["recognizer"] == "frame"} == {1, 2, 3}
    uniform = {r["k"]: float(r["gmacs"]) for r in csv.DictReader(open(dst / "results" / "s0" / "curves.csv"))
               if r["sampler"] == "uniform" and r["recognizer"] == "frame"}
    assert all(float(r["gmacs"]) > uniform[r["k"]] for r in rows if r["recognizer"] == "frame")
    assert "motion" in (dst / "reports" / "curves.csv").read_text()  # the summary's pooled curves

    # the FLOPs table: its own section, the light encoder on all T frames, the sampler, the recognizer on K
    flops = [r for r in csv.DictReader(open(dst / "reports" / "s0" / "flops.csv")) if r["setting"].startswith("motion,")]
    assert [r["component"] for r in flops] == ["light encoder", "sampler", "recognizer"]
    assert int(flops[0]["calls"]) == 8 and int(flops[-1]["calls"]) == 5  # the light encoder on T=8, the recognizer on K=5
    assert "motion, this project" in (dst / "reports" / "s0" / "flops.md").read_text()

    # MLflow: its variant runs under evaluate@0 (one per recognizer and seed)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    variant = [r for r in runs if r.data.params.get("variant") == "motion"]
    assert {r.data.params.get("recognizer") for r in variant} >= {"frame", "tsi"}
    assert all(r.info.status == "FINISHED" for r in variant)

    # the figures: drawn from curves.csv by the project's own code, the main figure's legend names it
    legend = in_project(dst, "from components.reporting.figures import draw_curves, read_curves; "
                             "fig = draw_curves(read_curves('results/s0/curves.csv'), {'nsnet_mlp': 'nsnet'}); "
                             "import json; print(json.dumps([t.get_text() for t in fig.legends[0].get_texts()]))")
    assert "motion" in json.loads(legend), legend
    assert (dst / "reports" / "s0" / "figures" / "curves.png").exists()
    assert (dst / "reports" / "figures" / "curves.png").exists()
