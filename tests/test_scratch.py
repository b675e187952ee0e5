"""Issue 27 item 2: nothing left behind. ``salient gc`` (and the end of every stage that resumes)
removes resume checkpoints and ``.partial`` folders that no current stage's key can use: written by
other code (or before stamps), for other params, or from other inputs; ``--dry-run`` lists them with
their sizes. What a current key can still resume (this code, these params, these inputs, an
ablation's own params, another pipeline seed's work) stays. Before it, every superseded key's folder
stayed on disk for good."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.app.cli import main
from components.store.extraction import scratch_key
from components.core.params import to_dict, variant_params
from components.core.paths import Paths
from components.core.scratch import STAMP, ScratchKey, why_stale
from components.store.feature_store import ArraySpec, StoreWriter


@pytest.fixture
def ws(tiny_pipeline, tiny_params, tmp_path) -> Paths:
    """A copy of the tiny workspace (data/ and .salient/work, whose frame bank build_bank stamped) with its params.yaml."""
    src = Path(tiny_pipeline.features).parents[1]
    root = tmp_path / "ws"
    shutil.copytree(src / "data", root / "data")
    shutil.copytree(src / ".salient" / "work", root / ".salient" / "work")
    (root / "params.yaml").write_text(yaml.safe_dump(to_dict(tiny_params), sort_keys=False))
    return Paths().under(root)


def _checkpoint(folder: Path, mib: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "last.pt").write_bytes(np.random.default_rng(0).bytes(mib << 20))
    return folder


def _gc(root: Path, capsys, *args: str) -> dict[str, str]:
    assert main(["gc", "--workspace", str(root), *args]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)\s+(\S+)\s+(.+)$", line)
        if m:  # paths relative to the workspace
            rows[m.group(2)] = (float(m.group(1)), m.group(3).rstrip())
    assert re.search(r"(would remove|removed) \d+ folders, [\d.]+ MiB", out), out
    return rows


def test_gc_removes_only_what_no_current_key_can_use(ws, tiny_params, capsys):
    root, p = ws.features.parents[1], tiny_params
    work = ws.work
    (bank,) = [d for d in (work / "train_encoders").iterdir()]
    assert why_stale(bank, p) is None  # the real bank build_bank stamped: current
    legacy = _checkpoint(work / "train_encoders" / "0123456789abcdef")  # no stamp: before stamps, other code
    old_code = _checkpoint(work / "train_recognizer" / "fedcba9876543210", 2)
    key = ScratchKey("components.stages.train_recognizer", ("tsi", "frames"), (ws.encoders / "recognizer.pt",))
    key.stamp(old_code, p)
    rec = json.loads((old_code / STAMP).read_text())
    (old_code / STAMP).write_text(json.dumps({**rec, "code": "0" * 16}))  # what a stamp of older code holds
    sampler = _checkpoint(work / "train_sampler" / "tsqnet" / "aaaa")
    ScratchKey("components.training.sampler_training", ("train_sampler", "tsqnet"), (ws.features / "meta.json",),
               "tsqnet").stamp(sampler, p)
    ablation = _checkpoint(work / "train_sampler" / "nsnet" / "bbbb")  # resolved for its own overrides
    ScratchKey("components.training.sampler_training", ("train_sampler", "nsnet"), (ws.features / "meta.json",),
               "nsnet_mlp").stamp(ablation, variant_params(p, "nsnet_mlp")[1])
    writer = StoreWriter(ws.features, "an interrupted extract")  # a real partial store beside the finished one
    writer.split("train", ["a", "b"], {"x": ArraySpec((4,), "float32")}).close()
    scratch_key(ws).stamp(writer.partial, p)
    sweep = _checkpoint(work / "sweep" / "study" / "0")  # a sweep's trials are its results: never touched

    listed = _gc(root, capsys, "--dry-run")
    assert set(listed) == {".salient/work/train_encoders/0123456789abcdef", ".salient/work/train_recognizer/fedcba9876543210"}
    assert listed[".salient/work/train_encoders/0123456789abcdef"] == (1.0, "no resume.json: written before scratch was stamped, by other code")
    assert listed[".salient/work/train_recognizer/fedcba9876543210"] == (2.0, "the code of components.stages.train_recognizer changed")
    assert legacy.exists() and old_code.exists()  # a dry run removes nothing

    assert set(_gc(root, capsys)) == set(listed)
    assert not legacy.exists() and not old_code.exists()
    assert all(d.exists() for d in (bank, sampler, ablation, writer.partial, sweep))
    assert _gc(root, capsys) == {}  # nothing left to remove

    # other params: the partial store and the bank (both keyed by the frames section) no longer fit
    gone = _gc(root, capsys, "--set", "frames.light_size=48")
    rel = lambda d: d.relative_to(root).as_posix()  # noqa: E731
    assert {k: r for k, (_, r) in gone.items()} == {rel(writer.partial): "params frames changed",
                                                    rel(bank): "params frames changed"}
    assert gone[rel(bank)][0] > 0 and not bank.exists() and sampler.exists()

    # other inputs: the store the sampler checkpoints were keyed to was rewritten
    meta = ws.features / "meta.json"
    meta.write_text(meta.read_text().replace('"complete": true', '"complete": true, "rewritten": 1'))
    gone = _gc(root, capsys)
    assert set(gone) == {rel(sampler), rel(ablation)} and {r for _, r in gone.values()} == {f"input {meta} changed"}
    assert sweep.exists()


def test_a_stage_that_resumes_removes_stale_scratch_at_its_end(ws, tiny_params):
    from components.core.params import load_params
    from components.stages import extract
    from tests.conftest import ROOT, TINY

    shards = ws.features.with_name("features.shards")
    legacy = _checkpoint(shards / "0-of-2.partial")  # an interrupted 2-shard extract of older code
    other = _checkpoint(shards / "1-of-2.partial")
    scratch_key(ws).stamp(other, load_params(ROOT / "params.yaml", [*TINY, "frames.light_size=48"]))  # other params
    assert why_stale(other, tiny_params) == "params frames changed"
    unrelated = _checkpoint(ws.work / "train_encoders" / "0123456789abcdef")  # another stage's area: not extract's
    extract.run(tiny_params, ws)
    assert not legacy.exists() and not other.exists() and unrelated.exists()
    assert (ws.features / "meta.json").exists()
