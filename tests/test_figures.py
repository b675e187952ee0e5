"""The figures a reader looks at (components/reporting/figures.py, plots/*.json): which series each figure shows,
the seed band, distinct styles, human labels, legends outside the data, readable frame labels; and
the dvc.yaml plots resolved by DVC and rendered by vl-convert with the same grouping."""
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb

from components.reporting.figures import (BASELINES, VideoPicks, draw_curves, draw_frame_picks, draw_variants, kind,
                                spread)
from components.ops.processes import dvc_command

ABLATIONS = {"tsqnet_vqm_only": "tsqnet", "nsnet_fem_mlp": "nsnet"}
#: mAP of the learned samplers per sampler seed (mean 0.6, min 0.5, max 0.7 at every K)
SEED_MAP = {0: 0.5, 1: 0.7, 2: 0.6}


def _rows() -> list[dict]:
    """A hand-made curves table: 3 K, learned samplers with 3 sampler seeds, baselines with one, an
    ablation and a branch per learned sampler, dense constant over K, TSI rows at K=2 (and 3)."""
    rows = []

    def add(name, k, seed, m, rec="frame", g=None):
        rows.append({"pipeline_seed": "0", "sampler": name, "recognizer": rec, "k": k, "seed": seed,
                     "gmacs": g if g is not None else 0.5 * k, "map": m, "top1": m - 0.1,
                     "salient_recall": 0.5, "distractor_share": 0.1})

    for k in (1, 2, 3):
        for name in ("tsqnet", "nsnet"):
            for seed, m in SEED_MAP.items():
                add(name, k, seed, m + 0.01 * k)
        for name, m in (("uniform", 0.4), ("random", 0.38), ("maxconf_l", 0.55), ("oracle", 0.9),
                        ("videoconf_l", 0.52), ("tsqnet_vqm_only", 0.58), ("nsnet_fem_mlp", 0.57),
                        ("tsqnet[vqm]", 0.59), ("nsnet[fsm]", 0.56)):
            add(name, k, 0, m + 0.01 * k)
        add("dense", k, 0, 0.75, g=4.0)
    for name, k in (("tsqnet", 2), ("tsqnet", 3), ("uniform", 2)):
        add(name, k, 0, 0.65, rec="tsi")
    return rows


def _series(ax) -> dict:
    """Label -> the line of each series drawn in ``ax`` (an error-bar series: its marker line)."""
    out = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    return out | {c.get_label(): c.lines[0] for c in ax.containers}


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_main_figure_shows_learned_samplers_and_key_baselines_only():
    fig = draw_curves(_rows(), ABLATIONS)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:6] == ["TSQNet", "NSNet", "Uniform", "MaxConf-L", "Oracle (true salient frames)",
                          "Dense (all T frames)"]
    assert any("TSI recognizer" in t for t in legend) and "min–max over runs" in legend
    for ax in fig.axes:
        assert set(_series(ax)) == {"TSQNet", "NSNet", "Uniform", "MaxConf-L", "Oracle (true salient frames)",
                         "Dense (all T frames)", "TSQNet + TSI recognizer", "Uniform + TSI recognizer"}
    text = " ".join(_texts(fig))
    assert "vqm" not in text.lower() and "fem" not in text and "Random" not in text


def test_ablations_and_branches_only_in_their_small_multiples():
    fig = draw_variants(_rows(), ABLATIONS)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["TSQNet: full model vs its variants", "NSNet: full model vs its variants",
                      "Training-free baselines"]
    labels = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]
    assert labels[0] == ["Uniform (reference)", "TSQNet", "tsqnet_vqm_only", "TSQNet: VQM branch only"]
    assert labels[1] == ["Uniform (reference)", "NSNet", "nsnet_fem_mlp", "NSNet: FSM branch only"]
    assert set(labels[2]) == {"Uniform", "Random", "MaxConf-L", "VideoConf-L", "Oracle (true salient frames)",
                              "Dense (all T frames)"}


