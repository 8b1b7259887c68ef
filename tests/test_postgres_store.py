"""A team MLflow server (issue 16): `mlflow server` on a PostgreSQL backend store and an artifact folder, bound to
127.0.0.1; a smoke stage logs to it through MLFLOW_TRACKING_URI, and its run is read back through the REST API
(and, to show where it went, from PostgreSQL itself).

PostgreSQL comes from Debian (`./scripts/setup.sh --tests` installs it; psycopg is pinned in requirements.txt);
the test runs a throw-away cluster in a temporary folder on a free port and removes it afterwards. Without
PostgreSQL the test is skipped, saying so. As root (CI containers), the cluster runs as Debian's `postgres` user,
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO, SMOKE
from ui_server import free_port, wait_until_healthy


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []  # a PATH symlink into the server's folder
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((p for p in candidates if all((p / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb"))),
                None)


def _cluster_user() -> str | None:
    """None: run PostgreSQL as this user; else the user to run it as (root may not run it)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        return "nobody"


PG_BIN = _pg_bin()
try:
    import psycopg  # noqa: F401  (SQLAlchemy 2.1, under MLflow's store, reads postgresql:// with psycopg 3)
    PSYCOPG = True
except ImportError:
    PSYCOPG = False
pytestmark = pytest.mark.skipif(not (PG_BIN and PSYCOPG),
                                reason="PostgreSQL (Debian's postgresql) or psycopg is not installed "
                                       "(./scripts/setup.sh --tests)")


def _as_cluster_user(cmd: list[str]) -> list[str]:
    user = _cluster_user()
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A fresh cluster on 127.0.0.1 with a database `mlflow` owned by role `mlflow` (trust auth, local only);
    yields its SQLAlchemy URI and stops and removes it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="synthaug-pg-"))
    data, port = root / "data", free_port()
    user = _cluster_user()
    if user:
        shutil.chown(root, user)
    try:
        subprocess.run(_as_cluster_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust",
                                         "-E", "UTF8", "--no-sync"]), check=True, capture_output=True, timeout=120)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        subprocess.run(_as_cluster_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                         str(root / "log"), "-w", "start"]), check=True, capture_output=True,
                       timeout=120)
        try:
            subprocess.run(_as_cluster_user([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                             "mlflow", "mlflow"]), check=True, capture_output=True, timeout=60)
            yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
        finally:
            subprocess.run(_as_cluster_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                           capture_output=True, timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, timeout: float = 180) -> Iterator[str]:
    """`mlflow server` on backend (creating its tables) serving artifacts from a folder, at 127.0.0.1."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = artifacts.parent / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                                 "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, timeout, lambda: log.read_text()[-3000:])
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _api(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_a_stage_logs_to_a_postgresql_backed_server_and_reads_back(tmp_path):
    ws, artifacts = tmp_path / "ws", tmp_path / "artifacts"
    ws.mkdir()
    artifacts.mkdir()
    with postgres_cluster() as backend, mlflow_server(backend, artifacts) as base:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        env.update(DVC_ROOT=str(ws), SYNTHAUG_THREADS="1", PYTHONPATH=str(REPO / "src"),
                   MLFLOW_TRACKING_URI=base)
        done = subprocess.run([sys.executable, "-m", "synthaug", "prepare", "--params", str(SMOKE)], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert not (ws / "mlflow.db").exists()  # nothing went to a local store

        name = urllib.parse.quote("synthaug-digits")
        exp = _api(base, f"experiments/get-by-name?experiment_name={name}")["experiment"]
        (run,) = _api(base, "runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
        assert run["info"]["run_name"] == "prepare" and run["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        meta = json.loads((ws / "data" / "real" / "meta.json").read_text())
        assert metrics["train_images"] == meta["counts"]["train"] > 0
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["dataset.name"] == "digits"

        import psycopg

        with psycopg.connect(backend) as conn, conn.cursor() as cur:
            cur.execute("SELECT name, status FROM runs")
            assert cur.fetchall() == [("prepare", "FINISHED")]  # the run lives in PostgreSQL
