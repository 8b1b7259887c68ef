"""`python -m synthaug ui`: a link into the runs table, and MLflow's server on the repo's store at 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SMOKE
from ui_server import ui_server


@pytest.fixture()
def store(tmp_path, monkeypatch) -> Path:
    """A repo root (tmp_path) whose mlflow.db holds one finished run in the smoke dataset's experiment."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from synthaug.core.tracking import stage_run

    with stage_run("sample_vae@0", "digits", params={"seed": 0}) as run:
        run.log_metrics({"fid": 12.5})
    return tmp_path


def _ui(args: list[str]):
    from synthaug.cli import app

    return CliRunner().invoke(app, ["ui", "--params", str(SMOKE), *args])


def test_link_opens_the_runs_table_in_the_model_training_view(store):
    result = _ui(["--print-only", "--port", "5123"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    link, command = lines[1], lines[-1]
    assert link == "http://127.0.0.1:5123/#/experiments/1/runs?workflowType=machine_learning"
    assert f"--backend-store-uri sqlite:///{store / 'mlflow.db'} --host 127.0.0.1 --port 5123" in command
    assert lines[2] == (f"  FID and KID per source (the fid stages), best first: {link}"
                        "&viewStateShareKey=synthaug-fid")


def test_saved_views_are_experiment_tags_the_ui_reads_as_view_state(store):
    """MLflow's UI loads `viewStateShareKey=K` from the experiment tag mlflow.sharedViewState.K (JSON of the
    search facets and columns); `ui` writes one per view, and re-running it rewrites them rather than adding."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.tracking import tracking_uri
    from synthaug.stages.ui import SHARED_VIEW_TAG, VIEWS

    for _ in range(2):
        assert _ui(["--print-only"]).exit_code == 0
    tags = MlflowClient(tracking_uri=tracking_uri()).get_experiment("1").tags
    views = {k.removeprefix(SHARED_VIEW_TAG): json.loads(v) for k, v in tags.items() if k.startswith(SHARED_VIEW_TAG)}
    assert set(views) == set(VIEWS)
    fid = views["synthaug-fid"]
    assert fid["searchFilter"] == "attributes.run_name LIKE 'fid@%'" and fid["orderByKey"] == "metrics.`fid`"
    assert fid["selectedColumns"][:2] == ["metrics.`fid`", "metrics.`kid`"]


def test_saved_views_select_the_runs_the_stages_name(tmp_path, monkeypatch):
    """Each saved view's filter picks its runs by the names the stages log, and no other run: the fid items'
    (`fid@vae-0`), and every classifier's (the child runs `classify_mixed@vae-0 f0.5_s0` of the classify items,
    which hold the test accuracy; not the items' own parent runs)."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.layout import Chain
    from synthaug.core.tracking import stage_run, tracking_uri
    from synthaug.stages.ui import VIEWS

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    chain = Chain(0)
    others = [chain.train_item("vae"), chain.train_item("dinv"), chain.sample_item("vae"), chain.fidelity_item,
              "prepare", "fid_ref", "report"]
    fids = [chain.fid_item(s) for s in ("vae", "dinv")]
    classifiers = []
    for arm in ("real", "real+vae", "synth:vae", "real+all"):
        with stage_run(chain.classify_item(arm), "digits") as parent:
            for run in ("f0.5_s0", "f1.0_s1") if arm != "synth:vae" else ("s0",):
                with stage_run(f"{chain.classify_item(arm)} {run}", "digits", parent=parent):
                    classifiers.append(f"{chain.classify_item(arm)} {run}")
    for name in others + fids:
        with stage_run(name, "digits"):
            pass
    client = MlflowClient(tracking_uri=tracking_uri())
    exp_id = client.get_experiment_by_name("synthaug-digits").experiment_id

    def shown(view: str) -> set[str]:
        runs = client.search_runs([exp_id], filter_string=VIEWS[view][1]["searchFilter"], max_results=100)
        return {r.info.run_name for r in runs}

    assert shown("synthaug-fid") == set(fids)
    assert shown("synthaug-classifiers") == set(classifiers)


def test_no_store_yet_is_one_line_saying_run_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = _ui(["--print-only"])
    assert result.exit_code == 2
    assert "no MLflow store yet" in result.output and "dvc repro" in result.output
    assert not (tmp_path / "mlflow.db").exists()  # looking must not create an empty store


def _get(url: str, data: dict | None = None) -> bytes:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def test_server_serves_the_repo_store_on_localhost(store):
    with ui_server(store) as (first, link, base):
        assert "open:" in first
        assert link.startswith(f"{base}/#/experiments/") and base.startswith("http://127.0.0.1:")
        assert b"<html" in _get(base + "/").lower()  # the UI's page that the link opens
        exp_id = link.split("/experiments/")[1].split("/")[0]
        runs = json.loads(_get(f"{base}/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]}))["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["sample_vae@0"]
        assert {"key": "fid", "value": 12.5} in [{k: m[k] for k in ("key", "value")} for m in runs[0]["data"]["metrics"]]


def test_a_read_only_store_still_gets_its_runs_link_without_the_views(store):
    """Saving the views writes to the store; where it cannot (a read-only mlflow.db, opened read-only the way the
    fault catalogue does it), `ui` says so and still prints the runs link."""
    import os
    import subprocess
    import sys

    from conftest import REPO
    from fault_workspaces import READ_ONLY_STORE

    code = READ_ONLY_STORE + "\nfrom synthaug.cli import main\nmain()\n"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", code, "ui", "--params", str(SMOKE), "--print-only"], cwd=store,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "saved views not written, so not linked" in result.stderr and "readonly" in result.stderr
    assert result.stdout.splitlines()[1].endswith("workflowType=machine_learning")
    assert "viewStateShareKey" not in result.stdout


def test_a_taken_port_is_one_line_and_exit_1_before_any_link(store):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _ui(["--print-only", "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: StageError: port {port} on 127.0.0.1: taken by another process; " \
                                    "choose another with --port"


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_one_line_and_exit_2(store, port):
    result = _ui(["--print-only", "--port", port])
    assert result.exit_code == 2 and result.output.strip() == f"error: --port {port}: a port is a number from 1 to 65535"
