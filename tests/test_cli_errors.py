"""Bad input through the real command line: `python -m synthaug <cmd> --params <bad file>` exits 2 with one
`error:` line naming the culprit, and creates nothing (no data/, models/, metrics/, MLflow store).

A `python -m synthaug` process costs ~5 s of CPU, nearly all of it importing torch/torchvision. So one bad
params case and `--help` run as plain `python -m synthaug` subprocesses, and the other cases run in one
subprocess that imports the package once and then forks a child per case: each child runs `synthaug` as
`__main__` exactly as `python -m` does (same argv handling, its own cwd, environment, stdout/stderr files and
exit status), without paying for the imports again. Each bad params file goes to a different command, so the
wiring of every stage command is covered too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from synthaug.config import ConfigError, load_params
from synthaug.arms import parse_arm, study_items

from forkrun import FORK_DRIVER
from conftest import SMOKE, set_key

# name -> (command line, params changes, text the error line must contain)
CASES = {
    "unknown-key": (["prepare"], {"vae.latnt_dim": 4}, "unknown key 'vae.latnt_dim'"),
    "wrong-type": (["train", "vae"], {"vae.epochs": "ten"}, "vae.epochs"),
    "fraction-out-of-range": (["classify", "real", "--fraction", "0.5"], {"fractions": [0.5, 1.5]}, "fractions[1]"),
    "negative-beta": (["sample", "vae"], {"beta": -1.0}, "beta"),
    "unknown-dataset": (["fid-ref"], {"dataset.name": "mnist"}, "dataset.name"),
    "unknown-family": (["train", "nope"], {}, "unknown generator family 'nope'"),
    "unknown-source": (["sample", "nope"], {}, "unknown source 'nope'"),
    "unknown-source-in-arm": (["classify", "real+nope", "--fraction", "0.5"], {}, "arm 'real+nope'"),
}
PLAIN = "unknown-key"  # this case runs as a plain `python -m synthaug` subprocess
COMMANDS = ("prepare", "train", "invert", "sample", "fid-ref", "fid", "classify", "report")



def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(root), SYNTHAUG_THREADS="1", COLUMNS="200", NO_COLOR="1")
    return env


def _python(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case and --help; name -> (its folder, returncode, stdout, stderr)."""
    smoke = yaml.safe_load(SMOKE.read_text())
    logs = tmp_path_factory.mktemp("logs")
    cases = {}
    for name, (args, changes, _) in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        d = yaml.safe_load(yaml.safe_dump(smoke))
        for k, v in changes.items():
            set_key(d, k, v)
        (folder / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
        cases[name] = {"cwd": str(folder), "env": _env(folder), "args": [*args, "--params", "params.yaml"],
                       "stdout": str(logs / f"{name}.out"), "stderr": str(logs / f"{name}.err")}
    plain = cases.pop(PLAIN)
    forked = dict(cases)
    (logs / "cases.json").write_text(json.dumps(forked))
    (logs / "driver.py").write_text(FORK_DRIVER)
    help_dir = tmp_path_factory.mktemp("help")
    with ThreadPoolExecutor(max_workers=3) as pool:  # ~1 GB of RSS each
        f_plain = pool.submit(_python, ["-m", "synthaug", *plain["args"]], Path(plain["cwd"]), plain["env"])
        f_help = pool.submit(_python, ["-m", "synthaug", "--help"], help_dir, _env(help_dir))
        f_fork = pool.submit(_python, [str(logs / "driver.py"), str(logs / "cases.json")], logs, _env(logs))
        p, h, fk = f_plain.result(), f_help.result(), f_fork.result()
    assert fk.returncode == 0, fk.stderr[-3000:]
    codes = json.loads(fk.stdout.strip().splitlines()[-1])
    out = {PLAIN: (Path(plain["cwd"]), p.returncode, p.stdout, p.stderr), "help": (help_dir, h.returncode, h.stdout,
                                                                                  h.stderr)}
    for name, c in forked.items():
        out[name] = (Path(c["cwd"]), codes[name], Path(c["stdout"]).read_text(), Path(c["stderr"]).read_text())
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_error_line_and_no_output(results, name):
    folder, code, _, stderr = results[name]
    expected = CASES[name][2]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, stderr[-2000:]
    assert lines and lines[-1].startswith("error:"), stderr[-2000:]
    assert expected in lines[-1], lines[-1]
    assert "Traceback" not in stderr
    # nothing written: no data/, models/, metrics/, plots/, reports/, mlflow.db, mlruns/
    assert sorted(p.name for p in folder.iterdir()) == ["params.yaml"]


def test_params_errors_name_the_file(results):
    for name in ("unknown-key", "wrong-type", "fraction-out-of-range", "negative-beta", "unknown-dataset"):
        last = results[name][3].strip().splitlines()[-1]
        assert last.startswith("error: params.yaml: "), last


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


def test_study_items_match_the_dvc_matrices():
    """The report reads exactly the classify runs dvc.yaml's matrices define for these params."""
    params = load_params(SMOKE)
    items = study_items(params)
    n_src, n_f, n_seed = len(params.sources), len(params.fractions), len(params.classify.seeds)
    assert len(items) == len(set(items)) == n_seed * (n_f * (2 + n_src) + n_src)
    assert ("synth:ddim", None, 0) in items and ("real+all", 0.5, 0) in items
