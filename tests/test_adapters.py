"""Tests of components/data/adapters/ (one module per dataset) on tiny hand-written annotation files.

Adapters only list and resolve files (no decoding), so empty placeholder files stand in for videos.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from components.data import adapters as A
from components.data.adapters import AdapterResult, Candidate
from components.core.params import DataParams


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def params(**kw) -> DataParams:
    return DataParams(**kw)


def by_id(res: AdapterResult) -> dict[str, Candidate]:
    return {c.video_id: c for c in res.candidates}


def check_result(res: AdapterResult):
    assert isinstance(res, AdapterResult)
    for c in res.candidates:
        assert os.path.isabs(c.path) and Path(c.path).exists()
        assert c.split in ("train", "val", "test")
        assert c.labels and all(0 <= i < len(res.classes) for i in c.labels)
    for row in res.missing:
        assert row["reason"] == "missing"
        assert {"path", "video_id", "split", "reason", "detail"} <= set(row)
    assert len({c.video_id for c in res.candidates}) == len(res.candidates)


# ----------------------------------------------------------------------------------- registry
def test_registry_lists_the_builtin_adapters():
    assert {"activitynet", "kinetics", "ucf101", "fcvid", "csv"} <= set(A.list_adapters())
    assert A.list_adapters() == sorted(A.ADAPTERS)
    assert A.get_adapter("csv") is A.ADAPTERS["csv"]


def test_get_adapter_unknown_lists_valid_names():
    with pytest.raises(ValueError) as err:
        A.get_adapter("nope")
    assert "nope" in str(err.value) and "activitynet" in str(err.value) and "ucf101" in str(err.value)
    with pytest.raises(ValueError, match=r"data.dataset: unknown dataset adapter 'kinetic' \(did you mean 'kinetics'\?\)"):
        A.get_adapter("kinetic")  # the prepare stage's first call: a typo stops it before anything is read


def test_a_dataset_added_as_one_module_is_found_by_name(tmp_path):
    """A new dataset is one new file in components/data/adapters/ and data.dataset: <name>; nothing else."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "zz_unit_test_listing.py").write_text(
        "from components.data.adapters import AdapterResult, register_adapter\n\n\n"
        "@register_adapter('zz_listing')\ndef listing(p):\n    return AdapterResult([], ['a'], [])\n")
    # the package's folder extended by tmp_path: the same discovery as a file dropped into the source tree,
    # without touching the checkout other tests hash
    code = (f"import components.data.adapters as A; A.__path__.append({str(tmp_path)!r}); "
            "from components.core.params import DataParams; "
            "print(A.get_adapter('zz_listing')(DataParams(dataset='zz_listing')).classes, A.list_adapters())")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("['a']") and "zz_listing" in out.stdout and "ucf101" in out.stdout


def test_register_adapter_from_another_module():
    @A.register_adapter("unit_test_dummy")
    def dummy(p):
        return AdapterResult([], ["a"], [])
    try:
        assert A.get_adapter("unit_test_dummy") is dummy
        assert "unit_test_dummy" in A.list_adapters()
    finally:
        A.ADAPTER_REGISTRY.unregister("unit_test_dummy")


def test_stable_fraction_is_sha1_based_and_uniform():
    key = "v_abc"
    expected = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2 ** 64
    assert A.stable_fraction(key) == expected
    vals = [A.stable_fraction(f"video{i}") for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in vals)
    assert 0.08 < sum(v < 0.1 for v in vals) / len(vals) < 0.12
    assert A.carve_val("x", 0.0) == "train" and A.carve_val("x", 1.0) == "val"


