"""Where stages read and write (:class:`Paths`, the ``dvc.yaml`` outputs) and the report writer.

:class:`Paths` is handed to every stage's ``run(params, paths)`` and to the library functions they
call; tests point it at a temp dir with :meth:`Paths.under`. :func:`write_report` writes one
``reports/<name>`` JSON (a DVC metrics file) atomically; :func:`write_timings` the measured wall
times of a stage, in a file of their own (``reports/timings/<stage>.json``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from components.core.atomic import atomic_write_text


@dataclass(frozen=True)
class Paths:
    """Where stages read and write; the defaults are the ``dvc.yaml`` outputs, relative to the project."""
    prepared: Path = Path("data/prepared")  # manifest.csv, classes.txt (+ synthetic videos/ | real sources.json)
    sources: Path = Path("data/sources.json")  # the dataset's source files (stage ``sources``), prepare's trigger
    encoders: Path = Path("data/encoders")  # light.pt, recognizer.pt, audio.pt
    features: Path = Path("data/features")  # the feature store
    reports: Path = Path("reports")
    results: Path = Path("results")  # evaluate's per-seed grid (curves.csv, metrics.json, scores.npz), read by summary
    work: Path = Path(".salient/work")  # resumable scratch (checkpoints, partial banks); never a DVC output
    pipeline_seed: int | None = None  # set by :meth:`seeded`: the pipeline seed these paths belong to

    def under(self, root: Path) -> "Paths":
        return replace(self, **{k: Path(root) / v for k, v in self.__dict__.items() if k != "pipeline_seed"})

    def seeded(self, seed: int) -> "Paths":
        """Where pipeline seed ``seed`` reads and writes: the prepared data and the scratch space are
        shared; encoders, the feature store and everything beside it go to ``data/s<seed>/``, reports
        to ``reports/s<seed>/``, evaluation results to ``results/s<seed>/``."""
        data = Path(self.features).parent / f"s{seed}"
        return replace(self, encoders=data / "encoders", features=data / "features",
                       reports=Path(self.reports) / f"s{seed}", results=Path(self.results) / f"s{seed}",
                       pipeline_seed=seed)

    @property
    def data(self) -> Path:
        """The folder beside the feature store that holds samplers/, recognizers/, prototypes.npz, ..."""
        return Path(self.features).parent


def write_timings(paths: Paths, stage: str, obj: object) -> Path:
    """``reports/timings/<stage>.json``: measured wall times, kept out of every other output so that
    the same commit, params and machine give byte-identical stage outputs (only these files differ)."""
    return write_report(paths, f"timings/{stage}.json", obj)


def write_report(paths: Paths, name: str, obj: object) -> Path:
    """``reports/<name>`` as indented JSON (a DVC metrics file), written atomically."""
    return atomic_write_text(paths.reports / name, json.dumps(obj, indent=1) + "\n")
