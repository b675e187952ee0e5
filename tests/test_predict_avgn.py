"""``salient predict`` with an AVGN checkpoint on video files (issue 14): the glance's saliency selects
the K frames, AVGN's own head adds its classes and one patch box per selected frame (in the video's
pixels), ``--figure`` draws them; an audio-less video works; a missing or changed f_L is refused with
load_local's message, not a traceback.

* :func:`patch_box` inverts ``resize_center`` (a marker found in the frame cache lands on the marker
  in the video frame, also for a wide frame);
* the CLI's JSON: K boxes inside the frame, each ``P·W/S`` wide, the frames the top-K of the reported
  saliency, valid class names, and the same selection and head prediction as AVGN on the feature store;
* a video remuxed without its audio track: ``has_audio`` false, "no audio track" in JSON and table;
* f_L missing / changed: exit code 2 and the file named.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from components.app.cli import main, prediction_table
from components.data.manifest import read_manifest
from components.data.video import probe, resize_center
from components.app.predict import LOCAL_ENCODER_ERROR, Prediction, Predictor, patch_box, plot_selection

K = 3


def test_patch_box_maps_the_frame_cache_back_to_the_video():
    """A white square at a known place of a W×H frame, found in its S×S frame cache (shorter side
    resized to S, centre cropped), maps back onto the square; a centred patch is centred."""
    S = 48
    for W, H, (x, y) in ((64, 64, (20, 40)), (96, 64, (30, 22)), (60, 120, (41, 70))):
        frame = np.zeros((1, H, W, 3), np.uint8)
        frame[0, y - 3:y + 3, x - 3:x + 3] = 255  # a 6x6 square centred at pixel edge (x, y)
        cache = resize_center(frame, S)[0, 0].numpy()  # [S,S]
        rows, cols = np.nonzero(cache > 0.05)
        w = cache[rows, cols]
        centre = ((cols + 0.5) @ w / w.sum() / S, (rows + 0.5) @ w / w.sum() / S)  # (x_c, y_c) in [0,1]
        x0, y0, x1, y1 = patch_box(centre, 0, S, W, H)
        assert (x0, y0) == pytest.approx((x, y), abs=0.3) and (x1, y1) == (x0, y0)
        x0, y0, x1, y1 = patch_box((0.5, 0.5), 24, S, W, H)
        assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((W / 2, H / 2), abs=0.6)
        assert x1 - x0 == pytest.approx(24 * min(W, H) / S, rel=0.03) and y1 - y0 == pytest.approx(x1 - x0, rel=0.03)


@pytest.fixture(scope="module")
def avgn_setup(tiny_samplers, tiny_params, tmp_path_factory):
    """The tiny pipeline with a trained AVGN, its params as a file, and the test split's videos."""
    import yaml

    from components.core.params import to_dict

    params = tmp_path_factory.mktemp("avgn_predict") / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(tiny_params)))
    videos = [r for r in read_manifest(tiny_samplers.prepared)[0] if r.split == "test"]
    return tiny_samplers, params, videos


def _cli(paths, params, *args: str) -> list[str]:
    return ["predict", *args, "--sampler", "avgn", "--k", str(K), "--top", "3",
            "--checkpoint-dir", str(paths.features.parent), "--params", str(params)]


