"""Optuna on the **validation** split (DESIGN.md §2 ``tune_fusion``, §3: anything tuned sees val only).

Three searches, all on stored artefacts or through the existing training path:

* **Fusion** (:func:`tune_fusion`): TSQNet's union ratio ``lambda_v`` and NSNet's fusion strategy and
  ratio, from the val saliencies that ``train_sampler`` stored (``data/samplers/<name>/
  saliency_seed<s>.npz``). The objective is the val mAP of the frame recognizer's mean softmax over
  the K selected frames, averaged over every trained seed and over ``fusion.budgets``: pure numpy on
  cached logits (the softmax is computed once, mAPs are memoised by selection), so a trial costs
  about a millisecond plus Optuna's own bookkeeping. A TPE study per sampler, seeded with ``seed``,
  whose first trial is the params' values, so the result is never worse on val than the defaults.
  The result is written atomically to ``data/tuned_fusion.json``; :func:`fusion_values` is what
  evaluate uses (the tuned file or the params, per ``fusion.source``), and :func:`set_fusion` applies
  it to a loaded sampler. Fusion is an inference-time setting, so no sampler is retrained.
* **Accuracy vs cost** (:func:`pareto_study`): NSGA-II over (sampler, K, its fusion settings),
  maximising val mAP at K and minimising GMACs per video (a callable the caller passes, e.g. the
  measured costs of evaluate); :func:`pareto_front` is the exact non-dominated set,
  :func:`write_pareto` the CSV and the plot.
* **Loss weights** (:func:`run_sweep`): every trial trains one sampler (one seed) through
  ``train_sampler.train_one`` with weights from ``params.SWEEP_SPACES`` (TSQNet alpha / beta, NSNet
  gamma), reports the val mAP after every epoch to a Median / SuccessiveHalving pruner, and is an
  MLflow child run of the sweep's parent run. A trial that raises is recorded FAIL and the study
  goes on. The best weights go to ``data/tuned_losses.json``, never into params.yaml: copy them there
  or run ``dvc exp run -S tsqnet.alpha=... -S tsqnet.beta=...`` (the file spells the command out).
  ``flows/sweep.py`` runs it from several processes / Prefect tasks on one study.

Storages (:func:`storage_from_url`): ``sqlite:///path`` (parent folders created; relative paths are
relative to the working directory), any other SQLAlchemy URL such as ``postgresql://...`` as is
(many machines on one study, DESIGN.md §5), ``journal:<path>`` for Optuna's journal file storage
(NFS-friendly, no database), ``memory:`` for an in-process study.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from components.params import SWEEP_SPACES, Params, params_from_dict, to_dict, variant_params
from components.validation import ValSet, load_val, sampler_val_score

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from components.evaluation import SamplerRun
    from components.stages import Paths
    from components.store import FeatureStore

log = logging.getLogger(__name__)

TUNED_FUSION = "tuned_fusion.json"  # beside the feature store: data/tuned_fusion.json
TUNED_LOSSES = "tuned_losses.json"  # data/tuned_losses.json
#: Samplers with inference-time fusion settings, and their ``fusion.*`` keys.
FUSION_KEYS: dict[str, tuple[str, ...]] = {"tsqnet": ("lambda_v",), "nsnet": ("nsnet_strategy", "nsnet_ratio")}
#: NSNet strategies that read the ratio (the others ignore it, so it is not searched for them).
RATIO_STRATEGIES = ("index_union", "score_add")


# ------------------------------------------------------------------------------------ storage
def storage_from_url(url: str | None) -> "optuna.storages.BaseStorage":
    """An Optuna storage for ``url``: ``sqlite:///file`` (parent folders created; WAL journal, see
    :func:`_sqlite_connect`; a URL with ``?query`` options is passed as is), another SQLAlchemy URL (``postgresql://...``) as is,
    ``journal:<path>`` -> ``JournalStorage(JournalFileBackend(path))``, ``memory:`` -> in memory."""
    import optuna

    url = (url or "").strip()
    if url in ("", "memory", "memory:"):
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):].removeprefix("//"))
        if not path.name:
            raise ValueError(f"optuna storage {url!r}: journal: needs a file path (journal:.salient/optuna.log)")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        db = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
        if not db or db == ":memory:" or "?" in url:
            return optuna.storages.RDBStorage(url)
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(Path(db + ".lock")):  # two processes creating one new database race on its schema
            return optuna.storages.RDBStorage(url, engine_kwargs={"creator": lambda: _sqlite_connect(db)})
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    raise ValueError(f"optuna storage {url!r}: expected sqlite:///file, postgresql://..., journal:<file> or memory:")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sqlite_connect(db: str):
    """A connection to the study database in WAL mode with ``synchronous=NORMAL`` (a commit does not
    wait for an fsync: ~15x faster trials here, still safe against process crashes; readers do not
    block the writer, which several sweep workers need) and a 60 s busy timeout."""
    import sqlite3

    con = sqlite3.connect(db, timeout=60, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _write_json_atomic(path: Path, obj: Any) -> Path:
    """JSON through a per-process temp file + ``os.replace``: readers (and other writers) never see
    half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _study(name: str, storage: Any, sampler: Any, directions: Sequence[str] = ("maximize",),
           pruner: Any = None) -> "optuna.Study":
    import optuna

    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                               directions=list(directions), load_if_exists=True)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's one INFO line per trial is noise for hundreds of millisecond trials (a progress bar
    shows them instead); warnings still come through."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _trials_per_second(study: "optuna.Study") -> float | None:
    """Complete trials per second of trial time (sampling + objective + storage writes), from the
    stored trial timestamps: also right for a study topped up over several runs."""
    secs = sum(t.duration.total_seconds() for t in _complete(study) if t.duration is not None)
    return len(_complete(study)) / secs if secs > 0 else None


