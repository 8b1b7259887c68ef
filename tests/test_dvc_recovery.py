"""README's recovery after a failing `dvc repro <stage>`: DVC removes the stage's outputs before it finds that
the stage cannot run (here its "Parameters 'beta' are missing" error), cached ones and the git-tracked `cache:
false` metrics and plots alike; `dvc checkout` and `git checkout -- metrics plots` bring all of them back.

A tiny DVC project with this project's kinds of stages and outputs (a `matrix` stage over `study_seeds` whose item
`train@0` writes study seed 0's chain: a cached folder, a cached file, `cache: false` metrics and plots under
study0), so that the check costs seconds, not a pipeline run.
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
    matrix:
      study: ${study_seeds}
    cmd: python stage.py ${item.study}
    params: [beta]
    outs:
      - data/synthetic/study${item.study}
      - models/study${item.study}/model.bin
    metrics:
      - metrics/train/study${item.study}.json:
          cache: false
    plots:
      - plots/train/study${item.study}.json:
          cache: false
"""
STAGE = """\
import json, os, sys, yaml
beta, k = yaml.safe_load(open("params.yaml"))["beta"], sys.argv[1]
for d in (f"data/synthetic/study{k}", f"models/study{k}", "metrics/train", "plots/train"):
    os.makedirs(d, exist_ok=True)
open(f"data/synthetic/study{k}/shard-00000.npz", "w").write(f"images {beta}")
open(f"models/study{k}/model.bin", "w").write(f"weights {beta}")
json.dump({"loss": beta}, open(f"metrics/train/study{k}.json", "w"))
json.dump([{"step": 1, "loss": beta}], open(f"plots/train/study{k}.json", "w"))
"""
OUTPUTS = ("data/synthetic/study0/shard-00000.npz", "models/study0/model.bin", "metrics/train/study0.json",
           "plots/train/study0.json")


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
    (tmp_path / "params.yaml").write_text("study_seeds: [0]\nbeta: 1.0\n")
    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "repro", "train@0")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "results")
    before = _files(tmp_path)
    assert len(before) == len(OUTPUTS)

    (tmp_path / "params.yaml").write_text("study_seeds: [0]\nalpha: 1.0\n")  # without the stage's `beta`
    failed = run(dvc, "repro", "train@0", ok=False)
    assert "beta" in failed.stderr + failed.stdout
    assert _files(tmp_path) == {}, "DVC no longer removes the outputs of a stage it cannot run: update README"

    # README's recovery: put the params back, then the cached outputs, then the git-tracked metrics and plots
    run("git", "checkout", "--", "params.yaml")
    run(dvc, "checkout")
    run("git", "checkout", "--", "metrics", "plots")
    assert _files(tmp_path) == before
    assert "Data and pipelines are up to date" in run(dvc, "status").stdout
