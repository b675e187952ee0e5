"""A trained sampler as an MLflow model (pyfunc flavour), for the Model Registry.

``tune_fusion`` registers the sampler with the best tuned **val** objective as
``models:/salient-sampler@best``; this module writes it as a real MLflow model directory: an
``MLmodel`` file (``python_function`` flavour), the checkpoint ``seed<s>.pt`` and ``salient.json``
(sampler, seed, fusion setting, val objective, data fingerprint, git commit) as its artifacts, and
the pinned requirements. So that

* ``mlflow.pyfunc.load_model("models:/salient-sampler@best")`` loads it; ``predict`` takes a mapping
  of the feature-store arrays the sampler reads (``[N, T, ...]``, e.g. ``{"light_feats": ...}``) and
  returns ``{"saliency": [N, T], <branch>: [N, T], ...}``; with ``params={"k": K}`` also
  ``"frames"``: the K selected frame indices per video, as ``evaluate`` and ``salient predict`` select
  them (the stored fusion setting applied);
* ``salient predict --checkpoint models:/salient-sampler@best`` finds the checkpoint inside
  (:func:`components.training.sampler_training.resolve_checkpoint`, which needs no ``mlflow.pyfunc``) and
  reports the model's own sampler and seed.

Loading needs this project installed (``pip install -e .``): the model's code is ``components``, which
the model references rather than copies.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from components.evaluation.fusion import select
from components.training.sampler_training import MODEL_META as META, load_sampler
#: the installed distributions a loaded model needs, pinned to the versions that wrote it
REQUIREMENTS = ("torch", "numpy", "mlflow", "timm")


class SamplerModel(mlflow.pyfunc.PythonModel):
    """``python_function`` wrapper of one sampler checkpoint (see the module docstring)."""

    def load_context(self, context) -> None:
        self.meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.sampler = load_sampler(Path(context.artifacts["checkpoint"]))
        self.fusion = self.sampler.check_fusion(self.meta.get("fusion") or {})  # passed to select, not set

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        missing = [k for k in self.sampler.inputs if k not in model_input]
        if missing:
            raise ValueError(f"sampler {self.meta['sampler']!r} reads {list(self.sampler.inputs)}; "
                             f"missing from the input: {missing}")
        return run_sampler(self.sampler, model_input, (params or {}).get("k"), self.fusion)


def run_sampler(sampler, arrays: Mapping[str, Any], k: int | None = None,
                fusion: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The model's output for ``arrays`` (see the module docstring); ``k`` > 0 adds ``frames``, chosen
    with the inference-time ``fusion`` settings (passed to the sampler's ``select``)."""
    batch = {name: torch.as_tensor(np.asarray(arrays[name]), dtype=torch.float32) for name in sampler.inputs}
    with torch.no_grad():
        out = sampler(batch)
    result = {"saliency": out.saliency.float().numpy(), **{b: v.float().numpy() for b, v in out.branches.items()}}
    if k:
        result["frames"] = np.asarray(select(sampler, out, int(k), fusion), dtype=np.int64)
    return result


def save_sampler_model(checkpoint: Path, dst: Path, meta: Mapping[str, Any], example: Mapping[str, np.ndarray],
                       k: int = 3) -> Path:
    """Write the MLflow model directory of ``checkpoint`` at ``dst`` (which must not exist) with
    ``meta`` as ``salient.json``. ``example``: store arrays of a few videos (at least the sampler's
    inputs), saved as the input example; the signature (named float32 tensors in, saliency and branch
    scores out, param ``k`` with default ``k``) is inferred from it. Returns ``dst``."""
    from mlflow.models import infer_signature

    sampler = load_sampler(checkpoint)
    fusion = sampler.check_fusion(meta.get("fusion") or {})
    inputs = {name: np.asarray(example[name], dtype=np.float32) for name in sampler.inputs}
    signature = infer_signature(inputs, run_sampler(sampler, inputs, k, fusion), params={"k": int(k)})
    with tempfile.TemporaryDirectory() as tmp:
        meta_file = Path(tmp) / META
        meta_file.write_text(json.dumps(dict(meta), indent=1, default=str) + "\n")
        reqs = [f"{d}=={metadata.version(d)}" for d in REQUIREMENTS if _installed(d)]
        mlflow.pyfunc.save_model(str(dst), python_model=SamplerModel(), signature=signature, input_example=inputs,
                                 artifacts={"checkpoint": str(checkpoint), "meta": str(meta_file)},
                                 pip_requirements=reqs)
    return dst


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False

