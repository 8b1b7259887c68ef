"""A real headless browser on `python -m synthaug ui`: the printed link shows the pipeline's runs, and the compare
view of the sample stages shows their grids side by side (issue 17).

Chromium and its driver come from Debian (`./scripts/setup.sh --tests` installs them); without them the tests are
skipped, saying so. Screenshots go to $SYNTHAUG_TEST_ARTIFACTS (default: test-artifacts/ in the repo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from browser import CHROMIUM, DRIVER, chromium, compare_artifact, page_text, screenshot, wait_for
from conftest import REPO
from ui_server import ui_server

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
def store(tmp_path_factory):
    """An MLflow store (ROOT/mlflow.db, experiment of configs/smoke.yaml's dataset) holding a `sample_S@0` run per
    source (grid as GRID_ARTIFACT), a `fid@S-0` run (FID, KID) and a `train_F@0` run per family (loss curves as
    LOSS_ARTIFACT), named as study seed 0's chain names them. Returns (ROOT, {source: sample run id},
    {family: train run id})."""
    root = tmp_path_factory.mktemp("ui-store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(DVC_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    script = (
        "import sys, json\n"
        "from synthaug.core.tracking import GRID_ARTIFACT, LOSS_ARTIFACT, stage_run\n"
        "ids, trained = {}, {}\n"
        "for f in sys.argv[2:]:\n"
        "    with stage_run(f'train_{f}@0', 'digits', params={'family': f}) as run:\n"
        "        run.log_artifact_as(f'{sys.argv[1]}/{f}.png', LOSS_ARTIFACT)\n"
        "        trained[f] = run.run_id\n"
        "for i, s in enumerate(sys.argv[2:]):\n"
        "    with stage_run(f'sample_{s}@0', 'digits', params={'source': s}) as run:\n"
        "        run.log_artifact_as(f'{sys.argv[1]}/{s}.png', GRID_ARTIFACT)\n"
        "        ids[s] = run.run_id\n"
        "    with stage_run(f'fid@{s}-0', 'digits', params={'source': s}) as run:\n"
        "        run.log_metrics({'fid': 30.25 - 10 * i, 'kid': 0.5 - 0.125 * i})\n"
        "print(json.dumps([ids, trained]))\n")
    for i, s in enumerate(SOURCES):
        _grid(root / f"{s}.png", i)
    ids, trained = json.loads(subprocess.run([sys.executable, "-c", script, str(root), *SOURCES], cwd=root,
                                             env=env, capture_output=True, text=True, check=True).stdout)
    return root, ids, trained


@pytest.fixture(scope="module")
def server(store):
    """The store served by `python -m synthaug ui` on a free localhost port. Yields (base URL, printed link,
    {source: sample run id}, {family: train run id})."""
    root, ids, trained = store
    with ui_server(root) as (_, link, base):
        yield base, link, ids, trained


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def test_link_lands_on_the_runs_table_with_every_run(server, browser):
    base, link, ids, trained = server
    browser.get(link)
    # the runs table of the model-training view: its "Run Name" column, a row per run, the count under it
    wait_for(browser, lambda d: all(f"sample_{s}@0" in page_text(d) for s in SOURCES), "runs table with every run",
             failed_shot=SHOTS / "failed-runs-table.png")
    text = page_text(browser)
    assert "Run Name" in text and f"{3 * len(SOURCES)} matching runs" in text, text[:2000]
    assert "No data available" not in text  # what MLflow's GenAI overview shows for this experiment
    assert screenshot(browser, SHOTS / "runs-table.png").stat().st_size > 0


def test_saved_fid_view_shows_the_fid_runs_with_their_fid_column_best_first(server, browser):
    from synthaug.stages.ui import runs_link

    base, link, ids, trained = server
    exp_id = link.split("/experiments/")[1].split("/")[0]
    browser.get(runs_link(base, exp_id, "synthaug-fid"))
    wait_for(browser, lambda d: all(f"fid@{s}-0" in page_text(d) for s in SOURCES), "the fid runs",
             failed_shot=SHOTS / "failed-fid-view.png")
    text = page_text(browser)
    # the view's filter: the fid runs alone
    assert f"{len(SOURCES)} matching runs" in text, text[:2000]
    assert not any(f"sample_{s}@" in text or f"train_{s}@" in text for s in SOURCES), text[:2000]
    assert "10.25" in text and "0.25" in text  # its FID and KID columns (ddim's values)
    rows = [next(i for i, line in enumerate(text.splitlines()) if f"fid@{s}-0" in line) for s in SOURCES]
    assert rows == sorted(rows, reverse=True), text[:2000]  # ordered by FID, lowest (ddim) first
    assert screenshot(browser, SHOTS / "fid-view.png").stat().st_size > 0


def test_compare_view_shows_every_sample_grid_side_by_side(server, browser):
    base, link, ids, trained = server
    exp_id = link.split("/experiments/")[1].split("/")[0]
    try:
        compare_artifact(browser, base, exp_id, list(ids.values()), "grid.png",
                         failed_shot=SHOTS / "failed-compare.png")
    finally:
        print("images on the page:", browser.execute_script(
            "return Array.from(document.images).map(i => [i.src.slice(0, 120), i.complete, i.naturalWidth])"))
    assert screenshot(browser, SHOTS / "compare-grids.png").stat().st_size > 0


def test_compare_view_shows_every_training_runs_loss_curves_side_by_side(server, browser):
    base, link, ids, trained = server
    exp_id = link.split("/experiments/")[1].split("/")[0]
    compare_artifact(browser, base, exp_id, list(trained.values()), "loss_curves.png",
                     failed_shot=SHOTS / "failed-compare-curves.png")
    assert screenshot(browser, SHOTS / "compare-loss-curves.png").stat().st_size > 0


def test_readme_screenshots_script_takes_both_shots_of_a_store(store, tmp_path):
    """scripts/readme_screenshots.py as docs/tracking.md runs it, on the test store instead of the repo's: it serves
    the store itself (its own `python -m synthaug ui`) and prints the paths of the two PNGs it wrote."""
    from PIL import Image

    from conftest import SMOKE

    root, ids, trained = store
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PYTHONPATH=str(REPO / "src"), SYNTHAUG_THREADS="1")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_screenshots.py"), "--root", str(root),
                          "--params", str(SMOKE), "--sources", ",".join(SOURCES), "--out", str(tmp_path / "img")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    shots = [tmp_path / "img" / "mlflow-fid-view.png", tmp_path / "img" / "mlflow-compare-grids.png"]
    assert out.stdout.split() == [str(p) for p in shots]
    for p in shots:
        with Image.open(p) as img:
            assert img.width == 2000 and len(img.getcolors(1 << 24)) > 10, p  # the window's width, not blank
