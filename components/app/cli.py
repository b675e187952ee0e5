"""``salient``: the user-facing command line.

    salient validate PATH...        check video files / folders, print a table (exit 1 if any is bad)
    salient params [--explain]      load and validate params.yaml, print the resolved values
    salient stage NAME [--set k=v]  run one pipeline stage outside DVC (train_sampler: --sampler NAME)
    salient demo                    `dvc repro` the demo pipeline on the synthetic benchmark
    salient predict VIDEO...        sampler -> K frames -> recognizer on video files (table or --json; --figure)
    salient plots                   render `dvc plots show` offline (Vega-Lite via vl-convert, no CDN)
    salient serve                   local Prefect server + `gpu` work pool + worker, deployments from prefect.yaml
    salient ui                      the MLflow UI on 127.0.0.1 for the configured tracking store
    salient tracking sync           replay the runs buffered while the tracking server was unreachable
    salient bench extract|samplers|predict|avgn|shards|ddp|loop  benchmarks -> reports/bench_*.json
    salient benchmark [--profile F]         the benchmark profile end to end -> benchmarks/<profile>/
    salient robustness [--values V ...]     the distractor sweep: one run per value -> benchmarks/distractors/
    salient verify [--workspace DIR]        check every checkpoint and feature-store file against its digest
    salient gc [--dry-run]                  remove resume checkpoints and .partial folders no current key can use
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

from components.tracking import mlflow_tracking as tracking, variant_runs
from components.core.atomic import atomic_write_text
from components.data.video import VIDEO_EXTENSIONS, validate_paths
from components.evaluation.fusion import fusion_values
from components.app.profile_run import run_benchmark
from components.app.robustness import DEFAULT_KEY, run_sweep
from components.core.params import ParamsError, load_params, to_dict
from components.core.paths import Paths
from components.reporting.dvc_plots import render_dvc_plots
from components.ops.processes import ProcessError, dvc_command, start_group, stop_group, venv_env, wait_healthy
from components.ops.stage_runner import setup_logging, stage_time_table, stage_times
from flows import serve

STAGES = ("sources", "prepare", "train_encoders", "extract", "headroom", "prototypes", "pseudo_labels", "train_sampler",
          "tune_fusion", "sampler_report", "train_recognizer", "flops", "evaluate", "avgn_report", "report", "summary")


SAMPLER_LIST = "{registered samplers}"  # replaced in --help by the registry's names (only when help is shown)


def _sampler_names() -> list[str]:
    # deferred: the samplers import torch (~2 s); only predict and its --help need the names
    from components.models.samplers import list_samplers

    return list_samplers()


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Docstrings keep their layout; every option with a help text and a default shows the default;
    :data:`SAMPLER_LIST` in a help text becomes the registered samplers (computed only when help is shown)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if SAMPLER_LIST in text:
            text = text.replace(SAMPLER_LIST, ", ".join(_sampler_names()))
        d = action.default
        if d is None or d is False or d == [] or d is argparse.SUPPRESS or "%(default)" in text:
            return text
        return text + " (default: %(default)s)"


class _SubParser(argparse.ArgumentParser):
    """A subcommand's parser: :class:`HelpFormatter` unless told otherwise."""

    def __init__(self, **kw):
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kw)


def unknown_name_message(kind: str, name: str, choices: dict[str, list[str]]) -> str:
    """``unknown sampler 'nsnett' (did you mean 'nsnet'?); registered samplers: ...; ablations: ...``:
    the closest of every choice (difflib) and each group of valid names in full."""
    every = [c for group in choices.values() for c in group]
    lower = {c.lower(): c for c in every}
    # every name very like it (up to 3), else the one closest, compared in lower case
    found = (difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.75)
             or difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6))
    close = [lower[c] for c in found]
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    groups = "; ".join(f"{label}: {', '.join(names)}" for label, names in choices.items() if names)
    return f"unknown {kind} {name!r}{hint}; {groups}"


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in cols}
    out = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


