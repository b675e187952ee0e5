"""Fusion *settings*: how a two-branch sampler fuses its branches at inference, and where the values
come from. Read by evaluate, the reports, ``predict``, the val objective and the tuner.

* :func:`components.models.samplers.fusion_samplers` - samplers with inference-time fusion settings and their ``fusion.*`` keys, as
  their classes declare them (``Sampler.fusion_keys``: TSQNet's union ratio ``lambda_v``, TSQNet §3.4
  "Multi-modality Saliency Fusion"; NSNet's strategy and ratio, NSNet supp. §A.3).
* :func:`params_fusion` - the ``fusion`` section's values per sampler.
* :func:`fusion_values` - what evaluate uses: the params' values, or ``data/tuned_fusion.json``
  (written by ``tune_fusion``, checked against the stored saliencies by :func:`saliency_digest`).
* The settings are passed to ``Sampler.select(out, K, fusion)`` (``SamplerRun.fusion`` of
  :func:`components.evaluation.sampler_eval.load_runs`, ``salient predict`` and the registered MLflow
  model alike), never set on the model.

Fusion is an inference-time setting, so changing it never retrains a sampler. The fusion *math*
(score / index fusion, TSQNet's union) is in :mod:`components.core.selection`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from components.core import selection
from components.models.samplers import fusion_samplers, sampler_class
from components.core.params import Params, variant_params
from components.core.paths import Paths

log = logging.getLogger(__name__)

TUNED_FUSION = "tuned_fusion.json"  # beside the feature store: data/tuned_fusion.json

#: NSNet strategies that read the ratio (the others ignore it, so it is not searched for them).
RATIO_STRATEGIES = selection.RATIO_STRATEGIES


def params_fusion(p: Params) -> dict[str, dict]:
    """The ``fusion`` section's values per sampler (what evaluate uses with ``fusion.source: params``),
    each unset (null) one at its paper default (:data:`components.core.params.FIXED_FUSION_DEFAULTS`)."""
    f = p.fusion.fixed()
    return {name: sampler_class(name).params_fusion(f) for name in fusion_samplers()}


def select(model: Any, out: Any, K: int, values: Mapping[str, Any] | None) -> np.ndarray:
    """The one fusion path: ``model.select(out, K, values)``, the settings passed to the selection (a
    sampler without fusion settings, or empty ``values``: ``model.select(out, K)``), never set on the model."""
    return model.select(out, K, values) if values else model.select(out, K)


def tuned_fusion_path(paths: Paths) -> Path:
    """``data/tuned_fusion.json``: beside the feature store."""
    return paths.data / TUNED_FUSION


def saliency_digest(root: Path, name: str, split: str = "val") -> str:
    """Content digest of every seed's stored ``split`` saliency of sampler ``name`` (arrays, not file
    bytes: ``np.savez`` stamps times into the zip)."""
    h = hashlib.sha1()
    for f in sorted(Path(root, name).glob("saliency_seed*.npz"), key=lambda c: int(c.stem[len("saliency_seed"):])):
        h.update(f.name.encode())
        with np.load(f) as z:
            for k in sorted(k for k in z.files if k.startswith(f"{split}/")):
                a = z[k]
                h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode())
                h.update(np.ascontiguousarray(a).tobytes() if a.dtype.kind != "U" else "\n".join(a).encode())
    return h.hexdigest()[:16]


def fusion_values(p: Params, paths: Paths) -> dict[str, dict]:
    """Fusion settings per sampler for evaluate / reports.

    ``fusion.source: params`` -> the ``fusion`` section. ``tuned`` -> ``data/tuned_fusion.json`` for
    every sampler it holds (a sampler it skipped keeps the params' values, with a log line); a
    missing file, or one tuned on other saliencies than the ones now stored, is an error.
    """
    values = params_fusion(p)
    for name in p.ablations:  # variants: the params' values of their own (modified) sampler section
        base, vp = variant_params(p, name)
        values[name] = params_fusion(vp).get(base, {})
    if p.fusion.source == "params":
        return values
    f = tuned_fusion_path(paths)
    if not f.exists():
        raise FileNotFoundError(f"fusion.source is 'tuned' but {f} does not exist: run the tune_fusion stage "
                                f"(`dvc repro tune_fusion` or `python -m components.stages.tune_fusion`) "
                                f"or set fusion.source: params")
    tuned = json.loads(f.read_text())
    root = paths.data / "samplers"
    for name, keys in fusion_samplers().items():
        if name not in tuned:
            log.info("%s has no tuned fusion for %s: using the params' %s", f, name, values[name])
            continue
        want = tuned.get("inputs", {}).get(name)
        if want is not None and (Path(root, name).exists()) and saliency_digest(root, name) != want:
            raise ValueError(f"{f} was tuned on other {name} saliencies than data/samplers/{name} holds now "
                             f"(retrained?): rerun tune_fusion, or set fusion.source: params")
        values[name] = {k: tuned[name][k] for k in keys}
    return values


def single_branch_note(name: str, values: Mapping[str, Any] | None, ks: Iterable[int]) -> str | None:
    """A sentence when fusion ``values`` make sampler ``name`` select exactly one branch's top-K at some K
    of ``ks`` whatever the scores (:func:`components.core.selection.single_branch`): then ``name`` and
    ``name[branch]`` are the same selection and the same numbers there. Tuning on val drives the weight
    into that range when the branch alone beats every mix of the two (TSQNet's lambda_v >= 0.9 takes all
    K <= 5 frames from VQM, NSNet's index_union ratio > 0.8 all K <= 5 from FSM). None otherwise."""
    cls = sampler_class(name) if values else None
    rule = cls.fusion_rule(values) if cls is not None and cls.branch_names else None
    if rule is None:
        return None
    strategy, ratio, shown = rule
    ks = sorted(set(int(k) for k in ks))
    for i, branch in enumerate(cls.branch_names):
        same = [k for k in ks if selection.single_branch(strategy, ratio, k) == i]
        if same:
            where = "every K" if same == ks else "K=" + ",".join(map(str, same))
            return (f"{name} with {shown} selects exactly its {branch.upper()} branch's top-K at {where}, so "
                    f"{name} = {name}[{branch}] there: the fusion weight is in the range where the other branch "
                    f"contributes no frame")
    return None