def test_predict_json_reports_avgn_classes_and_patch_boxes(avgn_setup, tiny_params, tmp_path, capsys):
    from components.evaluation.avgn_eval import head_predictions
    from components.store.sampler_data import load_split, sampler_keys
    from components.training.sampler_training import load_sampler
    from components.store.feature_store import FeatureStore

    paths, params, videos = avgn_setup
    fig = tmp_path / "frames.png"
    assert main([*_cli(paths, params, *[v.path for v in videos], "--json", "--figure", str(fig))]) == 0
    doc = json.loads(capsys.readouterr().out)
    store = FeatureStore(paths.features)
    P, S = tiny_params.avgn.patch_size, tiny_params.frames.full_size
    assert doc["sampler"] == "avgn" and doc["avgn_head_gmacs_per_video"] > 0
    for v, res in zip(videos, doc["results"]):
        a = res["avgn"]
        W, H = a["frame_size"]
        assert (W, H) == (probe(v.path).width, probe(v.path).height) and a["patch_px"] == P
        assert len(a["patches"]) == K and [q["frame"] for q in a["patches"]] == res["frames"]
        for q in a["patches"]:
            x0, y0, x1, y1 = q["box"]
            assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H, q
            assert x1 - x0 == pytest.approx(P * W / S, abs=0.02) and y1 - y0 == pytest.approx(P * H / S, abs=0.02)
        sal, seen = np.asarray(a["saliency"]), np.asarray(a["observed_frames"])
        top = seen[np.argsort(-sal, kind="stable")[:K]]  # most salient first
        assert res["frames"] == sorted(top.tolist())
        assert sorted(a["patches"], key=lambda q: q["rank"]) == [
            next(q for q in a["patches"] if q["frame"] == n) for n in top]
        probs = [c["prob"] for c in a["classes"]]
        assert {c["class"] for c in a["classes"]} <= set(store.classes) and len(probs) == 3
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)  # C=3: all
        assert a["gmacs"] == doc["avgn_head_gmacs_per_video"] and a["glance_frames"] == tiny_params.avgn.t_g
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the online path computes what extract stored: the same selection and head prediction as AVGN there
    model = load_sampler(paths.features.parent / "samplers" / "avgn" / "seed0.pt")
    data, ids = load_split(store, "test", keys=sampler_keys(model, training=True))
    ref = head_predictions(model, data, K)
    fidx = data["frame_indices"].numpy()
    by_id = {i: n for n, i in enumerate(ids)}
    for v, res in zip(videos, doc["results"]):
        n = by_id[v.video_id]
        assert res["frames"] == sorted(fidx[n][ref["idx"][n]].tolist())
        assert res["avgn"]["has_audio"] == bool(data["has_audio"][n])
        p_k = ref["probs"][n, K - 1]
        got = {c["class"]: c["prob"] for c in res["avgn"]["classes"]}
        assert got == pytest.approx({store.classes[c]: float(p_k[c]) for c in range(len(p_k))}, abs=2e-3)


def _strip_audio(src, dst):
    """``src`` remuxed without its audio track (the very same video packets)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = inp.streams.video[0]
        ovs = out.add_stream_from_template(vs)
        for pkt in inp.demux(vs):
            if pkt.dts is None:
                continue
            pkt.stream = ovs
            out.mux(pkt)
    return dst


def test_a_video_without_audio_works(avgn_setup, tiny_params, tmp_path):
    paths, _, videos = avgn_setup
    src = next(v for v in videos if v.has_audio)
    silent = _strip_audio(src.path, tmp_path / "silent.mp4")
    assert not probe(silent).has_audio
    pred = Predictor.load(tiny_params, paths.features.parent / "samplers" / "avgn" / "seed0.pt", paths.encoders, K)
    with_audio, without = pred.predict([src.path, str(silent)], top=3, keep_frames=True)
    assert isinstance(without, Prediction) and without.avgn is not None
    assert with_audio.avgn.has_audio and not without.avgn.has_audio
    d = without.as_dict()["avgn"]
    assert d["has_audio"] is False and "no audio track" in d["note"] and len(d["patches"]) == K
    table = prediction_table([with_audio, without])
    assert "AVGN's own head" in table and table.count("[no audio track]") == 1
    assert "silent.mp4" in table.split("AVGN's own head")[1]
    assert plot_selection([with_audio, without], tmp_path / "frames.png") == 2


def test_a_missing_or_changed_local_encoder_is_named(avgn_setup, tmp_path, capsys):
    paths, params, videos = avgn_setup
    ck = torch.load(paths.features.parent / "samplers" / "avgn" / "seed0.pt", map_location="cpu", weights_only=False)
    rec = tmp_path / "recognizer.pt"
    shutil.copy(ck["kwargs"]["local_path"], rec)
    bad = tmp_path / "avgn.pt"
    for case in ("missing", "changed"):
        ck["kwargs"]["local_path"] = str(tmp_path / "gone.pt") if case == "missing" else str(rec)
        if case == "changed":
            with open(rec, "ab") as f:
                f.write(b"\0")
        torch.save(ck, bad)
        assert main([*_cli(paths, params, videos[0].path, "--checkpoint", str(bad))]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"error: {bad}: {LOCAL_ENCODER_ERROR}" in err, err
        assert (str(tmp_path / "gone.pt") if case == "missing" else str(rec)) in err
        assert ("is missing" if case == "missing" else "changed since") in err and "retrain it (`dvc" not in err