def test_every_series_has_its_own_look():
    for fig in (draw_curves(_rows(), ABLATIONS), draw_variants(_rows(), ABLATIONS)):
        for ax in fig.axes:
            looks = [(ln.get_color(), ln.get_linestyle(), ln.get_marker(), ln.get_markerfacecolor())
                     for ln in _series(ax).values()]
            assert len(looks) == len(set(looks)) > 3
            frame = [ln for t, ln in _series(ax).items() if "recognizer" not in t]
            colours = [ln.get_color() for ln in frame]
            assert len(colours) == len(set(colours))  # colour alone tells frame-recognizer series apart


def test_tsi_rows_are_open_diamonds_in_their_samplers_colour():
    ax = draw_curves(_rows(), ABLATIONS).axes[0]
    by_label = _series(ax)
    tsi = by_label["TSQNet + TSI recognizer"]
    assert tsi.get_marker() == "D" and tsi.get_markerfacecolor() == "none" and tsi.get_linestyle() == "None"
    assert tsi.get_color() == by_label["TSQNet"].get_color()
    assert list(tsi.get_xdata()) == [1.0, 1.5]  # every K it was evaluated at
    assert by_label["TSQNet"].get_linestyle() == "-" and by_label["Uniform"].get_linestyle() == "--"


def test_band_is_min_max_over_seeds():
    sp = spread(_rows(), "map")[("tsqnet", "frame")]
    assert sp.mean == pytest.approx([61, 62, 63]) and sp.lo == pytest.approx([51, 52, 53])
    assert sp.hi == pytest.approx([71, 72, 73]) and list(sp.runs) == [3, 3, 3]
    ax = draw_curves(_rows(), ABLATIONS).axes[0]
    line = _series(ax)["TSQNet"]
    assert list(line.get_ydata()) == pytest.approx([61, 62, 63])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)
             and np.allclose(c.get_facecolor()[0][:3], to_rgb(line.get_color()))]
    assert len(bands) == 1
    v = bands[0].get_paths()[0].vertices
    for x, lo, hi in zip([0.5, 1.0, 1.5], [51, 52, 53], [71, 72, 73]):
        ys = v[np.isclose(v[:, 0], x), 1]
        assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
    # a single run gives no band: the baselines drawn with one seed have none
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2  # TSQNet, NSNet


def test_dense_is_one_marker():
    ax = draw_curves(_rows(), ABLATIONS).axes[0]
    dense = _series(ax)["Dense (all T frames)"]
    assert list(dense.get_xdata()) == [4.0] and dense.get_marker() == "*"


def test_labels_are_for_readers_and_legends_sit_outside_the_data():
    for fig in (draw_curves(_rows(), ABLATIONS), draw_variants(_rows(), ABLATIONS)):
        fig.canvas.draw()
        for ax in fig.axes:
            assert ax.get_xlabel() == "GMACs per video"
            assert ax.get_ylabel() in ("mAP (%)", "top-1 accuracy (%)", "")
            assert ax.xaxis.label.get_fontsize() >= 10
        raw = {"gmacs", "map", "top1", "salient_recall"}
        assert not raw & set(_texts(fig))
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends
        for lg in legends:
            box = lg.get_window_extent()
            assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert draw_curves(_rows(), ABLATIONS).axes[0].get_ylabel() == "mAP (%)"


def test_kind_follows_the_ablations_map_or_the_naming_convention():
    assert [kind(n, ABLATIONS) for n in ("tsqnet", "maxconf_l", "tsqnet_vqm_only", "nsnet[vgm]")] == \
        ["learned", "baseline", "ablation", "branch"]
    assert kind("tsqnet_tqm_only") == "ablation" and kind("tsi") == "learned"
    assert kind("tsqnet_tqm_only", {}) == "learned"  # the map, when given, decides


def test_baselines_are_the_training_free_samplers():
    """``BASELINES`` (what the figures and plots/*.json call training-free) against the registry."""
    from components.models.samplers import create_sampler, list_samplers

    for name in list_samplers():
        if name in BASELINES:
            assert create_sampler(name).trainable is False
        else:
            try:
                model = create_sampler(name)
            except TypeError:  # a learned sampler needs its dimensions
                continue
            assert model.trainable, f"{name} is training-free but not in figures.BASELINES"