def _progress() -> bool:
    """Progress bars where a terminal watches (tqdm's ``disable=None`` rule)."""
    import sys

    return sys.stderr.isatty()


def _complete(study: "optuna.Study") -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


# ------------------------------------------------------------------------------ fusion settings
def params_fusion(p: Params) -> dict[str, dict]:
    """The ``fusion`` section's values per sampler (what evaluate uses with ``fusion.source: params``)."""
    f = p.fusion
    return {"tsqnet": {"lambda_v": f.lambda_v},
            "nsnet": {"nsnet_strategy": f.nsnet_strategy, "nsnet_ratio": f.nsnet_ratio}}


def set_fusion(model: Any, values: Mapping[str, Any] | None) -> Any:
    """Apply inference-time fusion settings to a loaded sampler (before ``select``); samplers without
    any (baselines) accept only an empty mapping. Returns the model."""
    if not values:
        return model
    fn = getattr(model, "set_fusion", None)
    if fn is None:
        raise ValueError(f"{type(model).__name__} has no fusion settings, got {dict(values)}")
    fn(dict(values))
    return model


def tuned_fusion_path(paths: "Paths") -> Path:
    return Path(paths.features).parent / TUNED_FUSION


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


def fusion_values(p: Params, paths: "Paths") -> dict[str, dict]:
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
    root = Path(paths.features).parent / "samplers"
    for name, keys in FUSION_KEYS.items():
        if name not in tuned:
            log.info("%s has no tuned fusion for %s: using the params' %s", f, name, values[name])
            continue
        want = tuned.get("inputs", {}).get(name)
        if want is not None and (Path(root, name).exists()) and saliency_digest(root, name) != want:
            raise ValueError(f"{f} was tuned on other {name} saliencies than data/samplers/{name} holds now "
                             f"(retrained?): rerun tune_fusion, or set fusion.source: params")
        values[name] = {k: tuned[name][k] for k in keys}
    return values


