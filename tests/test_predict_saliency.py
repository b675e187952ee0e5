"""``salient predict`` on a folder (issue 26): per-frame saliency of all T observed frames in the JSON
(equal to the sampler's stored test-split output for the same video), every skipped non-video file
named (JSON and table), a case-insensitive ``--sampler``, and ``--figure``'s strip of the T frames."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from components.app.cli import main
from components.data.manifest import read_manifest
from components.evaluation.sampler_eval import load_runs
from components.training.sampler_training import load_sampler
from components.store.feature_store import FeatureStore


@pytest.fixture(scope="module")
def folder(tiny_samplers, tiny_params, tmp_path_factory):
    """A folder with one test video, a notes.txt and a nested results.json; the params as a file."""
    import yaml

    from components.core.params import to_dict

    d = tmp_path_factory.mktemp("predict_folder")
    rec = next(r for r in read_manifest(tiny_samplers.prepared)[0] if r.split == "test")
    videos = d / "videos"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(rec.path, videos / f"{rec.video_id}{rec.path[rec.path.rfind('.'):]}")
    (videos / "notes.txt").write_text("not a video")
    (videos / "sub" / "results.json").write_text("{}")
    params = d / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(tiny_params)))
    return tiny_samplers, rec, videos, params


def _stored(paths, name: str, video_id: str):
    """(observed frame indices [T], stored saliency [T], stored branches {name: [T]}) of one test video."""
    store = FeatureStore(paths.features)
    valid = np.asarray(store.array("test", "valid"), bool)
    ids = [i for i, v in zip(store.ids("test"), valid) if v]
    run = load_runs(paths.features.parent / "samplers", name, "test", ids, load_sampler)[0]
    j = ids.index(video_id)
    fidx = np.asarray(store.array("test", "frame_indices"))[valid][j]
    return fidx, run.out.saliency[j].numpy(), {b: v[j].numpy() for b, v in run.out.branches.items()}


def test_predict_json_has_per_frame_saliency_and_names_skipped_files(folder, tiny_params, tmp_path, capsys):
    paths, rec, videos, params = folder
    png = tmp_path / "strip.png"
    rc = main(["predict", str(videos), "--sampler", "TSQNet", "--k", "3", "--json", "--figure", str(png),
               "--checkpoint-dir", str(paths.features.parent), "--params", str(params)])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sampler"] == "tsqnet" and "gmacs_per_video" in doc and "gflops_per_video" not in doc
    (res,) = doc["results"]
    T = tiny_params.frames.T
    fidx, sal, branches = _stored(paths, "tsqnet", rec.video_id)
    assert res["observed_frames"] == fidx.tolist() and len(res["saliency"]) == T
    np.testing.assert_allclose(res["saliency"], sal, atol=1e-4)
    assert set(res["branch_saliency"]) == set(branches) == {"vqm", "tqm"}
    for b, v in branches.items():
        np.testing.assert_allclose(res["branch_saliency"][b], v, atol=1e-4)
    assert len(res["frames"]) == 3 and set(res["frames"]) <= set(res["observed_frames"]) and "gmacs" in res
    skipped = {s["path"]: s["reason"] for s in doc["skipped"]}
    assert set(skipped) == {str(videos / "notes.txt"), str(videos / "sub" / "results.json")}
    assert "not a video file (extension '.txt'" in skipped[str(videos / "notes.txt")]
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_table_lists_skipped_files(folder, capsys):
    paths, rec, videos, params = folder
    assert main(["predict", str(videos), "--sampler", "Uniform", "--k", "2",
                 "--checkpoint-dir", str(paths.features.parent), "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert "skipped (2 file(s) in the folders given, not predicted):" in out
    assert f"{videos / 'notes.txt'}: not a video file" in out and f"{videos / 'sub' / 'results.json'}:" in out


def test_plot_selection_draws_t_frames_and_scores(folder, tiny_params, tmp_path):
    from components.app.predict import Predictor, plot_selection

    paths, rec, videos, _ = folder
    pred = Predictor.load(tiny_params, paths.features.parent / "samplers" / "nsnet" / "seed0.pt", paths.encoders, 3)
    (r,) = pred.predict([rec.path], keep_frames=True)
    assert r.strip.shape[0] == tiny_params.frames.T and len(r.saliency) == tiny_params.frames.T
    assert set(r.branch_saliency) == {"fsm", "vgm"}
    assert plot_selection([r], tmp_path / "nsnet.png") == 1
    (r2,) = pred.predict([rec.path])
    assert r2.strip is None and r2.saliency == r.saliency  # frames kept only for --figure
