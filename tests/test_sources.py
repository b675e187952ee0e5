"""Issue 27 item 3: a real dataset's files are dependencies. With the csv adapter on real video files
under a real ``dvc repro``, the ``sources`` stage (``always_changed``) rewrites ``data/sources.json``
only when a source changed, so an added, removed or replaced video reruns ``prepare`` (and, through
``data/prepared/sources.json``, everything that decodes), and an unrelated file or an unchanged
dataset reruns nothing. Before it, ``data.root`` was no dep of ``prepare``: none of this was seen."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_tiny_project, write_video

BIN = Path(sys.executable).parent


def _repro(project: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(BIN / "dvc"), "repro", "prepare"], cwd=project, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"dvc repro failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _ran(out: str) -> set[str]:
    return {s for s in ("sources", "prepare") if f"Running stage '{s}'" in out}


def _write_csv(project: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(project / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)


def _manifest(project: Path) -> dict[str, int]:
    with open(project / "data/prepared/manifest.csv", newline="") as f:
        return {r["video_id"]: int(r["num_frames"]) for r in csv.DictReader(f)}


@pytest.fixture
def project(tmp_path):
    proj = copy_tiny_project(tmp_path / "proj", ["data.dataset=csv", "data.root=videos", "data.annotations=labels.csv"])
    rows = []
    for i, (label, split) in enumerate([("a", "train"), ("b", "train"), ("a", "val"), ("b", "test")]):
        write_video(proj / "videos" / f"v{i}.mp4", num_frames=12 + i, size=32, audio=False)
        rows.append((f"v{i}.mp4", label, split))
    _write_csv(proj, rows)
    return proj, rows


def test_added_removed_or_replaced_videos_rerun_prepare_and_nothing_else(project):
    proj, rows = project
    assert _ran(_repro(proj)) == {"sources", "prepare"}
    assert _manifest(proj) == {"v0": 12, "v1": 13, "v2": 14, "v3": 15}
    listing = json.loads((proj / "data/sources.json").read_text())
    assert sorted(listing["root"]) == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"] and list(listing["annotations"]) == ["labels.csv"]
    assert json.loads((proj / "data/prepared/sources.json").read_text()) == listing
    stamp = (proj / "data/sources.json").stat().st_mtime_ns

    # nothing changed, or a file that is no video: the listing is not rewritten, prepare does not run
    (proj / "videos" / "notes.txt").write_text("not a video\n")
    out = _repro(proj)
    assert _ran(out) == {"sources"} and "'prepare' didn't change" in out
    assert (proj / "data/sources.json").stat().st_mtime_ns == stamp

    # a replaced video (same name, other frames): prepare reruns and its output changes
    write_video(proj / "videos" / "v1.mp4", num_frames=20, size=32, audio=False)
    assert _ran(_repro(proj)) == {"sources", "prepare"}
    assert _manifest(proj)["v1"] == 20
    assert json.loads((proj / "data/prepared/sources.json").read_text())["root"]["v1.mp4"] != listing["root"]["v1.mp4"]

    # an added video (file + csv row)
    write_video(proj / "videos" / "v4.mp4", num_frames=16, size=32, audio=False)
    _write_csv(proj, [*rows, ("v4.mp4", "a", "train")])
    assert _ran(_repro(proj)) == {"sources", "prepare"}
    assert _manifest(proj)["v4"] == 16

    # a removed video: prepare reruns and quarantines it as missing
    (proj / "videos" / "v2.mp4").unlink()
    assert _ran(_repro(proj)) == {"sources", "prepare"}
    assert "v2" not in _manifest(proj)
    with open(proj / "reports/quarantine.csv", newline="") as f:
        assert [(r["video_id"], r["reason"]) for r in csv.DictReader(f)] == [("v2", "missing")]
    assert _ran(_repro(proj)) == {"sources"}
