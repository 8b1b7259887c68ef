"""Shared fixtures: one CPU thread (the test machine's cores are shared), fp32 runtime, params files."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

torch.set_num_threads(1)
# Every torch process of the session on one thread (tests and the stages they start), unless set otherwise.
# Without it make_runtime gives a test its share of the cores among the synthaug stages running at that moment
# (runtime.stage_threads): 1 or 2 threads depending on which end-to-end stage runs beside it, so two runs that
# must be equal (test_gan's resume test) differed in the last float bit, and 2-thread tests beside the
# end-to-end worker oversubscribed the 2 cores.
os.environ.setdefault("SYNTHAUG_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture()
def runtime(monkeypatch):
    """Deterministic fp32 CPU runtime on one thread (make_runtime sets threads from SYNTHAUG_THREADS)."""
    from synthaug.core.runtime import make_runtime

    monkeypatch.setenv("SYNTHAUG_THREADS", "1")
    return make_runtime("cpu", "fp32")


@pytest.fixture()
def smoke_dict() -> dict[str, Any]:
    """configs/smoke.yaml as a plain dict (a fresh copy per test, free to mutate)."""
    return copy.deepcopy(yaml.safe_load(SMOKE.read_text()))


def set_key(d: dict, dotted: str, value: Any) -> dict:
    """Set `a.b.c` in a nested dict (creating nothing: the path must exist except its last key)."""
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    d[last] = value
    return d


def enter_workspace(root: Path, params: dict, monkeypatch) -> Path:
    """Make `root` the stage's repo: params.yaml from `params`, the working directory, and its own MLflow store
    (root/mlflow.db, as DVC_ROOT makes it), not any store the environment points at."""
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


@pytest.fixture()
def write_params(tmp_path, smoke_dict) -> Callable[..., Path]:
    """write_params({"vae.epochs": "ten"}, name=...) -> path of the smoke profile with those keys changed.

    Pass `text=...` to write raw text instead (invalid YAML and the like).
    """

    def write(changes: dict[str, Any] | None = None, name: str = "params.yaml", text: str | None = None,
              folder: Path | None = None) -> Path:
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            d = copy.deepcopy(smoke_dict)
            for k, v in (changes or {}).items():
                set_key(d, k, v)
            text = yaml.safe_dump(d, sort_keys=False)
        path.write_text(text)
        return path

    return write



# The end-to-end file is the longest single unit (one `dvc repro` of every stage, then a sweep), and
# `--dist loadfile` keeps a file on one worker. pytest-xdist by default hands out files with the most tests
# first, which put this 5-test file last and made CI wait for it after everything else (CI took 1,957 s).
# Start the slow files first, in this order, and keep that order when distributing.
SLOW_FIRST = ("test_pipeline.py", "test_fault_catalogue.py", "test_classify_records.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the collection order within a file and among the rest is kept
