"""Run the whole study with `dvc repro` in a scratch clone and print every stage item's wall time.

    python benchmarks/laptop_study.py [--params params.yaml] [--budget-min 45] [--keep DIR] [-- TARGET ...]

The scratch clone holds the repo's tracked files (as `git clone` would give them) with `--params` copied onto
params.yaml and no DVC cache, checkpoints or MLflow store, so every stage runs from scratch, exactly as a user's
first `dvc repro` on a fresh clone. A stage item's wall time runs from DVC's "Running stage" line to the next one
(or to the end): process start-up, data loading and DVC's own bookkeeping included. Targets after `--` limit the
run (e.g. `-- classify_real`). Run it on an idle machine: the figures are only as good as the machine is quiet,
and the table says what the CPU is (fast bf16 or not) and how many threads a stage used.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"Running stage '([^']+)'")


def scratch_clone(dest: Path, params: Path) -> dict:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for f in filter(None, files):
        if (REPO / f).is_file() and not f.startswith(("metrics/", "plots/", "reports/")) and f != "dvc.lock":
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    shutil.copy(params, dest / "params.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PYTHONPATH"] = str(dest / "src")
    git = ["git", "-c", "user.email=bench@synthaug", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], git + ["add", "-A"], git + ["commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return env


def run_repro(dest: Path, env: dict, targets: list[str]) -> tuple[dict[str, float], float]:
    """Stream `dvc repro`, timing each stage item from its "Running stage" line to the next."""
    times: dict[str, float] = {}
    start = last = time.perf_counter()
    current = None
    proc = subprocess.Popen(["dvc", "repro", *targets], cwd=dest, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        if m := RUNNING.search(line):
            now = time.perf_counter()
            if current:
                times[current] = now - last
            current, last = m.group(1), now
    end = time.perf_counter()
    if current:
        times[current] = end - last
    if proc.wait() != 0:
        raise SystemExit(f"dvc repro failed (exit {proc.returncode}); stage times so far: {times}")
    return times, end - start


def family(stage: str) -> str:
    return stage.split("@")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--budget-min", type=float, default=45.0)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    ap.add_argument("targets", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="laptop-study-") as tmp:
        dest = args.keep or Path(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        env = scratch_clone(dest, args.params.resolve())
        times, total = run_repro(dest, env, args.targets)
    import torch

    from synthaug.runtime import cpu_supports_bf16

    threads = os.environ.get("SYNTHAUG_THREADS", f"all {os.cpu_count()} (dvc repro runs one stage at a time)")
    print(f"\n`dvc repro` from a scratch clone: {args.params.name}, {threads} threads per stage, "
          f"torch {torch.__version__}, CPU bf16 {'yes' if cpu_supports_bf16() else 'no (fp32)'}")
    print(f"{'stage item':36s} {'wall s':>9s}")
    for stage, seconds in times.items():
        print(f"{stage:36s} {seconds:9.1f}")
    by_family: dict[str, float] = defaultdict(float)
    for stage, seconds in times.items():
        by_family[family(stage)] += seconds
    print(f"\n{'stage family':36s} {'wall s':>9s} {'share':>7s}")
    for fam, seconds in sorted(by_family.items(), key=lambda kv: -kv[1]):
        print(f"{fam:36s} {seconds:9.1f} {100 * seconds / total:6.1f}%")
    print(f"{'total (incl. DVC before the first stage)':36s} {total:9.1f}  = {total / 60:.1f} min, "
          f"{100 * total / 60 / args.budget_min:.0f} % of a {args.budget_min:g}-minute budget")


if __name__ == "__main__":
    main()
