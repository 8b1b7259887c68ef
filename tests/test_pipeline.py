"""End to end: the real `dvc repro` on configs/smoke.yaml in a temporary git repo, then a beta sweep.

Checks what a user relies on: metrics files and report exist, MLflow holds a run per stage item with params,
metrics and the sample grid, and `dvc exp run -S beta=0.8` re-runs exactly the VAE chain and its downstream.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("vae", "gan", "lsgan", "wgan_gp", "diffusion")
SOURCES = ("vae", "gan", "lsgan", "wgan_gp", "ddpm", "ddim", "dinv")
GANS = ("gan", "lsgan", "wgan_gp")

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
    for stage in ("prepare", "fid_ref", "invert@0", "report", "analyse", "gradcam", *(f"train_{f}@0" for f in FAMILIES),
                  *(f"sample_{src}@0" for src in SOURCES), *(f"fid@{src}-0" for src in SOURCES)):
        assert f"Running stage '{stage}'" in out
    for src in SOURCES:
        fid = json.loads((dest / f"metrics/fid/study0/{src}.json").read_text())
        assert math.isfinite(fid["fid"]) and fid["fid"] > 0 and fid["dims"] == 64, src
        quality = json.loads((dest / f"metrics/sample/study0/{src}.json").read_text())
        assert quality["count"] == 300 and quality["real_diversity"] > 0 and quality["diversity"] > 0, src
        assert 0.0 <= quality["saturated_share"] <= 1.0 and 0.0 <= quality["real_saturated_share"] <= 1.0, src
    records = [json.loads(p.read_text()) for p in (dest / "metrics/classify/study0").glob("*/*.json")]
    assert {r["arm"] for r in records} == {"real", "real+all", *(f"real+{s}" for s in SOURCES),
                                           *(f"synth:{s}" for s in SOURCES)}
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in records)
    # each arm got the real subset and the synthetic images it should
    subsets = json.loads((dest / "data/fractions/study0.json").read_text())["fractions"]
    for r in records:
        want_real = 0 if r["fraction"] is None else len(subsets[repr(float(r["fraction"]))])
        want_synth = {"real": 0, "real+all": 300 * len(SOURCES)}.get(r["arm"], 300)
        assert (r["real_images"], r["synthetic_images"]) == (want_real, want_synth), r
    assert {(r["fraction"], r["seed"]) for r in records if r["arm"] == "real"} == {
        (f, s) for f in (0.25, 0.5, 1.0) for s in (0, 1)}
    assert {r["fraction"] for r in records if r["arm"] == "real+vae"} == {0.5, 1.0}
    summary = json.loads((dest / "reports/summary.json").read_text())
    assert {(c["arm"], c["fraction"]) for c in summary["cells"]} >= {("real", 0.25), ("real+vae", 1.0),
                                                                    ("synth:vae", None)}
    assert all(c["seeds"] == [0, 1] for c in summary["cells"])
    assert all(math.isfinite(c["gain_ci95"]) for c in summary["cells"] if "gain" in c)
    md = (dest / "reports/summary.md").read_text()
    assert md.splitlines()[2] == "## The answer" and "generators saw 721 real images (0.5)" in md
    for png in ("accuracy_vs_real_images", "gain_per_source", "quality_vs_gain"):
        assert (dest / f"reports/{png}.png").stat().st_size > 1000, png
    fidelity = json.loads((dest / "metrics/fidelity/study0.json").read_text())
    assert all(0.0 <= fidelity[s] <= 1.0 for s in (*SOURCES, "real_test"))
    manifest = json.loads((dest / "data/synthetic/study0/vae/manifest.json").read_text())
    assert manifest["per_class"] == [30] * 10
    analysis = json.loads((dest / "metrics/analysis.json").read_text())
    for src in SOURCES:  # smoke: 20 images a class <= dims 64, so no per-class FID (README "Analyses beside FID")
        assert 0.0 <= analysis[f"precision.{src}"] <= 1.0 and math.isfinite(analysis[f"kid_class_mean.{src}"]), src
        assert analysis[f"fid_class_computed.{src}"] == 0 and f"fid_class_mean.{src}" not in analysis, src
    assert (dest / "reports/analysis.png").stat().st_size > 1000
    # every arm kept its classifier at the first fraction, first seed, and gradcam compared it with real's
    gradcam = json.loads((dest / "metrics/gradcam.json").read_text())
    for slug in ("real", "real+all", *(f"{kind}{s}" for kind in ("real+", "synth-") for s in SOURCES)):
        assert (dest / f"models/study0/classify/{slug}.pt").is_file(), slug
        assert 0.0 <= gradcam[f"foreground_share.{slug}"] <= 1.0 and -1.0 <= gradcam[f"agreement_with_real.{slug}"] <= 1.0
    assert gradcam["agreement_with_real.real"] == 1.0
    assert all((dest / f"reports/gradcam/{s}.png").stat().st_size > 1000 for s in SOURCES)
    assert "## Where the classifiers look: Grad-CAM" in md


def test_generators_see_exactly_the_generator_fraction_subset(repro):
    """Every generator and the inversion trained on the nested generator_fraction subset, no other image."""
    from mlflow.tracking import MlflowClient

    dest, _, _ = repro
    subsets = json.loads((dest / "data/fractions/study0.json").read_text())["fractions"]
    subset = np.asarray(subsets["0.5"], dtype=np.int64)
    assert set(subset) <= set(subsets["1.0"]) and len(subset) < len(subsets["1.0"])
    digest = hashlib.sha256(np.sort(subset).tobytes()).hexdigest()[:16]
    client = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow.db'}")
    exp = client.get_experiment_by_name("synthaug-digits")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=1000)}
    for family in FAMILIES:
        logged = runs[f"train_{family}@0"].data.params
        assert logged["train_indices_sha256"] == digest and logged["train_images"] == str(len(subset)), family
        assert json.loads((dest / f"metrics/train/study0/{family}.json").read_text())["train_images"] == len(subset)
    inverted = runs["invert@0"].data.params  # groups drawn from the subset: a subset of it
    assert inverted["generator_fraction"] == "0.5" and int(inverted["train_images"]) <= len(subset)


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
    train = by_name["train_vae@0"]
    assert train.data.params["vae.latent_dim"] == "8" and "loss" in train.data.metrics
    assert train.data.tags["mlflow.source.git.commit"]
    for source in SOURCES:  # one root-level name in every sample run: MLflow's compare view pairs the grids
        assert "grid.png" in {a.path for a in client.list_artifacts(by_name[f"sample_{source}@0"].info.run_id)}, source
    assert by_name["fid@vae-0"].data.metrics["fid"] > 0
    parent = by_name["classify_real@0"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.info.run_name for r in children} == {f"classify_real@0 f{f}_s{s}" for f in (0.25, 0.5, 1.0)
                                                    for s in (0, 1)}
    assert all("test_accuracy" in r.data.metrics for r in children)
    assert "gain.real_plus_vae.f0.5" in by_name["report"].data.metrics  # MLflow spells + as _plus_
    for sampler in ("ddpm", "ddim", "dinv"):
        assert by_name[f"sample_{sampler}@0"].data.metrics["seconds_per_image"] > 0
    invert = by_name["invert@0"]
    # with the "follows its group" figure (issue 13), in MLflow and in metrics/invert.json
    follows = {"follows_margin", "follows_margin_ci95", "follows_share"}
    assert {"loss", "loss_learned", "loss_class_embedding"} | follows <= set(invert.data.metrics)
    assert follows <= set(json.loads((dest / "metrics" / "invert" / "study0.json").read_text()))
    assert "loss_curves.png" in {a.path for a in client.list_artifacts(invert.info.run_id)}
    assert "grid.png" in {a.path for a in client.list_artifacts(invert.info.run_id)}
    assert by_name["sample_dinv@0"].data.params["sampler.sampler"] == "ddim"
    assert "wasserstein" in " ".join(by_name["train_wgan_gp@0"].data.metrics)
    assert {"gradcam.png", "gradcam"} <= {a.path for a in client.list_artifacts(by_name["gradcam"].info.run_id)}
    for family in FAMILIES:  # one name: the compare view pairs the curves
        logged = {a.path for a in client.list_artifacts(by_name[f"train_{family}@0"].info.run_id)}
        assert "loss_curves.png" in logged and (family not in GANS or "interpolation.png" in logged), logged


def _digests(root: Path, paths: list[str]) -> dict[str, str]:
    files = sorted(f for p in paths for f in ([root / p] if (root / p).is_file() else (root / p).rglob("*"))
                   if f.is_file())
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_dvc_remote_round_trip_restores_every_output(repro, tmp_path):
    """Push data, checkpoints and shards to a folder remote, lose the cache and the outputs, pull them back."""
    dest, env, _ = repro
    outputs = ["data/real", "data/fractions", "data/fid_ref.npz", "data/synthetic", "models", "reports"]
    before = _digests(dest, outputs)
    assert any(k.startswith("models/") for k in before) and any(k.startswith("data/synthetic/") for k in before)
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(tmp_path / "remote")], dest, env)
    run(["dvc", "push"], dest, env)
    shutil.rmtree(dest / ".dvc" / "cache")
    for p in ("data/real", "data/synthetic", "models"):
        shutil.rmtree(dest / p)
    (dest / "data/fid_ref.npz").unlink()
    run(["dvc", "pull"], dest, env)
    assert _digests(dest, outputs) == before
    assert "up to date" in run(["dvc", "status"], dest, env)


def test_beta_sweep_reruns_only_the_vae_chain(repro):
    dest, env, _ = repro
    out = run(["dvc", "exp", "run", "-S", "beta=0.8"], dest, env)
    ran = stages_run(out)
    expected = {"train_vae@0", "sample_vae@0", "fid@vae-0", "classify_mixed@vae-0", "classify_synth@vae-0",
                "classify_all@0", "fidelity@0", "analyse", "gradcam", "report"}
    assert ran == expected, ran

    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env))
    exps = [e for base in shown for e in (base.get("experiments") or [])]
    rows = [r for e in exps for r in e.get("revs", [])] or exps
    found = [r for r in rows if r.get("data", {}).get("params", {}).get("params.yaml", {}).get("data", {})
             .get("beta") == 0.8]
    assert found, shown
    metrics = found[0]["data"]["metrics"]
    assert "fid" in metrics["metrics/fid/study0/vae.json"]["data"]
    assert "s0" in metrics["metrics/classify/study0/real+vae.json"]["data"]["f0.5"]
    assert {"headline.fid.vae", "headline.gain.real+vae.f0.5"} <= set(metrics["metrics/headline.json"]["data"])
    # README's one-screen comparison: the headline columns, not the hundreds of per-stage ones
    table = run(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", "Experiment|headline"], dest, env)
    header = [h.rsplit(":", 1)[-1] for h in table.splitlines()[0].split(",")]  # with or without a file prefix
    assert "headline.fid.vae" in header and "fid" not in header and len(header) < 80, header

    # MLflow: the experiment's stage runs are nested under one group run, which carries the headline figures
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synthaug-digits").experiment_id], max_results=1000)
    groups = [r for r in runs if r.data.tags.get("synthaug.dvc_exp")]
    assert len(groups) == 1 and groups[0].info.run_name.startswith("dvc exp "), [g.info.run_name for g in groups]
    nested = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == groups[0].info.run_id}
    assert {"train_vae@0", "sample_vae@0", "fid@vae-0", "fidelity@0", "analyse", "report"} <= nested, nested
    assert sum(n.startswith("classify_") and " " not in n for n in nested) == 3, nested  # real+vae, synth:vae, all
    assert {"fid.vae", "gain.real_plus_vae.f0.5"} <= set(groups[0].data.metrics)


def test_the_report_refuses_an_answer_from_a_mixed_state(repro):
    """sample_vae@0's shards replaced by hand after its classifiers ran (another sample.batch_size, so other noise;
    without DVC): the report
    writes no answer lines, names the stale stage items and the command that refreshes them; with the shards
    back, the answer returns and the header says every input is current."""
    dest, env, _ = repro
    summary = dest / "reports" / "summary.md"
    assert "every record descends from the current upstream outputs" in summary.read_text()
    headline = json.loads((dest / "metrics" / "headline.json").read_text())
    assert headline["headline.inputs_current"] == 1
    assert re.fullmatch(r"[0-9a-f]{12}\+?", headline["headline.report_commit"])  # the clone's commit ("+": edited)
    params, shards = dest / "params.yaml", dest / "data" / "synthetic" / "study0" / "vae"
    kept_params = params.read_text()
    backup = dest.parent / "vae-shards"
    shutil.copytree(shards, backup)
    try:
        other = yaml.safe_load(kept_params)
        other["sample"]["batch_size"] += 1  # batch i draws from its own seeded noise: other batches, other images
        params.write_text(yaml.safe_dump(other, sort_keys=False))
        run([sys.executable, "-m", "synthaug", "sample", "vae"], dest, env)
        params.write_text(kept_params)
        run([sys.executable, "-m", "synthaug", "report"], dest, env)
        text = summary.read_text()
        assert "No answer: these records come from mixed upstream states" in text
        assert "Helps significantly" not in text and "No source helps" not in text
        for item in ("classify_mixed@vae-0", "classify_synth@vae-0", "classify_all@0", "fid@vae-0", "fidelity@0",
                     "analyse", "gradcam"):
            assert f"- `{item}`: " in text, item
        assert "- `classify_mixed@gan-0`" not in text and "- `classify_real@0`" not in text
        assert "dvc repro --force --single-item analyse classify_all@0 classify_mixed@vae-0" in text
        headline = json.loads((dest / "metrics" / "headline.json").read_text())
        assert headline.pop("headline.report_commit") and headline == {"headline.inputs_current": 0}
    finally:
        params.write_text(kept_params)
        shutil.rmtree(shards)
        shutil.copytree(backup, shards)
    run([sys.executable, "-m", "synthaug", "report"], dest, env)
    assert "every record descends from the current upstream outputs" in summary.read_text()


def test_a_second_study_seed_adds_its_own_chain_and_the_intervals_cover_it(repro):
    """`study_seeds: [0, 1]` (the GPU profiles' design, at smoke size): exactly study seed 1's chain runs (its own
    nested subsets, generators, inversion, samples and classifiers), with prepare and the report; nothing of study
    seed 0 re-runs. The report's intervals are then over the two chains, and it says so."""
    dest, env, _ = repro
    out = run(["dvc", "exp", "run", "-S", "study_seeds=[0,1]"], dest, env)
    chain1 = {*(f"train_{f}@1" for f in FAMILIES), "invert@1", *(f"sample_{s}@1" for s in SOURCES),
              *(f"fid@{s}-1" for s in SOURCES), "classify_real@1", *(f"classify_mixed@{s}-1" for s in SOURCES),
              *(f"classify_synth@{s}-1" for s in SOURCES), "classify_all@1", "fidelity@1"}
    ran = stages_run(out)
    assert ran == chain1 | {"prepare", "report"}, ran ^ (chain1 | {"prepare", "report"})
    subsets = [json.loads((dest / f"data/fractions/study{k}.json").read_text())["fractions"] for k in (0, 1)]
    assert {k: len(v) for k, v in subsets[0].items()} == {k: len(v) for k, v in subsets[1].items()}
    assert subsets[0]["0.5"] != subsets[1]["0.5"] and set(subsets[1]["0.5"]) <= set(subsets[1]["1.0"])
    trained = [json.loads((dest / f"metrics/train/study{k}/vae.json").read_text()) for k in (0, 1)]
    assert trained[0]["train_images"] == trained[1]["train_images"] == len(subsets[1]["0.5"])
    records = [json.loads(p.read_text()) for p in (dest / "metrics/classify/study1").glob("*/*.json")]
    assert records and all(r["study_seed"] == 1 for r in records)
    summary = json.loads((dest / "reports/summary.json").read_text())
    assert summary["context"]["study_seeds"] == [0, 1]
    assert all(c["seeds"] == [0, 1] for c in summary["cells"])  # the replicates are the chains
    md = (dest / "reports/summary.md").read_text()
    assert "The intervals are over 2 study seeds" in md and "every record descends from the current" in md
