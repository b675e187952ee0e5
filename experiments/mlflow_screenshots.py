"""Screenshots of MLflow's compare view over a demo workspace's variant runs (issue 13): uniform,
MaxConf-L, oracle, TSQNet and NSNet (frame recognizer, lowest seed) side by side, the metrics table
scrolled to map_k*, and the scatter plot of gmacs_k03 against map_k03.

Run after `make demo`, with the project's venv (selenium, Debian's chromium: `make browser`):
    python experiments/mlflow_screenshots.py <demo workspace> [out dir, default docs/screenshots]
"""
import json, os, sys, tempfile, time, urllib.parse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = Path(sys.argv[1]).resolve()
out = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else ROOT / "docs" / "screenshots"
os.chdir(WORKSPACE)
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{WORKSPACE}/mlflow.db"
from components.tracking import mlflow_tracking as tracking
from components.core.params import load_params
from components.ops.processes import free_port, start_group, stop_group, wait_healthy
from tests.test_browser import chromium, _wait_text
from selenium.webdriver.common.by import By

out.mkdir(parents=True, exist_ok=True)
p = load_params("params.yaml")
c = tracking.client(p)
exp = c.get_experiment_by_name(tracking.experiment_name(p))
runs = c.search_runs([exp.experiment_id], "tags.`salient.kind` = 'variant' and params.recognizer = 'frame'", max_results=500)
from collections import Counter
print(Counter(r.data.params["kind"] for r in runs), Counter(r.data.params["variant"] for r in runs))
want = ["uniform", "maxconf_l", "oracle", "tsqnet", "nsnet"]
pick = []
for v in want:
    rs = sorted([r for r in runs if r.data.params["variant"] == v], key=lambda r: int(r.data.params["seed"]))
    pick += rs[:1]
ids = [r.info.run_id for r in pick]
port = free_port()
proc = start_group(tracking.ui_command(p, port), name="mlflow ui", env=tracking.server_env(), log_path=out.parent / "mlflow_ui.log")
SCROLL = """
const section = [...document.querySelectorAll('.du-bois-light-collapse-item')]
    .find(s => s.querySelector('.du-bois-light-collapse-header')?.innerText.trim() === 'Metrics');
const grids = [...section.querySelectorAll('.ReactVirtualized__Grid')];
grids.forEach(g => { g.scrollTop = arguments[0]; g.dispatchEvent(new Event('scroll')); });
section.scrollIntoView();
return grids.map(g => g.scrollTop);
"""
try:
    wait_healthy(f"http://127.0.0.1:{port}/health", proc=proc, timeout=120)
    q = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp.experiment_id])})
    with tempfile.TemporaryDirectory() as prof, chromium(Path(prof)) as b:
        b.set_window_size(1500, 1100)
        b.get(f"http://127.0.0.1:{port}/#/compare-runs?{q}")
        _wait_text(b, f"Comparing {len(ids)} Runs")
        time.sleep(3)
        try:  # close the assistant panel
            b.find_element(By.CSS_SELECTOR, "[aria-label='Close']").click()
        except Exception as e:
            print("no close", e)
        for i, top in enumerate((240,)):
            for _ in range(3):
                print(top, b.execute_script(SCROLL, top))
                time.sleep(1.0)
            b.save_screenshot(str(out / "mlflow_compare_metrics.png"))
        # scatter plot: gmacs_k03 vs map_k03
        b.execute_script("window.scrollTo(0,0)")
        b.find_element(By.XPATH, "//*[text()='Scatter Plot']").click()
        time.sleep(2)
        for sid, key in (("x-axis-selector", "gmacs_k03"), ("y-axis-selector", "map_k03")):
            b.find_element(By.ID, sid).click()
            time.sleep(1)
            opts = b.find_elements(By.CSS_SELECTOR, "[role='option']")
            print(sid, len(opts), [o.text for o in opts][:5])
            target = [o for o in opts if o.text.strip() == key]
            if target:
                b.execute_script("arguments[0].scrollIntoView()", target[0])
                target[0].click()
            time.sleep(1)
        time.sleep(2)
        b.save_screenshot(str(out / "mlflow_compare_scatter.png"))
finally:
    stop_group(proc, signals=(15,), grace=10)
