"""Data-parallel training under a real `torchrun --nproc_per_node 2` on CPU (gloo), issue 16: the training loop on
halves of the same global batches reaches the weights one process reaches on the whole batches (mean-reduced loss,
gradient clipping after the average, a sparse table), logs the same losses and resumes exactly; `processes: 2`
runs a generator's and classify's stage commands under torchrun with one set of outputs and one MLflow run."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from synthaug.core import distributed
HERE = Path(__file__).resolve().parent


TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
needs_torchrun = pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", SYNTHAUG_THREADS="1", PYTHONPATH=str(HERE.parent / "src"))
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env={**_env(), "DVC_ROOT": str(cwd)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _worker(tmp_path: Path, steps: int, processes: int, checkpoint: str) -> dict:
    launch = [sys.executable] if processes == 1 else [TORCHRUN, "--standalone", "--nproc_per_node", str(processes)]
    _run([*launch, str(HERE / "ddp_worker.py"), "out.json", checkpoint, str(steps)], tmp_path)
    return json.loads((tmp_path / "out.json").read_text())


@needs_torchrun
def test_two_processes_train_what_one_process_trains_and_resume_exactly(tmp_path):
    """`training.run_training` under torchrun: the weights, the sparse table and every logged loss equal one
    process's on the whole batches, also across a kill and resume; the checkpoint keeps both ranks' RNG states."""
    one = _worker(tmp_path, 40, 1, "one.pt")
    assert (one["world"], one["processes"], one["rank_rng"], one["rank_buffer_mean"]) == (1, 1, 0, 0.0)
    _worker(tmp_path, 20, 2, "two.pt")  # killed at step 20...
    two = _worker(tmp_path, 40, 2, "two.pt")  # ...and resumed to 40
    assert (two["world"], two["ranks"], two["step"], two["processes"], two["rank_rng"]) == (2, [0, 1], 40, 2, 2)
    assert two["rank_buffer_mean"] == 0.5  # each rank's buffer, averaged
    np.testing.assert_allclose(two["weight"], one["weight"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["bias"], one["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["offset"], one["offset"], rtol=1e-5, atol=1e-6)
    assert [h["step"] for h in two["history"]] == [h["step"] for h in one["history"]] == list(range(5, 41, 5))
    np.testing.assert_allclose([h["loss"] for h in two["history"]], [h["loss"] for h in one["history"]], rtol=1e-5)
    # A checkpoint of two processes is not resumed by one (its RNG states and batches are per rank).
    again = _worker(tmp_path, 40, 1, "two.pt")
    assert (again["processes"], again["rank_rng"]) == (1, 0)
    np.testing.assert_allclose(again["weight"], one["weight"], rtol=1e-6)


def _mlflow_runs(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "mlflow.db") as db:
        return sorted(db.execute("select name, status from runs").fetchall())


def _logged_param(root: Path, run: str, key: str) -> str | None:
    with sqlite3.connect(root / "mlflow.db") as db:
        row = db.execute("select p.value from params p join runs r on p.run_uuid = r.run_uuid "
                         "where r.name = ? and p.key = ?", (run, key)).fetchone()
    return row[0] if row else None


@needs_torchrun
def test_processes_2_runs_a_generator_and_classify_under_torchrun(tmp_path, smoke_dict):
    """`processes: 2` turns the stages' own commands into torchrun jobs: the same steps over the same images,
    one set of outputs, one MLflow run per stage item (rank 0's), and a checkpoint that records both ranks."""
    from synthaug.core.storage import load_checkpoint

    roots = {}
    for n in (1, 2):
        root = roots[n] = tmp_path / f"p{n}"
        root.mkdir()
        params = copy.deepcopy(smoke_dict)
        params["processes"] = n
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _run([sys.executable, "-m", "synthaug", "prepare"], root)
        train = _run([sys.executable, "-m", "synthaug", "train", "vae"], root)
        classify = _run([sys.executable, "-m", "synthaug", "classify", "real", "--seed", "0", "--fraction", "0.5"],
                        root)
        for proc in (train, classify):  # each rank logs its runtime once
            assert proc.stderr.count("'processes': '2'") == (2 if n == 2 else 0), proc.stderr[-2000:]
    one, two = (json.loads((roots[n] / "metrics/train/study0/vae.json").read_text()) for n in (1, 2))
    assert one.keys() == two.keys()
    for key in ("steps", "train_images", "generator_fraction"):
        assert two[key] == one[key], key  # the same number of images and of optimiser steps...
    seen = [_logged_param(roots[n], "train_vae@0", "train_indices_sha256") for n in (1, 2)]
    assert seen[0] is not None and seen[1] == seen[0]  # ...and the very same images
    assert all(np.isfinite(v) for v in two.values() if isinstance(v, float))
    curves = [json.loads((roots[n] / "plots/train/study0/vae.json").read_text()) for n in (1, 2)]
    assert [h["step"] for h in curves[1]] == [h["step"] for h in curves[0]]
    state = load_checkpoint(roots[2] / "models/study0/vae/checkpoint.pt")
    assert (state["processes"], len(state["rank_rng"]), state["step"]) == (2, 2, one["steps"])
    assert "processes" not in load_checkpoint(roots[1] / "models/study0/vae/checkpoint.pt")
    records = [json.loads((roots[n] / "metrics/classify/study0/real/f0.5_s0.json").read_text()) for n in (1, 2)]
    assert records[1].keys() == records[0].keys()
    assert records[1]["real_images"] == records[0]["real_images"]
    assert 0.0 <= records[1]["test_accuracy"] <= 1.0
    runs = _mlflow_runs(roots[2])  # one run per stage item, not one per rank
    assert runs == _mlflow_runs(roots[1]) == sorted([
        ("prepare", "FINISHED"), ("train_vae@0", "FINISHED"), ("classify_real@0", "FINISHED"),
        ("classify_real@0 f0.5_s0", "FINISHED")])
    assert _logged_param(roots[2], "train_vae@0", "processes") == "2"
    assert _logged_param(roots[1], "train_vae@0", "processes") is None


def test_one_process_is_untouched():
    d = distributed.from_env({})
    assert d == distributed.SINGLE and d.is_main and not d.active
    x = np.arange(6)
    assert distributed.shard(d, x) == (x,) and distributed.mean_across(d, {"a": 1.5}) == {"a": 1.5}
    assert distributed.average_gradients(d, []) == [] and distributed.gather_objects(d, "r") == ["r"]


def test_torchrun_environment_and_uneven_batches():
    import torch

    d = distributed.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (d.rank, d.world, d.local_rank, d.is_main, d.active) == (2, 4, 0, False, True)
    (part,) = distributed.shard(d, torch.arange(8))
    assert part.tolist() == [2, 6]
    with pytest.raises(ValueError, match="does not split evenly over 4 processes"):
        distributed.shard(d, torch.arange(6))