def cmd_validate(args) -> int:
    rows = validate_paths(args.paths, min_frames=args.min_frames, max_frames=args.max_frames)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        for r in rows:
            r["status"] = "ok" if r["ok"] else "BAD"
            if r.get("duration") is not None:
                r["duration"] = f"{r['duration']:.2f}"
        print(_table(rows, ["status", "path", "reason", "num_frames", "fps", "duration", "width", "height", "has_audio"]))
        bad = sum(not r["ok"] for r in rows)
        print(f"\n{len(rows)} files, {len(rows) - bad} ok, {bad} unusable")
    return 1 if any(not r["ok"] for r in rows) else 0


def cmd_params(args) -> int:
    try:
        p = load_params(args.params, args.set)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.explain:
        def walk(obj, prefix=""):
            for f in dataclasses.fields(obj):
                v = getattr(obj, f.name)
                if dataclasses.is_dataclass(v):
                    walk(v, f"{prefix}{f.name}.")
                    continue
                m = f.metadata
                rng = f" in [{m.get('lo')}, {m.get('hi')}]" if m.get("lo") is not None or m.get("hi") is not None else ""
                ch = f" one of {list(m['choices'])}" if m.get("choices") else ""
                print(f"{prefix}{f.name} = {v!r}{rng}{ch}  {m.get('help', '')}".rstrip())
        walk(p)
    else:
        import yaml

        print(yaml.safe_dump(to_dict(p), sort_keys=False), end="")
    return 0


