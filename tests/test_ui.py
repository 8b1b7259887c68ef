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
    from synthaug.tracking import stage_run

    with stage_run("sample@vae", "digits", params={"seed": 0}) as run:
        run.log_metrics({"fid": 12.5})
    return tmp_path


def _ui(args: list[str]):
    from synthaug.cli import app

    return CliRunner().invoke(app, ["ui", "--params", str(SMOKE), *args])


def test_link_opens_the_runs_table_in_the_model_training_view(store):
    result = _ui(["--print-only", "--port", "5123"])
    assert result.exit_code == 0, result.output
    link, command = result.output.strip().splitlines()[-2:]
    assert link == "http://127.0.0.1:5123/#/experiments/1/runs?workflowType=machine_learning"
    assert f"--backend-store-uri sqlite:///{store / 'mlflow.db'} --host 127.0.0.1 --port 5123" in command


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
        assert [r["info"]["run_name"] for r in runs] == ["sample@vae"]
        assert {"key": "fid", "value": 12.5} in [{k: m[k] for k in ("key", "value")} for m in runs[0]["data"]["metrics"]]
