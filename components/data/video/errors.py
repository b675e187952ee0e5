"""The one exception of the video package: :class:`VideoError` and its :data:`REASONS` words.

Also :func:`_short`, the one-line text of an unexpected exception that the readers put into a
:class:`VideoError`'s ``detail`` or a debug log line.
"""
from __future__ import annotations

REASONS = ("missing", "empty_file", "not_a_video", "no_video_stream", "too_few_frames",
           "absurd_frame_count", "truncated", "decode_failed")


class VideoError(Exception):
    """A video that cannot be used.

    ``reason`` is one of :data:`REASONS` (short, machine-friendly, goes into the quarantine table);
    ``detail`` is human-readable text. ``str(err) == f"{reason}: {detail}"``.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.reason, self.detail))


def _short(e: BaseException, n: int = 200) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:n]}"
