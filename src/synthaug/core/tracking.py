"""MLflow tracking: one experiment per dataset, one run per stage item, tags linking the run to DVC and git.

The store is `MLFLOW_TRACKING_URI` when set (a team server), else `sqlite:///<repo root>/mlflow.db` with
artifacts in `<repo root>/mlruns`. The repo root comes from `DVC_ROOT` when DVC runs the stage, so queued
experiments (which run in a temporary copy) log to the same store as `dvc repro`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from synthaug.core import distributed
from synthaug.core.storage import pid_alive

log = logging.getLogger("synthaug")

# MLflow 3 opens experiments in the GenAI view unless they say they are for model training.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
# The sample grid's artifact name in every sample_<source> run (and invert's): MLflow's compare view pairs runs' files by
# name and looks only at the root of each run's artifacts (MLflow 3.17: folders are skipped), so it stays at the root.
GRID_ARTIFACT = "grid.png"
# The same for the loss curves of every train_<family> run and of invert: the generators' training compares side by side.
LOSS_ARTIFACT = "loss_curves.png"


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written."""


CORRUPT = ("database disk image is malformed", "file is not a database")  # what sqlite says of a damaged file


def store_error(e: Exception, uri: str, doing: str) -> TrackingError:
    """One line for any failure of the store (MLflow wraps SQLAlchemy wraps sqlite3: the driver's own words are
    the useful part), naming it; a corrupt sqlite file is named with how to recover."""
    text = str(e)
    driver = re.search(r"\((?:sqlite3|psycopg2?|pymysql|MySQLdb)[\w.]*\.(\w+)\) ([^\n\[]+)", text)
    detail = (f"{driver.group(1)}: {driver.group(2)}" if driver
              else f"{type(e).__name__}: {(text.strip().splitlines() or [''])[0]}")[:200].strip()
    if uri.startswith("sqlite:///") and any(c in text for c in CORRUPT):
        db = uri.removeprefix("sqlite:///")
        name = Path(db).name
        return TrackingError(f"{db}: corrupt MLflow store ({detail}); move it aside (mv {name} {name}.corrupt) and "
                             f"run again to start a new store (`sqlite3 {name}.corrupt .recover` may salvage its runs)")
    return TrackingError(f"cannot {doing} MLflow store {redact(uri)}: {detail.replace(uri, redact(uri))}")


@contextlib.contextmanager
def store_errors(uri: str, doing: str = "write to") -> Iterator[None]:
    """Turn any failure of the MLflow store inside the block into one TrackingError line."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as e:  # MlflowException, SQLAlchemy errors, OSError of a file store...
        raise store_error(e, uri, doing) from None


def repo_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    except (subprocess.CalledProcessError, FileNotFoundError):
        return Path.cwd()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def experiment_name(dataset: str) -> str:
    """MLflow experiment of a dataset's runs: one per dataset."""
    return f"synthaug-{dataset}"


def redact(uri: str) -> str:
    """A tracking URI fit for messages and logs: credentials in it (`http://user:secret@host`) become `***`."""
    return re.sub(r"^([A-Za-z][\w+.-]*://)[^/@]*@", r"\1***@", uri)


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True)
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def code_state(root: Path) -> dict:
    """{"commit": HEAD or None, "dirty": whether the code and pipeline files differ from it}: what a report says
    it was made from."""
    commit = git_commit(root)
    if commit is None:
        return {"commit": None, "dirty": False}
    out = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src", "dvc.yaml", "params.yaml"],
                         capture_output=True, text=True)
    return {"commit": commit[:12], "dirty": bool(out.stdout.strip())}


