"""README's recovery after a failing `dvc repro <stage>`: DVC removes the stage's outputs before it finds that
the stage cannot run (here its "Parameters 'beta' are missing" error), cached ones and the git-tracked `cache:
false` metrics and plots alike; `dvc checkout` and `git checkout -- metrics plots` bring all of them back.

A tiny DVC project with this project's kinds of outputs (a cached folder, a cached file, `cache: false` metrics
and plots), so that the check costs seconds, not a pipeline run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DVC_YAML = """\
stages:
  train:
    cmd: python stage.py
    params: [beta]
    outs: [data/real, models/model.bin]
    metrics: [{metrics/train.json: {cache: false}}]
    plots: [{plots/train.json: {cache: false}}]
"""
STAGE = """\
import json, os, yaml
beta = yaml.safe_load(open("params.yaml"))["beta"]
os.makedirs("data/real", exist_ok=True); os.makedirs("models", exist_ok=True)
os.makedirs("metrics", exist_ok=True); os.makedirs("plots", exist_ok=True)
open("data/real/train.npz", "w").write(f"images {beta}")
open("models/model.bin", "w").write(f"weights {beta}")
json.dump({"loss": beta}, open("metrics/train.json", "w"))
json.dump([{"step": 1, "loss": beta}], open("plots/train.json", "w"))
"""
OUTPUTS = ("data/real/train.npz", "models/model.bin", "metrics/train.json", "plots/train.json")


def _files(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in OUTPUTS if (root / rel).is_file()}


def test_dvc_checkout_and_git_checkout_restore_what_a_failed_repro_removed(tmp_path):
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))}
    env.update(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")

    def run(*cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert (proc.returncode == 0) == ok, f"{cmd}: {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc

    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "params.yaml").write_text("beta: 1.0\n")
    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "repro", "train")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "results")
    before = _files(tmp_path)
    assert len(before) == len(OUTPUTS)

    (tmp_path / "params.yaml").write_text("alpha: 1.0\n")  # a params file without the stage's `beta`
    failed = run(dvc, "repro", "train", ok=False)
    assert "beta" in failed.stderr + failed.stdout
    assert _files(tmp_path) == {}, "DVC no longer removes the outputs of a stage it cannot run: update README"

    # README's recovery: put the params back, then the cached outputs, then the git-tracked metrics and plots
    run("git", "checkout", "--", "params.yaml")
    run(dvc, "checkout")
    run("git", "checkout", "--", "metrics", "plots")
    assert _files(tmp_path) == before
    assert "Data and pipelines are up to date" in run(dvc, "status").stdout
