"""MLflow tracking against a real local store: where it lives, the experiment's tags, run status, params,
metrics, tags linking to DVC, artifacts; and a fast one-line failure for an unreachable server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from synthaug.core.tracking import TrackingError, flatten, metric_key, stage_run, tracking_uri


@pytest.fixture()
def local_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "train_vae@0-from-dvc")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-beta08")
    return tmp_path


def test_stage_run_logs_to_local_store_under_dvc_root(local_store):
    from mlflow.tracking import MlflowClient

    root = local_store
    assert tracking_uri() == f"sqlite:///{root / 'mlflow.db'}"
    artifact = root / "curves.txt"
    artifact.write_text("loss curve")
    with stage_run("train_vae@0", "digits", params={"vae": {"lr": 0.002, "epochs": 2}, "seed": 0},
                   tags={"family": "vae"}) as run:
        run.log_metrics({"loss": 1.5, "real+vae": 0.9}, step=1)
        run.log_metrics({"loss": 1.0}, step=2)
        run.log_artifact(artifact)
        run.log_artifact_as(artifact, "samples/grid.png")  # the same name in every run of a stage
    assert (root / "mlflow.db").is_file()

    with pytest.raises(ValueError, match="stage failed"):
        with stage_run("classify_real@0 f0.5_s0", "digits") as run:
            run.log_metrics({"train_loss": 2.0}, step=1)
            raise ValueError("stage failed")

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exps = [e for e in client.search_experiments() if e.name.startswith("synthaug-")]
    assert [e.name for e in exps] == ["synthaug-digits"]  # one experiment per dataset, reused by both runs
    exp = exps[0]
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert exp.artifact_location == (root / "mlruns").as_uri()

    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"dvc exp exp-beta08", "train_vae@0", "classify_real@0 f0.5_s0"}
    ok, failed, group = runs["train_vae@0"], runs["classify_real@0 f0.5_s0"], runs["dvc exp exp-beta08"]
    # both stage runs of the `dvc exp run` are children of one group run, created by the first of them
    assert ok.data.tags["mlflow.parentRunId"] == failed.data.tags["mlflow.parentRunId"] == group.info.run_id
    assert group.data.tags["synthaug.dvc_exp"] == "exp-beta08" and group.info.status == "FINISHED"
    assert ok.info.status == "FINISHED" and failed.info.status == "FAILED"
    assert ok.data.params == {"vae.lr": "0.002", "vae.epochs": "2", "seed": "0"}
    assert ok.data.metrics == {"loss": 1.0, "real_plus_vae": 0.9}
    assert [(m.step, m.value) for m in client.get_metric_history(ok.info.run_id, "loss")] == [(1, 1.5), (2, 1.0)]
    assert failed.data.metrics == {"train_loss": 2.0}  # buffered metrics are flushed even when the stage fails
    tags = ok.data.tags
    assert tags["dvc.stage"] == "train_vae@0-from-dvc" and tags["dvc.exp_name"] == "exp-beta08"
    assert tags["synthaug.stage"] == "train_vae@0" and tags["dataset"] == "digits" and tags["family"] == "vae"
    assert [a.path for a in client.list_artifacts(ok.info.run_id)] == ["curves.txt", "samples"]
    assert [a.path for a in client.list_artifacts(ok.info.run_id, "samples")] == ["samples/grid.png"]
    stored = list((root / "mlruns").rglob("curves.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "loss curve"
    assert [p.read_text() for p in (root / "mlruns").rglob("grid.png")] == ["loss curve"]


def test_metric_key_and_flatten():
    assert metric_key("real+vae") == "real_plus_vae"
    assert metric_key("accuracy.real+all.f0.5") == "accuracy.real_plus_all.f0.5"
    assert metric_key("synth:vae acc/x-1") == "synth:vae acc/x-1"  # allowed characters kept
    assert metric_key("a@b#c") == "a_b_c"
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_unreachable_server_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(TrackingError) as ei:
        with stage_run("prepare", "digits"):
            pytest.fail("the stage body must not run")
    assert time.perf_counter() - t0 < 10
    assert "http://127.0.0.1:9" in str(ei.value) and "\n" not in str(ei.value)
    assert list(Path(tmp_path).iterdir()) == []


def test_a_store_failing_during_the_run_is_one_line_and_never_hides_the_stage_error(local_store, caplog):
    """The store fills up (or turns read-only) after the run began: metrics, tags and the final status are one
    TrackingError line naming the store; when the stage itself failed, its error is the one reported."""
    from mlflow.exceptions import MlflowException

    def full(*a, **k):
        raise MlflowException("(raised as a result of autoflush)\n(sqlite3.OperationalError) database or disk is full\n"
                              "[SQL: INSERT INTO metrics ...]")

    with pytest.raises(TrackingError) as ei:
        with stage_run("train_vae@0", "digits") as run:
            run.client.log_batch = full
            run.log_metrics({"loss": 1.0})
    assert str(ei.value) == (f"cannot write to MLflow store sqlite:///{local_store / 'mlflow.db'}: OperationalError: "
                             "database or disk is full")
    with pytest.raises(ValueError, match="the stage's own error"):
        with stage_run("train_vae@0", "digits") as run:
            run.client.log_batch = run.client.set_terminated = full
            raise ValueError("the stage's own error")
    assert "could not mark the MLflow run FAILED" in caplog.text


def test_report_figures_reach_the_experiment_group_and_plain_repro_has_none(local_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    with stage_run("report", "digits") as run:
        run.log_metrics({"gain.real+vae.f0.5": -1.5})
        run.log_group_metrics({"gain.real+vae.f0.5": -1.5})
    monkeypatch.delenv("DVC_EXP_NAME")  # `dvc repro`: top-level runs, no group
    with stage_run("report", "digits") as run:
        assert run.group_id is None
        run.log_group_metrics({"gain.real+vae.f0.5": 2.0})  # nothing to do, and no error
    client = MlflowClient(tracking_uri=f"sqlite:///{local_store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synthaug-digits").experiment_id])
    groups = [r for r in runs if r.info.run_name == "dvc exp exp-beta08"]
    assert len(groups) == 1 and groups[0].data.metrics == {"gain.real_plus_vae.f0.5": -1.5}
    plain = [r for r in runs if r.info.run_name == "report" and "mlflow.parentRunId" not in r.data.tags]
    assert len(plain) == 1


def _status_by_name(root: Path) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("synthaug-digits")
    return {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id], max_results=100)}


def test_a_killed_stages_run_is_marked_killed_by_the_next_stage_and_sigterm_ends_killed(local_store, monkeypatch):
    """kill -9 lets no process close its run: the next stage to start marks a RUNNING run of a dead process on
    this machine KILLED (a live process's run stays RUNNING). SIGTERM unwinds the stage: its run ends KILLED."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env["DVC_ROOT"] = str(local_store)
    body = textwrap.dedent("""
        import os, signal, sys, time
        from synthaug.stages.common import stage_command
        from synthaug.core.tracking import stage_run

        @stage_command
        def stage():
            with stage_run(sys.argv[1], "digits"):
                print("started", flush=True)
                if sys.argv[2] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(60)
        stage()
    """)
    killed = subprocess.run([sys.executable, "-c", body, "sample_vae@0", "kill"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL and _status_by_name(local_store) == {"sample_vae@0": "RUNNING"}
    live = subprocess.Popen([sys.executable, "-c", body, "sample_gan@0", "wait"], env=env, stdout=subprocess.PIPE)
    assert live.stdout.readline().strip() == b"started"  # the next stage to start closed the dead one's run
    assert _status_by_name(local_store) == {"sample_vae@0": "KILLED", "sample_gan@0": "RUNNING"}
    monkeypatch.delenv("DVC_EXP_NAME")  # a plain `dvc repro`, as the processes above
    with stage_run("fid@vae-0", "digits"):  # a live process's run stays RUNNING
        pass
    assert _status_by_name(local_store) == {"sample_vae@0": "KILLED", "sample_gan@0": "RUNNING",
                                            "fid@vae-0": "FINISHED"}
    live.send_signal(signal.SIGTERM)
    assert live.wait(timeout=60) != 0
    assert _status_by_name(local_store)["sample_gan@0"] == "KILLED"
