"""The frame bank: ``train_encoders.bank_frames`` uniformly spaced frames per train / val video, at each
consumer's resolution, plus their log-mel windows, decoded once and shared by every trainer that
learns from pixels (``train_encoders``: light encoder, frame recognizer, audio encoder;
``train_recognizer``: TSI). Built resumably under ``.salient/work`` with the feature store's
streaming writer (:func:`build_bank`), keyed by :func:`bank_fingerprint`.

Also what those trainers draw from it: :func:`usable_videos` (rows a role can train on),
:func:`soft_targets` (multi-hot -> target distribution) and :func:`augment` (flip + translation); and
the encoders' training batches and step (:func:`batches_for`, :func:`make_step`, :func:`video_accuracy`),
shared by the ``train_encoders`` stage and ``experiments/light_lr.py``.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from components.data.manifest import read_manifest
from components.store.features import stream_split
from components.core.hashing import code_fingerprint, fingerprint
from components.core.params import Params
from components.core.paths import Paths
from components.core.scratch import ScratchKey
from components.store.feature_store import ArraySpec, FeatureStore, StoreWriter

log = logging.getLogger(__name__)


def bank_fingerprint(p: Params, paths: Paths) -> str:
    """The bank's identity: the manifest and the source files' listing (a replaced video), the frame /
    audio settings, the frames per video and the decoding code (a bank decoded by other code is
    rebuilt, never reused)."""
    return fingerprint(*bank_key(paths).input_parts(), p.frames, p.audio, p.train_encoders.bank_frames,
                       code_fingerprint("components.training.banks"))


def bank_key(paths: Paths) -> ScratchKey:
    """What keys the bank's folder (:mod:`components.core.scratch`): :func:`bank_fingerprint`'s parts."""
    return ScratchKey("components.training.banks", ("frames", "audio", "train_encoders.bank_frames"),
                      (paths.prepared / "manifest.csv", paths.prepared / "sources.json"))


def build_bank(p: Params, paths: Paths, fp: str) -> FeatureStore:
    """Decode ``bank_frames`` frames per train/val video once; resumable; returns the finished bank."""
    out = paths.work / "train_encoders" / fp / "bank"
    bank_key(paths).stamp(out.parent, p)  # what `salient gc` checks before it keeps the folder
    if (out / "meta.json").exists():
        return FeatureStore(out)
    records, classes = read_manifest(paths.prepared)
    F_, a = p.train_encoders.bank_frames, p.audio
    sizes = {"light": p.frames.light_size, "recognizer": p.frames.recognizer_size}
    specs = {"light": ArraySpec((F_, 3, sizes["light"], sizes["light"]), "uint8"),
             "recognizer": ArraySpec((F_, 3, sizes["recognizer"], sizes["recognizer"]), "uint8"),
             "audio": ArraySpec((F_, a.window_frames, a.n_mels), "float16"), "has_audio": ArraySpec((), "bool"),
             "frame_indices": ArraySpec((F_,), "int64"), "timestamps": ArraySpec((F_,), "float32"),
             "gt": ArraySpec((F_,), "int16"), "labels": ArraySpec((len(classes),), "uint8"),
             "valid": ArraySpec((), "bool")}

    def encode(clips):
        return [{"light": c.frames["light"].numpy(), "recognizer": c.frames["recognizer"].numpy(),
                 "audio": (c.audio if c.audio is not None else np.zeros(specs["audio"].shape)).astype(np.float16),
                 "has_audio": np.bool_(c.audio is not None)} for c in clips]

    writer = StoreWriter(out, fp)
    for split in ("train", "val"):
        recs = [r for r in records if r.split == split]
        sw = writer.split(split, [r.video_id for r in recs], specs)
        errors = stream_split(sw, recs, F_, sizes, a, encode, len(classes), batch=8,
                              flush_every=p.extract.flush_every, workers=p.extract.decode_workers,
                              desc=f"bank {split}")
        sw.close()
        if errors:
            log.warning("bank %s: %d videos failed to decode and are skipped", split, len(errors))
    writer.finalize({"T": F_, "classes": classes})
    return FeatureStore(out)


def soft_targets(labels: np.ndarray) -> torch.Tensor:
    """Multi-hot [B,C] -> a distribution over the video's labels (single-label: one-hot)."""
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    return y / y.sum(1, keepdim=True).clamp(min=1)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip + random translation (reflect-pad s/8, crop) on float [B,3,s,s]."""
    B, _, s, _ = x.shape
    flip = (torch.rand(B, generator=gen) < 0.5).to(x.device)  # drawn on the CPU generator, applied anywhere
    x = torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)
    pad = max(s // 8, 1)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy, ox = torch.randint(0, 2 * pad + 1, (2, B), generator=gen)
    return torch.stack([xp[i, :, oy[i]:oy[i] + s, ox[i]:ox[i] + s] for i in range(B)])


def usable_videos(bank: FeatureStore, split: str, role: str) -> np.ndarray:
    """Bank rows a role can train on: decoded videos, and for the audio encoder only those with audio."""
    ok = np.array(bank.array(split, "valid"), dtype=bool)
    if role == "audio":
        ok &= np.asarray(bank.array(split, "has_audio"))
    return np.flatnonzero(ok)


def make_step(role: str, seed: int):
    """The engine step of encoder ``role`` (light / recognizer / audio) on bank batches: train with
    augmentation (frames) or a time mask (audio, SpecAugment-style); val returns the video's hit."""
    gen = torch.Generator().manual_seed(seed)

    def step(model, batch, train):
        x, y = batch
        if role == "audio":
            x = x.float()
            if train:  # SpecAugment-style time mask (AVGN masks time and frequency)
                t0 = int(torch.randint(0, x.shape[1] - x.shape[1] // 8, (1,), generator=gen))
                x = x.clone()
                x[:, t0:t0 + x.shape[1] // 8] = x.mean()
        else:
            x = x.float().div_(255.0)
            if train:
                x = augment(x, gen)
        _, logits = model(x)
        if not train:  # one val video per batch: its frames' loss, and whether the video is right
            loss = -(y * logits.log_softmax(-1)).sum(-1).mean()
            hit = bool(y[0, int(logits.softmax(-1).mean(0).argmax())] > 0)
            return loss, {"acc": float(hit), "n": 1}
        loss = -(y * logits.log_softmax(-1)).sum(-1).mean()
        acc = (logits.argmax(-1) == y.argmax(-1)).float().mean().item()
        return loss, {"acc": acc, "n": len(y)}

    return step


def batches_for(bank: FeatureStore, split: str, role: str, batch_size: int, seed: int, epoch: int | None,
                repeats: int, val_frames: int = 8):
    """Train (epoch given): one random bank frame per video, ``repeats`` passes, ``batch_size`` frames
    per batch. Val: one batch per video of ``val_frames`` evenly spaced bank frames, so the monitored
    ``val_acc`` is video accuracy (mean softmax over those frames) — far less noisy than the share
    of single frames right, of which most show no class at all on untrimmed data."""
    arr, labels = bank.array(split, role), bank.array(split, "labels")
    vids = usable_videos(bank, split, role)
    F_ = arr.shape[1]
    if epoch is None:
        frames = np.linspace(0, F_ - 1, min(val_frames, F_)).round().astype(int)
        for v in vids:
            yield torch.from_numpy(np.stack([arr[v, f] for f in frames])), soft_targets(np.stack([labels[v]] * len(frames)))
        return
    rng = np.random.default_rng([seed, epoch])
    pairs = [(v, int(f)) for _ in range(repeats) for v, f in zip(rng.permutation(vids), rng.integers(0, F_, len(vids)))]
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        x = torch.from_numpy(np.stack([arr[v, f] for v, f in chunk]))
        yield x, soft_targets(np.stack([labels[v] for v, _ in chunk]))


@torch.no_grad()
def video_accuracy(model, bank: FeatureStore, split: str, role: str) -> float:
    """Top-1 of the mean softmax over every bank frame of each video (a dense-sampling sanity check)."""
    arr, labels = bank.array(split, role), bank.array(split, "labels")
    hits = []
    model.eval()
    for v in usable_videos(bank, split, role):
        x = torch.from_numpy(np.array(arr[v])).float()
        x = x if role == "audio" else x / 255.0
        probs = model(x)[1].softmax(-1).mean(0)
        hits.append(bool(labels[v][int(probs.argmax())]))
    return float(np.mean(hits)) if hits else float("nan")
