"""Time `python -m synthaug train FAMILY` from scratch, one family after another, and the share of a budget.

    python benchmarks/train_times.py gan lsgan wgan_gp [--params params.yaml] [--budget-min 45]

Each family trains in a scratch workspace (a copy of the params file, the repo's prepared `data/real` linked
in, a throwaway MLflow store), so nothing of the repo's checkpoints, metrics or MLflow runs is touched and no
checkpoint is resumed. Run it on an otherwise idle machine: the figure is the stage's real wall time with the
threads the stage picks by itself (`SYNTHAUG_THREADS`, default all cores), process start and data load included.
Needs `dvc repro prepare` first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_family(family: str, params: Path, real: Path) -> float:
    with tempfile.TemporaryDirectory(prefix=f"train-times-{family}-") as tmp:
        work = Path(tmp)
        shutil.copy(params, work / "params.yaml")
        (work / "data").mkdir()
        (work / "data" / "real").symlink_to(real)
        # DVC_ROOT pins the MLflow store to the scratch folder (else it is the enclosing git repo's).
        env = {**os.environ, "DVC_ROOT": str(work)}
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "synthaug", "train", family], cwd=work, env=env, check=True)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="+")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--budget-min", type=float, default=45.0, help="the whole study's budget, in minutes")
    args = ap.parse_args()
    real = Path("data/real").resolve()
    if not (real / "meta.json").exists():
        raise SystemExit("data/real is not prepared: run `dvc repro prepare` first")
    times = {family: time_family(family, args.params.resolve(), real) for family in args.families}
    threads = os.environ.get("SYNTHAUG_THREADS", f"all {os.cpu_count()}")
    print(f"\ntrain wall time from scratch ({threads} threads, {args.params}):")
    for family, seconds in times.items():
        print(f"  train@{family:12s} {seconds:7.1f} s  ({seconds / 60:.1f} min)")
    total = sum(times.values())
    print(f"  {'total':18s} {total:7.1f} s  ({total / 60:.1f} min) = {100 * total / 60 / args.budget_min:.0f} % "
          f"of a {args.budget_min:g}-minute budget")


if __name__ == "__main__":
    main()
