"""Threads of a CPU stage: SYNTHAUG_THREADS validated, else a share of the cores among the stages running at once
(`dvc exp run --jobs N`), counted from the pid files of live stages."""

from __future__ import annotations

import os
import subprocess
import time
import sys
from pathlib import Path

import pytest

from synthaug.core import runtime
from synthaug.core.runtime import RuntimeConfigError, running_stages, stage_threads, threads_from_env

from conftest import REPO, SMOKE


@pytest.mark.parametrize("value,want", [("1", 1), ("3", 3), (" 8 ", 8)])
def test_synthaug_threads_accepts_1_to_4x_cores(value, want):
    assert threads_from_env(value, cores=2) == want


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "1.5", "9", "1000"])
def test_synthaug_threads_refuses_non_integers_zero_negative_and_far_too_many(value):
    with pytest.raises(RuntimeConfigError, match=rf"SYNTHAUG_THREADS must be a whole number from 1 to 8 .*got {value!r}"):
        threads_from_env(value, cores=2)


def test_running_stages_counts_live_pids_and_drops_dead_ones(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (tmp_path / str(sleeper.pid)).touch()
        (tmp_path / str(dead.pid)).touch()
        (tmp_path / "notes.txt").touch()  # not a pid file: ignored
        assert running_stages(tmp_path) == 2  # the sleeper and this process
        assert (tmp_path / str(os.getpid())).exists()
        assert not (tmp_path / str(dead.pid)).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert running_stages(tmp_path) == 1


def test_stage_threads_is_the_share_of_the_cores_unless_synthaug_threads_says(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    monkeypatch.setattr(runtime, "running_stages", lambda: 3)
    monkeypatch.delenv("SYNTHAUG_THREADS", raising=False)
    assert stage_threads() == 1  # 4 cores // 3 stages
    monkeypatch.setattr(runtime, "running_stages", lambda: 2)
    assert stage_threads() == 2
    monkeypatch.setattr(runtime, "running_stages", lambda: 9)
    assert stage_threads() == 1  # never 0
    monkeypatch.setenv("SYNTHAUG_THREADS", "3")
    assert stage_threads() == 3


def test_bad_synthaug_threads_is_one_error_line_from_a_stage(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(tmp_path), SYNTHAUG_THREADS="abc", PYTHONPATH=str(REPO / "src"))
    (tmp_path / "params.yaml").write_text(SMOKE.read_text())
    p = subprocess.run([sys.executable, "-m", "synthaug", "prepare"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr[-2000:]
    assert lines[-1].startswith("error: SYNTHAUG_THREADS must be a whole number"), lines[-1]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "data").exists()


def test_running_stages_skips_stopped_stages_and_pids_reused_by_other_processes(tmp_path):
    """Only stages that use the cores now count: a stopped one (Ctrl-Z) does not, and a pid file whose process
    started at another time than recorded (its pid reused since) is dropped; a running one counts."""
    import signal

    from synthaug.core.runtime import proc_stat

    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    paused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        paused.send_signal(signal.SIGSTOP)
        for _ in range(100):  # until the kernel shows it stopped
            if proc_stat(paused.pid)[0] in ("T", "t"):
                break
            time.sleep(0.01)
        for p in (runner, paused):
            (tmp_path / str(p.pid)).write_text(proc_stat(p.pid)[1])
        reused = tmp_path / str(os.getppid())  # a live process, but not the one that registered: other start time
        reused.write_text("1")
        assert running_stages(tmp_path) == 2  # the runner and this process
        assert not reused.exists() and (tmp_path / str(paused.pid)).exists()  # paused: kept, not counted
        paused.send_signal(signal.SIGCONT)
        assert running_stages(tmp_path) == 3
    finally:
        for p in (runner, paused):
            p.kill()
            p.wait()


def test_the_runtime_line_says_what_a_stage_computes_in(caplog, tmp_path):
    """fid's Inception runs in fid.precision (fp32 by default) even where the stage's runtime is bf16: its log line
    says fp32; stages that compute no network (prepare, analyse, report) print no runtime line."""
    import logging

    import torch

    from conftest import SMOKE
    from synthaug.core.runtime import Runtime
    from synthaug.stages.common import load_stage
    from synthaug.stages.fid import fid_runtime

    with caplog.at_level(logging.INFO, logger="synthaug"):
        assert not fid_runtime(Runtime(torch.device("cpu"), bf16=True), "fp32").bf16
        load_stage(SMOKE, log_runtime=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("runtime:")]
    assert lines == ["runtime: {'device': 'cpu', 'precision': 'fp32'} (Inception)"]
