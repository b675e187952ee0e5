"""Audio of a video as log-mel windows centred on its frames: :func:`read_audio_windows`.

The whole track is decoded once (mono, resampled; decord first, PyAV as the fallback) and turned
into a :func:`~components.data.video.mel.log_mel` spectrogram. A file without an audio stream gives
``None``: audio is never faked.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from components.data.video.decoders import _import_av, _to_numpy
from components.data.video.errors import VideoError, _short
from components.data.video.mel import log_mel

log = logging.getLogger(__name__)


def _open_decord_audio(path: str, sample_rate: int):
    """``decord.AudioReader`` (mono, resampled to ``sample_rate``; monkeypatched by the tests)."""
    import decord  # noqa: PLC0415
    return decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)


def _has_audio_stream(spath: str) -> bool:
    av = _import_av()
    try:
        with av.open(spath) as c:
            return len(c.streams.audio) > 0
    except Exception as e:  # noqa: BLE001
        raise VideoError("not_a_video", f"{spath}: {_short(e)}") from e


def _decode_audio(spath: str, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform at ``sample_rate`` (decord, then PyAV)."""
    try:
        ar = _open_decord_audio(spath, sample_rate)
        wav = _to_numpy(ar[:]).astype(np.float32).reshape(-1)
        if wav.size:
            return wav
        raise ValueError("decord returned no samples")
    except Exception as e:  # noqa: BLE001
        log.debug("%s: decord audio failed (%s), falling back to PyAV", spath, _short(e))
    av = _import_av()
    try:
        with av.open(spath) as c:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            parts = []
            for frame in c.decode(c.streams.audio[0]):
                frame.pts = None  # let the resampler run on sample counts (avoids pts gaps/jitter errors)
                parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
            parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    except Exception as e:  # noqa: BLE001
        raise VideoError("decode_failed", f"{spath}: audio decode failed: {_short(e)}") from e
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def read_audio_windows(path, times: np.ndarray, *, sample_rate: int = 16000, n_mels: int = 64,
                       window_frames: int = 96) -> np.ndarray | None:
    """Log-mel windows centred on ``times`` (seconds): float32 ``[len(times), window_frames, n_mels]``.

    The whole track is decoded (mono, resampled to ``sample_rate``; decord then PyAV), zero-padded
    in the waveform on both sides (so windows reaching past either end, or times beyond the end of
    the track, see silence) and turned into :func:`log_mel` once; each window is the
    ``window_frames`` consecutive hops whose middle hop is centred at the requested time.

    Returns ``None`` when the file has no audio stream (audio is never faked). Raises
    :class:`VideoError` (``missing``, ``not_a_video``, ``decode_failed``) otherwise.
    """
    spath = str(path)
    if not Path(spath).exists():
        raise VideoError("missing", f"{spath}: no such file")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if not _has_audio_stream(spath):
        return None
    wav = _decode_audio(spath, sample_rate)
    win = int(round(0.025 * sample_rate))
    hop = int(round(0.010 * sample_rate))
    half = window_frames // 2
    # hop j (in the padded signal) covers samples [j*hop, j*hop + win) and is centred at j*hop + win/2
    pad_left = (half + 1) * hop + win
    t_max = float(times.max()) if times.size else 0.0
    end_needed = int(math.ceil(max(t_max, 0.0) * sample_rate)) + (window_frames + 2) * hop + win
    pad_right = max(pad_left, end_needed - len(wav))
    padded = np.concatenate([np.zeros(pad_left, np.float32), wav, np.zeros(pad_right, np.float32)])
    mel = log_mel(padded, sample_rate=sample_rate, n_mels=n_mels)
    centres = np.clip(times, 0.0, None) * sample_rate + pad_left  # sample positions in the padded signal
    j_mid = np.rint((centres - win / 2.0) / hop).astype(np.int64)
    starts = np.clip(j_mid - half, 0, max(0, len(mel) - window_frames))
    out = np.stack([mel[s:s + window_frames] for s in starts]) if times.size else \
        np.zeros((0, window_frames, n_mels), np.float32)
    return out.astype(np.float32, copy=False)
