"""`python -m synthaug status` and the stages' progress journal (issue 33: whole-run progress).

Unit tests drive a real `dvc repro` of a scratch DVC project whose stages (a plain stage, a `foreach` and a
`matrix`) call `progress.stage_started()` as `load_stage` does, hold at half of a tqdm bar until the test lets them
go, or fail; the end-to-end test runs `dvc repro fid_ref` of the smoke project (test_pipeline's clone) and reads
the status while a real stage runs.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO

SCRATCH_STAGE = """\
import logging, os, pathlib, signal, sys, time
from tqdm import tqdm
from synthaug.core import progress

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
name = sys.argv[1]
progress.stage_started()
with tqdm(total=10, desc=f"work {name}") as bar:
    for i in range(10):
        bar.update(1)
        if i == 4 and os.environ.get("HOLD") == name:  # half done: wait for the test
            while not pathlib.Path(f"release-{name}").exists():
                time.sleep(0.1)
if os.environ.get("KILL") == name:
    os.kill(os.getpid(), signal.SIGKILL)
if os.environ.get("BREAK") == name:
    raise RuntimeError("broken on purpose")
pathlib.Path(f"out-{name}.txt").write_text(name + pathlib.Path("input.txt").read_text())  # new input: new outs
sys.exit(int(os.environ.get("EXIT_" + name.replace("-", "_"), "0")))
"""
SCRATCH_DVC = {"stages": {
    "a": {"cmd": "python stage.py a", "deps": ["input.txt"], "params": ["size"], "outs": ["out-a.txt"]},
    "b": {"foreach": ["x", "y"], "do": {"cmd": "python stage.py b-${item}", "deps": ["out-a.txt"],
                                       "outs": ["out-b-${item}.txt"]}},
    "c": {"matrix": {"seed": [0, 1]}, "cmd": "python stage.py c-${item.seed}", "deps": ["out-b-x.txt"],
          "outs": ["out-c-${item.seed}.txt"]},
}}
ITEMS = ["a", "b@x", "b@y", "c@0", "c@1"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO / "src")
    return {**env, **extra}


def _sh(cmd: list[str], cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture()
def scratch(tmp_path) -> Path:
    """A git + DVC project with a plain, a foreach and a matrix stage (ITEMS), nothing run yet."""
    (tmp_path / "stage.py").write_text(SCRATCH_STAGE)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(SCRATCH_DVC, sort_keys=False))
    (tmp_path / "params.yaml").write_text("size: 1\n")
    (tmp_path / "input.txt").write_text("1")
    _sh(["git", "init", "-q"], tmp_path)
    _sh(["dvc", "init", "-q"], tmp_path)
    return tmp_path


def status_json(root: Path, env: dict | None = None) -> dict:
    proc = _sh([sys.executable, "-m", "synthaug", "status", "--json"], root, env)
    return json.loads(proc.stdout)


def _wait(what, predicate, proc: subprocess.Popen | None = None, timeout: float = 240.0):
    """Poll `what()` until `predicate` holds on it; fails (with the last value) if `proc` ended or time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if predicate(value):
            return value
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise AssertionError(f"never happened; last value: {json.dumps(value, indent=1)[-3000:]}")
        time.sleep(0.5)


def _names(entries: list[dict]) -> list[str]:
    return [e["item"] for e in entries]


