"""The command line itself: `--help` lists every stage command, and a bad params file through a plain
`python -m synthaug` process (not the catalogue's forked children) exits 2 with one `error:` line naming the
file and key, creating nothing. The full list of bad inputs and faults is tests/fault_cases.py (CATALOGUE)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from synthaug.core.config import ConfigError, load_params
from synthaug.study.arms import parse_arm, study_arms, study_items

from conftest import SMOKE, set_key

PLAIN = (["prepare"], {"vae.latnt_dim": 4}, "unknown key 'vae.latnt_dim'")  # command, params changes, error
COMMANDS = ("prepare", "train", "invert", "sample", "fid-ref", "fid", "classify", "fidelity", "analyse", "report")



def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(root), SYNTHAUG_THREADS="1", COLUMNS="200", NO_COLOR="1")
    return env


def _python(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The bad params case and --help, as two real `python -m synthaug` processes in parallel."""
    args, changes, _ = PLAIN
    folder, help_dir = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("help")
    d = yaml.safe_load(SMOKE.read_text())
    for k, v in changes.items():
        set_key(d, k, v)
    (folder / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    with ThreadPoolExecutor(max_workers=2) as pool:  # ~1 GB of RSS each
        f_plain = pool.submit(_python, ["-m", "synthaug", *args, "--params", "params.yaml"], folder, _env(folder))
        f_help = pool.submit(_python, ["-m", "synthaug", "--help"], help_dir, _env(help_dir))
        p, h = f_plain.result(), f_help.result()
    return {"plain": (folder, p.returncode, p.stdout, p.stderr), "help": (help_dir, h.returncode, h.stdout, h.stderr)}


def test_bad_params_exit_2_with_one_error_line_naming_file_and_key_and_no_output(results):
    folder, code, _, stderr = results["plain"]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, stderr[-2000:]
    assert lines and lines[-1].startswith("error: params.yaml: "), stderr[-2000:]
    assert PLAIN[2] in lines[-1], lines[-1]
    assert "Traceback" not in stderr
    # nothing written: no data/, models/, metrics/, plots/, reports/, mlflow.db, mlruns/
    assert sorted(p.name for p in folder.iterdir()) == ["params.yaml"]


def test_help_lists_every_command(results):
    _, code, stdout, stderr = results["help"]
    assert code == 0, stderr[-2000:]
    for cmd in COMMANDS:
        assert re.search(rf"(^|[\s│|]){re.escape(cmd)}\s{{2,}}\S", stdout, re.M), f"{cmd} not in help"


def test_parse_arm():
    params = load_params(SMOKE)
    assert parse_arm("real", params) == (True, [])
    assert parse_arm("real+vae", params) == (True, ["vae"])
    assert parse_arm("synth:vae", params) == (False, ["vae"])
    assert parse_arm("real+all", params) == (True, list(params.sources))
    with pytest.raises(ConfigError, match="unknown arm 'banana'"):
        parse_arm("banana", params)
    with pytest.raises(ConfigError, match="arm 'synth:nope': source 'nope' is not in `sources`"):
        parse_arm("synth:nope", params)


def test_study_items_match_the_dvc_stages():
    """The report reads exactly the classify runs that dvc.yaml's per-arm stages train for these params."""
    params = load_params(SMOKE)
    items = study_items(params)
    n_src, n_f, n_seed = len(params.sources), len(params.fractions), len(params.classify.seeds)
    n_curve = len(set(params.fractions) | set(params.real_fractions))
    assert len(items) == len(set(items)) == n_seed * (n_curve + n_f * (1 + n_src) + n_src)
    assert ("synth:ddim", None, 0) in items and ("real+all", 0.5, 1) in items and ("real", 0.25, 0) in items
    assert ("real+vae", 0.25, 0) not in items  # the extra curve points are the real arm's alone
    assert study_arms(params) == ["real", "real+all", *(f"real+{s}" for s in params.sources),
                                  *(f"synth:{s}" for s in params.sources)]