def test_frame_picks_rows_are_labelled_readably():
    T, K = 8, 3
    rng = np.random.default_rng(0)
    videos = [VideoPicks(f"v{i} (class {i})", rng.integers(0, 255, (T, 16, 16, 3), dtype=np.uint8),
                         np.arange(T) % 2 == 0, {"uniform": [1, 4, 6], "tsqnet": [0, 2, 4]}) for i in range(2)]
    videos[1] = videos[1]._replace(salient=None)  # a dataset without frame labels: no ground-truth row
    fig = draw_frame_picks(videos, K)
    rows = [ax for ax in fig.axes if ax.get_subplotspec().colspan.start == 0]
    assert len(rows) == 3 + 2
    names = [ax.get_ylabel() for ax in rows]
    assert names == ["v0 (class 0)\nground truth", "Uniform", "TSQNet", "v1 (class 1)\nUniform", "TSQNet"]
    assert all(ax.yaxis.label.get_fontsize() >= 9 for ax in rows)
    axes = np.array(fig.axes).reshape(5, T)
    red = [t for t in range(T) if np.allclose(axes[2, t].spines["top"].get_edgecolor()[:3], to_rgb("#d62728"))]
    assert red == [0, 2, 4]  # TSQNet's picks of the first video
    green = [t for t in range(T) if axes[0, t].spines["top"].get_linewidth() > 2]
    assert green == [0, 2, 4, 6]  # its salient frames


