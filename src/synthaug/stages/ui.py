"""`python -m synthaug ui`: MLflow's server on this repo's store, and a link that opens on the pipeline's runs.

MLflow 3 opens an experiment on its GenAI overview ("Traces 0") unless the browser remembers the "Model
training" toggle; the experiment page reads that choice from a `workflowType` query parameter first, so the
printed link carries `workflowType=machine_learning` and lands on the runs table.

The runs table shows no metric columns until a user picks them among hundreds, so `ui` also saves a few views
(filter, sort and columns) the way MLflow's own "Share" button does, as an experiment tag
`mlflow.sharedViewState.<key>` holding the view's JSON, and prints a link to each (`viewStateShareKey=<key>`).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path

import typer

from synthaug.core.config import ConfigError, load_params
from synthaug.stages.common import PARAMS_OPTION, StageError, stage_command
from synthaug.core.storage import StorageError
from synthaug.core.tracking import TrackingError, experiment_name, redact, repo_root, store_errors, tracking_uri

LOCALHOST = "127.0.0.1"


SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's prefix; the UI looks the key up among experiment tags


def _columns(*metrics: str) -> list[str]:
    return [f"metrics.`{m}`" for m in metrics]  # the runs table's canonical column keys


# Saved views of the runs table: what each shows, then its MLflow view state.
VIEWS: dict[str, tuple[str, dict]] = {
    "synthaug-fid": ("FID and KID per source (the fid stages), best first",
                     {"searchFilter": "attributes.run_name LIKE 'fid@%'", "orderByKey": "metrics.`fid`",
                      "orderByAsc": True, "selectedColumns": _columns("fid", "kid", "num_images")}),
    "synthaug-classifiers": ("every classifier's test accuracy, arm and seed, best first",
                             {"searchFilter": "attributes.run_name LIKE 'classify_% %'",
                              "orderByKey": "metrics.`test_accuracy`", "orderByAsc": False,
                              "selectedColumns": _columns("test_accuracy") + ["params.`arm`", "params.`fraction`",
                                                                              "params.`seed`"]}),
}


def runs_link(base_url: str, experiment_id: str, view: str | None = None) -> str:
    """The experiment's runs table in the model-training view of the MLflow UI at base_url (in a saved view)."""
    link = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"{link}&viewStateShareKey={view}" if view else link


def save_views(uri: str, exp_id: str) -> None:
    """Write (or refresh) the saved views as experiment tags, as MLflow's "Share" button would."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    with store_errors(uri, "write"):
        for key, (_, state) in VIEWS.items():
            client.set_experiment_tag(exp_id, SHARED_VIEW_TAG + key, json.dumps(state, sort_keys=True))


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


def check_port_free(host: str, port: int) -> None:
    """A StageError (exit 1, one line) when the server could not bind host:port, e.g. another server holds it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as e:
            why = "taken by another process" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise StageError(f"port {port} on {host}: {why}; choose another with --port") from None


def server_command(uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


@stage_command
def ui(params: str = PARAMS_OPTION,
       host: str = typer.Option(LOCALHOST, help="address to bind; anything but 127.0.0.1 exposes the runs to "
                                "the network"),
       port: int = typer.Option(5000, help="port of the MLflow server (1-65535)"),
       print_only: bool = typer.Option(False, "--print-only", help="print the link and the server command, "
                                       "start nothing")) -> None:
    """Start MLflow's server on this repo's store (or MLFLOW_TRACKING_URI) and print a link to the runs."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is a number from 1 to 65535")
    uri = tracking_uri()
    exp_id = experiment_id(uri, load_params(params).dataset.name)
    try:
        save_views(uri, exp_id)
        views = VIEWS
    except TrackingError as e:  # a read-only store (or team server) still gets its runs link
        typer.echo(f"saved views not written, so not linked: {e}", err=True)
        views = {}
    remote = uri.startswith(("http://", "https://"))  # a team server is already serving: nothing to start
    if not remote:
        check_port_free(host, port)  # before any link: a link to a taken port would open another server
    base = redact(uri) if remote else f"http://{host}:{port}"
    if not remote:
        typer.echo(f"MLflow on {redact(uri)} (repo {repo_root()}); open:")
    typer.echo(runs_link(base, exp_id))
    for key, (what, _) in views.items():
        typer.echo(f"  {what}: {runs_link(base, exp_id, key)}")
    if remote:
        return
    command = server_command(uri, host, port)
    if print_only:
        typer.echo(" ".join(command))
        return
    sys.stdout.flush()
    os.execv(command[0], command)  # the server takes this process over: Ctrl-C stops it as usual
