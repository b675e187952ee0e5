"""Issue 27 item 1: every artifact a stage reads is verified against a digest written when it was saved.

Each fault is injected for real into a private copy of the tiny pipeline's workspace (bytes zeroed in
the middle of a file with its layout intact, random bytes, a truncated file); before the digests,
the zeroed recognizer loaded silently (``salient predict --json`` exited 0 with changed
probabilities), the zeroed store array gave ``headroom`` a wrong oracle top-1, and random or
truncated encoder files raised a torch traceback that never named the file.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from components.app.cli import main
from components.store.features import load_frame_model
from components.core.integrity import CheckpointError, load_checkpoint, save_checkpoint
from components.core.paths import Paths
from components.store.feature_store import FeatureStore, StoreError

DIGESTS = r"\([a-z0-9]+ [0-9a-f]{16} != (saved|recorded) [0-9a-f]{16}\)"


def zero_middle(path: Path, n: int, lo: int = 0, size: int | None = None) -> None:
    """Overwrite ``n`` bytes (at most a quarter of the ``size`` bytes from ``lo``, default: the rest of the
    file) in the middle of that range of ``path`` with zeros, in place."""
    size = path.stat().st_size - lo if size is None else size
    n = min(n, size // 4)
    start = lo + size // 2 - n // 2
    with open(path, "r+b") as f:
        f.seek(start)
        old = f.read(n)
        f.seek(start)
        f.write(bytes(n))
    assert old != bytes(n), f"{path}: the bytes zeroed were zeros already"


def zero_weights(path: Path, n: int) -> None:
    """Zero ``n`` bytes in the middle of the largest tensor of a ``torch.save`` zip (its layout stays intact)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        big = max(z.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as f:  # the data follow the member's local header (30 bytes + name + extra)
        f.seek(big.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), "<u2")
    zero_middle(path, n, lo=big.header_offset + 30 + int(name_len) + int(extra_len), size=big.file_size)


@pytest.fixture
def ws(tiny_pipeline, tmp_path) -> Paths:
    """A private copy of the tiny workspace (data/ only) to damage."""
    root = tmp_path / "ws"
    shutil.copytree(Path(tiny_pipeline.features).parent, root / "data")
    return Paths().under(root)