# ------------------------------------------------------------------------------ the val objective
@dataclass
class FusionData:
    """Everything the fusion objective reads, loaded once: the val set and, per tunable sampler, every
    trained seed with its stored val branch scores (:class:`components.evaluation.SamplerRun`)."""
    val: ValSet
    runs: dict[str, list["SamplerRun"]]
    inputs: dict[str, str] = field(default_factory=dict)  # sampler -> saliency_digest

    def score(self, name: str, values: Mapping[str, Any], budgets: Iterable[int] | None = None) -> float:
        """The objective: val mAP with fusion ``values``, mean over seeds and budgets."""
        out = []
        for run in self.runs[name]:
            set_fusion(run.model, values)
            out.append(self.val.score(run.select, budgets))
        return float(np.mean(out))


def fusion_objective_data(p: Params, paths: "Paths", names: Iterable[str] = tuple(FUSION_KEYS)) -> FusionData:
    """Load the val set and the val saliencies of every seed of ``names`` once. A sampler that is not
    in ``evaluate.samplers`` or not trained is skipped with a log line."""
    from components.evaluation import load_runs
    from components.stages.train_sampler import load_sampler

    val = load_val(p, paths)
    root = Path(paths.features).parent / "samplers"
    runs, inputs = {}, {}
    for name in names:
        if name not in FUSION_KEYS:
            raise ValueError(f"{name!r} has no fusion settings to tune; tunable: {list(FUSION_KEYS)}")
        if name not in p.evaluate.samplers:
            log.info("tune_fusion: %s is not in evaluate.samplers: skipped", name)
            continue
        if not list(Path(root, name).glob("seed*.pt")):
            log.info("tune_fusion: %s is not trained (no %s/seed*.pt): skipped", name, Path(root, name))
            continue
        runs[name] = load_runs(root, name, "val", val.ids, load_sampler)
        inputs[name] = saliency_digest(root, name)
    return FusionData(val, runs, inputs)


