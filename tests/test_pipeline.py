"""End to end: the real `dvc repro` on configs/smoke.yaml in a temporary git repo, then a beta sweep.

Checks what a user relies on: metrics files and report exist, MLflow holds a run per stage item with params,
metrics and the sample grid, and `dvc exp run -S beta=0.8` re-runs exactly the VAE chain and its downstream.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("vae", "gan", "lsgan", "wgan_gp", "diffusion")
SOURCES = ("vae", "gan", "lsgan", "wgan_gp", "ddpm", "ddim", "dinv")

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A fresh git repo holding this project's files (as in a clone), on the smoke profile."""
    dest = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    shutil.copy(dest / "configs" / "smoke.yaml", dest / "params.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(dest / "src")  # the clone's code, not the editable install's
    git = ["git", "-c", "user.email=test@synthaug", "-c", "user.name=test"]
    run(["git", "init", "-q"], dest, env)
    run(git + ["add", "-A"], dest, env)
    run(git + ["commit", "-qm", "smoke"], dest, env)
    return dest, env


@pytest.fixture(scope="module")
def repro(project) -> tuple[Path, dict, str]:
    dest, env = project
    out = run(["dvc", "repro"], dest, env)
    git = ["git", "-c", "user.email=test@synthaug", "-c", "user.name=test"]
    run(git + ["add", "-A"], dest, env)
    run(git + ["commit", "-qm", "baseline results"], dest, env)
    return dest, env, out


def test_repro_writes_metrics_and_report(repro):
    dest, _, out = repro
    for stage in ("prepare", "fid_ref", "invert", "report", *(f"train@{f}" for f in FAMILIES),
                  *(f"{s}@{src}" for s in ("sample", "fid") for src in SOURCES)):
        assert f"Running stage '{stage}'" in out
    for src in SOURCES:
        fid = json.loads((dest / f"metrics/fid/{src}.json").read_text())
        assert math.isfinite(fid["fid"]) and fid["fid"] > 0 and fid["dims"] == 64, src
        quality = json.loads((dest / f"metrics/sample/{src}.json").read_text())
        assert quality["count"] == 300 and quality["real_diversity"] > 0 and quality["diversity"] > 0, src
    arms = {json.loads(p.read_text())["arm"] for p in (dest / "metrics/classify").glob("*.json")}
    assert arms == {"real", "real+all", *(f"real+{s}" for s in SOURCES), *(f"synth:{s}" for s in SOURCES)}
    for p in (dest / "metrics/classify").glob("*.json"):
        acc = json.loads(p.read_text())["test_accuracy"]
        assert 0.0 <= acc <= 1.0
    summary = json.loads((dest / "reports/summary.json").read_text())
    assert {(c["arm"], c["fraction"]) for c in summary["cells"]} >= {("real", 0.5), ("real+vae", 1.0),
                                                                    ("synth:vae", None)}
    assert "| real+vae | 0.5 |" in (dest / "reports/summary.md").read_text()
    assert (dest / "reports/accuracy_vs_fraction.png").stat().st_size > 1000
    manifest = json.loads((dest / "data/synthetic/vae/manifest.json").read_text())
    assert manifest["per_class"] == [30] * 10


def test_mlflow_has_a_run_per_stage_item(repro):
    from mlflow.tracking import MlflowClient

    dest, _, out = repro
    client = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow.db'}")
    exp = client.get_experiment_by_name("synthaug-digits")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=500)
    by_name = {r.info.run_name: r for r in runs}
    assert stages_run(out) <= {r.data.tags["dvc.stage"] for r in runs}
    assert all(r.info.status == "FINISHED" for r in runs)
    train = by_name["train@vae"]
    assert train.data.params["vae.latent_dim"] == "8" and "loss" in train.data.metrics
    assert train.data.tags["mlflow.source.git.commit"]
    sample = by_name["sample@vae"]
    assert "vae.png" in {a.path for a in client.list_artifacts(sample.info.run_id)}
    assert by_name["fid@vae"].data.metrics["fid"] > 0
    assert "test_accuracy" in by_name["classify@real_f0.5_s0"].data.metrics
    for sampler in ("ddpm", "ddim", "dinv"):
        assert by_name[f"sample@{sampler}"].data.metrics["seconds_per_image"] > 0
    invert = by_name["invert"]
    assert {"loss", "loss_learned", "loss_class_embedding"} <= set(invert.data.metrics)
    assert {"invert.png", "dinv.png"} <= {a.path for a in client.list_artifacts(invert.info.run_id)}
    assert by_name["sample@dinv"].data.params["sampler.sampler"] == "ddim"
    assert "wasserstein" in " ".join(by_name["train@wgan_gp"].data.metrics)
    for gan in ("gan", "lsgan", "wgan_gp"):
        logged = {a.path for a in client.list_artifacts(by_name[f"train@{gan}"].info.run_id)}
        assert {"interpolation.png", f"{gan}.png"} <= logged, logged


def test_beta_sweep_reruns_only_the_vae_chain(repro):
    dest, env, _ = repro
    out = run(["dvc", "exp", "run", "-S", "beta=0.8"], dest, env)
    ran = stages_run(out)
    expected_prefixes = ("train@vae", "sample@vae", "fid@vae", "classify_mixed@vae-", "classify_synth@vae-",
                         "classify_all@", "report")
    assert ran, out
    assert all(s.startswith(expected_prefixes) for s in ran), ran
    assert {"train@vae", "sample@vae", "fid@vae", "report"} <= ran
    assert not ran & {"prepare", "fid_ref"} and not any(s.startswith("classify_real@") for s in ran)

    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env))
    exps = [e for base in shown for e in (base.get("experiments") or [])]
    rows = [r for e in exps for r in e.get("revs", [])] or exps
    found = [r for r in rows if r.get("data", {}).get("params", {}).get("params.yaml", {}).get("data", {})
             .get("beta") == 0.8]
    assert found, shown
    metrics = found[0]["data"]["metrics"]
    assert "fid" in metrics["metrics/fid/vae.json"]["data"]
    assert "test_accuracy" in metrics["metrics/classify/real+vae_f0.5_s0.json"]["data"]
