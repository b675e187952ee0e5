"""VGGish-style log-mel spectrograms in pure numpy: :func:`mel_matrix` and :func:`log_mel`."""
from __future__ import annotations

import math

import numpy as np


def _hz_to_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(n_mels: int, n_bins: int, sample_rate: int, lower_hz: float = 125.0,
               upper_hz: float = 7500.0) -> np.ndarray:
    """VGGish mel filterbank ``[n_bins, n_mels]``: triangles evenly spaced on the HTK mel scale.

    ``upper_hz`` is clipped to the Nyquist frequency (VGGish raises instead).
    """
    nyquist = sample_rate / 2.0
    upper_hz = min(upper_hz, nyquist)
    if not 0.0 <= lower_hz < upper_hz:
        raise ValueError(f"mel_matrix: need 0 <= lower ({lower_hz}) < upper ({upper_hz}) Hz")
    bins_mel = _hz_to_mel(np.linspace(0.0, nyquist, n_bins))
    edges = np.linspace(_hz_to_mel(lower_hz), _hz_to_mel(upper_hz), n_mels + 2)
    lo, ce, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (bins_mel[:, None] - lo) / (ce - lo)
    down = (hi - bins_mel[:, None]) / (hi - ce)
    w = np.maximum(0.0, np.minimum(up, down))
    w[0, :] = 0.0  # no DC
    return w


def log_mel(audio: np.ndarray, sample_rate: int = 16000, n_mels: int = 64) -> np.ndarray:
    """VGGish-style log-mel spectrogram, pure numpy: float32 ``[n_hops, n_mels]``.

    25 ms periodic-Hann window, 10 ms hop, FFT length = next power of two, magnitude spectrum, mel
    filterbank 125-7500 Hz (HTK mel), ``log(mel + 0.01)``. Frames are taken without padding, so
    ``n_hops = 1 + (len - win) // hop`` (0 when the signal is shorter than a window). Multi-channel
    input ``[channels, samples]`` is averaged to mono.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"log_mel: expected [samples] or [channels, samples], got {x.shape}")
    win = int(round(0.025 * sample_rate))
    hop = int(round(0.010 * sample_rate))
    nfft = 1 << int(math.ceil(math.log2(win)))
    w = mel_matrix(n_mels, nfft // 2 + 1, sample_rate)
    n_hops = 1 + (len(x) - win) // hop if len(x) >= win else 0
    out = np.empty((n_hops, n_mels), dtype=np.float32)
    if n_hops == 0:
        return out
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    frames = np.lib.stride_tricks.as_strided(x, shape=(n_hops, win), strides=(x.strides[0] * hop, x.strides[0]),
                                             writeable=False)
    chunk = 8192  # bound memory on long tracks
    for s in range(0, n_hops, chunk):
        spec = np.abs(np.fft.rfft(frames[s:s + chunk] * window, n=nfft))
        out[s:s + chunk] = np.log(spec @ w + 0.01)
    return out
