"""Run the whole study with `dvc repro` in a scratch clone and print every stage item's wall time.

    python benchmarks/laptop_study.py [--params params.yaml] [--budget-min 45] [--keep DIR] [-- TARGET ...]
    python benchmarks/laptop_study.py --resume DIR     # go on with a run kept in DIR that was stopped

The scratch clone holds the repo's tracked files (as `git clone` would give them) with `--params` copied onto
params.yaml and no DVC cache, checkpoints or MLflow store, so every stage runs from scratch, exactly as a user's
first `dvc repro` on a fresh clone. A stage item's wall time runs from DVC's "Running stage" line to the next one
(or to the end): process start-up, data loading and DVC's own bookkeeping included. Targets after `--` limit the
run (e.g. `-- classify_real`). Run it on an idle machine: the figures are only as good as the machine is quiet,
and the table says what the CPU is (fast bf16 or not) and how many threads a stage used.

The whole default takes hours on a 2-core CPU without fast bf16, longer than one sitting: with `--keep DIR` each
finished stage item's time is recorded in DIR/laptop_study_times.json as it ends, and so is the time a stage item
had run when the benchmark was stopped (Ctrl-C, SIGTERM). `--resume DIR` runs `dvc repro` on in that clone: DVC
skips what is done, a stopped generator resumes from its checkpoint and a stopped classify stage from its records,
and the table adds up every sitting's time per stage item (a resumed stage item's time includes its stopped part;
the total is the sum of the sittings' wall times).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


def clone_env(dest: Path) -> dict:
    """The environment of a stage in the clone: its own code, MLflow store and DVC root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PYTHONPATH"] = str(dest / "src")
    return env


def scratch_clone(dest: Path, params: Path) -> dict:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for f in filter(None, files):
        if (REPO / f).is_file() and not f.startswith(("metrics/", "plots/", "reports/")) and f != "dvc.lock":
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    shutil.copy(params, dest / "params.yaml")
    env = clone_env(dest)
    git = ["git", "-c", "user.email=bench@synthaug", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], git + ["add", "-A"], git + ["commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return env


RECORD = "laptop_study_times.json"


class Record:
    """Stage item times and sittings of one scratch clone, saved after every change (so a stop loses nothing)."""

    def __init__(self, dest: Path, params: str):
        self.path = dest / RECORD
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {
            "params": params, "stages": {}, "sittings": []}

    def add(self, stage: str, seconds: float) -> None:
        self.data["stages"][stage] = self.data["stages"].get(stage, 0.0) + seconds
        self.save()

    def sitting(self, seconds: float, finished: bool) -> None:
        self.data["sittings"].append({"seconds": seconds, "finished": finished})
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def _stop(signum, frame) -> None:
    """SIGTERM stops the benchmark as Ctrl-C does, once (`timeout` signals the child and then its whole group):
    the stopped stage item's time is recorded."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_repro(dest: Path, env: dict, targets: list[str], record: Record) -> None:
    """Stream `dvc repro`, timing each stage item from its "Running stage" line to the next, into `record`."""
    start = last = time.perf_counter()
    current, finished = None, False
    signal.signal(signal.SIGTERM, _stop)
    # Its own process group, so that a stop reaches the stage as well as DVC (below)
    proc = subprocess.Popen(["dvc", "repro", *targets], cwd=dest, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    try:
        for line in proc.stdout:
            if m := RUNNING.search(line):
                now = time.perf_counter()
                if current:
                    record.add(current, now - last)
                current, last = m.group(1), now
            sys.stdout.write(line)  # after the bookkeeping: a stop on seeing the line finds its stage item timed
        finished = proc.wait() == 0
        if not finished:
            raise SystemExit(f"dvc repro failed (exit {proc.returncode}); stage times so far in {record.path}")
    finally:
        if proc.poll() is None:
            # SIGTERM to DVC and the stage it runs: the stage unwinds as on Ctrl-C, and its checkpoint or records
            # let a resume go on. DVC does not pass a SIGTERM on: signalled alone, it left the stage running.
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            for line in proc.stdout:  # to the end of the pipe: the stage, which writes to it too, has exited
                sys.stdout.write(line)
        end = time.perf_counter()
        if current:
            record.add(current, end - last)  # a stopped stage item: the time it had run so far
        record.sitting(end - start, finished)


def family(stage: str) -> str:
    return stage.split("@")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--budget-min", type=float, default=45.0)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    ap.add_argument("--resume", type=Path, help="go on with the run kept in this folder")
    ap.add_argument("targets", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="laptop-study-") as tmp:
        if args.resume:
            dest = args.resume
            if not (dest / RECORD).is_file():
                raise SystemExit(f"{dest}: no {RECORD} (start with --keep {dest})")
            env = clone_env(dest)
        else:
            dest = args.keep or Path(tmp)
            dest.mkdir(parents=True, exist_ok=True)
            if (dest / RECORD).is_file():
                raise SystemExit(f"{dest}: holds a run already (--resume {dest} goes on with it)")
            env = scratch_clone(dest, args.params.resolve())
        record = Record(dest, str(args.params))
        record.save()
        try:
            run_repro(dest, env, args.targets, record)
        except KeyboardInterrupt:
            hint = f"--resume {dest}" if (args.keep or args.resume) else "--keep DIR next time, then --resume DIR"
            raise SystemExit(f"stopped; the times so far are in {record.path} (go on with {hint})") from None
        stages, sittings = record.data["stages"], record.data["sittings"]
    import torch

    from synthaug.core.runtime import cpu_supports_bf16

    threads = os.environ.get("SYNTHAUG_THREADS", f"all {os.cpu_count()} (dvc repro runs one stage at a time)")
    total = sum(s["seconds"] for s in sittings)
    print(f"\n`dvc repro` from a scratch clone: {Path(record.data['params']).name}, {threads} threads per stage, "
          f"torch {torch.__version__}, CPU bf16 {'yes' if cpu_supports_bf16() else 'no (fp32)'}, "
          f"{len(sittings)} sitting(s)")
    print(f"{'stage item':36s} {'wall s':>9s}")
    for stage, seconds in stages.items():
        print(f"{stage:36s} {seconds:9.1f}")
    by_family: dict[str, float] = defaultdict(float)
    for stage, seconds in stages.items():
        by_family[family(stage)] += seconds
    print(f"\n{'stage family':36s} {'wall s':>9s} {'share':>7s}")
    for fam, seconds in sorted(by_family.items(), key=lambda kv: -kv[1]):
        print(f"{fam:36s} {seconds:9.1f} {100 * seconds / total:6.1f}%")
    print(f"{'total (incl. DVC before the first stage)':36s} {total:9.1f}  = {total / 60:.1f} min, "
          f"{100 * total / 60 / args.budget_min:.0f} % of a {args.budget_min:g}-minute budget")


if __name__ == "__main__":
    main()
