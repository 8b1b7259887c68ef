"""`python -m synthaug ui` as the tests run it: on a free localhost port, until its server answers /health."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from conftest import REPO, SMOKE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(base: str, proc: subprocess.Popen, timeout: float, output) -> None:
    """Poll an MLflow server's /health until it says OK (it takes seconds to start); fail with output() if the
    process dies or the timeout passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.read().strip() == b"OK":
                    return
        except OSError:
            pass
        assert proc.poll() is None, output()
        assert time.monotonic() < deadline, f"the MLflow server did not answer within {timeout} s:\n{output()}"
        time.sleep(0.5)


@contextlib.contextmanager
def ui_server(root: Path, timeout: float = 120, params: Path = SMOKE) -> Iterator[tuple[str, str, str]]:
    """Serve root/mlflow.db (DVC_ROOT=root) with `python -m synthaug ui --params params`; yields (first line it
    printed, the link, the server's base URL) once /health answers; stops the server (its whole process group)
    afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(DVC_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "synthaug", "ui", "--params", str(params), "--port", str(port)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        first, link = proc.stdout.readline(), proc.stdout.readline().strip()
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, proc, timeout, lambda: first + link + proc.stdout.read())
        yield first, link, base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
