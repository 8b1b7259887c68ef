"""The `analyse` stage end to end on a tiny workspace: real digits, fake Inception features and two sources, one
close to the real images (copies of test images, features of the reference's distribution) and one far off."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import enter_workspace, set_key

DIMS, PER_CLASS = 8, 30  # 30 images a class > 8 dims: per-class FID is computed here


@pytest.fixture()
def workspace(tmp_path, smoke_dict, monkeypatch):
    from synthaug.data.real import load_dataset, write_prepared
    from synthaug.data.shards import write_shards
    from synthaug.core.storage import save_npz

    ds = load_dataset("digits", None, 32)
    write_prepared(ds, tmp_path / "data" / "real")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), PER_CLASS)
    save_npz(tmp_path / "data" / "fid_ref.npz", features=rng.normal(size=(300, DIMS)).astype(np.float32),
             labels=labels)
    close = np.concatenate([ds.test.images[ds.test.labels == c][:PER_CLASS] for c in range(10)])
    noise = rng.integers(0, 256, close.shape, dtype=np.uint8)
    for source, images, shift in (("vae", close, 0.0), ("gan", noise, 50.0)):
        write_shards(tmp_path / "data" / "synthetic" / "study0" / source, images, labels, 128, 10,
                     extra={"source": source})
        save_npz(tmp_path / "data" / "features" / "study0" / f"{source}.npz",
                 features=(rng.normal(size=(300, DIMS)) + shift).astype(np.float32), labels=labels)
    set_key(smoke_dict, "sources", ["vae", "gan"])
    return enter_workspace(tmp_path, smoke_dict, monkeypatch)


def _analyse(*args: str):
    from synthaug.cli import app

    return CliRunner().invoke(app, ["analyse", *args, "--params", "params.yaml"])


def test_analyse_writes_flat_metrics_per_class_rows_and_a_figure(workspace):
    result = _analyse()
    assert result.exit_code == 0, result.output
    m = json.loads((workspace / "metrics" / "analysis.json").read_text())
    for source in ("vae", "gan"):
        for key in ("precision", "recall", "density", "coverage", "kid_class_mean", "kid_class_max",
                    "fid_class_mean", "line_orientation_w1", "line_orientation_tv", "line_length_tv",
                    "lines_per_image"):
            assert math.isfinite(m[f"{key}.{source}"]), (key, source)
        assert m[f"fid_class_computed.{source}"] == 10
    assert m["precision.gan"] == 0.0 and m["coverage.gan"] == 0.0 and m["precision.vae"] > 0.5
    assert m["kid_class_mean.gan"] > 100 * abs(m["kid_class_mean.vae"])
    # copies of real test images: line statistics as close as other real images are; noise is far off
    assert m["line_orientation_tv.vae"] < m["line_orientation_tv.gan"]
    assert m["line_length_tv.real_heldout"] < m["line_length_tv.gan"]
    assert "precision.real_heldout" not in m and m["nearest_k"] == 5 and m["feature_dims"] == DIMS
    # coverage and recall over 5 disjoint parts of each source (smoke profile: analysis.coverage_splits 5)
    assert m["coverage_splits"] == 5 and m["coverage_split_mean.gan"] == m["coverage_split_sd.gan"] == 0.0
    assert 0 < m["coverage_split_mean.vae"] < 1 and m["coverage_split_sd.vae"] > 0 and "recall_split_sd.vae" in m

    with open(workspace / "reports" / "analysis_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and {r["source"] for r in rows} == {"vae", "gan", "real_heldout"}
    vae = [r for r in rows if r["source"] == "vae"]
    assert all(float(r["fid"]) >= 0 and r["fid_note"] == "" and int(r["images"]) == PER_CLASS for r in vae)
    assert all(r["precision"] == "" and r["line_orientation_tv"] != "" for r in rows if r["source"] == "real_heldout")
    assert (workspace / "reports" / "analysis.png").stat().st_size > 10_000
    assert (workspace / "mlflow.db").is_file()


def test_analyse_names_a_missing_features_file_and_writes_nothing(workspace):
    (workspace / "data" / "features" / "study0" / "gan.npz").unlink()
    result = _analyse()
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1] == ("error: data/features/study0/gan.npz: not found (run the `fid@gan-0` stage first: "
                         "dvc repro fid@gan-0)")
    assert not (workspace / "metrics").exists() and not (workspace / "reports").exists()


def test_study_picks_the_chain_whose_features_and_shards_it_reads(workspace, smoke_dict):
    """`--study K` analyses study seed K's chain (data/features/study<K>, data/synthetic/study<K>); a K not in
    study_seeds is bad input."""
    set_key(smoke_dict, "study_seeds", [0, 3])
    (workspace / "params.yaml").write_text(yaml.safe_dump(smoke_dict, sort_keys=False))
    result = _analyse("--study", "3")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: data/features/study3/vae.npz: not found (run the `fid@vae-3` stage first: dvc repro fid@vae-3)")
    result = _analyse("--study", "5")
    assert result.exit_code == 2 and "--study 5: not among study_seeds [0, 3]" in result.output
    assert not (workspace / "metrics").exists() and not (workspace / "reports").exists()


def test_analyse_refuses_features_without_labels(workspace):
    from synthaug.core.storage import save_npz

    save_npz(workspace / "data" / "fid_ref.npz", features=np.zeros((300, DIMS), np.float32))
    result = _analyse()
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: data/fid_ref.npz: holds no per-image features with labels (written by an older version); "
        "re-run `dvc repro fid_ref`")


def test_analyse_refuses_a_k_larger_than_the_features_allow(workspace, smoke_dict):
    set_key(smoke_dict, "sources", ["vae", "gan"])
    set_key(smoke_dict, "analysis.nearest_k", 400)
    (workspace / "params.yaml").write_text(yaml.safe_dump(smoke_dict, sort_keys=False))
    result = _analyse()
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: analysis.nearest_k: 400 needs at least 402 features, data/fid_ref.npz holds 300")


def test_split_scores_are_the_scores_of_disjoint_class_balanced_parts():
    from synthaug.metrics.prdc_metrics import precision_recall_density_coverage
    from synthaug.study.analysis import split_scores

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 4))
    labels = np.repeat(np.arange(4), 30)  # 30 a class, 3 parts: 10 a class in each
    features = rng.normal(size=(120, 4))
    out = split_scores(features, labels, ref, 5, 3)
    parts = [np.concatenate([np.flatnonzero(labels == c)[j::3] for c in range(4)]) for j in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(120))  # disjoint, every image once
    by_hand = [precision_recall_density_coverage(ref, features[p], 5) for p in parts]
    for key in ("coverage", "recall"):
        values = [h[key] for h in by_hand]
        assert out[f"{key}_split_mean"] == pytest.approx(np.mean(values))
        assert out[f"{key}_split_sd"] == pytest.approx(np.std(values, ddof=1))
    assert split_scores(features, labels, ref, 5, 1) == {}  # one part: nothing to spread
    assert split_scores(features, labels, ref, 5, 20) == {}  # parts of 6 < k + 2 features