def test_the_plan_names_foreach_and_matrix_items_and_follows_dvc_repro_arguments(scratch, monkeypatch):
    from synthaug.core import run_plan

    monkeypatch.chdir(scratch)  # targets are named from the repo root, as DVC runs the stages
    assert run_plan.stage_items(scratch) == ITEMS
    fresh = run_plan.plan(scratch)
    assert fresh.to_run() == ITEMS and fresh.command == "dvc repro" and not fresh.maybe
    _sh(["dvc", "repro"], scratch)
    assert run_plan.plan(scratch).to_run() == []
    assert run_plan.plan(scratch, ["repro", "-f", "c@1"]).to_run() == ["a", "b@x", "c@1"]
    assert run_plan.plan(scratch, ["repro", "-s", "-f", "c@1"]).to_run() == ["c@1"]
    (scratch / "params.yaml").write_text("size: 2\n")  # a's param: a is stale, the rest waits on its outputs
    edited = run_plan.plan(scratch)
    assert edited.stale == {"a": "dep params.yaml changed"}
    assert edited.maybe == {"b@x": "a", "b@y": "a", "c@0": "b@x", "c@1": "b@x"}
    assert run_plan.plan(scratch, ["repro", "b@y"]).to_run() == ["a", "b@y"]
    assert run_plan.plan(scratch, ["repro", "--force-downstream"]).to_run() == ITEMS
    (scratch / "params.yaml").write_text("size: 1\n")
    (scratch / "out-b-y.txt").unlink()
    assert run_plan.plan(scratch).stale == {"b@y": "out out-b-y.txt deleted"}
    assert run_plan.plan(scratch, ["exp", "run", "c@0"]).to_run() == []  # b@y is not upstream of c@0
    assert run_plan.plan(scratch, ["push"]).command.startswith("dvc repro (for `dvc push`")
    with pytest.raises(run_plan.PlanError, match="`dvc repro nosuch`: .*nosuch"):
        run_plan.plan(scratch, ["repro", "nosuch"])


def test_status_while_dvc_repro_runs_a_stage(scratch):
    """After a first run (each stage's log says which item of how many it is), the input of `a` changes and the
    next run holds b@x at half its bar: `dvc status` refuses, our status names b@x running with its progress, `a`
    done, b@y left (its dep changed) and the matrix items maybe left (they wait on b@x's outputs)."""
    first = _sh(["dvc", "repro"], scratch)
    for i, item in enumerate(ITEMS, 1):
        assert f"stage {i} of 5 ({item}): ~" in first.stdout + first.stderr, first.stderr
    snap = status_json(scratch)
    assert not snap["in_progress"] and _names(snap["done"]) == ITEMS and snap["running"] == snap["left"] == []
    (scratch / "input.txt").write_text("2")
    log = scratch / "repro.log"
    with open(log, "w") as out:
        repro = subprocess.Popen(["dvc", "repro"], cwd=scratch, env=_env(HOLD="b-x"), stdout=out,
                                 stderr=subprocess.STDOUT)
    try:
        snap = _wait(lambda: status_json(scratch), lambda s: s["running"] and s["running"][0]["progress"], repro)
        assert snap["in_progress"] and snap["run"]["args"] == ["repro"] and snap["run"]["dvc_pid"] == repro.pid
        (running,) = snap["running"]
        assert running["item"] == "b@x" and running["state"] == "running"
        assert running["progress"]["desc"] == "work b-x" and running["progress"]["n"] == 5
        assert _names(snap["done"]) == ["a"] and snap["failed"] == []
        assert [(x["item"], x["maybe"], x["why"]) for x in snap["left"]] == [
            ("b@y", False, "dep out-a.txt modified"), ("c@0", True, "after b@x"), ("c@1", True, "after b@x")]
        blocked = _sh(["dvc", "status"], scratch, ok=False)
        assert blocked.returncode != 0 and "busy" in blocked.stderr + blocked.stdout  # why we read lock-free
        text = _sh([sys.executable, "-m", "synthaug", "status"], scratch).stdout
        assert "run: `dvc repro` (dvc pid" in text and "in progress since" in text and "b@x: pid " in text
        assert '50 % of "work b-x" (5/10' in text and "left (3): b@y, c@0?, c@1?" in text
        assert "estimate: ~" in text and "this machine's last run" in text
    finally:
        (scratch / "release-b-x").touch()
        repro.wait(timeout=300)
    assert repro.returncode == 0, log.read_text()
    assert "stage 2 of 5 (b@x): ~" in log.read_text()
    done = status_json(scratch)
    assert not done["in_progress"] and _names(done["done"]) == ITEMS and done["running"] == done["left"] == []
    entries = {e.name: json.loads(e.read_text()) for e in (scratch / ".synthaug" / "progress").iterdir()}
    assert set(entries) == {f"{i}.json" for i in ITEMS}
    assert all(e["status"] == "done" and e["exit_code"] == 0 and e["last"]["seconds"] > 0 for e in entries.values())