# -------------------------------------------------------------------------------- activitynet
def _anet(tmp_path: Path, n_train: int = 30):
    root = tmp_path / "anet"
    db = {
        "aaaaaaaaaaa": {"subset": "training", "annotations": [{"label": "Surfing", "segment": [1, 5]}]},
        "bbbbbbbbbbb": {"subset": "training", "annotations": [
            {"label": "Cooking", "segment": [0, 3]}, {"label": "Baking", "segment": [4, 9]},
            {"label": "Cooking", "segment": [10, 12]}]},
        "ccccccccccc": {"subset": "validation", "annotations": [{"label": "Surfing", "segment": [2, 3]}]},
        "ddddddddddd": {"subset": "testing", "annotations": []},
        "eeeeeeeeeee": {"subset": "validation", "annotations": [{"label": "Archery", "segment": [0, 1]}]},
        "fffffffffff": {"subset": "training", "annotations": [{"label": "Surfing", "segment": [0, 1]}]},
    }
    for i in range(n_train):
        db[f"t{i:010d}"] = {"subset": "training", "annotations": [{"label": "Surfing", "segment": [0, 1]}]}
        touch(root / f"v_t{i:010d}.mp4")
    for vid in db:
        db[vid].update(url=f"https://www.youtube.com/watch?v={vid}", duration=10.0)
    touch(root / "v_aaaaaaaaaaa.mp4")
    touch(root / "bbbbbbbbbbb.mkv")                     # bare id, other extension
    touch(root / "sub" / "x_ccccccccccc.webm")          # *{id}.* somewhere under root
    touch(root / "v_ddddddddddd.mp4")                   # testing: skipped
    touch(root / "v_eeeeeeeeeee.mp4")
    touch(root / "v_eeeeeeeeeee.avi")                   # two files: mp4 preferred
    # fffffffffff has no file: missing
    ann = tmp_path / "activity_net.v1-3.min.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": [{"nodeName": "Root"}], "database": db}))
    return root, ann, db


def test_activitynet(tmp_path):
    root, ann, _ = _anet(tmp_path)
    res = A.get_adapter("activitynet")(params(dataset="activitynet", root=str(root), annotations=str(ann)))
    check_result(res)
    assert res.classes == ["Archery", "Baking", "Cooking", "Surfing"]  # union of labels, not taxonomy
    c = by_id(res)
    assert "ddddddddddd" not in c  # testing subset: no labels
    assert c["aaaaaaaaaaa"].path == str(root / "v_aaaaaaaaaaa.mp4") and c["aaaaaaaaaaa"].labels == (3,)
    assert c["bbbbbbbbbbb"].path == str(root / "bbbbbbbbbbb.mkv")
    assert c["bbbbbbbbbbb"].labels == (1, 2)  # multi-label, distinct
    assert c["ccccccccccc"].path == str(root / "sub" / "x_ccccccccccc.webm")
    assert c["ccccccccccc"].split == "test" and c["eeeeeeeeeee"].split == "test"  # validation -> test
    assert c["eeeeeeeeeee"].path.endswith(".mp4")
    assert all(x.split in ("train", "val") for k, x in c.items() if k not in ("ccccccccccc", "eeeeeeeeeee"))
    assert [r["video_id"] for r in res.missing] == ["fffffffffff"]
    assert res.missing[0]["split"] in ("train", "val") and "fffffffffff" in res.missing[0]["path"]


def test_activitynet_val_carving_deterministic(tmp_path):
    root, ann, db = _anet(tmp_path, n_train=60)
    p = params(dataset="activitynet", root=str(root), annotations=str(ann), val_fraction=0.3)
    first = {c.video_id: c.split for c in A.get_adapter("activitynet")(p).candidates}
    items = list(db.items())
    random.Random(1).shuffle(items)  # order of the JSON must not matter
    ann.write_text(json.dumps({"taxonomy": [], "database": dict(items)}))
    second = {c.video_id: c.split for c in A.get_adapter("activitynet")(p).candidates}
    assert first == second
    train_ids = [k for k, v in db.items() if v["subset"] == "training" and k in first]
    expected = {k: ("val" if A.stable_fraction(k) < 0.3 else "train") for k in train_ids}
    assert {k: first[k] for k in train_ids} == expected
    n_val = sum(v == "val" for v in expected.values())
    assert 0 < n_val < len(train_ids)


def test_activitynet_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        A.get_adapter("activitynet")(params(dataset="activitynet", root=str(tmp_path), annotations=str(tmp_path / "no.json")))