def _check_reachable(uri: str) -> None:
    """Fail fast with one line when a remote tracking server does not answer (MLflow retries for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)  # credentials in the URI are for MLflow, not for this probe
    probe = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    try:
        urllib.request.urlopen(probe.rstrip("/") + "/health", timeout=5)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"MLFLOW_TRACKING_URI={redact(uri)} is unreachable ({reason})") from None


def _metric_entities(metrics: dict[str, float], step: int | None = None) -> list:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    return [Metric(metric_key(k), float(v), ts, step or 0) for k, v in metrics.items()]


class Tracker:
    """A live MLflow run. Metrics are buffered and sent in batches (each sqlite call costs ~20 ms). A failure of
    the store is a TrackingError naming it."""

    def __init__(self, client, run_id: str, uri: str | None = None, group_id: str | None = None):
        self.client, self.run_id, self.uri = client, run_id, uri or tracking_uri()
        self.group_id = group_id  # the run grouping this `dvc exp run`'s stage runs, if any
        self._pending: list = []

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        with store_errors(self.uri):
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._pending += _metric_entities(metrics, step)
        if len(self._pending) >= 500:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        with store_errors(self.uri):
            for i in range(0, len(pending), 1000):
                self.client.log_batch(self.run_id, metrics=pending[i:i + 1000])

    def log_group_metrics(self, metrics: dict[str, float]) -> None:
        """Also put these metrics on the experiment's group run, so its row in MLflow's runs table (one per
        `dvc exp run`) carries the figures experiments are compared by. Nothing without a group."""
        if self.group_id is None:
            return
        with store_errors(self.uri):
            self.client.log_batch(self.group_id, metrics=_metric_entities(metrics))

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        with store_errors(self.uri):
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        with store_errors(self.uri):
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifact_as(self, path: str | os.PathLike, name: str) -> None:
        """Log a file under a fixed artifact name (e.g. GRID_ARTIFACT), the same in every run of a stage, so
        MLflow's compare view shows the runs' files side by side (it pairs root-level artifacts by name)."""
        folder, _, base = name.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / base
            shutil.copyfile(path, target)
            self.log_artifact(target, folder or None)

    def finish(self, status: str) -> None:
        with store_errors(self.uri):
            try:
                self.flush()
            finally:
                self.client.set_terminated(self.run_id, status=status)


class NullTracker:
    """What a data-parallel stage's other ranks log to: nothing (rank 0's run is the stage's one MLflow run)."""

    run_id = group_id = None

    def __getattr__(self, name: str):
        if name.startswith(("log_", "set_")) or name in ("flush", "finish"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


GROUP_TAG = "synthaug.dvc_exp"
PID_TAG, HOST_TAG = "synthaug.pid", "synthaug.host"  # which process runs a stage run: a dead one's run is KILLED


def close_dead_runs(client, exp_id: str) -> list[str]:
    """Mark KILLED the experiment's runs still RUNNING whose process, on this machine, is gone (kill -9 lets no
    process say so itself): without this the UI shows dead runs as live. Runs of other machines are left alone."""
    host = socket.gethostname().replace("'", "")
    stale = []
    for run in client.search_runs([exp_id], filter_string=f"attributes.status = 'RUNNING' and "
                                  f"tags.`{HOST_TAG}` = '{host}'", max_results=1000):
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            stale.append(run.info.run_id)
    if stale:
        log.info("marked %d MLflow runs of killed stage processes KILLED", len(stale))
    return stale


def experiment_group(client, exp_id: str, exp_name: str, commit: str | None) -> str:
    """The run that groups the stage runs of one `dvc exp run` (MLflow shows them nested under it, one row per
    experiment): found by its tag, created by the experiment's first stage. Stages of one experiment run one
    after the other, so two of them never race to create it."""
    safe = re.sub(r"[^\w.-]", "_", exp_name)  # DVC's names are words and dashes; keep the filter well-formed
    found = client.search_runs([exp_id], filter_string=f"tags.`{GROUP_TAG}` = '{safe}'", max_results=1)
    if found:
        return found[0].info.run_id
    tags = {GROUP_TAG: safe, "dvc.exp_name": exp_name}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(exp_id, tags=tags, run_name=f"dvc exp {exp_name}")
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, dataset: str, params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None, parent: Tracker | None = None) -> Iterator[Tracker]:
    """Open the MLflow run for one stage item (e.g. `train_vae@0`) in the dataset's experiment; with `parent`,
    as a child of that run (one classify stage item trains many classifiers, each its own child run). Inside a
    `dvc exp run` (DVC_EXP_NAME set), a stage run is a child of that experiment's group run."""
    if not distributed.from_env().is_main:  # under torchrun: one run per stage item, rank 0's
        yield NullTracker()
        return
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # logs, with a trace, what we report
    from mlflow.tracking import MlflowClient

    root = repo_root()
    uri = tracking_uri()
    _check_reachable(uri)
    name = experiment_name(dataset)
    with store_errors(uri, "use"):  # any backend failure: one line, naming the store
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(
            name, artifact_location=None if "MLFLOW_TRACKING_URI" in os.environ else (root / "mlruns").as_uri(),
            tags=dict([EXPERIMENT_KIND_TAG]))
    if parent is None:
        with store_errors(uri):
            close_dead_runs(client, exp_id)
    run_tags = {
        "mlflow.runName": stage,
        "synthaug.stage": stage,
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dataset": dataset,
    }
    commit = git_commit(root)
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
    if parent is not None:  # a classifier's run inside its classify stage run
        group_id = parent.group_id
        run_tags["mlflow.parentRunId"] = parent.run_id
    elif os.environ.get("DVC_EXP_NAME"):
        with store_errors(uri):
            group_id = experiment_group(client, exp_id, os.environ["DVC_EXP_NAME"], commit)
        run_tags["mlflow.parentRunId"] = group_id
    else:
        group_id = None
    run_tags.update(tags or {})
    with store_errors(uri):
        run = client.create_run(exp_id, tags=run_tags, run_name=stage)
    tracker = Tracker(client, run.info.run_id, uri, group_id=group_id)
    try:
        if params:
            tracker.log_params(params)
        yield tracker
    except BaseException as e:
        try:  # record the failure if the store lets us; the stage's own error is the one to report
            tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        except TrackingError as e:
            log.warning("could not mark the MLflow run FAILED: %s", e)
        raise
    tracker.finish("FINISHED")


def metric_key(name: str) -> str:
    """MLflow allows only alphanumerics, _ - . space : / in metric names: `real+vae` becomes `real_plus_vae`."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("+", "_plus_"))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
