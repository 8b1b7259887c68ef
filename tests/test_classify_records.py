"""A classify stage item's per-run records: a re-run with the same inputs skips recorded runs, and any change of
the real images a run would see (here: another `seed`, which draws other subsets of the same size) re-trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SMOKE, set_key
from fault_workspaces import prepared_template
from synthaug.data.fractions import nested_fractions, save_fractions
from synthaug.data.real import load_prepared

pytestmark = pytest.mark.slow  # three real `classify` processes


def _classify(ws: Path, *which: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(ws), SYNTHAUG_THREADS="1", PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "synthaug", "classify", "real",
                           *(which or ("--fraction", "0.5", "--seed", "0"))],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=600)


def _params(ws: Path, seed: int, **extra) -> None:
    d = yaml.safe_load(SMOKE.read_text())
    for k, v in {"classify.model.steps": 2, "classify.model.log_every": 1, **extra}.items():
        set_key(d, k, v)
    (ws / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    wanted = sorted(set(d["fractions"]) | set(d["real_fractions"]) | {d["generator_fraction"]})
    labels = load_prepared(ws / "data" / "real", "train").labels
    # as `prepare` leaves study seed 0's subsets: `seed` stands for another draw of the same sizes
    (ws / "data" / "fractions").mkdir(exist_ok=True)
    save_fractions(ws / "data" / "fractions" / "study0.json", nested_fractions(labels, wanted, seed), {"seed": seed})


def test_records_are_reused_only_for_the_same_real_images(tmp_path):
    ws = prepared_template(tmp_path / "ws")
    record = ws / "metrics" / "classify" / "study0" / "real" / "f0.5_s0.json"
    _params(ws, seed=0)
    first = _classify(ws)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "classify_real@0 f0.5_s0: test accuracy" in first.stdout
    made = record.read_bytes()

    again = _classify(ws)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "f0.5_s0: already recorded with these inputs; skipped" in again.stderr
    assert "test accuracy" not in again.stdout and record.read_bytes() == made

    _params(ws, seed=1)  # as `prepare` leaves it after `seed: 1`: same sizes, other images
    other = _classify(ws)
    assert other.returncode == 0, other.stderr[-2000:]
    assert "classify_real@0 f0.5_s0: test accuracy" in other.stdout
    assert json.loads(record.read_text())["fingerprint"] != json.loads(made)["fingerprint"]


def test_the_analysed_run_keeps_weights_that_reproduce_its_record(tmp_path):
    """The arm's run at the first fraction and first seed leaves models/classify/<arm>.pt (what `gradcam` reads):
    the weights score the recorded test accuracy, and a lost weight file re-trains that run alone, reproducing it."""
    from synthaug.study.classification import evaluate, load_classifier
    from synthaug.core.runtime import make_runtime

    ws = prepared_template(tmp_path / "ws")
    _params(ws, seed=0)
    weights = ws / "models" / "study0" / "classify" / "real.pt"
    first = _classify(ws)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((ws / "metrics" / "classify" / "study0" / "real" / "f0.5_s0.json").read_text())
    d = yaml.safe_load((ws / "params.yaml").read_text())
    runtime = make_runtime(d["device"], d["precision"])  # as the stage evaluated it
    model, about = load_classifier(weights, runtime)
    assert (about["arm"], about["fraction"], about["seed"]) == ("real", 0.5, 0)
    test = load_prepared(ws / "data" / "real", "test")
    scored = evaluate(model, test.images, test.labels, runtime, about["num_classes"],
                      d["classify"]["model"]["eval_batch_size"])
    assert round(scored["test_accuracy"], 6) == record["test_accuracy"] == round(about["test_accuracy"], 6)

    weights.unlink()
    again = _classify(ws)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "classify_real@0 f0.5_s0: test accuracy" in again.stdout and weights.is_file()
    assert "not reproduced exactly" not in again.stderr


def test_a_bank_trains_only_unrecorded_runs_and_matches_runs_trained_one_at_a_time(tmp_path):
    """classify.bank_size 2 trains the arm's two runs at fraction 0.5 as one bank; their records match the same
    runs trained one at a time (bank_size 1) in fp32; a lost record re-trains that member alone."""
    records = {}
    for size in (2, 1):
        ws = prepared_template(tmp_path / f"bank{size}")
        _params(ws, seed=0, **{"classify.bank_size": size, "precision": "fp32"})
        done = _classify(ws, "--fraction", "0.5")
        assert done.returncode == 0, done.stderr[-2000:]
        assert ("classify (bank of 2)" in done.stderr) == (size == 2)
        folder = ws / "metrics" / "classify" / "study0" / "real"
        records[size] = {s: json.loads((folder / f"f0.5_s{s}.json").read_text()) for s in (0, 1)}
    for s in (0, 1):
        banked, alone = records[2][s], records[1][s]
        assert banked["fingerprint"] == alone["fingerprint"]  # the bank size does not define a run
        assert banked["test_accuracy"] == pytest.approx(alone["test_accuracy"], abs=2e-4)  # digits: one image is ~0.3 %
        assert banked["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-4)
    assert records[2][0]["test_accuracy"] != records[2][1]["test_accuracy"]  # two seeds, two runs

    ws = tmp_path / "bank2"
    (ws / "metrics" / "classify" / "study0" / "real" / "f0.5_s1.json").unlink()
    again = _classify(ws, "--fraction", "0.5")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "f0.5_s0: already recorded with these inputs; skipped" in again.stderr
    assert "classify_real@0 f0.5_s1: test accuracy" in again.stdout and "f0.5_s0: test" not in again.stdout
    redone = json.loads((ws / "metrics" / "classify" / "study0" / "real" / "f0.5_s1.json").read_text())
    assert redone["test_accuracy"] == pytest.approx(records[2][1]["test_accuracy"], abs=2e-4)
