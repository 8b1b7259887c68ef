"""README's MLflow screenshots, made from this repo's own store the way tests/test_browser.py checks the UI:
`python -m synthaug ui` on a free localhost port, headless Chromium from Debian (`./scripts/setup.sh --tests`).

    python scripts/readme_screenshots.py [--sources vae,wgan_gp,ddpm,ddim] [--out docs/img] [--root .]
                                         [--params params.yaml]

writes OUT/mlflow-fid-view.png (the saved view "FID and KID per source": the fid stages' runs with their FID and
KID columns, best first) and OUT/mlflow-compare-grids.png (MLflow's compare view of the latest `sample_S@0` run of
each source, their grid.png side by side; four fit the width without scrolling). Run it after `dvc repro` has filled mlflow.db.
The store is ROOT/mlflow.db (default: this repo's), the experiment that of the --params file's dataset.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the browser and server helpers the browser test uses

from browser import chromium, compare_artifact, page_text, screenshot, wait_for  # noqa: E402
from ui_server import ui_server  # noqa: E402


def latest_sample_runs(sources: list[str], dataset: str = "fashion_mnist", study: int = 0) -> dict[str, str]:
    """Run id of the latest finished `sample_S@K` run per source (study seed K's chain), in the repo's store."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.layout import Chain
    from synthaug.core.tracking import experiment_name, tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    exp = client.get_experiment_by_name(experiment_name(dataset))
    ids = {}
    for s in sources:
        item = Chain(study).sample_item(s)
        runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{item}' and "
                                  "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                                  max_results=1)
        if not runs:
            raise SystemExit(f"no finished {item} run in {tracking_uri()}: run `dvc repro {item}` first")
        ids[s] = runs[0].info.run_id
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default="vae,wgan_gp,ddpm,ddim")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--root", type=Path, default=REPO, help="the folder whose mlflow.db is shown")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml", help="its dataset names the experiment")
    args = ap.parse_args()
    from synthaug.core.config import load_params
    from synthaug.stages.ui import runs_link

    root = args.root.resolve()
    os.environ["DVC_ROOT"] = str(root)  # the store the server shows (ui_server sets the same for it)
    ids = latest_sample_runs(args.sources.split(","), load_params(args.params).dataset.name)
    with ui_server(root, params=args.params.resolve()) as (_, link, base), chromium(2000, 1000) as driver:
        exp_id = link.split("/experiments/")[1].split("/")[0]
        driver.get(runs_link(base, exp_id, "synthaug-fid"))
        wait_for(driver, lambda d: "fid@" in page_text(d) and "matching runs" in page_text(d), "the fid runs")
        print(screenshot(driver, args.out / "mlflow-fid-view.png"))
        compare_artifact(driver, base, exp_id, list(ids.values()), "grid.png")
        time.sleep(3)  # loaded is not yet painted
        print(screenshot(driver, args.out / "mlflow-compare-grids.png"))


if __name__ == "__main__":
    main()