def test_a_damaged_encoder_checkpoint_is_refused_naming_the_file(ws):
    for role in ("light", "recognizer", "audio"):
        f = ws.encoders / f"{role}.pt"
        good = f.read_bytes()
        load_frame_model(f)  # the real one loads
        zero_middle(f, 64 << 10)
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(f))}: (weights changed since they were saved "
                                                  rf"{DIGESTS}|not a loadable encoder checkpoint)"):
            load_frame_model(f)
        for damaged in (np.random.default_rng(0).bytes(len(good)), good[: len(good) // 2], b""):
            f.write_bytes(damaged)
            with pytest.raises(CheckpointError, match=rf"{re.escape(str(f))}: not a loadable encoder checkpoint"):
                load_frame_model(f)
        f.write_bytes(good)
    # the recognizer (the one of the issue): its zip layout survives, only the digest catches it
    f = ws.encoders / "recognizer.pt"
    zero_weights(f, 64 << 10)
    with pytest.raises(CheckpointError, match=rf"recognizer\.pt: weights changed since they were saved {DIGESTS}"):
        load_frame_model(f)


def test_a_tsi_checkpoint_is_verified_too(tmp_path):
    from components.models.recognizers import create_recognizer, load_recognizer

    cfg = {"arch": "resnet10t", "num_classes": 3, "num_frames": 2}
    model = create_recognizer("tsi", **cfg)
    f = tmp_path / "tsi.pt"
    save_checkpoint({"name": "tsi", "cfg": cfg, "state_dict": model.state_dict(), "classes": ["a", "b", "c"]}, f)
    load_recognizer(f)
    zero_weights(f, 64 << 10)
    with pytest.raises(CheckpointError, match=rf"tsi\.pt: weights changed since they were saved {DIGESTS}"):
        load_recognizer(f)
    ck = torch.load(f, weights_only=False)
    del ck["state_digest"]
    torch.save(ck, f)  # written before checkpoints carried a digest
    with pytest.raises(CheckpointError, match=r"tsi\.pt: no weight digest"):
        load_checkpoint(f)


def test_predict_refuses_a_zeroed_recognizer(ws, tiny_params, capsys):
    from components.data.manifest import read_manifest
    from components.stages import train_sampler

    train_sampler.run(tiny_params, ws, "uniform")
    video = [r.path for r in read_manifest(ws.prepared)[0] if r.split == "test"][0]
    video = str(ws.prepared / video)
    args = ["predict", video, "--sampler", "uniform", "--k", "2", "--checkpoint-dir", str(ws.features.parent),
            "--json", *[x for s in _tiny_sets() for x in ("--set", s)]]
    assert main(args) == 0
    capsys.readouterr()
    rec = ws.encoders / "recognizer.pt"
    zero_weights(rec, 64 << 10)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: {rec}: weights changed since they were saved" in err, err
    assert re.search(DIGESTS, err), err


def _tiny_sets() -> list[str]:
    from tests.conftest import TINY

    return [s for s in TINY if s.startswith(("frames.", "encoders.", "fusion.", "evaluate."))]


def test_headroom_refuses_a_zeroed_store_array(ws, tiny_params):
    from components.stages import headroom

    headroom.run(tiny_params, ws)  # intact: runs (and this process has checked the arrays once)
    f = ws.features / "test" / "rec_logits.npy"
    zero_middle(f, 4 << 10, lo=128)  # the data, not the .npy header
    with pytest.raises(StoreError, match=rf"{re.escape(str(f))}: content changed since it was written {DIGESTS}"):
        headroom.run(tiny_params, ws)


def test_store_files_without_a_digest_or_added_later_are_refused(ws):
    meta_path = ws.features / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert {"test/rec_logits.npy", "train/ids.txt", "text_objects.npy"} <= set(meta["digests"])
    del meta["digests"]["test/gt.npy"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"test/gt\.npy: no content digest recorded"):
        FeatureStore(ws.features).array("test", "gt")


def test_verify_lists_every_bad_file(ws, capsys):
    root = ws.features.parents[1]
    assert main(["verify", "--workspace", str(root)]) == 0
    out = capsys.readouterr().out
    n = int(re.search(r"(\d+) files checked", out).group(1))
    assert n >= 3 + len(json.loads((ws.features / "meta.json").read_text())["digests"])
    zero_middle(ws.features / "test" / "rec_logits.npy", 4 << 10, lo=128)
    light = ws.encoders / "light.pt"
    light.write_bytes(light.read_bytes()[:1000])
    (ws.features / "val" / "extra.npy").write_bytes(b"x")
    assert main(["verify", "--workspace", str(root), "--json"]) == 1
    bad = {Path(r["path"]).relative_to(root).as_posix(): r["problem"] for r in json.loads(capsys.readouterr().out)["bad"]}
    assert set(bad) == {"data/features/test/rec_logits.npy", "data/encoders/light.pt", "data/features/val/extra.npy"}
    assert "not a loadable" in bad["data/encoders/light.pt"] and "not recorded" in bad["data/features/val/extra.npy"]
    assert re.fullmatch(r"sha256 [0-9a-f]{16} != recorded [0-9a-f]{16}", bad["data/features/test/rec_logits.npy"])


def test_a_checkpoint_written_before_the_package_move_still_loads(tmp_path, monkeypatch):
    """Checkpoints pickle config classes by module path; one written when ``AVGNParams`` lived in
    ``components.params`` (before the packages by role) loads, and the class is today's."""
    import importlib
    import sys

    import components.core.params as params_mod
    from components.core.integrity import MOVED_MODULES
    from components.core.params import AVGNParams

    for old, new in MOVED_MODULES.items():  # every target exists
        importlib.import_module(new)
    monkeypatch.setitem(sys.modules, "components.params", params_mod)  # write as the old code did
    monkeypatch.setattr(AVGNParams, "__module__", "components.params")
    path = tmp_path / "old.pt"
    save_checkpoint({"state_dict": {"w": torch.ones(2)}, "kwargs": {"params": AVGNParams(patch_size=64)}}, path)
    assert b"components.params" in path.read_bytes()  # the old path is in the pickle
    monkeypatch.undo()
    assert "components.params" not in sys.modules
    ck = load_checkpoint(path, "sampler checkpoint")
    assert type(ck["kwargs"]["params"]) is AVGNParams and ck["kwargs"]["params"].patch_size == 64
    assert torch.equal(ck["state_dict"]["w"], torch.ones(2))