def test_a_failed_and_a_killed_stage_are_told_apart(scratch):
    failed = _sh(["dvc", "repro"], scratch, _env(EXIT_b_x="3"), ok=False)
    assert failed.returncode != 0
    snap = status_json(scratch)
    assert not snap["in_progress"] and _names(snap["done"]) == ["a"]
    assert [(f["item"], f["exit_code"], f["why"]) for f in snap["failed"]] == [("b@x", 3, "exit code 3")]
    assert [x["item"] for x in snap["left"]] == ["b@x", "b@y", "c@0", "c@1"]  # what a new `dvc repro` runs
    _sh(["dvc", "repro", "b@y"], scratch, _env(BREAK="b-y"), ok=False)  # an uncaught exception: exit 1
    assert [(f["item"], f["exit_code"]) for f in status_json(scratch)["failed"]] == [("b@y", 1)]
    _sh(["dvc", "repro", "b@x"], scratch, _env(KILL="b-x"), ok=False)
    snap = status_json(scratch)
    assert [(f["item"], f["why"]) for f in snap["failed"]] == [("b@x", "ended without a record (killed?)")]
    text = _sh([sys.executable, "-m", "synthaug", "status"], scratch).stdout
    assert "failed (1, last run): b@x (ended without a record (killed?))" in text
    assert "left if you run `dvc repro` now (4): b@x, b@y, c@0, c@1" in text


def test_estimates_come_from_this_machines_last_run_then_mlflow_scaled_then_a_default(scratch, monkeypatch):
    from mlflow.tracking import MlflowClient

    from synthaug.core import progress
    from synthaug.core.tracking import stage_run, tracking_uri

    _sh(["dvc", "repro", "b@x"], scratch)  # a and b@x measured in the journal
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("DVC_ROOT", str(scratch))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for item in ("a", "c@0"):  # MLflow records (a stage process's runs) of an item measured and of one not
        with stage_run(item, "digits"):
            time.sleep(0.2)
    runs = MlflowClient(tracking_uri=tracking_uri()).search_runs(["1"])
    recorded = {r.data.tags["dvc.stage"]: (r.info.end_time - r.info.start_time) / 1000 for r in runs}
    journal = progress.read_journal(scratch)
    start_up = journal["a"]["last"]["seconds"] - recorded["a"]  # what a stage process does outside its MLflow run
    est = progress.estimates(scratch, ["a", "b@x", "c@0", "c@1", "train_vae@0", "fid_ref"], journal)
    assert est["a"] == (journal["a"]["last"]["seconds"], "this machine's last run")
    assert est["c@0"][0] == pytest.approx(recorded["c@0"] + start_up)
    assert est["c@0"][1] == f"MLflow record + {progress.duration(start_up)} start-up"
    # another host's record: scaled by the ratio of this machine's durations to that host's, item by item
    assert progress._mlflow_estimate(10.0, "gpu1", "here", [(30.0, 10.0), (8.0, 2.0), (50.0, 20.0)]) == (
        30.0, "MLflow record from gpu1 x3")
    # unmeasured items: the family's guess, scaled as this run's measured items (a and b@x) compare with theirs
    scale = statistics.median(journal[i]["last"]["seconds"] / progress.DEFAULT_OTHER for i in ("a", "b@x"))
    words = f"default guess x{scale:.2g} (as 2 items measured here)"
    assert est["c@1"] == (pytest.approx(progress.DEFAULT_OTHER * scale), words)
    assert est["train_vae@0"] == (pytest.approx(progress.DEFAULT_SECONDS["train"] * scale), words)  # its family
    assert est["fid_ref"] == (pytest.approx(progress.DEFAULT_SECONDS["fid_ref"] * scale), words)
    assert progress.estimates(scratch, ["c@1"], {})["c@1"] == (progress.DEFAULT_OTHER, "default guess")
    (scratch / "params.yaml").write_text("size: 2\n")
    assert progress.estimates(scratch, ["a"], journal)["a"][1] == "this machine's last run, other params"
    journal["a"]["last"]["host"] = "elsewhere"
    assert progress.estimates(scratch, ["a"], journal)["a"][1] == "elsewhere's last run, other params"
    assert socket.gethostname() != "elsewhere"