# ----------------------------------------------------------------------------------- kinetics
def test_kinetics(tmp_path):
    root = tmp_path / "k"
    ann = tmp_path / "kinetics.csv"
    rows = [
        "label,youtube_id,time_start,time_end,split",
        "abseiling,AAAAAAAAAAA,10,20,train",
        "abseiling,AAAAAAAAAAA,30,40,train",          # second clip of the same YouTube video
        "air drumming,BBBBBBBBBBB,0,10,train",
        "air drumming,CCCCCCCCCCC,5.0,15.0,val",
        "abseiling,DDDDDDDDDDD,1,11,validate",
        "abseiling,EEEEEEEEEEE,2,12,test",             # test rows skipped
        "air drumming,FFFFFFFFFFF,3,13,train",         # missing file
    ]
    ann.write_text("\n".join(rows) + "\n")
    touch(root / "train" / "abseiling" / "AAAAAAAAAAA_000010_000020.mp4")
    touch(root / "AAAAAAAAAAA_000030_000040.mp4")                  # flat layout
    touch(root / "BBBBBBBBBBB.mp4")                                # bare youtube id
    touch(root / "val" / "air drumming" / "CCCCCCCCCCC_000005_000015.mp4")
    touch(root / "elsewhere" / "CCCCCCCCCCC_000005_000015.mp4")   # duplicate stem: split/label folder wins
    touch(root / "validate" / "abseiling" / "DDDDDDDDDDD_000001_000011.mkv")
    touch(root / "test" / "abseiling" / "EEEEEEEEEEE_000002_000012.mp4")
    res = A.get_adapter("kinetics")(params(dataset="kinetics", root=str(root), annotations=str(ann),
                                           val_fraction=0.5))
    check_result(res)
    assert res.classes == ["abseiling", "air drumming"]
    c = by_id(res)
    assert set(c) == {"AAAAAAAAAAA_000010_000020", "AAAAAAAAAAA_000030_000040", "BBBBBBBBBBB_000000_000010",
                      "CCCCCCCCCCC_000005_000015", "DDDDDDDDDDD_000001_000011"}
    assert c["AAAAAAAAAAA_000030_000040"].path == str(root / "AAAAAAAAAAA_000030_000040.mp4")
    assert c["BBBBBBBBBBB_000000_000010"].path == str(root / "BBBBBBBBBBB.mp4")
    assert c["CCCCCCCCCCC_000005_000015"].path == str(root / "val" / "air drumming" / "CCCCCCCCCCC_000005_000015.mp4")
    assert c["CCCCCCCCCCC_000005_000015"].split == "test" and c["DDDDDDDDDDD_000001_000011"].split == "test"
    assert c["CCCCCCCCCCC_000005_000015"].labels == (1,) and c["DDDDDDDDDDD_000001_000011"].labels == (0,)
    # carving keyed by YouTube id: both clips of AAAAAAAAAAA share a split, the one stable_fraction gives
    a_split = "val" if A.stable_fraction("AAAAAAAAAAA") < 0.5 else "train"
    assert c["AAAAAAAAAAA_000010_000020"].split == c["AAAAAAAAAAA_000030_000040"].split == a_split
    assert [(r["video_id"], r["reason"]) for r in res.missing] == [("FFFFFFFFFFF_000003_000013", "missing")]


def test_kinetics_bad_header(tmp_path):
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id\nx,y\n")
    with pytest.raises(ValueError, match="header"):
        A.get_adapter("kinetics")(params(dataset="kinetics", root=str(tmp_path), annotations=str(ann)))


# ------------------------------------------------------------------------------------- ucf101
UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]


def _ucf(tmp_path: Path, groups=range(8, 26), clips=3):
    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES)))
    train, test = [], []
    for ci, cls in enumerate(UCF_CLASSES):
        file_cls = "HandStandPushups" if cls == "HandstandPushups" else cls  # the real dataset's quirk
        for g in list(groups) + [1, 2]:
            for k in range(1, clips + 1):
                rel = f"{cls}/v_{file_cls}_g{g:02d}_c{k:02d}.avi"
                touch(root / rel)
                (test if g in (1, 2) else train).append((rel, ci + 1))
    (lists / "trainlist01.txt").write_text("".join(f"{r} {i}\n" for r, i in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r, _ in test))
    return root, lists, train, test


