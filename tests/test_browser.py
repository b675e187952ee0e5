"""What a user browses, checked in headless Chromium (issue 13): MLflow's compare view of two variant
runs of an evaluation, the experiment opening on its training runs, and ``salient plots``' offline HTML.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing) and the
``selenium`` package (requirements.txt). Without the browser the tests *fail*, saying how to install
it: CI installs it, so a skip would only hide a broken setup. Selenium is handed both binaries, so its
driver manager never downloads anything; the browser runs with background networking off, and for the
offline page with every host unresolvable and a dead proxy.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components import tracking
from components.processes import dvc_command, free_port, start_group, stop_group, wait_healthy
from tests.conftest import ROOT

pytest.importorskip("selenium", reason="selenium is in requirements.txt: run `make install`")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1600,1100"]
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]


def _binaries() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chrome and driver):
        pytest.fail("headless Chromium is needed: run .ci/run (it installs it), or as root "
                    "`apt-get update && apt-get install -y chromium chromium-driver`", pytrace=False)
    return chrome, driver


@contextlib.contextmanager
def chromium(profile: Path, *extra: str) -> Iterator[webdriver.Chrome]:
    """A headless Chromium on a fresh profile, console messages kept for ``get_log("browser")``."""
    chrome, driver = _binaries()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in (*HEADLESS, f"--user-data-dir={profile}", *extra):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


def _wait_text(browser, text: str, timeout: float = 60) -> None:
    try:
        WebDriverWait(browser, timeout).until(lambda b: text in b.find_element(By.TAG_NAME, "body").text)
    except TimeoutException:
        shot = Path(browser.capabilities.get("chrome", {}).get("userDataDir", "/tmp")) / "timeout.png"
        browser.save_screenshot(str(shot))
        pytest.fail(f"{text!r} not on {browser.current_url} after {timeout} s (screenshot {shot}):\n"
                    f"{browser.find_element(By.TAG_NAME, 'body').text[:2000]}")


# ------------------------------------------------------------------------------ MLflow compare view
CELLS_JS = """
const section = [...document.querySelectorAll('.du-bois-light-collapse-item')]
    .find(s => s.querySelector('.du-bois-light-collapse-header')?.innerText.trim() === arguments[0]);
if (!section) return null;
const table = section.querySelector('table');
if (table) return [...table.querySelectorAll('tr')].map(tr => [...tr.children].map(c => c.innerText.trim()));
const grids = [...section.querySelectorAll('.ReactVirtualized__Grid')];
if (arguments[1] !== null) grids.forEach(g => { g.scrollTop = arguments[1]; g.dispatchEvent(new Event('scroll')); });
return grids.map(g => ({height: g.scrollHeight, cells: [...g.querySelectorAll('[style*="top"]')]
    .filter(c => c.parentElement.classList.contains('ReactVirtualized__Grid__innerScrollContainer'))
    .map(c => [parseFloat(c.style.top), parseFloat(c.style.left), c.innerText.trim()])}));