@pytest.fixture(scope="module")
def plots_project(tmp_path_factory):
    """A DVC project holding the real ``plots:`` of dvc.yaml, plots/*.json and a tiny curves.csv."""
    root = tmp_path_factory.mktemp("plots")
    plots = yaml.safe_load(open("dvc.yaml"))["plots"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    shutil.copytree("plots", root / "plots")
    (root / "reports").mkdir()
    cols = ("pipeline_seed", "sampler", "recognizer", "k", "seed", "gmacs", "map", "top1", "salient_recall")
    (root / "reports/curves.csv").write_text(",".join(cols) + "\n" + "".join(
        ",".join(str(r[c]) for c in cols) + "\n" for r in _rows()))
    subprocess.run([*dvc_command(), "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def test_dvc_plots_have_the_same_grouping_and_human_titles(plots_project):
    import vl_convert as vlc

    from components.reporting.dvc_plots import dvc_plot_specs

    specs = dvc_plot_specs(plots_project)
    assert len(specs) == 4
    for pid, spec in specs.items():
        svg = vlc.vegalite_to_svg(spec)
        assert "GMACs per video" in svg or "frames selected (K)" in svg
        assert ">gmacs<" not in svg and ">map<" not in svg and ">salient_recall<" not in svg
        if "ablations" in pid:
            for name in ("TSQNet: full model vs its variants", "NSNet: full model vs its variants",
                         "Training-free baselines", "tsqnet_vqm_only", "nsnet_fem_mlp", "VQM branch only",
                         "VideoConf-L", "mAP (%)"):
                assert name in svg, name
        else:
            for name in ("TSQNet", "NSNet", "Uniform", "MaxConf-L", "Oracle (true salient frames)",
                         "Dense (all T frames)"):
                assert f">{name}<" in svg, (pid, name)
            for name in ("tsqnet_vqm_only", "nsnet_fem_mlp", "branch", "VideoConf-L", "Random"):
                assert name not in svg, (pid, name)


def test_salient_plots_html_is_offline(plots_project, tmp_path):
    from components.reporting.dvc_plots import render_dvc_plots

    out = render_dvc_plots(tmp_path / "html", fmt="html", cwd=plots_project)
    assert len(out) == 4
    for f in out:
        html = f.read_text()
        assert "cdn.jsdelivr" not in html and "<script src=\"http" not in html and len(html) > 100_000


# ------------------------------------------------------------------------------ issue 26
def test_curves_mark_k_on_their_points():
    """The main figure writes K beside each line's points at K = 1, 3 (the K in the data of MARK_KS), at the
    point's own coordinates, in the series' colour."""
    from components.reporting.figures import MARK_KS

    rows = _rows()
    ax = draw_curves(rows, ABLATIONS).axes[0]
    by_label = _series(ax)
    marks = [(t.get_text(), t.xy, t.get_color()) for t in ax.texts]
    tsqnet = by_label["TSQNet"]
    want = {(str(k), (x, y)) for k, x, y in zip((1, 2, 3), tsqnet.get_xdata(), tsqnet.get_ydata()) if k in MARK_KS}
    assert want <= {(text, tuple(xy)) for text, xy, colour in marks if colour == tsqnet.get_color()}
    assert {text for text, _, _ in marks} == {"1", "3"}  # K=2 is not marked; K=5, 8 are not in the data


def test_one_colour_per_series_in_every_figure_and_no_repeated_pair():
    """The same name has the same colour in the main figure, the ablation panels and the frontier; inside
    the ablations figure no (colour, marker) pair is used by two series (the palette wraps at 9)."""
    from components.reporting.figures import COLOURS, colours, figure_styles

    rows = _rows()
    main, variants = draw_curves(rows, ABLATIONS), draw_variants(rows, ABLATIONS)
    seen: dict[str, str] = {}
    for fig in (main, variants):
        for ax in fig.axes:
            for text, ln in _series(ax).items():
                if "recognizer" in text:
                    continue
                name = text.replace(" (reference)", "")
                assert seen.setdefault(name, ln.get_color()) == ln.get_color(), name
    assert seen["TSQNet"] == COLOURS["tsqnet"] and seen["Random"] == COLOURS["random"]
    pairs = [(ln.get_color(), ln.get_marker()) for ax in variants.axes for t, ln in _series(ax).items()
             if t != "Uniform (reference)" and t != "Uniform"]
    assert len(pairs) == len(set(pairs))
    many = [f"tsqnet_x{i}" for i in range(12)]  # more ablations than palette colours
    styles = figure_styles(many, {n: "tsqnet" for n in many})
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 12
    assert colours(["b_x", "a_x"]) == colours(["a_x", "b_x"])  # by name, not by order of appearance


def test_pareto_legend_names_every_front(tmp_path):
    """Each sampler's own front is drawn and named, also one that has no point on the joint front."""
    from components.tuning.pareto import draw_pareto, write_pareto

    rows = [{"number": i, "sampler": s, "k": k, "map": m, "gmacs": g}
            for i, (s, k, m, g) in enumerate([("nsnet", 1, 0.5, 1.0), ("nsnet", 3, 0.7, 2.0), ("tsqnet", 1, 0.4, 1.1),
                                              ("tsqnet", 3, 0.6, 2.1), ("tsqnet", 5, 0.3, 3.0)])]
    write_pareto(rows, [0, 1], tmp_path / "p.csv", tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    legend = [t.get_text() for t in draw_pareto(rows, [0, 1]).axes[0].get_legend().get_texts()]
    assert legend == ["all trials", "front of NSNet (2 points)", "front of TSQNet (2 points)",
                      "front of all samplers (NSNet 2)"]


def test_html_plots_use_the_figures_palette():
    """salient plots: the colour scale of the main template is the PNGs' colours of the series it draws, the
    ablations' one legend covers every sampler but uniform (drawn grey), named as the PNG legends name them."""
    import json

    from components.reporting.figures import COLOURS, colours, label
    from components.reporting.dvc_plots import apply_palette, vegalite_schema
    from tests.conftest import ROOT

    values = [{k: (str(v) if k != "k" else v) for k, v in r.items()} | {"rev": "workspace"} for r in _rows()]
    main = apply_palette({**json.loads((ROOT / "plots/curves.json").read_text()), "data": {"values": values}})
    scale = main["encoding"]["color"]["scale"]
    drawn = ["tsqnet", "nsnet", "uniform", "maxconf_l", "oracle", "dense"]
    assert scale == {"domain": [label(n) for n in drawn], "range": [COLOURS[n] for n in drawn]}
    abl = apply_palette({**json.loads((ROOT / "plots/ablations.json").read_text()), "data": {"values": values}})
    scale = abl["spec"]["encoding"]["color"]["scale"]
    names = [n for n in dict.fromkeys(r["sampler"] for r in values) if n != "uniform"]
    assert scale["domain"] == [label(n) for n in names] and scale["range"] == [colours(names)[n] for n in names]
    assert "color" not in abl["resolve"]["scale"] and "TSQNet: VQM branch only" in json.dumps(abl["transform"])
    assert vegalite_schema(abl, "6.4")["$schema"].endswith("/vega-lite/v6.json")
