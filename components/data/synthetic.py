"""Synthetic video classification benchmark with known per-frame saliency.

Every class ``c`` has a deterministic *signature* (:func:`class_signature`):

* key objects: two procedurally drawn shapes (a large and a small one) of a class shape
  (circle, square, triangle, star, ...), a class colour (12 saturated / achromatic colours) and a
  texture (solid, stripes, dots). ``colour = c % 12`` and ``shape = (c + 5 * (c // 12)) % 12``, so
  for ``C <= 12`` every pair of classes differs in colour *and* shape, and for any ``C <= 64`` the
  (colour, shape) pair is unique (two classes sharing a colour never share a shape);
* a motion pattern of the objects (linear, orbit, bounce, zigzag, rotate, pulse, spiral, figure8);
* a tint of the background (golden-ratio spaced hue);
* an audio signature: a class tone ``220 Hz * 2 ** (((37 c) % 64) / 16)`` (1/16-octave grid over
  four octaves, distinct for every class), an optional second tone (x1.5 or x1.26) and a beep
  rhythm (continuous, 2, 3 or 5 Hz).

A video of label ``y`` (:func:`plan_video`) is a sequence of segments over a *generic* scene:

* ``salient`` segments (1..``max_segments``, ~``salient_fraction`` of the frames, code ``y``): the
  class scene of ``y`` (tinted background, generic clutter, the key objects moving);
* ``distractor`` segments (~``distractor_fraction``, code ``j != y``): the full scene of another
  class ``j`` (drawn per segment);
* low-quality segments (~``lowq_fraction``, code :data:`GT_LOWQ`): the generic scene heavily
  blurred, very dark, or cross-faded towards a flat black / white frame;
* everything else is generic (code :data:`GT_GENERIC`): a neutral grey background (R = G = B) with
  moving grey clutter shapes, identical in distribution for every class.

Segments never overlap and are separated by at least one generic frame. Camera jitter (a smooth
shift of up to ``jitter`` px), a slow global gain flicker and Gaussian pixel noise (``noise``) are
applied to every frame.

Lengths: preset ``untrimmed`` draws ``L`` uniformly in ``[min_frames, max_frames]``; preset
``trimmed`` draws short clips with ``L`` uniform in ``[max(8, min_frames // 4),
max(16, min_frames // 2)]`` (e.g. 15..30 frames for ``min_frames = 60``).

Files: H.264 (libx264, yuv420p, CRF 20, preset veryfast without mb-tree, one thread, a keyframe
exactly every ``keyframe_interval`` frames, no scene-cut keyframes) at ``fps`` plus, unless the video is one of the
``round(audio_missing_fraction * N)`` videos chosen (deterministically) to have no audio, an AAC
16 kHz mono track of the same duration: the class tone during salient frames, the distractor's tone
during distractor frames and low-level noise elsewhere. Files are written to a temp file in the same
folder (:func:`components.core.atomic.atomic_path`) and renamed into place, so an existing ``<id>.mp4`` is
always complete.

Spatial ground truth: :func:`object_boxes` gives, per frame, the box of each key object exactly where
its pixels are (jitter and motion included) and the class it belongs to; :func:`generate` writes
them for every video to ``boxes.npz`` beside the ``videos/`` folder (read with
:func:`components.data.manifest.read_boxes`).

:func:`generate` renders the missing videos in a process pool (``fork`` when the calling process
runs a single Python thread, ``spawn`` otherwise) and returns one :class:`Candidate` per video.

Everything is deterministic from ``SyntheticParams.seed``: same params -> identical plans, codes and
pixels (and, with the same library versions, byte-identical files).
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from components.core.atomic import atomic_path
from components.data.manifest import BOXES_FILE, GT_GENERIC, GT_LOWQ, FrameBoxes, encode_gt, write_boxes
from components.core.params import SyntheticParams

AUDIO_RATE = 16000

COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (230, 25, 35)),
    ("green", (20, 170, 40)),
    ("blue", (30, 70, 235)),
    ("yellow", (245, 215, 20)),
    ("magenta", (215, 30, 200)),
    ("cyan", (20, 210, 230)),
    ("orange", (250, 125, 15)),
    ("purple", (115, 25, 170)),
    ("pink", (255, 140, 185)),
    ("teal", (0, 120, 110)),
    ("white", (250, 250, 250)),
    ("black", (12, 12, 12)),
)
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring",
          "diamond", "bars", "hexagon", "crescent", "xmark", "frame")
TEXTURES = ("solid", "stripes", "dots")
MOTIONS = ("linear", "orbit", "bounce", "zigzag", "rotate", "pulse", "spiral", "figure8")
CLUTTER_SHAPES = ("circle", "square", "diamond", "bars")
LOWQ_KINDS = ("blur", "dark", "fade")
_N_ANGLES = 24  # rotation quantisation of the "rotate" motion


# ------------------------------------------------------------------------------ signatures
@dataclass(frozen=True)
class ClassSignature:
    index: int
    colour: str
    rgb: tuple[int, int, int]
    shape: str
    texture: str
    motion: str
    tint: tuple[int, int, int]
    tone_hz: float
    tone2_hz: float  # 0 = no second tone
    beep_hz: float  # 0 = continuous tone
    fine_index: int = 0  # which of the classes sharing this coarse signature (fine_classes > 1)
    fine_classes: int = 1

    @property
    def name(self) -> str:
        base = f"{self.colour}_{self.shape}_{self.motion}"
        return base if self.fine_classes == 1 else f"{base}_{self.grating_deg}deg"

    @property
    def grating_deg(self) -> int:
        """Orientation of the fine grating on the key objects (fine_classes > 1)."""
        return int(round(180 * self.fine_index / self.fine_classes))


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p_, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p_), (q, v, p_), (p_, v, t), (p_, q, v), (t, p_, v), (v, p_, q)][i]
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


@lru_cache(maxsize=None)
def class_signature(c: int, fine_classes: int = 1) -> ClassSignature:
    """The deterministic signature of class ``c`` (independent of the number of classes).

    ``fine_classes = g > 1``: classes ``c`` with the same ``c // g`` share one *coarse* signature
    (colour, shape, texture, motion, background tint, sound: everything below computed from ``c // g``)
    and differ only in ``fine_index = c % g``, the orientation of a fine grating drawn on their key
    objects (:func:`_class_sprite`)."""
    if not 0 <= c < 64:
        raise ValueError(f"class index {c} outside [0, 64)")
    if fine_classes > 1:
        coarse = class_signature(c // fine_classes)
        return dataclasses.replace(coarse, index=c, texture="solid", fine_index=c % fine_classes,
                                   fine_classes=fine_classes)
    colour, rgb = COLOURS[c % 12]
    shape = SHAPES[(c + 5 * (c // 12)) % 12]
    texture = TEXTURES[(c + c // 12) % 3]
    motion = MOTIONS[(c + 3 * (c // 12)) % len(MOTIONS)]
    tint = _hsv_to_rgb((0.05 + c * 0.3819660113) % 1.0, 0.6, 0.85)
    tone = 220.0 * 2.0 ** (((37 * c) % 64) / 16.0)
    tone2 = tone * (0.0, 1.5, 1.26)[(c // 4) % 3]
    beep = (0.0, 2.0, 3.0, 5.0)[c % 4]
    return ClassSignature(c, colour, rgb, shape, texture, motion, tint, tone, tone2, beep)


def class_names(num_classes: int, fine_classes: int = 1) -> list[str]:
    """Human-readable, unique class names, e.g. ``red_circle_linear`` (row i = class i)."""
    if not 1 <= num_classes <= 64:
        raise ValueError(f"num_classes={num_classes} outside [1, 64]")
    return [class_signature(c, fine_classes).name for c in range(num_classes)]


# ------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Segment:
    start: int  # first frame
    end: int  # one past the last frame
    kind: str  # salient | distractor | blur | dark | fade
    code: int  # class shown (salient / distractor) or GT_LOWQ


@dataclass(frozen=True, eq=False)
class VideoPlan:
    video_id: str
    label: int
    index: int  # video index within its class
    split: str
    num_frames: int
    codes: np.ndarray  # int16 [num_frames]
    segments: tuple[Segment, ...]
    has_audio: bool
    render_seed: int
    audio_seed: int

    @property
    def gt(self) -> str:
        return encode_gt(self.codes)


@dataclass(frozen=True)
class Candidate:
    video_id: str
    path: str  # absolute
    labels: tuple[int, ...]
    split: str
    gt: str


def video_id(label: int, index: int) -> str:
    return f"c{label:02d}_v{index:04d}"


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, val, test) counts of one class: rounded fractions, every split with a non-zero
    fraction gets at least one video when ``n >= 3``."""
    tr = min(n, int(round(fractions[0] * n)))
    va = min(n - tr, int(round(fractions[1] * n)))
    counts = [tr, va, n - tr - va]
    if n >= 3:
        for i in range(3):
            if fractions[i] > 0 and counts[i] == 0:
                j = int(np.argmax(counts))
                counts[j] -= 1
                counts[i] += 1
    return counts[0], counts[1], counts[2]


def _split_of(p: SyntheticParams, index: int) -> str:
    tr, va, _ = split_counts(p.videos_per_class, tuple(p.split))
    return "train" if index < tr else "val" if index < tr + va else "test"


def _length_range(p: SyntheticParams) -> tuple[int, int]:
    if p.preset == "trimmed":
        lo = max(8, p.min_frames // 4)
        return lo, max(lo, 16, p.min_frames // 2)
    return p.min_frames, max(p.min_frames, p.max_frames)


def _has_audio(p: SyntheticParams, label: int, index: int) -> bool:
    total = p.num_classes * p.videos_per_class
    n_missing = int(round(p.audio_missing_fraction * total))
    if n_missing == 0:
        return True
    perm = np.random.default_rng([p.seed, 0xA0D10]).permutation(total)
    return bool(perm[label * p.videos_per_class + index] >= n_missing)


def _composition(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``n`` split into ``k`` positive random parts."""
    if k <= 1:
        return [n]
    cuts = np.sort(rng.choice(np.arange(1, n), size=k - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n]])).astype(int).tolist()


def plan_video(p: SyntheticParams, video_index: int, label: int) -> VideoPlan:
    """Length, per-frame codes, segments, audio flag and render seeds of one video (pure)."""
    C = p.num_classes
    if not 0 <= label < C:
        raise ValueError(f"label {label} outside [0, {C})")
    if not 0 <= video_index < p.videos_per_class:
        raise ValueError(f"video_index {video_index} outside [0, {p.videos_per_class})")
    rng = np.random.default_rng([p.seed, 0x5E9, label, video_index])
    lo, hi = _length_range(p)
    L = int(rng.integers(lo, hi + 1))

    n_sal = max(1, int(round(p.salient_fraction * L)))
    n_dis = int(round(p.distractor_fraction * L)) if C > 1 else 0
    n_lq = int(round(p.lowq_fraction * L))
    # segment counts, 1..max_segments each (never more segments than frames)
    k_sal = min(int(rng.integers(1, p.max_segments + 1)), n_sal)
    k_dis = min(int(rng.integers(1, p.max_segments + 1)), n_dis)
    k_lq = min(int(rng.integers(1, p.max_segments + 1)), n_lq)

    # room: every pair of neighbouring segments is separated by >= 1 generic frame
    def gen_left() -> int:
        return L - n_sal - n_dis - n_lq - (k_sal + k_dis + k_lq - 1)

    while gen_left() < 0:
        if k_lq > 1 or k_dis > 1 or k_sal > 1:  # fewer segments first
            if k_lq >= max(k_dis, k_sal) and k_lq > 1:
                k_lq -= 1
            elif k_dis >= k_sal and k_dis > 1:
                k_dis -= 1
            else:
                k_sal -= 1
        elif n_lq > 0:  # then fewer frames (tiny videos only)
            n_lq -= 1
            k_lq = min(k_lq, n_lq)
        elif n_dis > 0:
            n_dis -= 1
            k_dis = min(k_dis, n_dis)
        elif n_sal > 1:
            n_sal -= 1
        else:
            break

    segs: list[tuple[str, int, int]] = []  # (kind, length, code)
    for n in _composition(rng, n_sal, k_sal):
        segs.append(("salient", n, label))
    if k_dis:
        for n in _composition(rng, n_dis, k_dis):
            j = int(rng.integers(C - 1))
            segs.append(("distractor", n, j + (j >= label)))
    if k_lq:
        for n in _composition(rng, n_lq, k_lq):
            segs.append((LOWQ_KINDS[int(rng.integers(len(LOWQ_KINDS)))], n, GT_LOWQ))
    order = rng.permutation(len(segs))
    segs = [segs[i] for i in order]

    K = len(segs)
    extra = max(0, L - sum(s[1] for s in segs) - (K - 1))
    gaps = rng.multinomial(extra, np.full(K + 1, 1.0 / (K + 1)))
    gaps[1:K] += 1

    codes = np.full(L, GT_GENERIC, dtype=np.int16)
    segments = []
    pos = int(gaps[0])
    for i, (kind, n, code) in enumerate(segs):
        codes[pos:pos + n] = code
        segments.append(Segment(pos, pos + n, kind, int(code)))
        pos += n + int(gaps[i + 1])
    assert pos == L, (pos, L)

    render_seed, audio_seed = (int(x) for x in rng.integers(0, 2**63 - 1, size=2))
    return VideoPlan(
        video_id=video_id(label, video_index), label=label, index=video_index,
        split=_split_of(p, video_index), num_frames=L, codes=codes, segments=tuple(segments),
        has_audio=_has_audio(p, label, video_index), render_seed=render_seed, audio_seed=audio_seed,
    )


# ------------------------------------------------------------------------------- sprites
def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` on normalised coordinates (object radius = 1)."""
    r = np.hypot(u, v)
    au, av_ = np.abs(u), np.abs(v)
    if shape == "circle":
        return r <= 0.95
    if shape == "square":
        return np.maximum(au, av_) <= 0.78
    if shape == "triangle":
        m = np.ones_like(u, dtype=bool)
        for ang in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
            m &= (-(math.cos(ang) * u + math.sin(ang) * v)) <= 0.48  # v grows downwards
        return m
    if shape == "star":
        th = np.arctan2(v, u) + math.pi / 2
        return r <= 0.4 + 0.58 * (0.5 + 0.5 * np.cos(5 * th)) ** 1.5
    if shape == "cross":
        return ((au <= 0.3) & (av_ <= 0.95)) | ((av_ <= 0.3) & (au <= 0.95))
    if shape == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if shape == "diamond":
        return au + av_ <= 0.98
    if shape == "bars":
        return (au <= 0.9) & (av_ <= 0.92) & (np.abs(v - np.round(v / 0.74) * 0.74) <= 0.2)
    if shape == "hexagon":
        return np.maximum(au * 0.866 + av_ * 0.5, av_) <= 0.84
    if shape == "crescent":
        return (r <= 0.95) & (np.hypot(u - 0.45, v + 0.1) > 0.72)
    if shape == "xmark":
        a, b = (u + v) * 0.7071, (u - v) * 0.7071
        return ((np.abs(a) <= 0.24) & (np.abs(b) <= 0.95)) | ((np.abs(b) <= 0.24) & (np.abs(a) <= 0.95))
    if shape == "frame":
        m = np.maximum(au, av_)
        return (m <= 0.85) & (m >= 0.52)
    raise ValueError(f"unknown shape {shape!r}")


def _grid(radius: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """2x supersampled normalised coordinates of a (2R+1)^2 sprite, rotated by ``angle``."""
    n = 2 * radius + 1
    t = ((np.arange(2 * n) + 0.5) / 2.0 - n / 2.0) / (radius + 0.5)
    u, v = np.meshgrid(t, t)
    c, s = math.cos(angle), math.sin(angle)
    return c * u + s * v, -s * u + c * v


def _downsample2(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x.reshape(h, 2, w, 2, *x.shape[2:]).mean(axis=(1, 3))


@lru_cache(maxsize=4096)
def _class_sprite(c: int, radius: int, angle_q: int, fine_classes: int = 1,
                  fine_period: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """(alpha [h,w,1], rgb [h,w,3]) float32 of class ``c``'s key object.

    With ``fine_classes > 1`` the object carries a grating of ``fine_period`` pixels whose orientation
    (``grating_deg``, fixed in image coordinates, so an object that rotates keeps it) is the only thing
    that tells apart the classes of one coarse group: resolved at the rendered size, averaged to a flat
    colour by an antialiased resize to half of it (period < 2 px)."""
    sig = class_signature(c, fine_classes)
    u, v = _grid(radius, 2 * math.pi * angle_q / _N_ANGLES)
    mask = _shape_mask(sig.shape, u, v).astype(np.float32)
    rgb = np.asarray(sig.rgb, dtype=np.float32)
    col = np.broadcast_to(rgb, u.shape + (3,)).copy()
    if fine_classes > 1:
        x, y = (w * (radius + 0.5) for w in _grid(radius, 0.0))  # unrotated, in pixels
        th = math.radians(sig.grating_deg)
        col[((x * math.cos(th) + y * math.sin(th)) / fine_period % 1.0) < 0.5] = rgb * 0.3
    if sig.texture == "stripes":
        stripe = ((u + v) / 0.42 % 1.0) < 0.5
        col[stripe] = rgb * 0.35
    elif sig.texture == "dots":
        du = u - np.round(u / 0.5) * 0.5
        dv = v - np.round(v / 0.5) * 0.5
        col[np.hypot(du, dv) <= 0.14] = rgb * 0.35 + 165.0
    alpha = _downsample2(mask)[..., None]
    # colour averaged under the mask, so edges do not bleed dark texture
    rgb_img = _downsample2(col * mask[..., None]) / np.maximum(alpha, 1e-6)
    return np.ascontiguousarray(alpha, dtype=np.float32), np.ascontiguousarray(rgb_img, dtype=np.float32)


@lru_cache(maxsize=1024)
def _clutter_sprite(shape: str, radius: int) -> np.ndarray:
    u, v = _grid(radius, 0.0)
    return np.ascontiguousarray(_downsample2(_shape_mask(shape, u, v).astype(np.float32))[..., None])


def _sprite_origin(cx: float, cy: float, r: int) -> tuple[int, int]:
    """Canvas (x, y) of the top-left pixel of a (2r+1)^2 sprite centred at (cx, cy)."""
    return int(round(cx)) - r, int(round(cy)) - r


def _clip_box(P: int, cx: float, cy: float, r: int):
    x0, y0 = _sprite_origin(cx, cy, r)
    x1, y1 = x0 + 2 * r + 1, y0 + 2 * r + 1
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, P), min(y1, P)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))


def _blit(canvas: np.ndarray, alpha: np.ndarray, colour, cx: float, cy: float) -> None:
    """Alpha-composite a sprite centred at (cx, cy) into ``canvas`` (float32, in place)."""
    r = alpha.shape[0] // 2
    box = _clip_box(canvas.shape[0], cx, cy, r)
    if box is None:
        return
    dst, src = box
    region = canvas[dst]
    a = alpha[src]
    col = colour[src] if isinstance(colour, np.ndarray) and colour.ndim == 3 else colour
    region += a * (col - region)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold ``x`` into [lo, hi] like a ball bouncing off the walls."""
    span = max(hi - lo, 1e-6)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    """Separable box blur (radius r) of an [H, W, 3] float image, edges replicated."""
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float32)
        n = img.shape[axis]
        hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        img = (hi - lo) / (2 * r + 1)
    return img


# ------------------------------------------------------------------------------- frames
def _object_track(motion: str, tau: np.ndarray, S: int, P: int, rng: np.random.Generator):
    """Centres, radii and angle indices of the two key objects over local times ``tau``."""
    c0 = P / 2.0
    A = 0.26 * S
    R1, R2 = max(3, int(round(0.19 * S))), max(2, int(round(0.12 * S)))
    omega = 2 * math.pi / rng.uniform(28.0, 44.0)  # rad / frame
    phase = rng.uniform(0, 2 * math.pi)
    d = float(rng.choice([-1.0, 1.0]))
    lo, hi = c0 - S / 2.0, c0 + S / 2.0  # the visible window (before jitter)
    n = tau.size
    ang = np.zeros((2, n), dtype=np.int64)
    rad = np.array([[R1] * n, [R2] * n], dtype=np.int64)
    if motion == "linear":
        speed = d * S / rng.uniform(28.0, 40.0)
        x1 = _reflect(rng.uniform(lo + R1, hi - R1) + speed * tau, lo + R1, hi - R1)
        x2 = _reflect(rng.uniform(lo + R2, hi - R2) - speed * 1.3 * tau, lo + R2, hi - R2)
        y1 = np.full(n, c0 - 0.17 * S)
        y2 = np.full(n, c0 + 0.25 * S)
    elif motion in ("orbit", "spiral"):
        th = phase + d * omega * tau
        rr = A if motion == "orbit" else A * (0.35 + 0.65 * np.abs(np.sin(0.5 * omega * tau + phase)))
        x1, y1 = c0 + rr * np.cos(th), c0 + rr * np.sin(th)
        x2, y2 = c0 - rr * np.cos(th), c0 - rr * np.sin(th)
    elif motion == "bounce":
        floor, H = hi - R1, 0.55 * S
        x1 = _reflect(rng.uniform(lo + R1, hi - R1) + d * 0.6 * S / 40.0 * tau, lo + R1, hi - R1)
        y1 = floor - H * np.abs(np.sin(omega * tau + phase))
        x2 = _reflect(x1 + S / 2.0, lo + R2, hi - R2)
        y2 = (hi - R2) - 0.4 * S * np.abs(np.sin(1.5 * omega * tau + phase + 1.0))
    elif motion == "zigzag":
        speed = d * S / rng.uniform(30.0, 45.0)
        x1 = _reflect(rng.uniform(lo + R1, hi - R1) + speed * tau, lo + R1, hi - R1)
        tri = 2.0 * np.abs(((omega * tau + phase) / math.pi) % 2.0 - 1.0) - 1.0
        y1 = c0 + 0.6 * A * tri
        x2 = _reflect(x1 + S / 2.0, lo + R2, hi - R2)
        y2 = c0 - 0.6 * A * tri
    elif motion == "rotate":
        x1 = np.full(n, c0 - 0.12 * S)
        y1 = np.full(n, c0 - 0.05 * S)
        x2 = np.full(n, c0 + 0.27 * S)
        y2 = np.full(n, c0 + 0.25 * S)
        q = np.round((phase + d * 1.5 * omega * tau) / (2 * math.pi) * _N_ANGLES).astype(np.int64)
        ang[0] = q % _N_ANGLES
        ang[1] = (-2 * q) % _N_ANGLES
    elif motion == "pulse":
        x1 = np.full(n, c0 + rng.uniform(-0.1, 0.1) * S)
        y1 = np.full(n, c0 + rng.uniform(-0.1, 0.1) * S)
        x2 = x1 + 0.3 * S * d
        y2 = y1 - 0.3 * S
        s = 1.0 + 0.3 * np.sin(1.5 * omega * tau + phase)
        rad[0] = np.maximum(3, np.round(R1 * s)).astype(np.int64)
        rad[1] = np.maximum(2, np.round(R2 * (2.0 - s))).astype(np.int64)
    elif motion == "figure8":
        th = phase + d * omega * tau
        x1, y1 = c0 + 1.1 * A * np.sin(th), c0 + 0.55 * A * np.sin(2 * th)
        x2, y2 = c0 - 1.1 * A * np.sin(th), c0 - 0.55 * A * np.sin(2 * th)
    else:  # pragma: no cover
        raise ValueError(motion)
    return np.stack([x1, x2]), np.stack([y1, y2]), rad, ang


@dataclass(frozen=True, eq=False)
class _Scene:
    """Everything :func:`render_frames` draws before its frame loop (in this order from ``rng``)."""
    bg: np.ndarray  # float32 [P,P,3] generic background
    clutter: list  # (sprite, grey, x [L], y [L]) per clutter shape
    jx: np.ndarray  # int [L] camera jitter: the frame is canvas[J+jy : J+jy+S, J+jx : J+jx+S]
    jy: np.ndarray
    gain: np.ndarray  # float32 [L]
    seg_of: np.ndarray  # int64 [L] segment index of every frame, -1 = generic
    tracks: dict  # segment index -> _object_track(...) of a salient / distractor segment
    lowq: dict  # segment index -> low-quality parameters
    rng: np.random.Generator  # continues with the per-frame noise


def _scene(p: SyntheticParams, plan: VideoPlan) -> _Scene:
    """The video's scene: background, clutter, jitter, gain, object tracks (the only draws from
    ``plan.render_seed`` before the per-frame noise, so rendering and :func:`object_boxes` share them)."""
    rng = np.random.default_rng(plan.render_seed)
    S, J, L = p.size, p.jitter, plan.num_frames
    P = S + 2 * J
    t = np.arange(L, dtype=np.float64)

    # generic scene: neutral grey gradient background (R = G = B) + moving grey clutter
    yy, xx = np.meshgrid(np.linspace(-1, 1, P), np.linspace(-1, 1, P), indexing="ij")
    g0 = rng.uniform(95.0, 150.0)
    th = rng.uniform(0, 2 * math.pi)
    bg = g0 + 20.0 * (xx * math.cos(th) + yy * math.sin(th)) + 6.0 * np.cos(
        rng.uniform(1.0, 3.0) * math.pi * xx + rng.uniform(0, 2 * math.pi)) * np.cos(
        rng.uniform(1.0, 3.0) * math.pi * yy + rng.uniform(0, 2 * math.pi))
    bg = np.repeat(bg.astype(np.float32)[..., None], 3, axis=2)

    clutter = []
    for _ in range(int(rng.integers(3, 7))):
        shape = CLUTTER_SHAPES[int(rng.integers(len(CLUTTER_SHAPES)))]
        r = max(2, int(round(rng.uniform(0.05, 0.12) * S)))
        grey = float(rng.uniform(70.0, 185.0))
        vx, vy = rng.uniform(-1.2, 1.2, size=2) * S / 112.0
        x = _reflect(rng.uniform(r, P - r) + vx * t, r, P - r)
        y = _reflect(rng.uniform(r, P - r) + vy * t, r, P - r)
        clutter.append((_clutter_sprite(shape, r), grey, x, y))

    # camera jitter (smooth), slow gain flicker
    def smooth_wave() -> np.ndarray:
        w = np.zeros(L)
        for amp in (0.65, 0.35):
            w += amp * np.sin(2 * math.pi * t / rng.uniform(15.0, 60.0) + rng.uniform(0, 2 * math.pi))
        return w
    jx = np.clip(np.round(J * smooth_wave()), -J, J).astype(int)
    jy = np.clip(np.round(J * smooth_wave()), -J, J).astype(int)
    gain = (1.0 + 0.05 * np.sin(2 * math.pi * t / rng.uniform(40.0, 120.0) + rng.uniform(0, 6.3))).astype(np.float32)

    # per-segment state
    seg_of = np.full(L, -1, dtype=np.int64)
    tracks: dict[int, tuple] = {}
    lowq: dict[int, tuple] = {}
    for si, seg in enumerate(plan.segments):
        seg_of[seg.start:seg.end] = si
        tau = np.arange(seg.end - seg.start, dtype=np.float64)
        if seg.kind in ("salient", "distractor"):
            tracks[si] = _object_track(class_signature(seg.code, p.fine_classes).motion, tau, S, P, rng)
        elif seg.kind == "blur":
            lowq[si] = (max(2, S // 14),)
        elif seg.kind == "dark":
            lowq[si] = (float(rng.uniform(0.06, 0.16)),)
        elif seg.kind == "fade":
            lowq[si] = (float(rng.choice([8.0, 245.0])),)
    return _Scene(bg, clutter, jx, jy, gain, seg_of, tracks, lowq, rng)


def render_frames(p: SyntheticParams, plan: VideoPlan) -> Iterator[np.ndarray]:
    """The video's frames, ``uint8 [size, size, 3]`` RGB, one at a time (deterministic)."""
    sc = _scene(p, plan)
    S, J, L = p.size, p.jitter, plan.num_frames
    bg, clutter, jx, jy, gain, seg_of, tracks, lowq, rng = (
        sc.bg, sc.clutter, sc.jx, sc.jy, sc.gain, sc.seg_of, sc.tracks, sc.lowq, sc.rng)

    tint_bg: dict[int, np.ndarray] = {}
    noise_std = float(p.noise)
    for f in range(L):
        si = int(seg_of[f])
        seg = plan.segments[si] if si >= 0 else None
        if seg is not None and seg.code >= 0:
            c = seg.code
            if c not in tint_bg:
                tint_bg[c] = (0.55 * bg + 0.45 * np.asarray(class_signature(c, p.fine_classes).tint,
                                                             np.float32)).astype(np.float32)
            canvas = tint_bg[c].copy()
        else:
            canvas = bg.copy()
        for sprite, grey, x, y in clutter:
            _blit(canvas, sprite, grey, x[f], y[f])
        if seg is not None and seg.code >= 0:
            xs, ys, rad, ang = tracks[si]
            k = f - seg.start
            for o in range(2):
                alpha, rgb = _class_sprite(seg.code, int(rad[o, k]), int(ang[o, k]), p.fine_classes, p.fine_period)
                _blit(canvas, alpha, rgb, xs[o, k], ys[o, k])
        frame = canvas[J + jy[f]:J + jy[f] + S, J + jx[f]:J + jx[f] + S]
        if seg is not None and seg.kind == "blur":
            frame = _box_blur(_box_blur(frame, lowq[si][0]), lowq[si][0])
        elif seg is not None and seg.kind == "dark":
            frame = frame * lowq[si][0]
        elif seg is not None and seg.kind == "fade":
            n = seg.end - seg.start
            w = 0.55 + 0.4 * math.sin(math.pi * (f - seg.start + 0.5) / n)
            frame = frame * (1.0 - w) + w * lowq[si][0]
        frame = frame * gain[f]
        if noise_std > 0:
            frame = frame + rng.standard_normal(frame.shape, dtype=np.float32) * noise_std
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=4096)
def _sprite_extent(c: int, radius: int, angle_q: int, fine_classes: int, fine_period: float) -> tuple[int, int, int, int]:
    """(j0, i0, j1, i1): the half-open column / row range of the key-object sprite's pixels with alpha > 0."""
    alpha = _class_sprite(c, radius, angle_q, fine_classes, fine_period)[0][..., 0]
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def object_boxes(p: SyntheticParams, plan: VideoPlan) -> FrameBoxes:
    """Spatial ground truth of one video: where its key objects are drawn, frame by frame.

    ``boxes [L, 2, 4]`` float32, object 0 = the large key object, 1 = the small one, each
    ``(x0, y0, x1, y1)`` in pixels of the written ``size x size`` frame, half-open (the object covers
    the pixel columns ``x0 .. x1 - 1``), tight around the pixels the sprite paints (alpha > 0: its
    antialiased edge included, occlusion by the other object not removed), after the camera jitter
    and the motion pattern exactly as :func:`render_frames` draws them and clipped to the frame; NaN
    where the object is not drawn (generic and low-quality frames) or lies wholly outside the frame.
    ``codes`` are the plan's per-frame codes, so an object in a distractor frame is marked as another
    class's (:meth:`FrameBoxes.target` keeps the video's own class only). Costs no rendering: only the
    scene draws (:func:`_scene`) are replayed.
    """
    sc = _scene(p, plan)
    S, J, L = p.size, p.jitter, plan.num_frames
    boxes = np.full((L, 2, 4), np.nan, dtype=np.float32)
    for si, (xs, ys, rad, ang) in sc.tracks.items():
        seg = plan.segments[si]
        for k in range(seg.end - seg.start):
            f = seg.start + k
            for o in range(2):
                j0, i0, j1, i1 = _sprite_extent(seg.code, int(rad[o, k]), int(ang[o, k]), p.fine_classes,
                                                p.fine_period)
                x, y = _sprite_origin(xs[o, k], ys[o, k], int(rad[o, k]))
                x -= J + int(sc.jx[f])  # canvas -> frame
                y -= J + int(sc.jy[f])
                bx0, by0 = max(x + j0, 0), max(y + i0, 0)
                bx1, by1 = min(x + j1, S), min(y + i1, S)
                if bx0 < bx1 and by0 < by1:
                    boxes[f, o] = (bx0, by0, bx1, by1)
    return FrameBoxes(boxes=boxes, codes=plan.codes.copy(), size=(S, S))


# -------------------------------------------------------------------------------- audio
def render_audio(p: SyntheticParams, plan: VideoPlan) -> np.ndarray:
    """Mono float32 waveform at 16 kHz, exactly the video's duration."""
    rng = np.random.default_rng(plan.audio_seed)
    n = int(round(plan.num_frames * AUDIO_RATE / p.fps))
    sig = (rng.standard_normal(n) * 0.01).astype(np.float32)
    frame = np.minimum((np.arange(n) * p.fps / AUDIO_RATE).astype(np.int64), plan.num_frames - 1)
    code = plan.codes[frame]
    t = np.arange(n, dtype=np.float64) / AUDIO_RATE
    for c in np.unique(code[code >= 0]):
        m = code == c
        tm = t[m]
        sig_c = class_signature(int(c), p.fine_classes)
        tone = np.sin(2 * math.pi * sig_c.tone_hz * tm)
        if sig_c.tone2_hz > 0:
            tone = (tone + 0.6 * np.sin(2 * math.pi * sig_c.tone2_hz * tm)) / 1.6
        if sig_c.beep_hz > 0:
            ph = (tm * sig_c.beep_hz) % 1.0
            tone = tone * np.clip(np.minimum(ph, 0.5 - ph) * 80.0, 0.0, 1.0)  # 50 % duty, soft edges
        sig[m] += (0.3 * tone).astype(np.float32)
    return np.clip(sig, -1.0, 1.0)


# -------------------------------------------------------------------------------- write
def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def render_video(p: SyntheticParams, plan: VideoPlan, path: Path) -> None:
    """Render and encode one video; written to a temp file in the same folder, then renamed."""
    import av  # lazily: keeps plan-only users free of PyAV

    k = str(p.keyframe_interval)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            # mbtree=0: x264's macroblock-tree rate control with B-frames reads uninitialised
            # memory (output bytes then depend on the process's heap history); without it the
            # encode is a pure function of the frames
            vs = out.add_stream("libx264", rate=_rate(p.fps), options={
                "g": k, "keyint_min": k, "sc_threshold": "0", "crf": "20", "preset": "veryfast",
                "mbtree": "0"})
            vs.width = vs.height = p.size
            vs.pix_fmt = "yuv420p"
            vs.gop_size = p.keyframe_interval
            vs.codec_context.thread_count = 1
            aus = None
            if plan.has_audio:
                aus = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
                aus.bit_rate = 48000
                aus.codec_context.thread_count = 1
            for i, img in enumerate(render_frames(p, plan)):
                fr = av.VideoFrame.from_ndarray(img, format="rgb24")
                fr.pts = i
                out.mux(vs.encode(fr))
            out.mux(vs.encode(None))
            if aus is not None:
                wav = render_audio(p, plan)
                step = 1024
                for s in range(0, wav.size, step):
                    af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[None, s:s + step]),
                                                    format="fltp", layout="mono")
                    af.sample_rate = AUDIO_RATE
                    af.pts = s
                    out.mux(aus.encode(af))
                out.mux(aus.encode(None))


