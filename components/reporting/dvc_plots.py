"""Render the ``dvc.yaml`` plots offline.

``dvc plots show`` writes an HTML page that loads Vega from a CDN, which stays blank without a
network. Here DVC still resolves the plots (every definition, template and revision), via
``dvc plots show --json``, and ``vl-convert`` renders each Vega-Lite spec locally: HTML with the
Vega libraries bundled in the page, or SVG / PNG files.

The templates group the samplers as :mod:`components.reporting.figures` does: ``plots/curves.json`` the learned
samplers against the key baselines (mean line, min–max band over runs, TSI as open diamonds),
``plots/ablations.json`` one panel per learned sampler with its ablations and branches; axis titles
come from ``x_label`` / ``y_label`` in ``dvc.yaml``.

Before rendering, :func:`apply_palette` gives every sampler the colour it has in the PNG figures
(:func:`components.reporting.figures.colours`, the one palette; the templates' own ``tableau10`` stays for a plain
``dvc plots show``), and the spec declares the Vega-Lite version the page bundles, so the page does not
warn of a version mismatch.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from components.ops.processes import dvc_command


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


def vegalite_schema(spec: dict, version: str) -> dict:
    """``spec`` declaring Vega-Lite ``version``'s major (``"6.4"`` -> ``.../vega-lite/v6.json``): the version
    the page bundles, so it does not warn of a mismatch (the templates keep v5 for DVC's own renderer; they
    use nothing v6 changed)."""
    return {**spec, "$schema": f"https://vega.github.io/schema/vega-lite/v{version.split('.')[0]}.json"}


def apply_palette(spec: dict) -> dict:
    """``spec`` in the PNG figures' colours (:func:`components.reporting.figures.colours`, the one palette): the
    series names are :func:`components.reporting.figures.label`'s (the template's ``name`` / ``names`` calculations
    replaced by a lookup) and each colour encoding of the ``series`` field gets an explicit ``domain`` (the series the
    template draws: :func:`components.reporting.figures.main_names` for the main figure's template, every sampler
    but uniform, which it draws grey, for the ablations one) and ``range``; the ablations' panels share
    one colour legend. A comparison of several revisions (one sampler, several series) keeps the
    template's scheme."""
    from components.reporting.figures import colours, label, main_names  # deferred: matplotlib

    values = (spec.get("data") or {}).get("values")
    if not isinstance(values, list) or len({v.get("rev") for v in values if isinstance(v, dict)}) > 1:
        return spec
    samplers = list(dict.fromkeys(v["sampler"] for v in values if isinstance(v, dict) and "sampler" in v))
    faceted = "facet" in spec
    drawn = [n for n in samplers if n != "uniform"] if faceted else main_names([{"sampler": n} for n in samplers])
    col = colours(samplers)
    names = {n: label(n) for n in samplers}
    scale = {"domain": [names[n] for n in drawn], "range": [col[n] for n in drawn]}
    lookup = json.dumps(names)

    def walk(node):
        if isinstance(node, dict):
            if node.get("as") == "name" and "calculate" in node:
                node["calculate"] = f"({lookup})[datum.sampler] || datum.sampler"
            elif node.get("as") == "names" and "calculate" in node:  # the ablations' panel titles
                node["calculate"] = lookup
            colour = node.get("color")
            if isinstance(colour, dict) and colour.get("field") == "series":
                colour["scale"] = dict(scale)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    spec = json.loads(json.dumps(spec))
    walk({k: v for k, v in spec.items() if k != "data"})
    if faceted and isinstance(spec.get("resolve"), dict):  # one colour per sampler: one shared colour legend
        spec["resolve"].get("scale", {}).pop("color", None)
        spec["resolve"].get("legend", {}).pop("color", None)
    return spec


def render_dvc_plots(out_dir: Path, fmt: str = "html", cwd: Path = Path(".")) -> list[Path]:
    """Write one file per plot under ``out_dir`` (``html`` bundles Vega: no network needed), in the
    figures' colours (:func:`apply_palette`)."""
    import vl_convert as vlc

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for pid, spec in dvc_plot_specs(cwd).items():
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", pid).strip("_") or "plot"
        target = out_dir / f"{name}.{fmt}"
        version = vlc.get_vegalite_versions()[-1]  # the newest: the one its bundled Vega belongs to
        spec = vegalite_schema(apply_palette(spec), version)
        if fmt == "html":
            target.write_text(vlc.vegalite_to_html(spec, vl_version=version, bundle=True))
        elif fmt == "svg":
            target.write_text(vlc.vegalite_to_svg(spec, vl_version=version))
        else:
            target.write_bytes(vlc.vegalite_to_png(spec, vl_version=version, scale=2))
        written.append(target)
    return written
