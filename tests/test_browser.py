"""A real headless browser on `python -m synthaug ui`: the printed link shows the pipeline's runs, and the compare
view of the sample stages shows their grids side by side (issue 17).

Chromium and its driver come from Debian (`./scripts/setup.sh --tests` installs them); without them the tests are
skipped, saying so. Screenshots go to $SYNTHAUG_TEST_ARTIFACTS (default: test-artifacts/ in the repo).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from ui_server import ui_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="Chromium and chromedriver are not installed (./scripts/setup.sh --tests)")
SOURCES = ("vae", "gan", "ddim")
SHOTS = Path(os.environ.get("SYNTHAUG_TEST_ARTIFACTS", REPO / "test-artifacts"))


def _grid(path: Path, shade: int) -> Path:
    """A small distinct PNG per source (the grids' content is not under test, their display is)."""
    from PIL import Image

    img = np.zeros((60, 90, 3), np.uint8)
    img[:, : 30 * (1 + shade)] = (40 + 70 * shade, 120, 200)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An MLflow store holding a `sample@S` run per source (FID metric, grid as GRID_ARTIFACT), served by
    `python -m synthaug ui` on a free localhost port. Yields (base URL, printed link, {source: run id})."""
    root = tmp_path_factory.mktemp("ui-store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(DVC_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    script = (
        "import sys, json\n"
        "from synthaug.tracking import GRID_ARTIFACT, stage_run\n"
        "ids = {}\n"
        "for i, s in enumerate(sys.argv[2:]):\n"
        "    with stage_run(f'sample@{s}', 'digits', params={'source': s}) as run:\n"
        "        run.log_metrics({'fid': 10.0 + i})\n"
        "        run.log_artifact_as(f'{sys.argv[1]}/{s}.png', GRID_ARTIFACT)\n"
        "        ids[s] = run.run_id\n"
        "print(json.dumps(ids))\n")
    for i, s in enumerate(SOURCES):
        _grid(root / f"{s}.png", i)
    ids = json.loads(subprocess.run([sys.executable, "-c", script, str(root), *SOURCES], cwd=root, env=env,
                                    capture_output=True, text=True, check=True).stdout)
    with ui_server(root) as (_, link, base):
        yield base, link, ids


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _wait_for(driver, condition, what: str, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition(d))
    except Exception:
        _shot(driver, f"failed-{what}")
        raise AssertionError(f"{what}: not seen within {timeout} s; page text:\n{_text(driver)[:3000]}") from None


def _text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''")


def _shot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_link_lands_on_the_runs_table_with_every_run(server, browser):
    base, link, ids = server
    browser.get(link)
    # the runs table of the model-training view: its "Run Name" column, a row per run, the count under it
    _wait_for(browser, lambda d: all(f"sample@{s}" in _text(d) for s in SOURCES), "runs table with every run")
    text = _text(browser)
    assert "Run Name" in text and f"{len(SOURCES)} matching runs" in text, text[:2000]
    assert "No data available" not in text  # what MLflow's GenAI overview shows for this experiment
    assert _shot(browser, "runs-table").stat().st_size > 0


def test_compare_view_shows_every_sample_grid_side_by_side(server, browser):
    base, link, ids = server
    exp_id = link.split("/experiments/")[1].split("/")[0]
    runs = json.dumps(list(ids.values())).replace(" ", "")
    browser.get(f"{base}/#/compare-runs?runs={runs}&experiments={json.dumps([exp_id])}")
    _wait_for(browser, lambda d: "grid.png" in _text(d), "the common artifact grid.png")
    from selenium.webdriver.common.by import By

    for entry in browser.find_elements(By.XPATH, "//*[normalize-space(text())='grid.png']"):
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click()", entry)
        # selecting the file makes the compare view show it for every run, side by side

    def loaded_grids(d):
        d.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        imgs = d.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0 &&"
            " (i.src.includes('grid.png') || i.src.startsWith('blob:'))).map(i => i.src)")
        return imgs if len(imgs) >= len(SOURCES) else False

    try:
        _wait_for(browser, loaded_grids, "a loaded grid image per run", timeout=60)
    finally:
        print("images on the page:", browser.execute_script(
            "return Array.from(document.images).map(i => [i.src.slice(0, 120), i.complete, i.naturalWidth])"))
    assert _shot(browser, "compare-grids").stat().st_size > 0