def _render_job(job: tuple[SyntheticParams, VideoPlan, str]) -> str:
    p, plan, path = job
    render_video(p, plan, Path(path))
    return plan.video_id


def _mp_context():
    """fork when this process runs a single Python thread (works from unguarded scripts and
    notebooks), spawn otherwise (forking a threaded process, e.g. a Prefect task runner, can
    deadlock; spawn needs the usual ``if __name__ == "__main__":`` guard in scripts)."""
    import threading

    others = [t for t in threading.enumerate()
              if t is not threading.current_thread() and type(t).__name__ != "TMonitor"]  # tqdm's
    if os.name == "posix" and "fork" in mp.get_all_start_methods() and not others:
        return mp.get_context("fork")
    return mp.get_context("spawn")


def generate(p: SyntheticParams, out_dir: Path, workers: int = 2) -> tuple[list[Candidate], list[str]]:
    """Write every video to ``out_dir/videos/<video_id>.mp4`` (existing ones are kept: resume) and
    the spatial ground truth of all of them to ``out_dir/boxes.npz`` (:func:`object_boxes`,
    :func:`components.data.manifest.write_boxes`; rewritten every call, byte-identical for the same params).

    Returns the candidates (one per video, class-major order) and the class names.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir).resolve()
    vdir = out_dir / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    names = class_names(p.num_classes, p.fine_classes)
    plans = [plan_video(p, i, c) for c in range(p.num_classes) for i in range(p.videos_per_class)]
    cands, jobs = [], []
    for plan in plans:
        path = vdir / f"{plan.video_id}.mp4"
        cands.append(Candidate(plan.video_id, str(path), (plan.label,), plan.split, plan.gt))
        if not path.exists():
            jobs.append((p, plan, str(path)))
    write_boxes(out_dir / BOXES_FILE, {plan.video_id: object_boxes(p, plan) for plan in plans})
    ctx = _mp_context() if workers > 1 and len(jobs) > 1 else None
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not jobs)
    try:
        if ctx is None:
            for job in jobs:
                _render_job(job)
                bar.update()
        else:
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for _ in pool.imap_unordered(_render_job, jobs):
                    bar.update()
    finally:
        bar.close()
    return cands, names
