"""AVGN as a sampler (``create_sampler("avgn")``): the network of :mod:`components.models.avgn_net` on the
feature store, trained by the one engine like every sampler.

Store arrays it reads (:func:`components.store.features.store_specs`): ``light_maps [B,T,D_G,H_G,W_G]``
(float16, the light encoder's map before pooling: e^G of eq. 1), ``audio_emb [B,T,D_A]`` and
``has_audio [B]`` (e^A of eq. 1; audio-less videos get the learned missing-audio token, never fake
audio), and in training ``frames_full [B,T,3,S,S]`` (uint8 frame cache: the spatial glance crops its
P×P patches from it, eq. 6) and ``labels``.

* ``forward`` in eval mode is the **temporal glance** only (eqs. 1-3, 14): ``saliency = s_t`` with the
  first ``glance_frames`` (T_G) frames encoded, so ``evaluate`` ranks frames by it like any sampler.
* ``forward`` in training mode (or whenever the batch holds ``frames_full``) also runs the **spatial
  glance** and the head (eqs. 4-8) on ``train_frames`` frames: in training a random subset, processed
  most salient first (``avgn.train_order: saliency``, our choice: the order inference uses; ``temporal``
  is the earlier behaviour); otherwise the top frames by saliency, most salient first.
* π's input (``avgn.pi_map``): ``glance`` = e^G (eq. 5 as written; 2×2 in the demo, 1×1 in the
  benchmark profile), ``fine`` = :class:`StageMap`, the light encoder's stride-``pi_stride`` stage on the
  processed frames (our choice; its file ``light.pt`` by path and SHA-256 like f_L's, kept out of the
  checkpoint; its MACs are counted in every AVGN cost row because it runs inside the head).
* :meth:`AVGNSampler.predict_head` is AVGN's own recognizer path (glance → top-K → patches → head), in
  saliency order, so step t's prediction uses the t most salient frames (early exit reads it).

f_L (eq. 7) is by default the trained frame recognizer (``recognizer.pt`` of ``train_encoders``),
frozen and kept out of the checkpoint: its file and SHA-256 are constructor arguments, and a
checkpoint whose recognizer file is missing or changed is refused (a checkpoint of another config).
``avgn.local_mode: finetune`` trains it on the patches with AVGN (the paper trains f_L) at
``avgn.local_lr`` (:meth:`AVGNSampler.optimizer_groups`); its weights are then in the checkpoint, and
each training frame costs f_L's forward and backward at P×P.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from components.core.integrity import file_sha256
from components.models.avgn_net import AVGN, AVGNConfig, LocalEncoder
from components.models.encoders import create_encoder
from components.models.samplers import SAMPLERS, Batch, Sampler, SamplerOutput
from components.core.params import AVGNParams


def std_floor(std: torch.Tensor) -> torch.Tensor:
    """Standardisation scale with a floor at a tenth of the median channel's: channels (near-)constant on
    the training split (dead ReLU6 units of the light encoder's map) would otherwise blow up any other
    split's values by 1/eps."""
    return std.clamp(min=max(1e-3, 0.1 * float(std.median()))).clone()


class FrozenRecognizer(nn.Module):
    """f_L = a trained frame recognizer (``FrameClassifier``) on the P×P patch: [N,3,P,P] in [0,1] ->
    pooled features [N,D]. Gradients still reach the patch (π learns through it). ``frozen=False``
    (``avgn.local_mode: finetune``; the paper trains f_L, eq. 7) makes its weights part of AVGN's state
    and optimizer; its BatchNorm statistics stay the recognizer's (our choice: batches of 48² patches
    are small and few)."""

    def __init__(self, recognizer: nn.Module, patch_size: int, frozen: bool = True):
        super().__init__()
        self.net, self.patch_size, self.out_dim = recognizer, patch_size, recognizer.num_features
        self.frozen = frozen

    def train(self, mode: bool = True) -> "FrozenRecognizer":
        super().train(mode)
        self.net.eval()  # BatchNorm keeps the recognizer's running statistics
        return self

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        return self.net.features(patch)

    def logits(self, patch: torch.Tensor) -> torch.Tensor:
        """The recognizer's class logits on the patch ``[N,3,P,P] -> [N,C]`` (L_search's scorer)."""
        return self.net.classify(self.net.features(patch))


class StageMap(nn.Module):
    """π's finer input (``avgn.pi_map: fine``, our choice): the light encoder f_G (a ``FrameClassifier``),
    frozen, run up to its stage of output stride ``stride`` (timm ``feature_info``) on the processed
    frames resized to its input side ``size``: ``[N,3,H0,W0]`` in [0,1] -> ``[N,C,ceil(size/stride),...]``
    (EfficientNet-Lite0, stride 8: 40 channels, 6×6 at 48², 4×4 at 32²; its last map e^G is 2×2 / 1×1).
    It runs inside AVGN's head, so FlopCounterMode counts its MACs in every AVGN cost row."""

    def __init__(self, light: nn.Module, size: int, stride: int):
        super().__init__()
        info = list(getattr(light.backbone, "feature_info", []))
        at = [i for i, f in enumerate(info) if f["reduction"] == stride]
        if not at:
            raise ValueError(f"avgn.pi_stride={stride}: the light encoder has stages of stride "
                             f"{sorted({f['reduction'] for f in info})} only")
        self.light, self.size, self.stage = light, size, at[-1]
        self.out_dim = int(info[self.stage]["num_chs"])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(frames, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.light.mean) / self.light.std
        return self.light.backbone.forward_intermediates(x, indices=[self.stage], intermediates_only=True,
                                                         stop_early=True)[0]

    def grid(self) -> tuple[int, int]:
        """(h, w) of the map for this encoder's input side."""
        with torch.no_grad():
            return tuple(self(torch.zeros(1, 3, self.size, self.size)).shape[-2:])


def load_encoder_file(what: str, path: str | None, digest: str | None, hint: str) -> nn.Module:
    """A trained frame model of ``train_encoders`` at ``path``, checked against ``digest`` (sha256)."""
    from components.store.features import load_frame_model  # deferred: only AVGN's f_L / π encoder need the encoders

    if not path or not Path(path).exists():
        raise FileNotFoundError(f"AVGN's {what} {path!r} is missing: it is a model of train_encoders "
                                f"(`dvc repro train_encoders`){hint}")
    got = file_sha256(path)
    if digest and got != digest:
        raise ValueError(f"AVGN's {what} {path} changed since this checkpoint was trained (sha256 "
                         f"{got[:12]} != {digest[:12]}): a checkpoint of another config; retrain avgn")
    return load_frame_model(Path(path))


def load_local(local: str, patch_size: int, path: str | None, digest: str | None, frozen: bool = True) -> nn.Module:
    """f_L of eq. 7 for ``avgn.local``: the recognizer at ``path`` (checked against ``digest``), frozen or
    fine-tuned, or a small CNN trained with AVGN."""
    if local == "scratch":
        return LocalEncoder(patch_size, 256)
    rec = load_encoder_file("local encoder f_L", path, digest, ", or set avgn.local: scratch")
    return FrozenRecognizer(rec, patch_size, frozen=frozen)


class AVGNSampler(Sampler):
    """AVGN on stored features (module docstring)."""

    trainable = True
    inputs = ("light_maps", "audio_emb", "has_audio")
    train_inputs = ("frames_full",)  # what training (and the head) read besides ``inputs``
    schedule_section = "avgn"  # its own schedule: the spatial glance runs a CNN on pixels
    sweep_space = (("avgn", "w_v", 0.0, 2.0), ("avgn", "w_a", 0.0, 2.0), ("avgn", "w_mask", 0.0, 2.0),
                   ("avgn", "w_s", 0.0, 2.0), ("avgn", "w_ord", 0.0, 2.0))  # eqs. 9-13's weights
    own_recognizer = "avgn"  # its head: glance -> top-K -> patches -> f_L -> psi + f_C (components.evaluation.avgn_eval)

    @classmethod
    def build_kwargs(cls, p, store, seed: int) -> dict:
        """Store shapes, per-channel statistics of the training split's light maps and audio embeddings
        (videos with audio only), and f_L = the frame recognizer of this pipeline seed
        (``<data>/encoders/recognizer.pt``) by path and SHA-256."""
        import os

        valid = np.asarray(store.array("train", "valid"), dtype=bool)
        maps = store.array("train", "light_maps")  # [N,T,D,h,w] float16 memmap
        s1 = np.zeros(maps.shape[2]); s2 = np.zeros(maps.shape[2]); n = 0
        for i in np.flatnonzero(valid):  # one video at a time: the maps need not fit in memory as float64
            x = np.asarray(maps[i], dtype=np.float64).transpose(1, 0, 2, 3).reshape(maps.shape[2], -1)
            s1 += x.sum(1); s2 += (x * x).sum(1); n += x.shape[1]
        mean = s1 / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean ** 2, 0.0))
        has = np.asarray(store.array("train", "has_audio"), dtype=bool) & valid
        audio = np.asarray(store.array("train", "audio_emb"))[has].astype(np.float64)
        audio = audio.reshape(-1, audio.shape[-1]) if len(audio) else np.zeros((1, store.array("train", "audio_emb").shape[-1]))
        kw = {"num_classes": len(store.classes), "map_dim": int(maps.shape[2]), "grid": tuple(int(x) for x in maps.shape[3:]),
              "audio_dim": int(audio.shape[-1]), "T": store.T, "params": p.avgn,
              "map_mean": torch.from_numpy(mean).float(), "map_std": torch.from_numpy(std).float(),
              "audio_mean": torch.from_numpy(audio.mean(0)).float(), "audio_std": torch.from_numpy(audio.std(0)).float()}

        def encoder_file(name: str) -> tuple[str, str | None]:  # a train_encoders model by path and SHA-256
            f = Path(store.folder).parent / "encoders" / name
            rel = os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(f)
            return rel, file_sha256(f) if f.exists() else None

        if p.avgn.local == "recognizer":
            kw["local_path"], kw["local_digest"] = encoder_file("recognizer.pt")
        if p.avgn.pi_map == "fine":  # π's finer map: the light encoder's earlier stage at its input side
            kw["pi_path"], kw["pi_digest"] = encoder_file("light.pt")
            kw["pi_size"] = p.frames.light_size
        return kw

    @classmethod
    def untrained(cls, p, num_classes: int, light: nn.Module, text_dim: int = 384) -> "AVGNSampler":
        """An untrained AVGN with the shapes of a trained one at ``p``'s resolutions (same cost): e^G is the light
        encoder's map at ``frames.light_size`` and f_L the frame recognizer on ``avgn.patch_size`` patches
        (``avgn.local: recognizer``), random weights, nothing read from disk."""
        e, f = p.encoders, p.frames
        was = light.training
        light.eval()
        try:
            with torch.no_grad():
                maps = light.forward_maps(torch.zeros(1, 3, f.light_size, f.light_size))[2]  # [1,D,h,w]
        finally:
            light.train(was)
        local = None
        if p.avgn.local == "recognizer":
            local = FrozenRecognizer(create_encoder("recognizer", arch=e.recognizer_arch, num_classes=num_classes),
                                     p.avgn.patch_size)
        pi = StageMap(light, f.light_size, p.avgn.pi_stride) if p.avgn.pi_map == "fine" else None  # π's finer map
        return cls(num_classes, int(maps.shape[1]), tuple(int(x) for x in maps.shape[-2:]), e.audio_dim, f.T,
                   p.avgn, local_module=local, pi_module=pi)

    def cost_batch(self, full_size: int, frames: bool = False) -> dict[str, torch.Tensor]:
        """Zeros shaped like one video's AVGN store arrays (light maps, audio, ``frames``: the frame cache)."""
        c = self.config
        b = {"light_maps": torch.zeros(1, self.T, c.d_g, *c.grid), "audio_emb": torch.zeros(1, self.T, c.d_a),
             "has_audio": torch.ones(1, dtype=torch.bool), "labels": torch.eye(c.num_classes)[:1]}
        if frames:
            b["frames_full"] = torch.zeros(1, self.T, 3, full_size, full_size, dtype=torch.uint8)
        return b

    def cost_inputs(self) -> tuple[str, ...]:
        """Without audio (Table 4) it reads none: no audio encoder runs."""
        return tuple(k for k in self.inputs if self.params.audio or k != "audio_emb")

    def __init__(self, num_classes: int, map_dim: int, grid: tuple[int, int], audio_dim: int, T: int,
                 params: AVGNParams = AVGNParams(), map_mean: torch.Tensor | None = None,
                 map_std: torch.Tensor | None = None, audio_mean: torch.Tensor | None = None,
                 audio_std: torch.Tensor | None = None, local_path: str | None = None,
                 local_digest: str | None = None, local_module: nn.Module | None = None,
                 pi_path: str | None = None, pi_digest: str | None = None, pi_size: int = 0,
                 pi_module: nn.Module | None = None):
        super().__init__()
        self.params, self.T = params, T
        a = params
        if a.patch_size <= 0:
            raise ValueError("avgn.patch_size must be positive")
        pi_enc = None
        if a.pi_map == "fine":  # π reads the light encoder's finer stage (StageMap); pi_module: a given one (tests)
            pi_enc = pi_module if pi_module is not None else StageMap(
                load_encoder_file("light encoder (pi_map: fine)", pi_path, pi_digest, ", or set avgn.pi_map: glance"),
                pi_size, a.pi_stride)
            grid = pi_enc.grid()
        self.config = AVGNConfig.from_params(a, num_classes=num_classes, d_g=map_dim, d_a=audio_dim, grid=tuple(grid),
                                             max_frames=T, d_pi=pi_enc.out_dim if pi_enc is not None else None)
        local = local_module if local_module is not None else load_local(
            a.local, a.patch_size, local_path, local_digest, frozen=a.local_mode == "frozen")
        self.net = AVGN(self.config, local, pi_enc)  # local_module: a given f_L (benchmarks), not a registry argument
        for name, v, n in (("map", map_mean, map_dim), ("audio", audio_mean, audio_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(n) if v is None else torch.as_tensor(v).float().clone())
        for name, v, n in (("map", map_std, map_dim), ("audio", audio_std, audio_dim)):
            self.register_buffer(f"{name}_std", torch.ones(n) if v is None else std_floor(torch.as_tensor(v).float()))
        self.glance_frames = self.config.t_g  # T_G at inference (eq. 14); evaluate sweeps it

    # ------------------------------------------------------------------------------- inputs
    def _features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = batch["light_maps"].float()  # [B,T,D,h,w]
        if g.shape[1] > self.T:
            raise ValueError(f"{g.shape[1]} frames per video but this AVGN was built for T={self.T}")
        g = (g - self.map_mean[:, None, None]) / self.map_std[:, None, None]
        a = (batch["audio_emb"].float() - self.audio_mean) / self.audio_std
        return g, a, batch["has_audio"].bool()

    @staticmethod
    def _frames(batch: Batch, idx: torch.Tensor) -> torch.Tensor:
        """``frames_full`` of the frames ``idx [B,K]`` as float in [0,1], ``[B,K,3,S,S]``."""
        f = batch["frames_full"]
        return f[torch.arange(f.shape[0])[:, None], idx].float().div_(255.0)

    # ------------------------------------------------------------------------------ forward
    def forward(self, batch: Batch) -> SamplerOutput:
        g, a, has = self._features(batch)
        if "frames_full" not in batch:  # temporal glance only (evaluate ranks frames by it)
            out = self.net(g, a, has_audio=has, t_g=self.glance_frames)
            return SamplerOutput(saliency=out.saliency, aux={"avgn": out})
        B, T = g.shape[:2]
        K = min(self.params.train_frames, T)
        if self.training:  # a random subset (the engine seeds torch), in avgn.train_order
            idx = torch.stack([torch.randperm(T)[:K].sort().values for _ in range(B)])
            order = "saliency" if self.params.train_order == "saliency" else "given"
            out = self.net(g, a, self._frames(batch, idx), has_audio=has, frame_idx=idx, order=order)
        else:  # how inference runs: the K most salient frames, most salient first
            glance = self.net(g, a, has_audio=has, t_g=self.glance_frames)
            idx = torch.argsort(-glance.saliency, dim=1, stable=True)[:, :K]
            out = self.net(g, a, self._frames(batch, idx), has_audio=has, frame_idx=idx, t_g=self.glance_frames)
        return SamplerOutput(saliency=out.saliency, aux={"avgn": out})

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: f_L (fine-tuned, ``avgn.local_mode: finetune``) at ``avgn.local_lr``,
        everything else at ``lr``; one group when f_L is frozen or a scratch CNN."""
        f_l = self.net.f_l
        if getattr(f_l, "frozen", True) or not isinstance(f_l, FrozenRecognizer):
            return [{"params": list(self.parameters()), "lr": lr, "weight_decay": weight_decay}]
        mine = {id(q) for q in f_l.parameters()}
        return [{"params": [q for q in self.parameters() if id(q) not in mine], "lr": lr, "weight_decay": weight_decay},
                {"params": list(f_l.parameters()), "lr": self.params.local_lr, "weight_decay": weight_decay,
                 "name": "f_L"}]

    def loss(self, batch: Batch, out: SamplerOutput) -> tuple[torch.Tensor, dict[str, float]]:
        return self.net.loss(out.aux["avgn"], batch["labels"])

    def predict_head(self, batch: Batch, K: int, t_g: int | None = None,
                     idx: torch.Tensor | None = None, extras: bool = False) -> dict[str, np.ndarray]:
        """:meth:`head` without autograd, as numpy."""
        with torch.no_grad():
            return {k: v.numpy() for k, v in self.head(batch, K, t_g, idx, extras).items()}

    def head(self, batch: Batch, K: int, t_g: int | None = None,
             idx: torch.Tensor | None = None, extras: bool = False) -> dict[str, torch.Tensor]:
        """AVGN's own prediction with the ``K`` most salient frames (glance with T_G = ``t_g``, default
        :attr:`glance_frames`), or with the frames ``idx [B,K]`` in that order (a selection made from
        stored saliency): ``idx [B,K]`` (most salient first), ``probs [B,K,C]`` (p_t of eq. 8 after
        t frames, max-aggregated), ``centre [B,K,2]`` (x_c, y_c) in [0,1] of each patch.

        ``extras`` adds what an early-exit gate may read at step t: ``frame_probs [B,K,C]`` (eq. 11,
        frame t alone), ``visual_probs [B,K,C]`` (f_C^V of eq. 9, visual only, max-aggregated like ``probs``), ``audio_probs [B,C]``
        (f_C^A of eq. 10 after all T audio segments) and ``embedding [B,K,H]`` (eq. 8's running max
        ``max_{s<=t} h_s``, the feature FrameExit's gates read)."""
        was = self.training
        self.eval()
        try:
            g, a, has = self._features(batch)
            t_g = self.glance_frames if t_g is None else t_g
            glance = self.net(g, a, has_audio=has, t_g=t_g)
            if idx is None:
                idx = torch.argsort(-glance.saliency, dim=1, stable=True)[:, :K]
            idx = torch.as_tensor(idx, dtype=torch.long)
            out = self.net(g, a, self._frames(batch, idx), has_audio=has, frame_idx=idx, t_g=t_g)
            res = {"idx": idx, "probs": out.probs(), "centre": out.centre, "saliency": glance.saliency}
            if extras:
                res.update(frame_probs=out.frame_logits.softmax(-1), visual_probs=out.aux["f_v"].softmax(-1),
                           audio_probs=out.aux["f_a"][:, -1].softmax(-1),
                           embedding=torch.cummax(self.net.f_av.embed(out.e_av), 1).values)
            return res
        finally:
            self.train(was)


@SAMPLERS.register("avgn")
def avgn(num_classes: int, map_dim: int, grid: tuple[int, int], audio_dim: int, T: int,
         params: AVGNParams = AVGNParams(), map_mean: torch.Tensor | None = None, map_std: torch.Tensor | None = None,
         audio_mean: torch.Tensor | None = None, audio_std: torch.Tensor | None = None,
         local_path: str | None = None, local_digest: str | None = None, pi_path: str | None = None,
         pi_digest: str | None = None, pi_size: int = 0) -> AVGNSampler:
    return AVGNSampler(num_classes, map_dim, grid, audio_dim, T, params, map_mean, map_std, audio_mean, audio_std,
                       local_path, local_digest, pi_path=pi_path, pi_digest=pi_digest, pi_size=pi_size)


__all__ = ["AVGNSampler", "FrozenRecognizer", "StageMap", "avgn", "load_local", "load_encoder_file", "file_sha256"]