def suggest_fusion(trial: "optuna.Trial", name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The search space of sampler ``name``: TSQNet lambda_v in [0, 1]; NSNet strategy in
    ``FUSION_STRATEGIES`` and, for the strategies that read it, ratio in [0, 1] (else the default)."""
    from components.selection import FUSION_STRATEGIES

    if name == "tsqnet":
        return {"lambda_v": trial.suggest_float("lambda_v", 0.0, 1.0)}
    s = trial.suggest_categorical("nsnet_strategy", list(FUSION_STRATEGIES))
    r = trial.suggest_float("nsnet_ratio", 0.0, 1.0) if s in RATIO_STRATEGIES else float(defaults["nsnet_ratio"])
    return {"nsnet_strategy": s, "nsnet_ratio": r}


def _enqueue_defaults(study: "optuna.Study", name: str, defaults: Mapping[str, Any], extra: Mapping = {}) -> None:
    fixed = dict(defaults)
    if name == "nsnet" and fixed["nsnet_strategy"] not in RATIO_STRATEGIES:
        fixed.pop("nsnet_ratio")
    study.enqueue_trial({**extra, **fixed}, user_attrs={"defaults": True})


def input_study_name(p: Params, data: FusionData, kind: str) -> str:
    """``<kind>-<digest>`` of the inputs (saliencies, budgets, mAP definition, seed): the same inputs
    reuse (top up) one study, other inputs get a fresh one."""
    key = json.dumps([data.inputs, list(data.val.budgets), data.val.map_variant, p.seed, kind], sort_keys=True)
    return f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def tune_fusion(p: Params, paths: "Paths", data: FusionData | None = None, *,
                write: bool = True) -> dict:
    """TPE (seeded with ``seed``) over the fusion settings of every trained tunable sampler, on val.

    One study per sampler in ``fusion.storage``, named after a digest of the inputs (saliencies,
    budgets, mAP definition, seed): rerunning on the same inputs tops the study up to
    ``fusion.trials`` complete trials instead of starting over. The first trial is the params'
    values, so ``best_value >= default_value``, and ties keep the defaults.

    Returns (and, with ``write``, writes atomically to ``data/tuned_fusion.json``, less the timings)::

        {"tsqnet": {"lambda_v": ...}, "nsnet": {"nsnet_strategy": ..., "nsnet_ratio": ...},
         "objective": "val mAP ...", "best_value": {sampler: ...}, "default_value": {sampler: ...},
         "gain": {sampler: best - default}, "trials": {sampler: n}, "study": {sampler: name},
         "storage": url, "inputs": {sampler: saliency digest}, "trials_per_second": {sampler: ...}}

    Per-sampler numbers are keyed by sampler because each sampler has its own study. For NSNet
    strategies that ignore the ratio, ``nsnet_ratio`` is the params' value.
    """
    import optuna

    data = data if data is not None else fusion_objective_data(p, paths)
    defaults = params_fusion(p)
    storage = storage_from_url(p.fusion.storage)
    base = input_study_name(p, data, "fusion")
    out: dict[str, Any] = {"objective": data.val.describe(), "best_value": {}, "default_value": {}, "gain": {},
                           "trials": {}, "study": {}, "storage": p.fusion.storage, "trials_per_second": {},
                           "inputs": dict(data.inputs)}
    for name in data.runs:
        study = _study(f"{base}-{name}", storage, optuna.samplers.TPESampler(seed=p.seed))
        if not study.trials:
            _enqueue_defaults(study, name, defaults[name])
        todo = max(0, p.fusion.trials - len(_complete(study)))

        def objective(trial, name=name):
            values = suggest_fusion(trial, name, defaults[name])
            trial.set_user_attr("values", values)
            return data.score(name, values)

        t0 = time.perf_counter()
        with _quiet_optuna():
            study.optimize(objective, n_trials=todo, show_progress_bar=todo > 0 and _progress())
        dt = time.perf_counter() - t0
        best = study.best_trial
        values = dict(best.user_attrs.get("values") or {**defaults[name], **best.params})
        default_value = data.score(name, defaults[name])
        out[name] = values
        out["best_value"][name] = float(best.value)
        out["default_value"][name] = default_value
        out["gain"][name] = float(best.value) - default_value
        out["trials"][name] = len(_complete(study))
        out["study"][name] = study.study_name
        out["trials_per_second"][name] = rate = _trials_per_second(study)
        log.info("tune_fusion %s: %s -> val objective %.4f (defaults %s: %.4f); %d trials (%d now, %.1f s), "
                 "%.1f trials/s", name, values, best.value, defaults[name], default_value, out["trials"][name], todo,
                 dt, rate or float("nan"))
    if write:  # timings stay out of the file: the same inputs give the same bytes (a stable DVC output)
        _write_json_atomic(tuned_fusion_path(paths), {k: v for k, v in out.items() if k != "trials_per_second"})
    return out


# ------------------------------------------------------------------------------ accuracy vs cost
def pareto_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points [n, 2] = (accuracy, cost)``, accuracy
    maximised and cost minimised: row i is dominated when some row j has ``acc_j >= acc_i`` and
    ``cost_j <= cost_i`` with one of them strict (identical rows do not dominate each other). Rows
    with a NaN are never on the front. O(n log n): sort by cost, sweep the best accuracy so far."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ok = ~np.isnan(pts).any(1)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return idx
    acc, cost = pts[idx, 0], pts[idx, 1]
    order = np.lexsort((-acc, cost))  # cost ascending, then accuracy descending
    front, best_lower = [], -np.inf  # best accuracy among strictly cheaper rows
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and cost[order[j]] == cost[order[i]]:
            j += 1
        group = order[i:j]
        top = acc[group].max()
        if top > best_lower:
            front += [g for g in group if acc[g] == top]
        best_lower = max(best_lower, top)
        i = j
    return np.sort(idx[np.asarray(front, dtype=np.int64)])


def pareto_study(data: FusionData, budgets: Iterable[int], gmacs: Callable[[str, int], float], n_trials: int,
                 seed: int = 0, storage: Any = None, study_name: str | None = None,
                 defaults: Mapping[str, Mapping[str, Any]] | None = None) -> tuple["optuna.Study", list[dict], np.ndarray]:
    """NSGA-II (seeded) over (sampler in ``data.runs``, K in ``budgets``, the sampler's fusion
    settings), maximising val mAP at K (mean over seeds) and minimising ``gmacs(sampler, K)`` per video.

    ``storage``: an Optuna storage (or None: in memory); an existing study of that name is topped up
    to ``n_trials`` complete trials. Returns ``(study, rows, front)``: one row per complete trial
    (``number, sampler, k, map, gmacs`` and the fusion values), ``front`` the indices of
    :func:`pareto_front` into ``rows`` (the same set as Optuna's ``study.best_trials``).
    """
    import optuna

    names = list(data.runs)
    ks = sorted(set(int(k) for k in budgets))
    if not names:
        raise ValueError("pareto_study: no trained sampler with fusion settings to search")
    study = _study(study_name or "pareto", storage,
                   optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 3))),
                   directions=("maximize", "minimize"))
    if defaults and not study.trials:
        for name in names:  # the params' settings at every K: the front is never worse than them
            for k in ks:
                _enqueue_defaults(study, name, defaults[name], {"sampler": name, "k": k})
    todo = max(0, n_trials - len(_complete(study)))

    def objective(trial):
        name = trial.suggest_categorical("sampler", names)
        k = trial.suggest_categorical("k", ks)
        values = suggest_fusion(trial, name, (defaults or {}).get(name) or {"nsnet_ratio": 0.6})
        trial.set_user_attr("values", values)
        return data.score(name, values, budgets=(k,)), float(gmacs(name, k))

    with _quiet_optuna():
        study.optimize(objective, n_trials=todo, show_progress_bar=todo > 0 and _progress())
    rows = []
    for t in _complete(study):
        vals = t.user_attrs.get("values", {})
        rows.append({"number": t.number, "sampler": t.params["sampler"], "k": int(t.params["k"]),
                     "map": float(t.values[0]), "gmacs": float(t.values[1]),
                     **{key: vals.get(key, "") for keys in FUSION_KEYS.values() for key in keys}})
    front = pareto_front([(r["map"], r["gmacs"]) for r in rows])
    return study, rows, front


PARETO_COLUMNS = ("number", "sampler", "k", "map", "gmacs", "pareto", "lambda_v", "nsnet_strategy", "nsnet_ratio")


def write_pareto(rows: Sequence[Mapping], front: Iterable[int], csv_path: Path, png_path: Path | None = None,
                 title: str = "val mAP vs GMACs per video") -> None:
    """``csv_path``: every trial with a ``pareto`` 0/1 column (front first, by cost); ``png_path``: all
    trials in grey, the front highlighted per sampler and joined as a staircase."""
    front = set(int(i) for i in front)
    order = sorted(range(len(rows)), key=lambda i: (i not in front, rows[i]["gmacs"], -rows[i]["map"]))
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=PARETO_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for i in order:
            r = rows[i]
            w.writerow({**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()},
                        "pareto": int(i in front)})
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter([r["gmacs"] for r in rows], [r["map"] for r in rows], s=14, c="0.75", label="all trials", zorder=1)
    fr = sorted({(rows[i]["gmacs"], rows[i]["map"]): rows[i] for i in front}.values(),  # repeats drawn once
                key=lambda r: (r["gmacs"], -r["map"]))
    if fr:
        ax.step([r["gmacs"] for r in fr], [r["map"] for r in fr], where="post", c="k", lw=1, zorder=2)
    for name in sorted({r["sampler"] for r in fr}):
        pts = [r for r in fr if r["sampler"] == name]
        ax.scatter([r["gmacs"] for r in pts], [r["map"] for r in pts], s=40, zorder=3, label=f"front: {name}")
        for r in pts:
            ax.annotate(f"K={r['k']}", (r["gmacs"], r["map"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("GMACs per video")
    ax.set_ylabel("val mAP")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ loss-weight sweeps
def sweep_study_name(p: Params) -> str:
    """``sweep.study`` + the sampler, so a study never mixes two samplers' spaces."""
    return f"{p.sweep.study}-{p.sweep.sampler}"


def make_pruner(kind: str) -> "optuna.pruners.BasePruner":
    """``median``: prune below the median of earlier trials at the same epoch (after 2 complete trials
    and 1 warm-up epoch); ``halving``: asynchronous successive halving from epoch 1."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    raise ValueError(f"unknown sweep.pruner {kind!r}: median or halving")


def suggest_losses(trial: "optuna.Trial", sampler: str) -> dict[str, float]:
    """Loss weights of ``params.SWEEP_SPACES[sampler]`` as dotted params keys (``tsqnet.alpha``)."""
    return {f"{sec}.{key}": trial.suggest_float(f"{sec}.{key}", lo, hi) for sec, key, lo, hi in SWEEP_SPACES[sampler]}


_DATA_CACHE: dict[tuple, tuple] = {}


def _sweep_inputs(p: Params, paths: "Paths") -> tuple:
    """(store, (train, val) tensors, ValSet), loaded once per process and store."""
    from components.stages.train_sampler import load_train_val
    from components.store import FeatureStore

    store = FeatureStore(paths.features)
    key = (str(Path(paths.features).absolute()), store.meta.get("fingerprint"), p.evaluate.map_variant,
           tuple(p.fusion.budgets), p.frames.T)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = (store, load_train_val(store, paths), load_val(p, paths))
    return _DATA_CACHE[key]


def sweep_objective(p: Params, paths: "Paths", study_name: str) -> Callable[["optuna.Trial"], float]:
    """The objective of a loss-weight sweep trial (see the module docstring)."""
    import optuna

    from components import tracking
    from components.engine import atomic_save
    from components.stages.train_sampler import train_one

    name = p.sweep.sampler
    seed = p.train_sampler.seeds[0]
    fusion = params_fusion(p).get(name)

    def objective(trial: optuna.Trial) -> float:
        store, (train, val_data), val = _sweep_inputs(p, paths)
        weights = suggest_losses(trial, name)
        pt = params_from_dict(to_dict(p), {**weights, "train_sampler.epochs": p.sweep.epochs})
        ckpt = Path(paths.work) / "sweep" / study_name / str(trial.number)
        shutil.rmtree(ckpt, ignore_errors=True)  # trial numbers are unique in a study: a leftover is stale
        pruned = None
        logged = {**weights, "sampler": name, "seed": seed, "epochs": p.sweep.epochs, "study": study_name,
                  "trial": trial.number}
        with tracking.stage_run(f"{study_name} trial {trial.number}", logged, tracking=p,
                                tags={"dvc.stage": "sweep", "optuna.study": study_name,
                                      "optuna.trial": trial.number}) as run:
            def on_epoch(model, epoch: int, row: dict) -> None:
                v = sampler_val_score(model, val_data, val, fusion)
                run.log_metrics({"val_map": v}, step=epoch)
                trial.report(v, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch}: val mAP {v:.4f}")

            try:
                model, kwargs, history = train_one(pt, paths, name, seed, on_epoch, store=store,
                                                   data=(train, val_data), ckpt_dir=ckpt)
            except optuna.TrialPruned as e:
                run.set_tags({"optuna.state": "PRUNED"})
                pruned = e
            else:
                value = sampler_val_score(model, val_data, val, fusion)
                atomic_save({"name": name, "kwargs": kwargs, "state_dict": model.state_dict(), "seed": seed,
                             "classes": store.classes}, ckpt / "sampler.pt")
                run.log_metrics({"val_map_final": value, "epochs_run": len(history or [])})
                run.set_tags({"optuna.state": "COMPLETE"})
                trial.set_user_attr("checkpoint", str(ckpt / "sampler.pt"))
        if pruned is not None:
            raise pruned
        return value

    return objective


def _trial_counts(study: "optuna.Study") -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def write_best_losses(p: Params, paths: "Paths", study: "optuna.Study", storage_url: str) -> dict | None:
    """``data/tuned_losses.json`` from the study's best complete trial (None when none completed)."""
    if not _complete(study):
        log.warning("sweep %s: no complete trial yet, %s not written", study.study_name, TUNED_LOSSES)
        return None
    best = study.best_trial
    values = {k: float(v) for k, v in best.params.items()}
    out = {"sampler": p.sweep.sampler, "params": values, "best_value": float(best.value),
           "objective": (f"val mAP ({p.evaluate.map_variant}) of the frame recognizer's mean softmax over the K "
                         f"selected frames, mean over K in {list(p.fusion.budgets)}; fusion from params; one seed "
                         f"({p.train_sampler.seeds[0]}), {p.sweep.epochs} epochs"),
           "trial": best.number, "checkpoint": best.user_attrs.get("checkpoint"), "study": study.study_name,
           "storage": storage_url, "trials": _trial_counts(study),
           "apply": "dvc exp run " + " ".join(f"-S {k}={v:.4f}" for k, v in values.items()),
           "note": "not applied automatically: copy params into params.yaml, or run the `apply` command"}
    _write_json_atomic(Path(paths.features).parent / TUNED_LOSSES, out)
    return out


def run_sweep(p: Params, paths: "Paths", n_trials: int | None = None, worker_id: int = 0, *,
              parent: bool = True, write_best: bool = True,
              objective_wrapper: Callable[[Callable], Callable] | None = None) -> dict:
    """Run ``n_trials`` (default ``sweep.trials``) loss-weight trials into the study ``sweep.study``
    in ``sweep.storage``; several calls (processes, machines, Prefect tasks) fill one study.

    ``worker_id`` seeds this caller's TPE sampler differently (``seed * 1000 + worker_id``; the
    constant liar keeps concurrent workers apart). ``parent``: open the MLflow parent run
    ``sweep <study>`` (off when a launcher already opened it for its workers). A trial that raises is
    recorded FAIL and the study continues (``catch=Exception``). ``objective_wrapper`` wraps the
    trial objective (fault injection in tests, extra logging). With ``write_best``, the study's best
    complete trial so far is written to ``data/tuned_losses.json``. Returns that content (or the
    trial counts when nothing completed).
    """
    import optuna

    from components import tracking

    n = p.sweep.trials if n_trials is None else int(n_trials)
    name = sweep_study_name(p)
    storage = storage_from_url(p.sweep.storage)
    study = _study(name, storage, optuna.samplers.TPESampler(seed=p.seed * 1000 + worker_id, constant_liar=True),
                   pruner=make_pruner(p.sweep.pruner))
    objective = sweep_objective(p, paths, name)
    if objective_wrapper is not None:
        objective = objective_wrapper(objective)
    space = {f"{s}.{k}": [lo, hi] for s, k, lo, hi in SWEEP_SPACES[p.sweep.sampler]}
    ctx = (tracking.parent_run(f"sweep {name}", {"sweep": to_dict(p.sweep), "space": space}, tracking=p)
           if parent else contextlib.nullcontext())
    with ctx:
        log.info("sweep %s (worker %d): %d trials into %s", name, worker_id, n, p.sweep.storage)
        study.optimize(objective, n_trials=n, catch=(Exception,))
    result = write_best_losses(p, paths, study, p.sweep.storage) if write_best else None
    return result or {"study": name, "trials": _trial_counts(study)}


__all__ = [
    "TUNED_FUSION", "TUNED_LOSSES", "FUSION_KEYS", "storage_from_url", "params_fusion", "set_fusion",
    "fusion_values", "saliency_digest", "ValSet", "load_val", "FusionData", "fusion_objective_data",
    "suggest_fusion", "input_study_name", "tune_fusion", "pareto_front", "pareto_study", "write_pareto", "sweep_study_name",
    "make_pruner", "suggest_losses", "sampler_val_score", "sweep_objective", "write_best_losses", "run_sweep",
]
