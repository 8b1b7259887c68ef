"""`python -m synthaug compare`: every experiment's headline figures, one row a figure, in blocks that fit a width."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from synthaug.stages.compare import columns, table


def _rev(rev: str, name: str | None, figures: dict) -> dict:
    """One row as `dvc exp show --json` (DVC 3) prints it."""
    return {"rev": rev, "name": name, "error": None, "experiments": None,
            "data": {"rev": rev, "params": {}, "metrics": {"metrics/headline.json": {"data": figures}}}}


SHOWN = [
    _rev("workspace", None, {"headline.fid.vae": 32.0, "headline.report_commit": "c0ffee1"}),
    {**_rev("980ee8e4dd6fcdb3c2ad56eb92f8c41381e78dfd", "main",
            {"headline.fid.vae": 40.0, "headline.gain.real+vae.f0.005": 0.0123456, "headline.report_commit": "abc"}),
     "experiments": [{"name": "low-beta", "executor": None, "revs": [
         _rev("c056a1e2dc6e9a741e92b1f4780e2983c991c32d", "low-beta", {"headline.fid.vae": 32.0})]}]},
]


def test_one_column_per_experiment_and_one_row_per_figure():
    cols = columns(SHOWN)
    assert [name for name, _ in cols] == ["workspace", "main", "low-beta"]
    lines = table(cols).splitlines()
    assert lines[0].split() == ["workspace", "main", "low-beta"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["fid.vae"] == ["32", "40", "32"]
    assert rows["gain.real+vae.f0.005"] == ["-", "0.01235", "-"]  # 4 significant digits; "-": not measured there
    assert rows["report_commit"] == ["c0ffee1", "abc", "-"]


def test_columns_that_do_not_fit_the_width_go_to_the_next_block():
    wide = table(columns(SHOWN), keep="fid|report")
    narrow = table(columns(SHOWN), keep="fid|report", width=35)
    assert "\n\n" not in wide and all(len(line) <= 35 for line in narrow.splitlines())
    blocks = narrow.split("\n\n")
    assert len(blocks) == 2 and blocks[1].splitlines()[0].split() == ["low-beta"]
    assert "fid.vae" in blocks[1] and "gain" not in narrow  # every block repeats the figure names
    assert "matching 'nothing'" in table(columns(SHOWN), keep="nothing")


def test_the_command_reads_a_real_dvc_experiment(tmp_path):
    """A scratch DVC project whose stage writes metrics/headline.json from `beta`, one `dvc exp run -S beta=0.8`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO / "src")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    (tmp_path / "metrics").mkdir()
    (tmp_path / "make.py").write_text(
        "import json, yaml\nb = yaml.safe_load(open('params.yaml'))['beta']\n"
        "json.dump({'headline.fid.vae': 40 * b}, open('metrics/headline.json', 'w'))\n")
    (tmp_path / "params.yaml").write_text("beta: 1.0\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  report:\n    cmd: python make.py\n    deps: [make.py]\n"
                                       "    params: [beta]\n    metrics:\n      - metrics/headline.json:\n"
                                       "          cache: false\n")
    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "repro", "-q")
    run(*git, "add", "-A")
    run(*git, "commit", "-qm", "base")
    run("dvc", "exp", "run", "-q", "-S", "beta=0.8", "-n", "low-beta")
    out = run(sys.executable, "-m", "synthaug", "compare")
    header, fid = out.splitlines()[:2]
    assert header.split()[0] == "workspace" and header.split()[-1] == "low-beta"
    assert fid.split() == ["fid.vae", "32", "40", "32"]
    # a workspace DVC cannot read is said, not shown as a column of dashes without a word
    (tmp_path / "dvc.yaml").write_text("stages: {report: [broken\n")
    proc = subprocess.run([sys.executable, "-m", "synthaug", "compare"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr.startswith("warning: dvc could not read workspace: "), proc.stderr
    assert proc.stdout.splitlines()[1].split() == ["fid.vae", "-", "40", "32"]
