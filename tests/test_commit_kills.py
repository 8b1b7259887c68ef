"""A stage's outputs change together even under kill -9: `sample` and `fid` killed at every rename of their commit.

Each case copies a workspace whose outputs (study seed 0's chain) were made with the smoke profile, changes
`sample.per_class` and `fid.num_images` (other samples, another FID subset; `seed` no longer would: inside a chain
stage the seed is the chain's study seed) and runs the stage (forked from one process, tests/forkrun.py) with
os.rename / os.replace patched to SIGKILL the process at the k-th rename after the commit began (the commit
record's own write included). The next stage to start completes a half-done commit (`load_stage` calls
`storage.recover_commits` first; here it is called alone): then every output must be the old one or every output
the new one. A full run after that leaves no temporary path and no commit record behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SMOKE
from fault_workspaces import prepared_template
from forkrun import FORK_DRIVER

pytestmark = pytest.mark.slow  # ~20 real stage processes

KILL_AT_RENAME = textwrap.dedent("""
    import signal
    import synthaug.core.storage as storage
    k, seen, armed = {k}, [0], [False]
    real_swap = storage._swap_in
    def swap(*args, **kwargs):  # count only the commit's renames
        armed[0] = True
        try:
            return real_swap(*args, **kwargs)
        finally:
            armed[0] = False
    storage._swap_in = swap
    for name in ("rename", "replace"):
        def patched(src, dst, *args, _real=getattr(os, name), **kwargs):
            if armed[0]:
                seen[0] += 1
                if seen[0] == k:
                    os.kill(os.getpid(), signal.SIGKILL)
            return _real(src, dst, *args, **kwargs)
        setattr(os, name, patched)
