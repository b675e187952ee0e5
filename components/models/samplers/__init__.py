"""Saliency samplers: one registry, one interface (timm style).

    from components.models.samplers import create_sampler, list_samplers
    s = create_sampler("tsqnet", num_classes=C, ...)

Every sampler is an ``nn.Module`` mapping a :data:`Batch` of stored features (see
:mod:`components.store.features`: ``light_feats [B,T,d]``, ``light_logits [B,T,C]``, ``object_scores
[B,T,1000]``, ``rec_feats [B,T,D]``, ``rec_logits [B,T,C]``, ``audio_emb [B,T,a]``, ``has_audio
[B]``, ``gt [B,T]``, ``labels [B,C]`` multi-hot float, and in training ``ns_labels [B,T,C+1]``) to a
:class:`SamplerOutput` whose ``saliency`` is ``[B,T]`` (higher = more salient). Samplers with two
branches (TSQNet: VQM / TQM, NSNet: FSM / VGM) also expose them in ``branches`` for fusion, and
override :meth:`Sampler.select` to fuse. Trainable samplers implement :meth:`Sampler.loss`; the
shared engine (:mod:`components.training.engine`) trains them all with one step function.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from components.core import selection
from components.core.params import ParamsError, build_section
from components.core.registry import Registry

SAMPLERS = Registry("sampler")
Batch = Mapping[str, torch.Tensor]


@dataclass
class SamplerOutput:
    saliency: torch.Tensor  # [B,T]
    branches: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B,T]
    logits: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B,C] (coarse predictions)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # anything a loss needs


class Sampler(nn.Module):
    """Base class: a sampler carries what the rest of the pipeline needs to know about it, as class
    attributes and class methods, so that no caller branches on a sampler's name:

    * ``inputs`` / ``train_inputs`` - the store arrays it reads (in training also ``train_inputs``);
      the cost of one prediction follows from them (:func:`components.evaluation.cost.frame_calls`).
    * ``pseudo_labels`` - pseudo-label arrays of ``data/pseudo_labels/<split>.npz`` its training reads
      (NSNet: ``ns``, batch key ``ns_labels``).
    * :meth:`build_kwargs` - its constructor arguments from params and the feature store.
    * ``schedule_section`` - the params section of its training schedule (``epochs``, ``batch_size``,
      ``lr``, ``weight_decay``); ``sweep_space`` - the loss weights the sweep searches.
    * ``fusion_keys`` / ``branch_names`` and the ``fusion_*`` class methods - its inference-time fusion
      settings (``fusion.*``), their search space, and how they select (passed to :meth:`select`).
    * :meth:`untrained` - an untrained instance of a trained one's shapes (the cost table);
      :meth:`cost_batch` - zeros shaped like one video's inputs when the generic ones do not fit.
    * ``own_recognizer`` - the name of its own recognizer path (AVGN's head), None when it has none.
    * ``settings`` - a plugin's typed settings (a dataclass; params ``plugins.<name>``), checked like a
      built-in section by :meth:`plugin_settings` and passed to its constructor.
    """

    trainable: bool = False
    inputs: tuple[str, ...] = ()
    train_inputs: tuple[str, ...] = ()
    #: pseudo-label arrays (keys of ``data/pseudo_labels/<split>.npz``) its training reads, as ``<key>_labels``
    pseudo_labels: tuple[str, ...] = ()
    #: params section of its training schedule: epochs, batch_size, lr, weight_decay
    schedule_section: str = "train_sampler"
    #: loss weights the sweep searches: (params section, field, low, high)
    sweep_space: tuple[tuple[str, str, float, float], ...] = ()
    #: inference-time fusion settings (``fusion.*`` param names); empty: none
    fusion_keys: tuple[str, ...] = ()
    #: the branches its :meth:`select` fuses, in order (first, second); empty: none
    branch_names: tuple[str, ...] = ()
    #: the recognizer name of its own recognizer path (curves' ``recognizer`` column); None: none
    own_recognizer: str | None = None
    #: a plugin sampler's settings: a dataclass whose fields (types, defaults, ``lo`` / ``hi`` / ``choices``
    #: metadata) type params ``plugins.<name>``; None: the plugin takes no settings
    settings: type | None = None

    def forward(self, batch: Batch) -> SamplerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, batch: Batch, out: SamplerOutput) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{type(self).__name__} is not trainable")

    def select(self, out: SamplerOutput, K: int, fusion: Mapping[str, Any] | None = None) -> np.ndarray:
        """K distinct frame indices per video, [B,K] int64 (default: top-K of ``saliency``); ``fusion``:
        inference-time settings (``fusion_keys``), None or empty for the sampler's defaults."""
        self.check_fusion(fusion)
        return selection.topk_select(out.saliency.detach().cpu().numpy(), K)

    # ------------------------------------------------------------------ what the pipeline asks a class
    @classmethod
    def build_kwargs(cls, p: Any, store: Any, seed: int) -> dict:
        """Constructor arguments from params ``p`` and the feature store (default: none)."""
        return {}

    @classmethod
    def plugin_settings(cls, p: Any, name: str) -> dict:
        """Params ``plugins.<name>`` typed by ``settings`` (an unknown key names the closest valid one, a
        wrong type or range names the key), with its defaults filled in, as constructor arguments; a
        plugin without ``settings`` that is given settings is refused unless its own :meth:`build_kwargs`
        reads them (they would be ignored)."""
        raw = p.plugins.get(name, {})
        if cls.settings is None:
            if raw and cls.build_kwargs.__func__ is Sampler.build_kwargs.__func__:
                raise ParamsError(f"plugins.{name}: {sorted(raw)} given, but {cls.__name__} declares no `settings` "
                                  "dataclass, so they would be ignored")
            return {}
        return dataclasses.asdict(build_section(cls.settings, raw, f"plugins.{name}"))

    @classmethod
    def untrained(cls, p: Any, num_classes: int, light: nn.Module, text_dim: int = 384) -> "Sampler | None":
        """An untrained instance with the shapes of a trained one at ``p`` (random priors: the same cost);
        ``light``: the configured light encoder. None (the default): the registry's factory without
        arguments builds it (:func:`untrained_sampler`)."""
        return None

    def cost_batch(self, full_size: int, frames: bool = False) -> dict[str, torch.Tensor] | None:
        """Zeros shaped like one video's inputs for counting its cost; None: the generic feature batch."""
        return None

    def cost_inputs(self) -> tuple[str, ...]:
        """The store arrays whose per-frame producers run before it in a prediction (default ``inputs``)."""
        return tuple(self.inputs)

    @classmethod
    def check_fusion(cls, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """``values`` checked against ``fusion_keys`` (an unknown key is an error naming the valid ones)."""
        values = dict(values or {})
        unknown = set(values) - set(cls.fusion_keys)
        if unknown:
            raise ValueError(f"{cls.__name__} fusion: unknown setting(s) {sorted(unknown)}; valid: "
                             f"{list(cls.fusion_keys) or 'none'}")
        return values

    @classmethod
    def params_fusion(cls, fixed: Mapping[str, Any]) -> dict[str, Any]:
        """Its settings from the ``fusion`` section's values (``FusionParams.fixed()``)."""
        return {k: fixed[k] for k in cls.fusion_keys}

    @classmethod
    def suggest_fusion(cls, trial: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """Its fusion search space, as Optuna suggestions on ``trial``."""
        return {}

    @classmethod
    def fusion_trial_defaults(cls, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The params of the first (enqueued) trial: the defaults, less those the space does not search."""
        return dict(defaults)

    @classmethod
    def fusion_probe(cls, i: int, n: int) -> dict[str, Any]:
        """The ``i``-th of ``n`` settings that time one uncached objective evaluation."""
        return {}

    @classmethod
    def fusion_rule(cls, values: Mapping[str, Any]) -> tuple[str, float, str] | None:
        """``(strategy, ratio, shown)`` of ``values`` for :func:`components.core.selection.single_branch`;
        None: it does not fuse two branches."""
        return None


def sampler_class(name: str) -> type[Sampler]:
    """The :class:`Sampler` class registered sampler ``name``'s factory is annotated to return (nothing
    is built): the one lookup of what a sampler declares."""
    import typing

    _import_members()
    cls = typing.get_type_hints(SAMPLERS.get(name)).get("return")
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TypeError(f"sampler factory {name!r} must be annotated to return its Sampler class")
    return cls


def untrained_sampler(name: str, p: Any, num_classes: int, light: nn.Module, text_dim: int = 384) -> Sampler:
    """Registered sampler ``name`` untrained, with a trained one's shapes (:meth:`Sampler.untrained`)."""
    model = sampler_class(name).untrained(p, num_classes, light, text_dim)
    return model if model is not None else create_sampler(name)


def light_stats(store: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean / std of the training split's light features (valid videos, all frames)."""
    valid = np.asarray(store.array("train", "valid"), dtype=bool)
    x = np.asarray(store.array("train", "light_feats"))[valid].astype(np.float64)
    x = x.reshape(-1, x.shape[-1])
    return torch.from_numpy(x.mean(0)).float(), torch.from_numpy(x.std(0)).float()


class FeatureNorm(nn.Module):
    """Per-dimension standardisation with statistics of the training split, kept as buffers.

    Pooled CNN features (e.g. MobileNetV2's 1280-d light features) share a large common component
    across frames: on the demo set the per-dimension std is ~0.07 around a mean of ~0.43, so raw
    dot-product attention sees near-identical keys and the VQM never leaves a uniform attention.
    Standardising removes the common component; stored in the checkpoint, the same transform
    applies in evaluation and in ``salient predict``. Identity when no statistics are given.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None, eps: float = 1e-4):
        super().__init__()
        self.enabled = mean is not None
        if self.enabled:
            self.register_buffer("mean", torch.as_tensor(mean).float().clone())
            self.register_buffer("std", torch.as_tensor(std).float().clamp(min=eps).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., d] -> [..., d]
        return (x - self.mean) / self.std if self.enabled else x


def create_sampler(name: str, **cfg) -> Sampler:
    _import_members()
    return SAMPLERS.create(name, **cfg)


def sampler_trainable(name: str) -> bool:
    """Whether registered sampler ``name`` learns (has a loss) or is a training-free baseline."""
    return bool(sampler_class(name).trainable)


def sweep_space(name: str) -> tuple[tuple[str, str, float, float], ...]:
    """The loss weights the sweep searches for sampler ``name`` (its class's ``sweep_space``): fixed in the
    class, so a sweep always explores the same space; an error naming the sweepable ones when it has none."""
    space = sampler_class(name).sweep_space
    if not space:
        raise ValueError(f"sweep.sampler: {name!r} has no loss weights to sweep; one of "
                         f"{[n for n in list_samplers() if sampler_class(n).sweep_space]}")
    return space


def fusion_samplers() -> dict[str, tuple[str, ...]]:
    """Samplers with inference-time fusion settings and their ``fusion.*`` keys, in registration order
    (the shipped ones first: TSQNet's ``lambda_v``, then NSNet's strategy and ratio)."""
    return {n: cls.fusion_keys for n in in_module_order() if (cls := sampler_class(n)).fusion_keys}


def in_module_order() -> list[str]:
    """Every registered sampler, ordered by its module (:data:`MEMBERS` first, in that order, then the others
    by name), then by name: an order that does not depend on which module happened to be imported first."""
    def key(name: str) -> tuple:
        mod = SAMPLERS.get(name).__module__.rsplit(".", 1)[-1]
        return (MEMBERS.index(mod) if mod in MEMBERS else len(MEMBERS), mod, name)

    return sorted(list_samplers(), key=key)


def own_recognizers() -> tuple[str, ...]:
    """The recognizer names of the registered samplers' own recognizer paths (AVGN's head: ``avgn``)."""
    return tuple(dict.fromkeys(r for r in (sampler_class(n).own_recognizer for n in in_module_order()) if r))


def list_samplers() -> list[str]:
    _import_members()
    return SAMPLERS.list()


#: The members shipped with salient, imported first (in this order); every other module of this package
#: (a sampler added as one file, see the README's "Add your own sampler") is imported after them.
MEMBERS = ("baselines", "tsqnet", "nsnet", "avgn")


def _import_members() -> None:
    """Import the member modules so their ``@SAMPLERS.register`` decorators run: :data:`MEMBERS`, then any
    other module of this package in name order (a new sampler is one new file here, nothing else)."""
    import importlib
    import pkgutil

    others = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in MEMBERS and not m.name.startswith("_"))
    for mod in (*MEMBERS, *others):
        try:
            importlib.import_module(f"components.models.samplers.{mod}")  # the literal prefix: components.core.depgraph
        except ModuleNotFoundError as e:
            if e.name != f"components.models.samplers.{mod}":
                raise
