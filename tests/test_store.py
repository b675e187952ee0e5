"""Feature store: streamed writes, resume after interruption, atomic publish, refusal of partial stores."""
import json

import numpy as np
import pytest

from components.store.feature_store import ArraySpec, FeatureStore, StoreError, StoreWriter

SPECS = {"x": ArraySpec((4, 3), "float32"), "valid": ArraySpec((), "bool")}


def _fill(sw, start, stop):
    for i in range(start, stop):
        sw.write(i, {"x": np.full((4, 3), i, np.float32), "valid": np.bool_(True)})


def test_write_finalize_read(tmp_path):
    w = StoreWriter(tmp_path / "feat", "fp1")
    sw = w.split("train", ["a", "b", "c"], SPECS)
    _fill(sw, 0, 3)
    sw.checkpoint(3)
    sw.close()
    w.save_array("text", np.eye(2))
    out = w.finalize({"T": 4, "classes": ["p", "q"]})
    s = FeatureStore(out)
    assert s.T == 4 and s.ids("train") == ["a", "b", "c"]
    x = s.array("train", "x")
    assert isinstance(x, np.memmap) and x.shape == (3, 4, 3) and x[2, 0, 0] == 2
    assert not (tmp_path / "feat.partial").exists()
    with pytest.raises(StoreError, match="no split 'test'"):
        s.array("test", "x")


def test_partial_store_is_refused_and_resume_continues(tmp_path):
    w = StoreWriter(tmp_path / "feat", "fp1")
    sw = w.split("train", ["a", "b", "c", "d"], SPECS)
    _fill(sw, 0, 2)
    sw.checkpoint(2)
    _fill(sw, 2, 3)  # written but not checkpointed: must be redone
    del sw, w  # "killed"
    with pytest.raises(StoreError, match="no complete feature store.*unfinished extraction"):
        FeatureStore(tmp_path / "feat")
    w2 = StoreWriter(tmp_path / "feat", "fp1")
    sw2 = w2.split("train", ["a", "b", "c", "d"], SPECS)
    assert sw2.done == 2
    assert np.asarray(sw2.arrays["x"])[1, 0, 0] == 1  # earlier rows kept
    _fill(sw2, 2, 4)
    sw2.checkpoint(4)
    sw2.close()
    s = FeatureStore(w2.finalize({"T": 4, "classes": []}))
    assert np.asarray(s.array("train", "x"))[:, 0, 0].tolist() == [0, 1, 2, 3]


def test_other_fingerprint_starts_over_and_unfinished_split_cannot_finalize(tmp_path):
    w = StoreWriter(tmp_path / "feat", "fp1")
    sw = w.split("train", ["a", "b"], SPECS)
    _fill(sw, 0, 1)
    sw.checkpoint(1)
    w2 = StoreWriter(tmp_path / "feat", "fp2")
    sw2 = w2.split("train", ["a", "b"], SPECS)
    assert sw2.done == 0
    with pytest.raises(StoreError, match="0 of 2 rows"):
        sw2.checkpoint(0)
        w2.finalize({"T": 4, "classes": []})
    assert not (tmp_path / "feat" / "meta.json").exists()


def test_incomplete_meta_is_refused(tmp_path):
    d = tmp_path / "feat"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"complete": False, "version": 1}))
    with pytest.raises(StoreError, match="incomplete"):
        FeatureStore(d)


def test_row_shape_checked(tmp_path):
    sw = StoreWriter(tmp_path / "feat", "fp").split("train", ["a"], SPECS)
    with pytest.raises(StoreError, match="row shape"):
        sw.write(0, {"x": np.zeros((3, 3)), "valid": True})


def test_a_truncated_or_replaced_array_is_named(tmp_path):
    """Issue 12 item 5: a half-truncated array gave numpy's 'mmap length is greater than file size' with
    no path; an array of another shape loaded silently."""
    w = StoreWriter(tmp_path / "feat", "fp1")
    sw = w.split("train", ["a", "b", "c"], SPECS)
    _fill(sw, 0, 3)
    sw.checkpoint(3)
    sw.close()
    out = w.finalize({"T": 4, "classes": ["p", "q"]})
    f = out / "train" / "x.npy"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"train/x\.npy: unreadable .*rerun"):
        FeatureStore(out).array("train", "x")
    np.save(f, np.zeros((2, 4, 3), np.float32))  # a valid .npy, but not what extract wrote
    with pytest.raises(StoreError, match=r"train/x\.npy: shape \(2, 4, 3\) float32, but meta.json records \(3, 4, 3\)"):
        FeatureStore(out).array("train", "x")
    assert FeatureStore(out).array("train", "valid").shape == (3,)


def test_a_full_disk_is_an_error_naming_the_file_not_a_sigbus(tmp_path):
    """Issue 12 item 6: on a full disk extract died of SIGBUS (exit 135, no message) when it wrote a row
    into its sparse memmap. The store now allocates its arrays up front: a real 1 MiB tmpfs, a 2 MiB array."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        w = StoreWriter(mnt / "feat", "fp1")
        big = {"x": ArraySpec((512, 256), "float32")}  # 4 videos x 512 KiB
        with pytest.raises(StoreError, match=r"feat.partial/train/x.npy: no space left for 2.0 MiB"):
            w.split("train", ["a", "b", "c", "d"], big)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