"""


def compare_table(browser, section: str) -> dict[str, list[str]]:
    """``{key: [value of run 1, value of run 2]}`` of a section (Parameters / Metrics) of the compare
    page, in the page's run order. Parameters are an HTML table; Metrics two virtualised grids (keys;
    one column per run) drawing only the rows in view, so both are scrolled through and the cells
    paired by their row offset."""
    found = browser.execute_script(CELLS_JS, section, None)
    if found and isinstance(found[0], list):  # a table: [key, value of run 1, value of run 2] per row
        return {row[0].rstrip(":"): row[1:] for row in found if row}
    keys: dict[float, str] = {}
    values: dict[float, dict[float, str]] = {}
    pos, end = 0.0, 1.0
    while pos < end:
        grids = browser.execute_script(CELLS_JS, section, pos)
        assert grids and len(grids) >= 2, f"no {section} table on the page"
        time.sleep(0.3)  # react-virtualized renders the rows of the new offset on the next frame
        grids = browser.execute_script(CELLS_JS, section, None)
        keys.update({top: text for top, _, text in grids[0]["cells"]})
        for top, left, text in grids[1]["cells"]:
            values.setdefault(top, {})[left] = text
        end = max(g["height"] for g in grids)
        pos += 200
    return {keys[top]: [v for _, v in sorted(values.get(top, {}).items())] for top in keys}


def _log_evaluation(p) -> tuple[str, list[str]]:
    """An ``evaluate`` stage run with two child variant runs (uniform, tsqnet) as the evaluate stage
    logs them: params sampler / variant / recognizer / seed, curves ``vs_k/map`` / ``vs_k/gmacs`` at step = K
    and ``map_k03`` / ``gmacs_k03`` summaries. Returns the experiment id and the two run ids."""
    from components.variant_runs import log_evaluation

    rows = [{"sampler": v, "recognizer": "frame", "k": k, "seed": 0, "map": base + k, "top1": 50.0,
             "salient_recall": 0.5, "distractor_share": 0.1, "gmacs": cost * k}
            for v, base, cost in (("uniform", 30.0, 0.25), ("tsqnet", 40.0, 0.5)) for k in (1, 2, 3)]
    with tracking.stage_run("evaluate", tracking=p) as ev:
        ids = log_evaluation(p, rows, trainable={"tsqnet": True, "uniform": False}, fusion={}, pipeline_seed=0)
    return ev.experiment_id, ids


@pytest.fixture
def mlflow_ui(tmp_path, monkeypatch, tiny_params):
    """The real MLflow UI (``tracking.ui_command`` + ``server_env``) on a free loopback port over a temp
    SQLite store holding :func:`_log_evaluation`'s runs: (base URL, experiment id, run ids)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv(tracking.ENV_URI, f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv(tracking.ENV_PARENT, raising=False)
    exp_id, ids = _log_evaluation(tiny_params)
    assert len(ids) == 2, ids
    port = free_port()
    proc = start_group(tracking.ui_command(tiny_params, port), name="mlflow ui", env=tracking.server_env(),
                       log_path=tmp_path / "ui.log")
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc=proc, timeout=120)
        yield f"http://127.0.0.1:{port}", port, exp_id, ids
    finally:
        assert stop_group(proc, signals=(15,), grace=10) == []


def test_mlflow_compare_view_shows_map_and_gmacs_of_both_variant_runs(mlflow_ui, tmp_path):
    base, port, exp_id, ids = mlflow_ui
    c = tracking.client()
    runs = [c.get_run(i) for i in ids]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp_id])})
    with chromium(tmp_path / "profile") as browser:
        browser.get(f"{base}/#/compare-runs?{query}")
        _wait_text(browser, "Comparing 2 Runs")
        WebDriverWait(browser, 30).until(lambda b: (b.execute_script(CELLS_JS, "Metrics", None) or [{}])[0].get("cells"))
        order = compare_table(browser, "Run details")["Run ID"]  # the page's column order
        params = compare_table(browser, "Parameters")
        metrics = compare_table(browser, "Metrics")
        browser.execute_script(CELLS_JS, "Metrics", 0)  # back to the first rows, the table in view
        browser.execute_script("[...document.querySelectorAll('.du-bois-light-collapse-header')]"
                               ".find(h => h.innerText.trim() === 'Metrics').scrollIntoView()")
        time.sleep(0.5)
        browser.save_screenshot(str(tmp_path / "compare.png"))  # a look while developing, kept in tmp
    runs = [next(r for r in runs if r.info.run_id == i) for i in order]
    for key in ("sampler", "variant", "recognizer", "seed"):
        assert params.get(key) == [r.data.params[key] for r in runs], (key, params.get(key))
    for key in ("vs_k/map", "vs_k/gmacs", "map_k03", "gmacs_k03"):
        shown = [float(v) for v in metrics.get(key, [])]
        assert shown == pytest.approx([r.data.metrics[key] for r in runs], rel=1e-4), (key, metrics.get(key))
    assert {r.data.params["sampler"] for r in runs} == {"uniform", "tsqnet"}
    assert sorted(metrics["map_k03"]) == ["33", "43"]  # the value at K = 3 of each (the curves' last step too)
    assert sorted(metrics["vs_k/map"]) == ["33", "43"] and sorted(metrics["gmacs_k03"]) == ["0.75", "1.5"]
    assert next(iter(metrics)) == "gmacs_k03"  # the first metric the page lists: a K=3 value


