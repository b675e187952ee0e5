"""Render the ``dvc.yaml`` plots offline.

``dvc plots show`` writes an HTML page that loads Vega from a CDN, which stays blank without a
network. Here DVC still resolves the plots (every definition, template and revision), via
``dvc plots show --json``, and ``vl-convert`` renders each Vega-Lite spec locally: HTML with the
Vega libraries bundled in the page, or SVG / PNG files.

The templates group the samplers as :mod:`components.figures` does: ``plots/curves.json`` the learned
samplers against the key baselines (mean line, min–max band over runs, TSI as open diamonds),
``plots/ablations.json`` one panel per learned sampler with its ablations and branches; axis titles
come from ``x_label`` / ``y_label`` in ``dvc.yaml``.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from components.processes import dvc_command


def dvc_plot_specs(cwd: Path = Path(".")) -> dict[str, dict]:
    """Plot id -> filled Vega-Lite spec, as DVC resolves them (``dvc plots show --json``)."""
    res = subprocess.run([*dvc_command(), "plots", "show", "--json"], cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"dvc plots show --json failed: {res.stderr.strip()[-500:]}")
    out = json.loads(res.stdout)  # {"data": {plot id: [{"type", "content", "revisions"}, ...]}, "errors": ...}
    if out.get("errors"):
        raise RuntimeError(f"dvc plots: {out['errors']}")
    return {pid: item["content"] for pid, items in out.get("data", {}).items()
            for item in items if item.get("type") == "vega"}


def render_dvc_plots(out_dir: Path, fmt: str = "html", cwd: Path = Path(".")) -> list[Path]:
    """Write one file per plot under ``out_dir`` (``html`` bundles Vega: no network needed)."""
    import vl_convert as vlc

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for pid, spec in dvc_plot_specs(cwd).items():
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", pid).strip("_") or "plot"
        target = out_dir / f"{name}.{fmt}"
        if fmt == "html":
            target.write_text(vlc.vegalite_to_html(spec, bundle=True))
        elif fmt == "svg":
            target.write_text(vlc.vegalite_to_svg(spec))
        else:
            target.write_bytes(vlc.vegalite_to_png(spec, scale=2))
        written.append(target)
    return written
