"""Stage ``extract``: decode T observation frames per video once and write the feature store.

Per split (``train``, ``val``, ``test``), memory-mapped ``[N, T, ...]`` arrays (see
:func:`components.features.store_specs`): light-encoder features and logits, ImageNet object
scores, recognizer features and logits, audio embeddings with a has-audio mask, the frame indices
and timestamps used, per-frame ground truth, labels and a ``valid`` mask. Plus the text embeddings
of the 1000 object names and of the class names. Streams to disk (memory flat in N), resumes after
an interruption, and publishes the store atomically (:mod:`components.store`).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch

from components.data.manifest import read_manifest
from components.features import FrameEncoders, stream_split
from components.hashing import code_fingerprint, fingerprint
from components.models.encoders import create_encoder, imagenet_class_names, readable_class_name
from components.params import Params
from components.paths import Paths
from components.stage_runner import stage_main
from components.store import StoreWriter

log = logging.getLogger(__name__)


def _relative(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when it lies under it: no machine's absolute path in the store."""
    pth, base = Path(path).resolve(), Path(base).resolve()
    return str(pth.relative_to(base)) if pth.is_relative_to(base) else str(path)


def run(p: Params, paths: Paths) -> Path:
    if p.train_encoders.threads:
        torch.set_num_threads(p.train_encoders.threads)
    records, classes = read_manifest(paths.prepared)
    enc_files = [paths.encoders / f"{r}.pt" for r in ("light", "recognizer", "audio")]
    fp = fingerprint(paths.prepared / "manifest.csv", *enc_files, p.frames, p.audio, p.encoders,
                     code_fingerprint("components.stages.extract"))  # a partial store by other code is not resumed
    encoders = FrameEncoders.load(p, paths.encoders)
    specs = encoders.specs(p.frames.T, len(classes))
    writer = StoreWriter(paths.features, fp)
    failures = []
    for split in ("train", "val", "test"):
        recs = [r for r in records if r.split == split]
        sw = writer.split(split, [r.video_id for r in recs], specs)
        failures += stream_split(sw, recs, p.frames.T, encoders.sizes, p.audio, encoders.encode, len(classes),
                                 batch=p.extract.batch_videos, flush_every=p.extract.flush_every,
                                 workers=p.extract.decode_workers, desc=f"extract {split}")
        sw.close()
    text = create_encoder("text", model=p.encoders.text_model)
    objects = imagenet_class_names()
    writer.save_array("text_objects", text(objects).numpy())
    writer.save_array("text_classes", text([readable_class_name(c) for c in classes]).numpy())
    writer.save_text("object_names.txt", objects)
    with open(writer.partial / "failures.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "path", "reason"])
        w.writerows([[e.video_id, _relative(e.path, paths.prepared), e.reason] for e in failures])
    if failures:
        log.warning("%d videos failed to decode; their rows have valid=False (see failures.csv)", len(failures))
    out = writer.finalize({"T": p.frames.T, "classes": classes, "sizes": encoders.sizes,
                           "text_model": text.name, "failures": len(failures)})
    log.info("feature store written to %s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    return stage_main("extract", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
