"""The `gradcam` stage on a tiny workspace: real digits and classifier weights as the classify stages keep them
(`models/study0/classify/<arm>.pt`, study seed 0's chain); `real+vae` carries the very weights of `real`,
`synth:vae` and `real+all` others."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import enter_workspace, set_key


def _weights(path, arm: str, seed: int) -> None:
    from synthaug.nets.resnet import build_classifier
    from synthaug.core.storage import save_checkpoint

    torch.manual_seed(seed)
    model = build_classifier("resnet8", 1, 10)
    save_checkpoint(path, {"model": model.state_dict(), "arch": "resnet8", "arm": arm, "channels": 1,
                           "num_classes": 10, "fraction": None if arm.startswith("synth:") else 0.5, "seed": 0,
                           "real_images": 0, "test_accuracy": 0.1})


@pytest.fixture()
def workspace(tmp_path, smoke_dict, monkeypatch):
    from synthaug.data.real import load_dataset, write_prepared

    write_prepared(load_dataset("digits", None, 32), tmp_path / "data" / "real")
    models = tmp_path / "models" / "study0" / "classify"
    for arm, slug, seed in (("real", "real", 0), ("real+vae", "real+vae", 0), ("synth:vae", "synth-vae", 1),
                            ("real+all", "real+all", 2)):
        _weights(models / f"{slug}.pt", arm, seed)
    set_key(smoke_dict, "sources", ["vae"])
    return enter_workspace(tmp_path, smoke_dict, monkeypatch)


def _gradcam(*args: str):
    from synthaug.cli import app

    return CliRunner().invoke(app, ["gradcam", *args, "--params", "params.yaml"])


def test_gradcam_compares_every_arm_with_real_on_the_same_images(workspace, smoke_dict):
    result = _gradcam()
    assert result.exit_code == 0, result.output
    m = json.loads((workspace / "metrics" / "gradcam.json").read_text())
    assert m["images"] == 10 * smoke_dict["gradcam"]["images_per_class"]
    for slug in ("real", "real+vae", "synth-vae", "real+all"):
        assert 0.0 <= m[f"foreground_share.{slug}"] <= 1.0 and 0.0 <= m[f"entropy.{slug}"] <= 1.0, slug
        assert 0.0 <= m[f"empty_share.{slug}"] < 1.0, slug
    # the same weights as real: the same maps
    assert m["agreement_with_real.real"] == 1.0 and m["agreement_with_real.real+vae"] == 1.0
    assert m["foreground_share_vs_real.real+vae"] == 0.0 and m["foreground_share_vs_real_ci95.real+vae"] == 0.0
    # other weights: other maps
    assert m["agreement_with_real.synth-vae"] < 0.99 and math.isfinite(m["foreground_share_vs_real_ci95.synth-vae"])
    for png in ("gradcam.png", "gradcam/vae.png"):
        assert (workspace / "reports" / png).stat().st_size > 1000, png
    assert "gradcam@synth:vae: foreground share" in result.output


def test_a_missing_classifier_names_the_stage_that_makes_it(workspace):
    (workspace / "models" / "study0" / "classify" / "synth-vae.pt").unlink()
    result = _gradcam()
    assert result.exit_code == 2
    assert "models/study0/classify/synth-vae.pt: not found" in result.output
    assert "run the `classify_synth@vae-0` stage first: dvc repro classify_synth@vae-0" in result.output


def test_study_picks_the_chain_whose_classifiers_it_reads(workspace, smoke_dict):
    """`--study K` reads study seed K's kept weights (models/study<K>/classify); a K not in study_seeds is bad input."""
    set_key(smoke_dict, "study_seeds", [0, 3])
    (workspace / "params.yaml").write_text(yaml.safe_dump(smoke_dict, sort_keys=False))
    result = _gradcam("--study", "3")
    assert result.exit_code == 2
    assert ("models/study3/classify/real.pt: not found (run the `classify_real@3` stage first: "
            "dvc repro classify_real@3)") in result.output
    result = _gradcam("--study", "5")
    assert result.exit_code == 2 and "--study 5: not among study_seeds [0, 3]" in result.output
    assert not (workspace / "metrics").exists() and not (workspace / "reports").exists()
