"""What a user browses, checked in headless Chromium (issues 13, 26): MLflow's compare view of two variant
runs of an evaluation, the experiment opening on its training runs, the saved view of the variant runs
(mAP@3 and GMACs@3 per variant), the Prefect UI's page of a pipeline flow run (a task per stage, the
results artifact's table), and ``salient plots``' offline HTML.

``SALIENT_SCREENSHOTS=docs/screenshots`` saves the README's screenshots of the variant view and the flow
run where the tests look at them (else they stay in the test's temporary directory).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing) and the
``selenium`` package (requirements.txt). Without the browser the tests *fail*, saying how to install
it: CI installs it, so a skip would only hide a broken setup. Selenium is handed both binaries, so its
driver manager never downloads anything; the browser runs with background networking off, and for the
offline page with every host unresolvable and a dead proxy.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.tracking import mlflow_tracking as tracking, variant_runs
from components.ops.processes import dvc_command, free_port, start_group, stop_group, wait_healthy
from tests.conftest import ROOT, copy_tiny_project, stop_local_prefect

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


#: where the README's screenshots go (relative to where pytest started: tests may chdir), None: nowhere
SCREENSHOTS = Path(os.environ["SALIENT_SCREENSHOTS"]).absolute() if os.environ.get("SALIENT_SCREENSHOTS") else None


def _shot(browser, tmp_path: Path, name: str, height: int | None = None) -> Path:
    """A screenshot into the test's directory, and into ``$SALIENT_SCREENSHOTS`` when set (the README's, in
    256 colours);
    ``height``: of the window first, to leave out the empty page below what it shows."""
    if height:
        browser.set_window_size(browser.get_window_size()["width"], height)
        time.sleep(0.5)
    shot = tmp_path / name
    browser.save_screenshot(str(shot))
    if SCREENSHOTS is not None:  # in 256 colours: a third of the bytes, the same to the eye
        from PIL import Image

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(256).save(SCREENSHOTS / name, optimize=True)
    return shot


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
    from components.tracking.variant_runs import log_evaluation

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


# ------------------------------------------------------------------------------ MLflow: the variant view
#: the runs table of MLflow's experiment page (AG Grid: pinned and scrolled columns of a row are separate
#: elements with the same row-index), as [{column id: text}] in row order
GRID_JS = """
const rows = {};
for (const r of document.querySelectorAll('.ag-row[row-index]')) {
  const row = rows[+r.getAttribute('row-index')] ??= {};
  for (const c of r.querySelectorAll('.ag-cell[col-id]')) row[c.getAttribute('col-id')] = c.innerText.trim();
}
return Object.keys(rows).map(Number).sort((a, b) => a - b).map(i => rows[i]);
"""
GROUP = re.compile(r"Group: variant: (\S+), salient\.experiment: (\S+)\s+(\d+)$")


def _value(cell: str) -> float:
    """A metric cell's number: ``43`` or a group's ``43.5 (average)``."""
    return float(cell.split()[0])


def test_mlflow_variant_view_lists_variant_runs_with_map_and_gmacs_at_k3(mlflow_ui, tmp_path, tiny_params):
    """The link ``salient ui`` prints and the experiment's description names (the saved view the evaluate
    stage writes, :func:`components.tracking.variant_runs.save_variant_view`) opens the runs table on the variant runs:
    one row per variant (and DVC experiment), best mAP@3 first, its mean mAP@3 and GMACs@3 over seeds in view;
    opening a row lists its run with the same numbers. No stage run is listed."""
    base, port, exp_id, ids = mlflow_ui
    c = tracking.client()
    runs = sorted((c.get_run(i) for i in ids), key=lambda r: -r.data.metrics["map_k03"])
    name, map_k, gmacs_k = variant_runs.RUN_NAME_COLUMN, "metrics.`map_k03`", "metrics.`gmacs_k03`"
    with chromium(tmp_path / "profile") as browser:
        browser.get(variant_runs.view_url(tiny_params, port, exp_id))
        _wait_text(browser, "Group: variant: uniform")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert variant_runs.view_name(tiny_params) in body  # the Views menu names the saved view
        assert "the comparable runs are the variant runs" in body  # the experiment's description
        rows = browser.execute_script(GRID_JS)
        groups = [GROUP.search(row[name]) for row in rows]
        assert all(groups), [row.get(name) for row in rows]  # groups only: no stage run, nothing ungrouped
        assert [(g[1], g[2], g[3]) for g in groups] == [(r.data.params["variant"], "workspace", "1") for r in runs]
        for row, run in zip(rows, runs):  # one run per variant here: its mean is its value
            assert _value(row[map_k]) == pytest.approx(run.data.metrics["map_k03"])
            assert _value(row[gmacs_k]) == pytest.approx(run.data.metrics["gmacs_k03"])
        assert [row[map_k] for row in rows] == ["43 (average)", "33 (average)"]
        assert [row[gmacs_k] for row in rows] == ["1.5 (average)", "0.75 (average)"]

        # open the best variant's row: its run, with the same mAP@3 and GMACs@3
        expander = '.ag-row[row-index="0"] .ag-cell[col-id^="attributes"] [role="button"]'  # the group's chevron
        browser.find_element(By.CSS_SELECTOR, expander).click()
        WebDriverWait(browser, 30).until(lambda b: len(b.execute_script(GRID_JS)) == 3)
        opened = browser.execute_script(GRID_JS)[1]
        assert runs[0].info.run_name in opened[name] and opened["params.`recognizer`"] == "frame"
        assert (opened[map_k], opened[gmacs_k]) == ("43", "1.5")
        for close in browser.find_elements(By.CSS_SELECTOR, '[data-component-id="mlflow.assistant.chat_panel.close"]'):
            close.click()  # the assistant panel a fresh browser opens once: out of the screenshot's way
        time.sleep(0.5)
        _shot(browser, tmp_path, "mlflow_variant_view.png", height=620)


# ------------------------------------------------------------------------------ Prefect: a flow run's page
#: the names of the task runs listed under the flow run page's Task Runs tab, and their state badges
TASKS_JS = """
return [...document.querySelectorAll('#task-runs-content .state-list-item')].map(item => [
    item.querySelector('.state-list-item__name')?.innerText.trim(),
    item.querySelector('.state-badge')?.innerText.trim()]);
