"""Opening the two decoders: PyAV (imported on first use) and decord's ``VideoReader``.

Both libraries are imported lazily, so ``import components.data.video`` stays cheap; the readers
look :func:`_open_decord` up in their own module, where the tests monkeypatch it.
"""
from __future__ import annotations

import numpy as np


def _import_av():
    import av  # noqa: PLC0415 (lazy: keep `import components.data.video` cheap)
    return av


def _open_decord(path: str):
    """``decord.VideoReader`` on CPU with one thread (monkeypatched by the tests)."""
    import decord  # noqa: PLC0415
    return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)


def _to_numpy(x) -> np.ndarray:
    """decord NDArray / torch tensor (when a decord bridge is set globally) / array -> numpy."""
    if hasattr(x, "asnumpy"):
        return x.asnumpy()
    import torch  # noqa: PLC0415 (lazy: only a decord bridge hands out tensors)
    if isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    return np.asarray(x)