def test_ucf101_lists_labels_and_test_split(tmp_path):
    root, lists, train, test = _ucf(tmp_path)
    os.remove(root / "Archery" / "v_Archery_g01_c02.avi")
    res = A.get_adapter("ucf101")(params(dataset="ucf101", root=str(root), annotations=str(lists)))
    check_result(res)
    assert res.classes == UCF_CLASSES  # classInd order = official index - 1
    c = by_id(res)
    assert len(c) == len(train) + len(test) - 1
    assert c["v_ApplyEyeMakeup_g01_c01"].split == "test" and c["v_ApplyEyeMakeup_g01_c01"].labels == (0,)
    assert c["v_HandStandPushups_g02_c03"].labels == (2,)  # testlist: class from the folder name
    assert c["v_Archery_g08_c01"].labels == (1,)
    assert c["v_Archery_g08_c01"].path == str(root / "Archery" / "v_Archery_g08_c01.avi")
    assert [(r["video_id"], r["split"]) for r in res.missing] == [("v_Archery_g01_c02", "test")]


def test_ucf101_val_carved_by_group(tmp_path):
    root, lists, _, _ = _ucf(tmp_path, clips=4)
    p = params(dataset="ucf101", root=str(root), annotations=str(lists), val_fraction=0.3)
    res = A.get_adapter("ucf101")(p)
    groups: dict[tuple[int, str], set[str]] = {}
    for c in res.candidates:
        if c.split == "test":
            continue
        g = c.video_id.rsplit("_", 2)[1]
        groups.setdefault((c.labels[0], g), set()).add(c.split)
    assert all(len(s) == 1 for s in groups.values())  # a group never straddles train / val
    for (label, g), s in groups.items():
        assert s == {"val" if A.stable_fraction(f"{UCF_CLASSES[label]}_{g}") < 0.3 else "train"}
    n_val = sum(s == {"val"} for s in groups.values())
    assert 0 < n_val < len(groups)
    assert {c.video_id: c.split for c in A.get_adapter("ucf101")(p).candidates} == {c.video_id: c.split for c in res.candidates}


def test_ucf101_fold_and_flat_layout(tmp_path):
    root, lists = tmp_path / "flat", tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist02.txt").write_text("Archery/v_Archery_g01_c01.avi 2\n")
    (lists / "testlist02.txt").write_text("v_ApplyEyeMakeup_g09_c01.avi\n")  # no class folder
    touch(root / "v_Archery_g01_c01.mp4")            # flat and converted to mp4
    touch(root / "v_ApplyEyeMakeup_g09_c01.avi")
    res = A.get_adapter("ucf101")(params(dataset="ucf101", root=str(root), annotations=str(lists), split_fold=2))
    c = by_id(res)
    assert c["v_Archery_g01_c01"].path == str(root / "v_Archery_g01_c01.mp4") and c["v_Archery_g01_c01"].labels == (1,)
    assert c["v_ApplyEyeMakeup_g09_c01"].labels == (0,) and c["v_ApplyEyeMakeup_g09_c01"].split == "test"
    with pytest.raises(FileNotFoundError, match="trainlist01"):
        A.get_adapter("ucf101")(params(dataset="ucf101", root=str(root), annotations=str(lists), split_fold=1))


# -------------------------------------------------------------------------------------- fcvid
def test_fcvid(tmp_path):
    root, ann = tmp_path / "videos", tmp_path / "fcvid"
    ann.mkdir()
    (ann / "classes.txt").write_text("basketball\nbirthday\ncooking\n")
    (ann / "train.txt").write_text("a/v1.mp4 0\na/v2.mp4 1,2\nb/v3.mp4 2, 0\n# comment\n\nb/gone.mp4 1\n")
    (ann / "test.txt").write_text("c/v4.mp4 1\n")
    for rel in ("a/v1.mp4", "a/v2.mp4", "b/v3.mp4", "c/v4.mp4"):
        touch(root / rel)
    res = A.get_adapter("fcvid")(params(dataset="fcvid", root=str(root), annotations=str(ann), val_fraction=0.5))
    check_result(res)
    assert res.classes == ["basketball", "birthday", "cooking"]
    c = by_id(res)
    assert set(c) == {"a/v1", "a/v2", "b/v3", "c/v4"}
    assert c["a/v2"].labels == (1, 2) and c["b/v3"].labels == (0, 2)
    assert c["c/v4"].split == "test"
    for vid in ("a/v1", "a/v2", "b/v3"):
        assert c[vid].split == ("val" if A.stable_fraction(vid) < 0.5 else "train")
    assert [r["video_id"] for r in res.missing] == ["b/gone"]