"""
#: the rendered markdown tables of an artifact page: [[cell texts of a row]] per table, header row first
TABLES_JS = """
return [...document.querySelectorAll('.artifact-data-markdown table')].map(t =>
    [...t.querySelectorAll('tr')].map(tr => [...tr.children].map(c => c.innerText.trim())));
"""


def _markdown_rows(lines: list[str]) -> list[list[str]]:
    """The cells of a markdown table's lines, its separator line left out."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if not set(line) <= set("|-: ")]


@pytest.mark.slow
def test_prefect_flow_run_page_shows_a_task_per_stage_and_the_results_table(tmp_path, monkeypatch):
    """The pipeline flow (flows/pipeline.py) up to ``summary`` on the tiny project against a real Prefect
    server with its UI (flows.serve.LocalPrefect), MLflow on: the flow run's page lists one completed task
    run per stage, and its ``pipeline-results`` artifact page renders the headline table of the run's
    ``reports/summary.json`` (mAP and GMACs at K=3 per sampler). The evaluate stage left the MLflow view of
    the variant runs on the experiment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import ARTIFACT_KEY, headline_table, pipeline
    from flows.serve import LocalPrefect

    t_start = time.time()
    project = copy_tiny_project(tmp_path / "proj")
    monkeypatch.setenv("SALIENT_TRACKING", "1")
    monkeypatch.setenv(tracking.ENV_URI, f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SALIENT_RETRY_DELAY_SECONDS", "0")
    monkeypatch.delenv(tracking.ENV_PARENT, raising=False)
    stack = LocalPrefect(project, port=free_port(), home=tmp_path / "prefect_home", log_dir=tmp_path / "logs", ui=True)
    started: set[int] = set()
    timings: dict[str, float] = {}
    try:
        stack.start_server()
        started |= stack.pids()
        t0 = time.time()
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            result = pipeline(["summary"], project_dir=str(project))
            with get_client(sync_client=True) as client:
                (flow_run,) = [r for r in client.read_flow_runs() if r.name == result["run_name"]]
                tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        timings["flow"] = time.time() - t0
        assert result["error"] is None and flow_run.state.is_completed(), result
        stages = result["stages"]
        assert "evaluate@0" in stages and stages[-1] == "summary"
        assert sorted(t.name for t in tasks) == sorted(stages)
        summary = json.loads((project / "reports" / "summary.json").read_text())
        table = _markdown_rows(headline_table(summary))
        assert table[0] == ["sampler", "mAP K=3 [95% CI]", "GMACs K=3"] and len(table) > 3, table

        # the evaluate stage's variant runs, and the saved view that finds them
        exp_id = tracking.client().get_run(result["mlflow_run_id"]).info.experiment_id
        view = tracking.saved_view(exp_id, variant_runs.VIEW_ID)
        found = tracking.client().search_runs([exp_id], view["state"]["searchFilter"])
        assert {r.data.params["variant"] for r in found} >= {row[0] for row in table[1:]}

        with chromium(tmp_path / "profile") as browser:
            browser.get(f"{stack.ui_url}/runs/flow-run/{flow_run.id}")
            _wait_text(browser, f"{len(stages)} Task runs")
            browser.find_element(By.ID, "task-runs").click()
            WebDriverWait(browser, 60).until(lambda b: len(b.execute_script(TASKS_JS)) == len(stages))
            listed = browser.execute_script(TASKS_JS)
            assert sorted(n for n, _ in listed) == sorted(stages) and {s for _, s in listed} == {"Completed"}
            _shot(browser, tmp_path, "prefect_flow_run.png")

            browser.find_element(By.ID, "artifacts").click()
            _wait_text(browser, ARTIFACT_KEY)
            browser.find_element(By.XPATH, f"//*[normalize-space(text())='{ARTIFACT_KEY}']").click()
            _wait_text(browser, "GMACs K=3")
            tables = browser.execute_script(TABLES_JS)
            assert table in tables, tables  # the results table as the artifact holds it, rendered
            assert f"pipeline {result['run_name']}: COMPLETED" in browser.find_element(By.TAG_NAME, "body").text
            _shot(browser, tmp_path, "prefect_results_artifact.png")
    finally:
        left, alive = stop_local_prefect(stack, started, timings, t_start)
    assert left == [] and alive == []


# ------------------------------------------------------------------------------ offline plots
@pytest.fixture(scope="module")
def plots_html(tmp_path_factory) -> list[Path]:
    """``salient plots``' HTML of the project's plot definitions (dvc.yaml ``plots``, plots/ templates)
    over the recorded reports/curves.csv, in a DVC project of its own."""
    from components.reporting.dvc_plots import render_dvc_plots

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
