"""Print the wall time of each stage item's latest MLflow run, and their sum: what a `dvc repro` cost.

    python benchmarks/stage_times.py [--experiment synthaug-fashion_mnist] [--db mlflow.db]

Reads the start and end times the stages logged, so the stage times README quotes come from the recorded
run, not from a stopwatch. (Say beside them how many threads and how busy the machine was: MLflow does not.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlflow.tracking import MlflowClient


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="synthaug-fashion_mnist")
    ap.add_argument("--db", default="mlflow.db")
    args = ap.parse_args()
    client = MlflowClient(tracking_uri=f"sqlite:///{Path(args.db).resolve()}")
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.db}")
    latest: dict[str, object] = {}
    for run in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time ASC"], max_results=5000):
        latest[run.info.run_name] = run  # later runs of the same stage item replace earlier ones
    total = 0.0
    groups: dict[str, float] = {}
    for name in sorted(latest):
        run = latest[name]
        seconds = (run.info.end_time - run.info.start_time) / 1000
        total += seconds
        kind = name.split("@")[0]
        groups[kind] = groups.get(kind, 0.0) + seconds
        print(f"{name:40s} {seconds:8.1f} s")
    print("-" * 64)
    for kind, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{kind:40s} {seconds:8.1f} s")
    print(f"{'total':40s} {total:8.1f} s  ({total / 60:.1f} min, {len(latest)} stage items)")


if __name__ == "__main__":
    main()