def test_mlflow_experiment_link_opens_on_training_runs(mlflow_ui, tmp_path):
    """MLflow 3.17's UI opens an experiment in its GenAI view (traces) unless the URL says
    ``workflowType=machine_learning`` (its experiment-kind tag is not read): the link ``salient ui``
    prints must land on the runs table."""
    base, port, exp_id, ids = mlflow_ui
    exp = tracking.client().get_experiment(exp_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # older 3.x UIs read this
    with chromium(tmp_path / "profile") as browser:
        browser.get(tracking.ui_url(port, exp_id))
        _wait_text(browser, "evaluate")  # the parent run, in the runs table
        WebDriverWait(browser, 30).until(lambda b: "/runs" in b.current_url)
        browser.save_screenshot(str(tmp_path / "experiment.png"))
        assert "workflowType=machine_learning" in browser.current_url
        assert "Usage" not in browser.find_element(By.TAG_NAME, "body").text  # GenAI's overview tabs


# ------------------------------------------------------------------------------ offline plots
@pytest.fixture(scope="module")
def plots_html(tmp_path_factory) -> list[Path]:
    """``salient plots``' HTML of the project's plot definitions (dvc.yaml ``plots``, plots/ templates)
    over the recorded reports/curves.csv, in a DVC project of its own."""
    from components.plots import render_dvc_plots

    proj = tmp_path_factory.mktemp("plots")
    shutil.copytree(ROOT / "plots", proj / "plots")
    (proj / "reports").mkdir()
    shutil.copy(ROOT / "reports" / "curves.csv", proj / "reports" / "curves.csv")
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    import subprocess

    subprocess.run([*dvc_command(), "init", "-q", "--no-scm"], cwd=proj, check=True)
    pages = render_dvc_plots(proj / "out", cwd=proj)
    assert len(pages) == len(plots)
    return pages


MARKS_JS = """
const svg = document.querySelector('#vega-chart svg');
if (!svg) return null;
const count = sel => svg.querySelectorAll(sel).length;
return {lines: count('.mark-line path'), symbols: count('.mark-symbol path'), axes: count('.role-axis'),
        legends: count('.role-legend'), width: svg.getBoundingClientRect().width,
        title: svg.querySelector('.role-title-text')?.textContent ?? ''};
"""


def test_offline_plots_render_without_network(plots_html, tmp_path):
    with chromium(tmp_path / "profile", *OFFLINE) as browser:
        for page in plots_html:
            browser.get(page.as_uri())
            WebDriverWait(browser, 30).until(lambda b: b.execute_script(MARKS_JS))
            marks = browser.execute_script(MARKS_JS)
            browser.save_screenshot(str(tmp_path / f"{page.stem}.png"))
            assert marks["lines"] > 0 and marks["symbols"] > 0, (page.name, marks)
            assert marks["axes"] >= 2 and marks["width"] > 200 and marks["title"], (page.name, marks)
            logged = browser.get_log("browser")
            errors = [e for e in logged if e["level"] == "SEVERE"]
            assert not errors, (page.name, errors)  # a failed load (CDN, font) or a Vega error
            # and no warning either (issue 26): a Vega-Lite major-version mismatch, an "Infinite extent"
            warnings = [e["message"] for e in logged if e["level"] == "WARNING"]
            assert not warnings, (page.name, warnings)