def test_fcvid_bad_label_index(tmp_path):
    ann = tmp_path / "fcvid"
    ann.mkdir()
    (ann / "classes.txt").write_text("a\nb\n")
    (ann / "train.txt").write_text("x.mp4 5\n")
    (ann / "test.txt").write_text("")
    with pytest.raises(ValueError, match="outside"):
        A.get_adapter("fcvid")(params(dataset="fcvid", root=str(tmp_path), annotations=str(ann)))


# ---------------------------------------------------------------------------------------- csv
def test_csv_with_split_column(tmp_path):
    root = tmp_path / "root"
    ann = tmp_path / "list.csv"
    absolute = touch(tmp_path / "elsewhere" / "abs.mp4")
    for rel in ("x/a.mp4", "x/b.mp4", "y/c.mkv"):
        touch(root / rel)
    ann.write_text("path,label,split\n"
                   "x/a.mp4,dog,train\n"
                   "x/b.mp4,cat;dog,validation\n"
                   "y/c.mkv,cat,test\n"
                   f"{absolute},bird,train\n"
                   "x/a.mp4,bird,train\n"          # repeated row: labels merged
                   "x/gone.mp4,cat,train\n")
    res = A.get_adapter("csv")(params(dataset="csv", root=str(root), annotations=str(ann)))
    check_result(res)
    assert res.classes == ["bird", "cat", "dog"]
    c = by_id(res)
    assert c["x/a"].labels == (0, 2) and c["x/a"].split == "train" and c["x/a"].path == str(root / "x/a.mp4")
    assert c["x/b"].labels == (1, 2) and c["x/b"].split == "val"
    assert c["y/c"].split == "test"
    abs_id = str(absolute.with_suffix("")).lstrip("/")
    assert c[abs_id].path == str(absolute)
    assert [(r["video_id"], r["split"]) for r in res.missing] == [("x/gone", "train")]


def test_csv_without_split_column_hash_70_15_15(tmp_path):
    root = tmp_path / "root"
    ann = tmp_path / "list.csv"
    lines = ["path,label"]
    for i in range(400):
        touch(root / f"v{i:03d}.mp4")
        lines.append(f"v{i:03d}.mp4,{'even' if i % 2 == 0 else 'odd'}")
    ann.write_text("\n".join(lines) + "\n")
    p = params(dataset="csv", root=str(root), annotations=str(ann))
    res = A.get_adapter("csv")(p)
    splits = {c.video_id: c.split for c in res.candidates}
    for vid, s in splits.items():
        u = A.stable_fraction(f"{vid}.mp4")
        assert s == ("train" if u < 0.70 else "val" if u < 0.85 else "test")
    share = {s: sum(v == s for v in splits.values()) / len(splits) for s in ("train", "val", "test")}
    assert 0.6 < share["train"] < 0.8 and 0.08 < share["val"] < 0.22 and 0.08 < share["test"] < 0.22
    # row order does not matter
    body = lines[1:]
    random.Random(0).shuffle(body)
    ann.write_text("\n".join([lines[0]] + body) + "\n")
    assert {c.video_id: c.split for c in A.get_adapter("csv")(p).candidates} == splits


def test_csv_errors(tmp_path):
    ann = tmp_path / "bad.csv"
    ann.write_text("file,class\na.mp4,x\n")
    with pytest.raises(ValueError, match="path,label"):
        A.get_adapter("csv")(params(dataset="csv", root=str(tmp_path), annotations=str(ann)))
    ann.write_text("path,label,split\na.mp4,x,holdout\n")
    with pytest.raises(ValueError, match="holdout"):
        A.get_adapter("csv")(params(dataset="csv", root=str(tmp_path), annotations=str(ann)))
    with pytest.raises(ValueError, match="annotations"):
        A.get_adapter("csv")(params(dataset="csv", root=str(tmp_path), annotations=""))
