"""`python -m synthaug ui`: MLflow's server on this repo's store, and a link that opens on the pipeline's runs.

MLflow 3 opens an experiment on its GenAI overview ("Traces 0") unless the browser remembers the "Model
training" toggle; the experiment page reads that choice from a `workflowType` query parameter first, so the
printed link carries `workflowType=machine_learning` and lands on the runs table.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from synthaug.config import load_params
from synthaug.stages.common import PARAMS_OPTION, stage_command
from synthaug.storage import StorageError
from synthaug.tracking import experiment_name, redact, repo_root, store_errors, tracking_uri

LOCALHOST = "127.0.0.1"


def runs_link(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training view of the MLflow UI at base_url."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def experiment_id(uri: str, dataset: str) -> str:
    """The id of the dataset's experiment in the store, which must exist already (else bad input: exit 2)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise StorageError(f"{uri.removeprefix('sqlite:///')}: no MLflow store yet (run the pipeline first: "
                           "dvc repro)")
    from mlflow.tracking import MlflowClient

    name = experiment_name(dataset)
    with store_errors(uri, "read"):
        exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    if exp is None:
        raise StorageError(f"{redact(uri)}: no experiment {name} (no stage has run on dataset {dataset} yet: "
                           "dvc repro)")
    return exp.experiment_id


def server_command(uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


@stage_command
def ui(params: str = PARAMS_OPTION,
       host: str = typer.Option(LOCALHOST, help="address to bind; anything but 127.0.0.1 exposes the runs to "
                                "the network"),
       port: int = typer.Option(5000, min=1, max=65535, help="port of the MLflow server"),
       print_only: bool = typer.Option(False, "--print-only", help="print the link and the server command, "
                                       "start nothing")) -> None:
    """Start MLflow's server on this repo's store (or MLFLOW_TRACKING_URI) and print a link to the runs."""
    uri = tracking_uri()
    exp_id = experiment_id(uri, load_params(params).dataset.name)
    if uri.startswith(("http://", "https://")):  # a team server is already serving: nothing to start
        typer.echo(runs_link(redact(uri), exp_id))
        return
    command = server_command(uri, host, port)
    typer.echo(f"MLflow on {redact(uri)} (repo {repo_root()}); open:\n{runs_link(f'http://{host}:{port}', exp_id)}")
    if print_only:
        typer.echo(" ".join(command))
        return
    sys.stdout.flush()
    os.execv(command[0], command)  # the server takes this process over: Ctrl-C stops it as usual