""")
OUTPUTS = {"sample": ["data/synthetic/study0/vae", "reports/grids/study0/vae.png", "metrics/sample/study0/vae.json"],
           "fid": ["data/features/study0/vae.npz", "metrics/fid/study0/vae.json"]}
# One more than the stage's commit makes (sample: its shard folder's own commit, the record, 2 per output; fid: the
# record, 2 per output): the last case finishes.
KILLS = {"sample": 10, "fid": 6}


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(ws), SYNTHAUG_THREADS="1", PYTHONPATH=str(REPO / "src"))
    return env


def _run_all(cases: dict[str, tuple[Path, list[str], str]], logs: Path) -> dict[str, int]:
    """Run {name: (workspace, command args, injected code)} in order, forked from one process (forkrun)."""
    logs.mkdir(parents=True, exist_ok=True)
    spec = {name: {"cwd": str(ws), "env": _env(ws), "args": args, "inject": inject,
                   "stdout": str(logs / f"{name}.out"), "stderr": str(logs / f"{name}.err")}
            for name, (ws, args, inject) in cases.items()}
    (logs / "cases.json").write_text(json.dumps(spec))
    (logs / "driver.py").write_text(FORK_DRIVER)
    proc = subprocess.run([sys.executable, str(logs / "driver.py"), str(logs / "cases.json")], cwd=logs,
                          env=_env(logs), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _other_inputs(ws: Path) -> None:
    """Params that change every output of both stages: one more sample per class (other shards, grid rows and
    metrics) and one image fewer for FID (another subset: other features and FID)."""
    d = yaml.safe_load((ws / "params.yaml").read_text())
    d["sample"]["per_class"] += 1
    d["fid"]["num_images"] -= 1
    (ws / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))


def _digest(path: Path) -> str | None:
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode() + f.read_bytes())
    return h.hexdigest()


def _state(ws: Path, stage: str) -> list[str | None]:
    return [_digest(ws / p) for p in OUTPUTS[stage]]


def _litter(ws: Path) -> list[Path]:
    return ([p for p in ws.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".old-")]
            + list((ws / ".synthaug" / "commits").glob("*")))


@pytest.fixture(scope="module")
def before(tmp_path_factory) -> Path:
    """sample_vae@0 and fid@vae-0 run with the smoke profile: the old outputs."""
    root = tmp_path_factory.mktemp("kills")
    ws = prepared_template(root / "old")
    (ws / "params.yaml").write_text(SMOKE.read_text())
    codes = _run_all({"sample": (ws, ["sample", "vae"], ""), "fid": (ws, ["fid", "vae"], "")}, root / "logs")
    assert codes == {"sample": 0, "fid": 0}, (root / "logs" / "sample.err").read_text()[-2000:]
    return ws


@pytest.mark.parametrize("stage", ["sample", "fid"])
def test_a_kill_at_any_rename_of_the_commit_leaves_all_old_or_all_new_outputs(before, tmp_path, stage):
    from synthaug.core.storage import recover_commits

    cases = {}
    for name in ["new", *(f"k{k}" for k in range(1, KILLS[stage] + 1))]:
        ws = shutil.copytree(before, tmp_path / name)
        _other_inputs(ws)
        cases[name] = (ws, [stage, "vae"], "" if name == "new" else KILL_AT_RENAME.format(k=name[1:]))
    codes = _run_all(cases, tmp_path / "logs")
    old, new = _state(before, stage), _state(tmp_path / "new", stage)
    assert codes["new"] == 0 and all(a != b for a, b in zip(old, new)), "the changed params must change every output"

    outcomes, killed = [], []
    for k in range(1, KILLS[stage] + 1):
        ws = tmp_path / f"k{k}"
        if codes[f"k{k}"] != -signal.SIGKILL:  # k is past the commit's last rename: it finished
            assert codes[f"k{k}"] == 0 and _state(ws, stage) == new, (tmp_path / "logs" / f"k{k}.err").read_text()
            continue
        recover_commits(ws / ".synthaug" / "commits")  # what the next stage does first
        state = _state(ws, stage)
        assert state in (old, new), f"killed at rename {k}: outputs mixed {state} (old {old}, new {new})"
        outcomes.append("new" if state == new else "old")
        killed.append(k)
    assert killed == list(range(1, KILLS[stage])), codes
    # Killed before or while writing the commit record (or inside a nested commit, e.g. write_shards' own folder):
    # all old; at any of the 2 renames per output after it (old aside, new in): all new.
    first_new = outcomes.index("new")
    assert set(outcomes[:first_new]) == {"old"} and outcomes[first_new:] == ["new"] * (2 * len(OUTPUTS[stage])), \
        outcomes

    # the next run of the stage: new outputs, and nothing left over anywhere (after a kill before the commit, at
    # its first rename, at its last)
    again = [1, killed[first_new], killed[-1]]
    reruns = _run_all({f"k{k}": (tmp_path / f"k{k}", [stage, "vae"], "") for k in again}, tmp_path / "relogs")
    for k in again:
        ws = tmp_path / f"k{k}"
        assert reruns[f"k{k}"] == 0 and _state(ws, stage) == new and not _litter(ws), _litter(ws)


def test_temporary_paths_of_a_dead_writer_are_swept_and_a_live_ones_kept(tmp_path):
    from synthaug.core.storage import save_json, sweep_stale_temps

    target = tmp_path / "metrics.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".metrics.json.{int(dead.stdout)}.abc123.tmp"
    stale.mkdir()
    (stale / "half-written").write_text("x")
    live = tmp_path / f".metrics.json.{os.getppid()}.def456.tmp"  # the test runner's parent: alive
    live.write_text("y")
    other = tmp_path / f".metrics.jsonl.{int(dead.stdout)}.ghi789.tmp"  # another output's: not ours to touch
    other.write_text("z")
    save_json(target, {"a": 1})  # writing the output sweeps what dead writers left beside it
    assert not stale.exists() and live.exists() and other.exists()
    assert sweep_stale_temps(target) == [] and target.read_text().strip().startswith("{")
