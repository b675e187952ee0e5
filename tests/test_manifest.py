import numpy as np
import pytest

from components.data.manifest import (GT_GENERIC, GT_LOWQ, VideoRecord, decode_gt, encode_gt, read_manifest,
                                      write_manifest)


def test_gt_run_length_roundtrip_by_hand():
    codes = [GT_GENERIC, GT_GENERIC, 3, 3, 3, GT_LOWQ, 1]
    assert encode_gt(codes) == "-1:2;3:3;-2:1;1:1"
    assert decode_gt("-1:2;3:3;-2:1;1:1").tolist() == codes
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 4, 500)
    assert (decode_gt(encode_gt(x)) == x).all()


def _rec(i, split="train", labels=(0,), gt=""):
    return VideoRecord(f"v{i}", f"videos/v{i}.mp4", labels, split, 10, 25.0, 0.4, 64, 64, True, gt)


def test_manifest_roundtrip_and_salient_mask(tmp_path):
    recs = [_rec(0, gt="-1:2;0:3;1:5"), _rec(1, "test", (0, 1))]
    write_manifest(tmp_path, recs, ["a", "b"])
    back, classes = read_manifest(tmp_path)
    assert classes == ["a", "b"]
    assert back[0].labels == (0,) and back[1].labels == (0, 1)
    assert back[0].path == str((tmp_path / "videos/v0.mp4").resolve())
    assert back[0].salient_mask().tolist() == [False] * 2 + [True] * 3 + [False] * 5
    assert back[1].gt_codes() is None


@pytest.mark.parametrize("recs, msg", [
    ([_rec(0, split="training")], "split 'training'"),
    ([_rec(0, labels=(2,))], "outside"),
    ([_rec(0), _rec(0)], "duplicate video ids"),
])
def test_manifest_rejects_bad_rows(tmp_path, recs, msg):
    with pytest.raises(ValueError, match=msg):
        write_manifest(tmp_path, recs, ["a", "b"])
    assert not (tmp_path / "manifest.csv").exists()
