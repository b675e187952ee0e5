"""Evaluation of samplers × budgets × recognizers × seeds (the ``evaluate`` stage's library).

A *sampler run* is one trained sampler (one seed) with its stored per-frame saliency on a split
(``data/samplers/<name>/saliency_seed<s>.npz``, written by ``train_sampler``). For every budget K
the run's own :meth:`Sampler.select` picks K frames (so TSQNet's λ_v union and NSNet's fusion
apply, with the tuned values when ``tune_fusion`` has run), and

* the **frame recognizer** is evaluated from its cached logits: the video score is the mean
  softmax over the K selected frames (TSQNet / NSNet evaluate their per-frame recognizers the same
  way); this is pure numpy on the store and takes seconds for a whole grid;
* a **temporal recognizer** (TSI) runs for real on the decoded selected frames, in temporal order;
  identical (video, frame set) inputs are run once and shared between samplers and seeds.

Every row carries the GMACs of the whole prediction (light encoder × T + object recognizer × T
where the sampler reads object scores + sampler + recognizer on its frames), docs/design.md §3.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from components.evaluation.fusion import select as fused_select
from components.evaluation.metrics import (distractor_share, mean_average_precision, mean_class_accuracy, salient_recall, top1,
                                topk_accuracy)
from components.models.samplers import Sampler, SamplerOutput
from components.core.selection import topk_select

log = logging.getLogger(__name__)

#: Columns of ``reports/curves.csv``.
CURVE_COLUMNS = ("sampler", "recognizer", "k", "seed", "gmacs", "map", "top1", "salient_recall", "distractor_share")


@dataclass
class SamplerRun:
    """One trained sampler (one seed) and its stored output on one split."""
    name: str
    seed: int
    model: Sampler
    out: SamplerOutput  # saliency [N,T] and branch scores of the split's valid videos

    branch: str | None = None  # set: select by this branch's scores alone (top-K), not the fusion
    fusion: Mapping[str, Any] | None = None  # inference-time fusion settings passed to ``model.select``

    @property
    def sampler(self) -> str:
        """The sampler this run selects with: ``name`` without the ``[<branch>]`` of a branch run."""
        return self.name[: -len(self.branch) - 2] if self.branch is not None else self.name

    def select(self, K: int) -> np.ndarray:  # -> int64 [N,K]
        if self.branch is not None:
            return topk_select(self.out.branches[self.branch].detach().cpu().numpy(), K)
        return fused_select(self.model, self.out, K, self.fusion)

    def with_fusion(self, values: Mapping[str, Any] | None) -> "SamplerRun":
        """This run selecting with fusion settings ``values`` (checked against its class's ``fusion_keys``)."""
        return replace(self, fusion=type(self.model).check_fusion(values) if hasattr(self.model, "check_fusion")
                       else dict(values or {}))

    def branches(self) -> list["SamplerRun"]:
        """One run per branch of a two-branch sampler (TSQNet VQM / TQM, NSNet FSM / VGM) selecting by
        that branch alone, named ``<name>[<branch>]``: the same trained model, so fused vs branch is a
        like-for-like comparison (the papers' "fusion not worse than the better branch")."""
        if len(self.out.branches) < 2:
            return []
        return [SamplerRun(f"{self.name}[{b}]", self.seed, self.model, self.out, b, self.fusion) for b in self.out.branches]


def load_runs(root: Path, name: str, split: str, ids: list[str],
              load: Callable[[Path], Sampler], seeds: Iterable[int] | None = None,
              fusion: Mapping[str, Any] | None = None) -> list[SamplerRun]:
    """The seeds of sampler ``name`` under ``root/name`` with their ``split`` saliency; the rows must be
    exactly ``ids`` (the split's valid videos in store order), else the saliency is stale. ``seeds``
    (the configured ``train_sampler.seeds`` of that sampler): every one must be there, and only those
    are loaded, so a folder left with 1 of 3 seeds by an interrupted run is refused, never used as if
    complete. ``None``: whatever seeds the folder holds."""
    cks = seed_checkpoints(root, name, seeds)
    runs = []
    for seed, ck in cks:
        f = np.load(ck.with_name(f"saliency_{ck.stem}.npz"))
        if list(f[f"{split}/ids"]) != list(ids):
            raise ValueError(f"{ck}: saliency rows do not match the feature store's {split} split; "
                             f"rerun `dvc repro train_sampler@{name}`")
        branches = {k.split("/", 1)[1]: torch.from_numpy(f[k]) for k in f.files
                    if k.startswith(f"{split}/") and k not in (f"{split}/ids", f"{split}/saliency")}
        out = SamplerOutput(saliency=torch.from_numpy(f[f"{split}/saliency"]), branches=branches)
        runs.append(SamplerRun(name, seed, load(ck), out).with_fusion(fusion))
    return runs


def seed_checkpoints(root: Path, name: str, seeds: Iterable[int] | None = None) -> list[tuple[int, Path]]:
    """``(seed, root/name/seed<seed>.pt)`` in seed order. ``seeds`` (the configured seeds of that sampler):
    every one must be there and only those are returned, so a folder left with 1 of 3 seeds by an
    interrupted run is refused, never used as if complete; ``None``: whatever the folder holds."""
    folder = Path(root, name)
    found = {}
    for c in folder.glob("seed*.pt"):
        if c.stem[4:].isdigit():
            found[int(c.stem[4:])] = c
    if not found:
        raise FileNotFoundError(f"no trained {name!r} in {folder}: run `dvc repro train_sampler@{name}`")
    if seeds is not None:
        want = list(seeds)
        missing = sorted(set(want) - set(found))
        if missing:
            raise FileNotFoundError(f"{folder}: seed(s) {missing} of the configured {want} missing (an interrupted "
                                    f"or older training run?); rerun `dvc repro train_sampler@<pipeline seed>-{name}`")
        found = {s: found[s] for s in set(want)}
    return sorted(found.items())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    np.exp(x, out=x)
    return x / x.sum(-1, keepdims=True)


def mean_selected(probs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """[N,T,C] per-frame probabilities, [N,K] indices -> [N,C] mean over the selected frames."""
    return np.take_along_axis(probs, idx[:, :, None], axis=1).mean(1)


def score_metrics(scores: np.ndarray, labels: np.ndarray, idx: np.ndarray, salient: np.ndarray | None,
                  map_variant: str, distractor: np.ndarray | None = None) -> dict[str, float]:
    """mAP (``map_variant``), top-1, top-5, mean-class accuracy, saliency recall and the share of
    distractor frames among the picks of one (sampler, K, recognizer, seed) cell (NaN without ground truth)."""
    return {"map": mean_average_precision(scores, labels, variant=map_variant), "top1": top1(scores, labels),
            "top5": topk_accuracy(scores, labels, min(5, scores.shape[1])), "mean_class_acc": mean_class_accuracy(scores, labels),
            "salient_recall": salient_recall(idx, salient) if salient is not None else float("nan"),
            "distractor_share": distractor_share(idx, distractor) if distractor is not None else float("nan")}


class ClipScorer:
    """Runs a clip recognizer ([B,K,3,s,s] float in [0,1] -> [B,C] logits) on frame subsets of cached
    decoded frames, memoising by (video, sorted frame set) so repeated selections run once."""

    def __init__(self, model: torch.nn.Module, frames: np.ndarray, batch_size: int = 16):
        self.model, self.frames, self.batch_size = model.eval(), frames, batch_size  # frames uint8 [N,T,3,s,s]
        self.cache: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self.calls = 0

    @torch.no_grad()
    def scores(self, idx: np.ndarray) -> np.ndarray:
        """[N,K] selected indices -> [N,C] softmax scores of the clip of those frames in temporal order."""
        keys = [(n, tuple(sorted(int(i) for i in row))) for n, row in enumerate(idx)]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            clip = torch.from_numpy(np.stack([self.frames[n, list(ix)] for n, ix in chunk])).float().div_(255.0)
            out = softmax(self.model(clip).numpy())  # [B,C]
            self.calls += len(chunk)
            for k, o in zip(chunk, out):
                self.cache[k] = o
        return np.stack([self.cache[k] for k in keys])


def evaluate_grid(runs: Iterable[SamplerRun], budgets: Iterable[int], labels: np.ndarray,
                  salient: np.ndarray | None, gmacs: Callable[[SamplerRun, str, int], float],
                  frame_probs: np.ndarray, clip_scorers: dict[str, tuple[ClipScorer, tuple[int, ...]]] | None = None,
                  map_variant: str = "sklearn", keep_scores: bool = False,
                  distractor: np.ndarray | None = None) -> tuple[list[dict], dict]:
    """All rows of the curves table: the frame recognizer at ``budgets``, each clip recognizer of
    ``clip_scorers`` (name -> (scorer, its budgets)) at its own budgets. A scorer with ``bind(run)``
    is the run's own recognizer (AVGN's head, :class:`components.evaluation.avgn_eval.HeadScorer`): ``bind``
    returns the scorer for that run, or None where it does not apply.

    Returns (rows, per-video scores keyed by (sampler, recognizer, k, seed) when ``keep_scores``).
    """
    rows, kept = [], {}
    budgets = set(budgets)
    every_k = sorted(budgets.union(*(ks for _, ks in (clip_scorers or {}).values())))
    for run in runs:
        for K in every_k:
            idx = run.select(K)
            cells = [("frame", mean_selected(frame_probs, idx))] if K in budgets else []
            for rname, (scorer, ks) in (clip_scorers or {}).items():
                bound = scorer.bind(run) if hasattr(scorer, "bind") else scorer  # a run-specific recognizer
                if K in ks and bound is not None:
                    cells.append((rname, bound.scores(idx)))
            for rname, scores in cells:
                rows.append({"sampler": run.name, "recognizer": rname, "k": K, "seed": run.seed,
                             "gmacs": gmacs(run, rname, K), **score_metrics(scores, labels, idx, salient, map_variant, distractor)})
                if keep_scores:
                    kept[(run.name, rname, K, run.seed)] = scores
    return rows, kept


def summarize(rows: list[dict], metrics: tuple[str, ...] = ("map", "top1", "top5", "mean_class_acc", "salient_recall",
                                                           "distractor_share", "gmacs")) -> list[dict]:
    """Mean ± std over seeds per (sampler, recognizer, k), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["recognizer"], r["k"]), []).append(r)
    out = []
    for (s, rec, k), rs in groups.items():
        row = {"sampler": s, "recognizer": rec, "k": k, "seeds": len(rs)}
        for m in (m for m in metrics if m in rs[0]):
            v = np.array([r[m] for r in rs], dtype=np.float64)
            row[m] = float(v.mean())
            row[f"{m}_std"] = float(v.std())
        out.append(row)
    return out
