"""Video decoding and validation: the only package that touches video files.

* :func:`probe` checks one file and returns a :class:`VideoInfo`, or raises :class:`VideoError`
  whose ``reason`` is one short machine-friendly word (see :data:`REASONS`); the dataset stage
  writes that reason into the quarantine table.
* :func:`validate_paths` probes many files / folders and never raises: one dict per file.
* :func:`uniform_indices` + :func:`read_frames` + :func:`resize_center` give the T observation
  frames of a video as a float tensor.
* :func:`log_mel` + :func:`read_audio_windows` give VGGish-style log-mel windows centred on those
  frames (``None`` when the file has no audio; audio is never faked).

Decoding goes through decord first (fast random access) and falls back to PyAV, which also serves
as the reference for frame counts: decord is known to over-report the frame count of some files, so
when decord and the container disagree the frames are counted with PyAV. decord's random access
silently returns *wrong frames* on AVI with B-frames and on open-GOP H.264; :func:`read_frames`
checks each file once (cached) and decodes those with PyAV.

One job per module (this file only re-exports the public names):

* :mod:`.errors` - :class:`VideoError`, :data:`REASONS`;
* :mod:`.info` - :class:`StreamInfo` (the measured fields, shared with the manifest's
  ``VideoRecord``) and :class:`VideoInfo`;
* :mod:`.container` - the truncation check from the container's own size fields;
* :mod:`.decoders` - opening PyAV / decord (both imported lazily);
* :mod:`.pyav` - PyAV's frame-exact readers and frame counts;
* :mod:`.plan` - which reader a file needs (decord, PyAV seek, PyAV sequential);
* :mod:`.probing` - :func:`probe`, :func:`validate_paths`, :data:`VIDEO_EXTENSIONS`;
* :mod:`.sampling` - :func:`uniform_indices`;
* :mod:`.frames` - :func:`read_frames`, :func:`resize_center`;
* :mod:`.mel` - :func:`mel_matrix`, :func:`log_mel`;
* :mod:`.audio` - :func:`read_audio_windows`.

torch is imported on first use (:func:`resize_center`), so importing this package stays cheap.
"""
from __future__ import annotations

from components.data.video.audio import read_audio_windows
from components.data.video.errors import REASONS, VideoError
from components.data.video.frames import read_frames, resize_center
from components.data.video.info import StreamInfo, VideoInfo
from components.data.video.mel import log_mel, mel_matrix
from components.data.video.probing import VIDEO_EXTENSIONS, probe, validate_paths
from components.data.video.sampling import uniform_indices

__all__ = ["REASONS", "VIDEO_EXTENSIONS", "StreamInfo", "VideoError", "VideoInfo", "log_mel", "mel_matrix",
           "probe", "read_audio_windows", "read_frames", "resize_center", "uniform_indices", "validate_paths"]