def cmd_stage(args) -> int:
    mod = importlib.import_module(f"components.stages.{args.name}")
    argv = ["--params", args.params] + [x for s in args.set for x in ("--set", s)]
    if args.name == "train_sampler":
        if not args.sampler:
            print("error: train_sampler needs --sampler NAME", file=sys.stderr)
            return 2
        try:  # case-insensitive, with the closest names on a typo
            args.sampler = resolve_name("sampler", args.sampler, {
                "registered samplers": _sampler_names(),
                f"ablations of {args.params}": list(load_params(args.params, args.set).ablations)})
        except (ParamsError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        argv += ["--sampler", args.sampler]
    if args.name not in ("sources", "prepare", "summary"):
        seed = args.pipeline_seed
        if seed is None:
            try:
                seed = load_params(args.params, args.set).pipeline.seeds[0]
            except ParamsError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
        argv += ["--pipeline-seed", str(seed)]
    return mod.main(argv)


def cmd_demo(args) -> int:
    t0, since = time.perf_counter(), time.time()
    if not Path(".dvc").exists():
        scm = ["--no-scm"] if subprocess.run(["git", "rev-parse"], capture_output=True).returncode else []
        subprocess.run(dvc_command() + ["init", "-q", *scm], check=True)
    p = load_params("params.yaml")
    with tracking.parent_run("dvc repro " + " ".join(args.targets or ["<all>"]), tracking=p) as parent:
        rc = subprocess.run(dvc_command() + ["repro", *args.targets], env=venv_env()).returncode
        if rc:
            print(f"dvc repro failed (exit {rc})", file=sys.stderr)
            raise SystemExit(rc)  # the MLflow parent run ends FAILED
    wall = time.perf_counter() - t0
    stages = stage_times(since)
    atomic_write_text("reports/demo_timing.json", json.dumps(
        {"command": "salient demo (dvc repro " + " ".join(args.targets or ["<all>"]) + ")", "wall_seconds": round(wall, 1),
         "cpu_threads": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
         "note": "includes only stages DVC found out of date; stage seconds are whole processes (imports included)",
         "stages": [{k: r[k] for k in ("stage", "process_seconds", "run_seconds")} for r in stages]},
        indent=1) + "\n")
    print(f"\nDemo pipeline finished in {wall:.0f} s.")
    if stages:
        print("\nWhere the time went (each stage process, slowest first):\n" + stage_time_table(stages, wall))
    if Path("reports/README.md").exists():
        print(Path("reports/README.md").read_text())
    print("Report: reports/README.md (figures in reports/figures/, the full grid in reports/curves.csv)")
    print("Metrics: `dvc metrics show`   Plots offline: `salient plots`")
    if parent and not tracking.has_children(parent):  # DVC found everything up to date: nothing to compare
        tracking.delete_empty(parent, "no stage ran: DVC found every stage up to date")
        print(f"MLflow: no stage ran, so the empty parent run {parent.run_id} was deleted")
    elif parent:
        print(f"MLflow: parent run {parent.run_id} with one child run per stage; open the UI with:  salient ui")
    return 0


def video_files(items: list[str]) -> tuple[list[str], list[dict]]:
    """(files to predict, files skipped): a named file is always tried (a bad one becomes an error row);
    a folder gives its video files (by extension, recursively) and every other file in it is skipped,
    each named with the reason."""
    out, skipped = [], []
    for it in items:
        p = Path(it)
        if not p.is_dir():
            out.append(it)
            continue
        for f in sorted(f for f in p.rglob("*") if f.is_file()):
            if f.suffix.lower() in VIDEO_EXTENSIONS:
                out.append(str(f))
            else:
                skipped.append({"path": str(f), "reason": f"not a video file (extension {f.suffix or 'none'!r}; "
                                                          f"videos: {', '.join(sorted(VIDEO_EXTENSIONS))})"})
    return out, skipped


def resolve_name(kind: str, name: str, choices: dict[str, list[str]]) -> str:
    """``name`` as one of ``choices`` (groups of valid names), matched case-insensitively
    (``TSQNet`` -> ``tsqnet``); else ValueError with :func:`unknown_name_message`."""
    every = [c for group in choices.values() for c in group]
    if name in every:
        return name
    folded = [c for c in every if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(unknown_name_message(kind, name, choices))


def _stage_writing(path: Path) -> str | None:
    """The DVC stage (as ``dvc repro`` names it) whose outputs hold ``path``, asked of DVC itself over
    the project in the working directory; None outside a DVC project or when no stage writes it."""
    try:
        # deferred: DVC's index (~1.5 s) is read only on this error path
        from dvc.exceptions import DvcException
        from dvc.repo import Repo
    except ImportError:
        return None
    try:
        with Repo() as repo:
            outs = repo.find_outs_by_path(str(path.absolute()))
    except DvcException:
        return None
    return outs[0].stage.addressing if outs else None


def _missing_checkpoint(ck: Path, sampler: str, seed: int) -> str:
    """Why ``ck`` is absent and a command that really makes it (a DVC stage of this project), if any."""
    msg = f"{ck}: no trained {sampler!r} (seed {seed})"
    seeds = sorted(f.stem.removeprefix("seed") for f in ck.parent.glob("seed*.pt"))
    if seeds:
        return f"{msg}; trained seeds in {ck.parent}: {', '.join(seeds)} (--seed), or pass --checkpoint"
    stage = _stage_writing(ck.parent)
    how = (f"run `dvc repro {stage}`, or pass --checkpoint" if stage else
           "pass the --checkpoint-dir of a trained pipeline seed, or --checkpoint FILE or models:/NAME@ALIAS")
    return f"{msg}; {how}"


def cmd_predict(args) -> int:
    from tqdm import tqdm

    # deferred: components.app.predict imports torch and timm (~4 s); the other commands never need them
    from components.app.predict import Prediction, Predictor, plot_selection
    from components.training.sampler_training import resolve_checkpoint  # deferred: torch, as components.app.predict

    try:
        p = load_params(args.params, args.set)
        ck_dir = Path(args.checkpoint_dir)
        if not args.checkpoint:
            args.sampler = resolve_name("sampler", args.sampler, {
                "registered samplers": _sampler_names(), f"ablations of {args.params}": list(p.ablations)})
        ck, model = ck_dir / "samplers" / args.sampler / f"seed{args.seed}.pt", None
        if args.checkpoint:  # a file, a folder of seeds, or a registered model: models:/salient-sampler@best
            ck, model = resolve_checkpoint(args.checkpoint, args.seed, tracking_params=p)
        if not ck.exists():
            raise FileNotFoundError(_missing_checkpoint(ck, args.sampler, args.seed))
        # as evaluate: tuned or params; a registered model brings the fusion it was tuned with
        fusion = ({model["sampler"]: model.get("fusion") or {}} if model else
                  fusion_values(p, Paths(features=ck_dir / "features")))
        pred = Predictor.load(p, ck, ck_dir / "encoders", args.k, args.recognizer, device=args.device, fusion=fusion)
        pred.frame_chunk = max(1, args.frame_chunk)
    except (ParamsError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files, skipped = video_files(args.videos)
    results = []
    quiet = args.json or bool(args.output)
    with tqdm(total=len(files), unit="video", disable=None if not quiet else True) as bar:
        for i in range(0, len(files), args.batch_size):
            chunk = files[i:i + args.batch_size]
            keep = bool(args.figure) and len(results) < FIGURE_VIDEOS  # thumbnails only for what is drawn
            results += pred.predict(chunk, top=args.top, workers=args.workers, keep_frames=keep)
            bar.update(len(chunk))
    doc = {"sampler": pred.sampler_name, "checkpoint": str(ck), **({"model": {"uri": args.checkpoint, **model}}
                                                                     if model else {}),
           "recognizer": args.recognizer, "k": args.k, "gmacs_per_video": round(pred.gmacs, 4),
           **({"avgn_head_gmacs_per_video": round(pred.head_gmacs, 4)} if pred.avgn else {}),
           "results": [r.as_dict() for r in results], "skipped": skipped,
           "seconds": {k: round(v, 4) for k, v in pred.timings.items()}}
    if args.output:  # written whole or not at all: a full disk leaves no truncated JSON behind
        try:
            atomic_write_text(Path(args.output), json.dumps(doc, indent=1) + "\n")
        except OSError as e:
            print(f"error: {args.output}: could not write the results ({e}); nothing was written", file=sys.stderr)
            return 2
        print(f"{len(results)} result(s) -> {args.output}", file=sys.stderr)
    elif args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(prediction_table(results, skipped))
    if args.figure:
        try:
            shown = [r for r in results if isinstance(r, Prediction) and r.strip is not None][:FIGURE_VIDEOS]
            n = plot_selection(shown, Path(args.figure))
            print(f"{n} video(s) drawn -> {args.figure}" + (f" (the first {FIGURE_VIDEOS})" if
                                                             n < sum(isinstance(r, Prediction) for r in results)
                                                             else ""), file=sys.stderr)
        except ValueError as e:  # nothing to draw (every file failed): the results are out already
            print(f"note: {args.figure} not written: {e}", file=sys.stderr)
        except OSError as e:  # after the results: they are not lost to a bad figure path
            print(f"error: {args.figure}: could not write the figure ({e})", file=sys.stderr)
            return 2
    return 1 if any(not isinstance(r, Prediction) for r in results) else 0


FIGURE_VIDEOS = 16  # predict --figure draws the first videos only (one row each)


def avgn_section(results: list) -> str:
    """AVGN's own prediction per video, below the table: its head's top classes, each selected frame's
    patch as a box in the video's pixels, and "no audio track" where AVGN had none ("" without AVGN)."""
    heads = [r for r in results if getattr(r, "avgn", None) is not None]
    if not heads:
        return ""
    a = heads[0].avgn
    lines = [f"AVGN's own head (glance over the first {a.glance_frames} frames, then one {a.patch_px}x{a.patch_px}-px "
             f"patch per selected frame; {a.gmacs:.3f} GMACs per video):"]
    for r in heads:
        h = r.avgn
        lines.append(f"  {Path(r.path).name}: " + ", ".join(f"{c} {p:.3f}" for c, p in h.top)
                     + ("" if h.has_audio else "   [no audio track]"))
        lines.append(f"    patches (x0,y0,x1,y1 in pixels of the {h.frame_size[0]}x{h.frame_size[1]} frame; "
                     "#saliency rank):")
        lines += [f"      frame {n:>5} #{rank}: " + ",".join(f"{v:.0f}" for v in box) for n, rank, box in h.patches]
    return "\n".join(lines)


def prediction_table(results: list, skipped: list[dict] = ()) -> str:
    """One row per class of each video's top list (rank, class, probability; the video's frames,
    their times and GMACs on its first row), an ERROR row per unusable file, AVGN's own prediction
    (:func:`avgn_section`), then every error's detail in full below the table (never cut: a decoder's
    message is what one needs to fix a file), then every ``skipped`` file of a folder with its reason."""
    # deferred: components.app.predict imports torch; the caller has imported it already
    from components.app.predict import Prediction

    rows, errors = [], []
    for r in results:
        name = Path(r.path).name
        if not isinstance(r, Prediction):
            rows.append({"video": name, "class": f"ERROR {r.reason}"})
            errors.append(f"{r.path}: {r.reason}" + (f": {r.detail}" if r.detail else ""))
            continue
        for i, (cls, prob) in enumerate(r.top):
            rows.append({"video": name if i == 0 else "", "rank": i + 1, "class": cls, "prob": f"{prob:.3f}"})
        rows[-len(r.top)].update({"frames": " ".join(map(str, r.frames)),
                                  "seconds": " ".join(f"{t:.1f}" for t in r.timestamps), "GMACs": f"{r.gmacs:.3f}"})
    out = _table(rows, ["video", "rank", "class", "prob", "frames", "seconds", "GMACs"])
    if avgn := avgn_section(results):
        out += "\n\n" + avgn
    if errors:
        out += "\n\nerrors:\n" + "\n".join(f"  {e}" for e in errors)
    if skipped:
        out += f"\n\nskipped ({len(skipped)} file(s) in the folders given, not predicted):\n" + "\n".join(
            f"  {s['path']}: {s['reason']}" for s in skipped)
    return out


def cmd_plots(args) -> int:
    for out in render_dvc_plots(Path(args.out), fmt=args.format):
        print(out)
    return 0


def cmd_serve(args) -> int:
    return serve.main(args.rest)  # its own parser: `salient serve --help` lists flows.serve's options


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def _experiment_id(p) -> str | None:
    """The configured experiment's id, None when it does not exist yet (or the store cannot say)."""
    try:
        exp = tracking.client(p).get_experiment_by_name(tracking.experiment_name(p))
    except Exception as e:  # noqa: BLE001 - only the link printed depends on it
        print(f"note: experiment lookup failed ({e})", file=sys.stderr)
        return None
    return exp.experiment_id if exp is not None else None


def _variant_view(p, exp_id: str | None, port: int) -> str | None:
    """The link to the experiment's saved view of the variant runs (written here when an evaluation
    that could not reach the server left none); None without an experiment or when it cannot be written."""
    if exp_id is None:
        return None
    try:
        if tracking.saved_view(exp_id, variant_runs.VIEW_ID, tracking=p) is None:
            variant_runs.save_variant_view(p, exp_id)
    except Exception as e:  # noqa: BLE001 - only a link depends on it
        print(f"note: the saved view of the variant runs could not be written ({e})", file=sys.stderr)
        return None
    return variant_runs.view_url(p, port, exp_id)


def cmd_ui(args) -> int:
    """The MLflow server in a process group of its own, stopped as a whole (its gunicorn / uvicorn
    workers included) when we get SIGTERM, SIGINT or SIGHUP, or exit for any other reason."""
    p = load_params(args.params)
    cmd = tracking.ui_command(p, port=args.port)
    print(" ".join(cmd), file=sys.stderr)
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    old = {s: signal.signal(s, _raise_interrupt) for s in stops}
    proc = None
    try:
        proc = start_group(cmd, name="mlflow ui", env=tracking.server_env(os.environ))
        try:
            wait_healthy(f"http://127.0.0.1:{args.port}/health", proc=proc, timeout=180)
        except ProcessError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        exp_id = _experiment_id(p)
        view = _variant_view(p, exp_id, args.port)
        print(f"\nMLflow UI, the experiment's runs:  {tracking.ui_url(args.port, exp_id)}\n"
              + (f"the variant runs (saved view \"{variant_runs.view_name(p)}\"):  {view}\n" if view else "")
              + "Ctrl-C stops it.", file=sys.stderr, flush=True)
        while proc.alive():  # polled, not wait(): the signal handler runs between two polls
            proc.remember_children()
            time.sleep(0.5)
        return proc.popen.returncode
    except KeyboardInterrupt:
        print("\nstopping the MLflow UI ...", file=sys.stderr)
        return 0
    finally:
        for s in stops:  # a second signal while stopping must not interrupt the stop itself
            signal.signal(s, signal.SIG_IGN)
        left = stop_group(proc, signals=(signal.SIGTERM,), grace=10) if proc is not None else []
        for s, handler in old.items():
            signal.signal(s, handler)
        if left:
            print(f"error: processes still alive: {left}", file=sys.stderr)


def cmd_tracking(args) -> int:
    """``salient tracking sync``: the runs in ``tracking.spool`` replayed to their servers (exit 1 while one
    is still unreachable: nothing is lost, run it again later)."""
    p = load_params(args.params)
    root = tracking.spool_dir(p)
    tracking.http_budget(p)
    try:
        done = tracking.sync_spool(p)
    except Exception as e:  # noqa: BLE001 - the server's own error, named
        if not tracking.unreachable(e):
            raise
        print(f"error: a tracking server is still unreachable ({tracking.redact(str(e))[:300]}); the runs stay "
              f"buffered in {root}: run `salient tracking sync` again later", file=sys.stderr)
        return 1
    for key, run_id in done:
        print(f"{run_id}" + (f"  (buffered as {key})" if key != run_id else ""))
    left = [d.name for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    print(f"{len(done)} buffered run(s) replayed from {root}" + (f"; {len(left)} still buffered (still being logged, "
          f"or their parent is)" if left else ""), file=sys.stderr)
    return 0


def cmd_benchmark(args) -> int:
    try:
        return run_benchmark(Path("."), Path(args.profile), Path(args.workspace) if args.workspace else None,
                             Path(args.record) if args.record else None, args.targets)
    except ParamsError as e:
        print(f"error: {args.profile}: {e}", file=sys.stderr)
        return 2


def cmd_robustness(args) -> int:
    try:
        return run_sweep(Path("."), Path(args.profile), args.key, [yaml.safe_load(v) for v in args.values], args.k)
    except ParamsError as e:
        print(f"error: {args.profile}: {e}", file=sys.stderr)
        return 2


def cmd_bench(args) -> int:
    if args.what == "loop":
        from components.app import bench_loop  # deferred: the loop's waits need no torch in this process

        return bench_loop.main(args.rest)
    # deferred: the benchmarks import torch, decord and the models; the other commands never need them
    from components.app import bench_extract as bench

    return bench.main([args.what, *args.rest])


def cmd_verify(args) -> int:
    from components.core.integrity import verify_workspace  # deferred: loads torch for the checkpoints

    checked, bad = verify_workspace(args.workspace, args.data)
    if args.json:
        print(json.dumps({"checked": checked, "bad": bad}, indent=1))
    else:
        if bad:
            print(_table(bad, ["path", "problem"]))
        print(f"{checked} files checked under {Path(args.workspace) / args.data}, {len(bad)} bad")
    return 1 if bad else 0


def cmd_gc(args) -> int:
    from components.core.scratch import collect  # deferred: the code fingerprints walk the project's imports

    try:
        p = load_params(Path(args.params or Path(args.workspace) / "params.yaml").resolve(), args.set)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    here = os.getcwd()
    os.chdir(args.workspace)  # stamps name their inputs relative to the workspace, as the stages saw them
    try:
        rows = collect(p, Paths().work, Paths().data, dry_run=args.dry_run)
    finally:
        os.chdir(here)
    total = sum(r["bytes"] for r in rows)
    for r in rows:
        r["MiB"] = f"{r['bytes'] / 2**20:.1f}"
    if rows:
        print(_table(rows, ["MiB", "path", "reason"]))
    print(f"{'would remove' if args.dry_run else 'removed'} {len(rows)} folders, {total / 2**20:.1f} MiB")
    return 0


def _maintenance(sub) -> None:
    """The ``verify`` and ``gc`` subcommands (a workspace's artifacts and scratch)."""
    ve = sub.add_parser("verify", help="check every checkpoint and feature-store file of a workspace against the "
                        "digest written with it; lists the bad files (exit 1 if any)")
    ve.add_argument("--workspace", default=".", help="the workspace root (holds data/)")
    ve.add_argument("--data", default="data", help="the folder under it that holds the artifacts")
    ve.add_argument("--json", action="store_true", help="print {checked, bad} as JSON instead of a table")
    ve.set_defaults(fn=cmd_verify)
    gc = sub.add_parser("gc", help="remove resume checkpoints (.salient/work/...) and .partial folders (data/...) "
                        "that no current stage's key can use (other code, params or inputs)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would go, with sizes")
    gc.add_argument("--workspace", default=".", help="the workspace root (holds data/ and .salient/)")
    gc.add_argument("--params", help="the params the current keys come from (default: the workspace's params.yaml)")
    gc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    gc.set_defaults(fn=cmd_gc)


PARAMS_HELP = "the params file"


def _wrap(text: str) -> str:
    """A command's description, wrapped (the formatter keeps descriptions as written)."""
    return textwrap.fill(text, 100)
SET_HELP = "override a param for this run: dotted KEY=VALUE, e.g. fusion.source=params (repeatable)"


def _add_predict(sub) -> None:
    """The ``predict`` command and its options."""
    pd = sub.add_parser("predict", help="predict the classes of video files (sampler -> K frames -> recognizer)")
    pd.add_argument("videos", nargs="+", help="video files or folders (a folder's non-video files are skipped "
                    "and named in the output)")
    pd.add_argument("--sampler", default="tsqnet", help=f"a registered sampler ({SAMPLER_LIST}) or an ablation "
                    "named in the params' `ablations`, in any case; its checkpoint is "
                    "--checkpoint-dir/samplers/NAME/seedS.pt")
    pd.add_argument("--k", type=int, default=5, help="frames the recognizer sees (1 <= K <= frames.T)")
    pd.add_argument("--recognizer", default="frame", choices=["frame", "tsi"],
                    help="frame: the per-frame recognizer, mean over the K frames; tsi: the clip recognizer")
    pd.add_argument("--checkpoint-dir", default="data/s0",
                    help="folder with encoders/, samplers/, recognizers/: one pipeline seed's data/s<seed>")
    pd.add_argument("--checkpoint", help="a sampler checkpoint file, a folder of seed<S>.pt, or a registered model, "
                    "e.g. models:/salient-sampler@best, which brings its own sampler, seed and tuned fusion "
                    "(overrides --checkpoint-dir/samplers/...)")
    pd.add_argument("--seed", type=int, default=0, help="which trained seed of the sampler")
    pd.add_argument("--batch-size", type=int, default=8, help="videos per batch")
    pd.add_argument("--workers", type=int, default=0, help="decoding processes")
    pd.add_argument("--device", help="torch device of the models (cpu, cuda, cuda:1, auto); default: the params' "
                    "compute.device. compute.amp / channels_last / pin_memory apply too (--set compute.amp=true)")
    pd.add_argument("--frame-chunk", type=int, default=16, help="frames per encoder call (raise on a GPU)")
    pd.add_argument("--top", type=int, default=5, help="classes listed per video, best first")
    pd.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    pd.add_argument("--output", metavar="FILE", help="write the JSON result to FILE (atomically: complete or absent)")
    pd.add_argument("--figure", metavar="PNG", help=f"draw each video's T observed frames with the sampler's "
                    f"per-frame scores, the K picks marked, to PNG (the first {FIGURE_VIDEOS} videos); with AVGN, "
                    "the patch its head classified as a box on each picked frame")
    pd.add_argument("--params", default="params.yaml", help="the params file (frames, fusion, ablations)")
    pd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param (repeatable)")
    pd.set_defaults(fn=cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    """The ``salient`` parser: every command and option with its help text (tested)."""
    ap = argparse.ArgumentParser(prog="salient", description=__doc__, formatter_class=HelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_SubParser)
    v = sub.add_parser("validate", help="check video files or folders", description=_wrap("Probe video files (folders: "
                       "every video file in them, recursively) and print one row each: usable or not, why, frames, "
                       "fps, duration, size, audio. Exit status 1 when any is unusable."))
    v.add_argument("paths", nargs="+", help="video files or folders")
    v.add_argument("--min-frames", type=int, default=2, help="a video with fewer decodable frames is unusable")
    v.add_argument("--max-frames", type=int, default=500_000,
                   help="a video reporting more frames is unusable (a corrupt header's absurd count)")
    v.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    v.set_defaults(fn=cmd_validate)
    pr = sub.add_parser("params", help="validate params.yaml and print it", description=_wrap("Load the params file "
                        "through the typed loader (unknown keys, wrong types, out-of-range values and settings their "
                        "switch makes unused are errors, exit status 2) and print the resolved values."))
    pr.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    pr.add_argument("--explain", action="store_true", help="one line per key: value, range, meaning")
    pr.set_defaults(fn=cmd_params)
    st = sub.add_parser("stage", help="run one stage outside DVC", description=_wrap("Run one pipeline stage in this "
                        "process, as `dvc repro` would but without DVC's bookkeeping (no dvc.lock entry)."))
    st.add_argument("name", choices=STAGES, help="the stage")
    st.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    st.add_argument("--sampler", help="for train_sampler: the sampler or ablation to train (any case)")
    st.add_argument("--pipeline-seed", type=int, help="the pipeline seed (default: the first of pipeline.seeds); "
                    "not used by sources, prepare and summary, which serve every seed")
    st.set_defaults(fn=cmd_stage)
    d = sub.add_parser("demo", help="dvc repro the demo pipeline")
    d.add_argument("targets", nargs="*", help="dvc repro targets (default: the whole pipeline)")
    d.set_defaults(fn=cmd_demo)
    bm = sub.add_parser("benchmark", help="the benchmark profile end to end in its own workspace (resumable); "
                        "records dvc.lock and reports/ in benchmarks/<profile>/")
    bm.add_argument("--profile", default="profiles/benchmark.yaml", help="params merged over params.yaml")
    bm.add_argument("--workspace", help="where it runs (default .salient/bench/<profile>)")
    bm.add_argument("--record", help="where the finished run is recorded (default benchmarks/<profile>)")
    bm.add_argument("targets", nargs="*", help="dvc repro targets (default: all; a partial run records nothing)")
    bm.set_defaults(fn=cmd_benchmark)
    rb = sub.add_parser("robustness", help="a profile run end to end at each value of one param (default: the "
                        "share of distractor frames) -> benchmarks/<profile>/ tables and figure; resumable")
    rb.add_argument("--profile", default="profiles/distractors.yaml", help="params merged over params.yaml")
    rb.add_argument("--key", default=DEFAULT_KEY, help="the dotted param swept")
    rb.add_argument("--values", nargs="+", default=["0", "0.1", "0.2", "0.3"], help="its values (YAML scalars)")
    rb.add_argument("--k", type=int, default=3, help="the frame budget the tables report")
    rb.set_defaults(fn=cmd_robustness)
    b = sub.add_parser("bench", help="benchmarks -> reports/bench_*.json", description=_wrap("Time one part of the "
                       "project on this machine -> reports/bench_<what>.json. `salient bench WHAT --help` lists "
                       "that benchmark's own options."))
    b.add_argument("what", choices=["extract", "samplers", "predict", "avgn", "shards", "ddp", "loop"],
                   help="what to time: extraction, the samplers, predict, AVGN, extraction shards, DDP training, "
                        "or the researcher's loop (demo, no-op rerun, tests in a fresh clone)")
    b.add_argument("rest", nargs=argparse.REMAINDER, metavar="OPTIONS",
                   help="the benchmark's own options (`salient bench WHAT --help`)")
    b.set_defaults(fn=cmd_bench)
    _add_predict(sub)
    pl = sub.add_parser("plots", help="render the dvc.yaml plots offline", description=_wrap("Render the plots of "
                        "dvc.yaml (`dvc plots show`) from reports/curves.csv without a network: the Vega-Lite "
                        "libraries are inlined (html) or the plots converted by vl-convert (svg, png)."))
    pl.add_argument("--out", default="reports/plots", help="output folder (git-ignored: regenerate it any time)")
    pl.add_argument("--format", default="html", choices=["html", "svg", "png"],
                    help="html: one self-contained page with every plot; svg / png: one file per plot")
    pl.set_defaults(fn=cmd_plots)
    # every option (--help too) goes to flows.serve's own parser, so its help lists them
    sv = sub.add_parser("serve", help="start a local Prefect server, work pool and worker (Ctrl-C stops all); "
                        "`salient serve --help` lists its options", add_help=False)
    sv.set_defaults(fn=cmd_serve, passthrough=True)
    ui = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1")
    ui.add_argument("--params", default="params.yaml", help="the params file naming the tracking store")
    ui.set_defaults(fn=cmd_ui)
    tr = sub.add_parser("tracking", help="tracking housekeeping: `sync` replays the runs buffered while the MLflow "
                                         "server was unreachable")
    tr.add_argument("action", choices=("sync",), help="sync: replay the spooled runs to their server")
    tr.add_argument("--params", default="params.yaml", help="the params file naming the tracking store and spool")
    tr.set_defaults(fn=cmd_tracking)
    _maintenance(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args, rest = ap.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = rest
    elif rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    setup_logging()
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