def test_a_dvc_repro_that_has_not_started_a_stage_yet_is_seen_in_dvcs_lock_file(scratch):
    """Before its first stage (while DVC hashes the deps) only DVC's rwlock file names the run."""
    fake = scratch / "bin" / "dvc"  # a live process whose command line reads `dvc repro c@0`
    fake.parent.mkdir()
    fake.write_text("import time; time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(fake), "repro", "c@0"], cwd=scratch)
    try:
        lock = {"write": {}, "read": {str(scratch / "out-b-x.txt"): [{"pid": proc.pid, "cmd": "dvc repro c@0"}]}}
        (scratch / ".dvc" / "tmp").mkdir(exist_ok=True)
        (scratch / ".dvc" / "tmp" / "rwlock").write_text(json.dumps(lock))
        snap = status_json(scratch)
        assert snap["starting"] and snap["in_progress"] and snap["run"] == {"dvc_pid": proc.pid, "args": ["repro", "c@0"]}
        assert [x["item"] for x in snap["left"]] == ["a", "b@x", "c@0"] and snap["done"] == snap["running"] == []
        text = _sh([sys.executable, "-m", "synthaug", "status"], scratch).stdout
        assert f"run: `dvc repro c@0` (dvc pid {proc.pid}), in progress: DVC is checking which items" in text
    finally:
        proc.kill()
        proc.wait()
    assert not status_json(scratch)["in_progress"]  # its process gone: a stale lock file is not a run


def test_a_running_items_estimate_follows_its_own_progress_bar_once_it_has_moved():
    from synthaug.core.progress import _from_progress

    started = 1000.0
    assert _from_progress({"start": started, "progress": None}) is None
    assert _from_progress({"start": started, "progress": {"fraction": 0.01, "at": started + 9}}) is None  # too early
    seconds, source = _from_progress({"start": started, "progress": {"fraction": 0.25, "at": started + 60}})
    assert seconds == 240 and source == "its progress bar"


def test_status_outside_a_dvc_project_is_one_error_line(tmp_path, monkeypatch):
    from synthaug.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: {tmp_path}: not inside a DVC project (no .dvc folder here or above)")


def test_a_stage_outside_dvc_repro_writes_no_journal(tmp_path, monkeypatch):
    """Tests and hand-run commands (no DVC_STAGE) leave the workspace as it was."""
    from synthaug.core import progress

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    progress.stage_started()
    assert not (tmp_path / ".synthaug").exists() and progress.read_journal(tmp_path) == {}


@pytest.mark.parametrize("seconds, words", [(0.4, "0 s"), (59, "59 s"), (61, "1 min"), (3599, "60 min"),
                                            (3600, "1 h"), (4800, "1 h 20 min")])
def test_durations_read_as_people_say_them(seconds, words):
    from synthaug.core.progress import duration

    assert duration(seconds) == words


@pytest.mark.slow
def test_status_during_a_real_smoke_repro(project):
    """`dvc repro fid_ref` of the smoke project (prepare, then fid_ref): status read while a real stage runs
    agrees with itself, and each stage's log says which item of how many it is."""
    dest, env = project
    log = dest / "repro-status.log"
    with open(log, "w") as out:
        repro = subprocess.Popen(["dvc", "repro", "fid_ref"], cwd=dest, env=env, stdout=out, stderr=subprocess.STDOUT)
    seen = []
    try:
        while repro.poll() is None:
            snap = status_json(dest, env)
            if snap["running"]:
                seen.append(snap)
            time.sleep(0.5)
    finally:
        repro.wait(timeout=900)
    assert repro.returncode == 0, log.read_text()[-4000:]
    assert seen, "no status call caught a running stage"
    for snap in seen:
        (running,) = snap["running"]
        run_items = [*_names(snap["done"]), running["item"]]
        assert snap["in_progress"] and snap["command"] == "dvc repro fid_ref" and snap["failed"] == []
        assert running["state"] == "running" and running["pid"] != repro.pid
        assert run_items + [x["item"] for x in snap["left"]] == ["prepare", "fid_ref"], snap
    after = status_json(dest, env)
    assert _names(after["done"]) == ["prepare", "fid_ref"] and not after["in_progress"]
    output = log.read_text()
    assert "stage 1 of 2 (prepare): ~" in output and "stage 2 of 2 (fid_ref): ~" in output, output[-4000:]


from test_pipeline import project  # noqa: E402  (the smoke clone fixture, one per module)
