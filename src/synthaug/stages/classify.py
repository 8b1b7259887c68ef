"""`classify ARM`: train every classifier of one arm of the study and evaluate each on the real test split.

ARM is `real`, `real+SOURCE`, `real+all` or `synth:SOURCE`. One process trains all the arm's runs (each
fraction and seed, `synthaug.study.arms.arm_runs`), loading the data once, as one classifier bank
(`classifier_training.train_bank`; `classify.bank_size` runs at a time, 0: all), each member with its own seed, data
and augmentation as if trained alone. Each finished run leaves a record
`metrics/classify/study<K>/<arm>/<run>.json` carrying a fingerprint of what defined it (settings, data, code): a killed
stage re-run with the same inputs skips the runs already recorded. `--fraction` / `--seed` run a subset.
Every arm keeps the weights of its run at the study's first fraction and first seed (`models/study<K>/classify/<arm>.pt`,
what `gradcam` reads); the `real` arm also keeps its run on the most real data (first seed): the judge that
`fidelity` scores synthetic labels with.
"""

from __future__ import annotations

import hashlib
import logging
from typing import NamedTuple

import numpy as np
import typer

from synthaug.study.arms import analysed_run, arm_runs, arm_slug, parse_arm, run_seed, run_slug
from synthaug.core.config import ConfigError, as_dict
from synthaug.data.fractions import fraction_key, load_fractions
from synthaug.data.real import load_meta, load_prepared
from synthaug.data.shards import read_manifest, read_shards
from synthaug.core.lineage import input_ids
from synthaug.stages.common import (PARAMS_OPTION, REAL_DIR, STUDY_OPTION, Chain, is_main_process, load_stage,
                                    require, stage_command, write_metrics)
from synthaug.core.storage import StorageError, load_json, replace_together, save_checkpoint, save_json
from synthaug.core.tracking import stage_run
from synthaug.generators.training import fingerprint_of

log = logging.getLogger("synthaug")
CODE = ("synthaug.stages.classify", "synthaug.study.classification", "synthaug.study.classifier_training", "synthaug.nets.bank",
        "synthaug.nets.resnet", "synthaug.generators.training", "synthaug.core.arrays")


def load_synthetic(chain: Chain, sources: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_shards(require(chain.shards(s), chain.sample_item(s))) for s in sources]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _selected(arm: str, params, fraction: float | None, seed: int | None) -> list[tuple[float | None, int]]:
    runs = arm_runs(arm, params)
    if fraction is not None:
        if arm.startswith("synth:"):
            raise ConfigError(f"arm '{arm}' uses no real data: drop --fraction")
        runs = [r for r in runs if r[0] is not None and fraction_key(r[0]) == fraction_key(fraction)]
        if not runs:
            raise ConfigError(f"--fraction {fraction}: arm '{arm}' does not run there "
                              f"(its fractions: {sorted({r[0] for r in arm_runs(arm, params)})})")
    if seed is not None:
        runs = [r for r in runs if r[1] == seed]
        if not runs:
            raise ConfigError(f"--seed {seed}: not among classify.seeds {params.classify.seeds}")
    return runs


def _existing(path, fingerprint: str) -> dict | None:
    """The record of a run already made with this fingerprint (else None: it must be trained)."""
    if not path.is_file():
        return None
    try:
        record = load_json(path)
    except StorageError:
        return None
    return record if isinstance(record, dict) and record.get("fingerprint") == fingerprint else None


@stage_command
def classify(arm: str = typer.Argument(..., help="real | real+SOURCE | real+all | synth:SOURCE"),
             fraction: float = typer.Option(None, help="run only this real-data fraction"),
             seed: int = typer.Option(None, help="run only this classifier seed (one of classify.seeds)"),
             study: int = STUDY_OPTION, params_path: str = PARAMS_OPTION) -> None:
    """Train and evaluate the arm's classifiers; writes metrics/classify/study<K>/<arm>/ and <arm>.json beside it."""
    from synthaug.study.classifier_training import ArmData, Member, train_bank  # torchvision: import only when used

    params, runtime = load_stage(params_path, data_parallel=True, study=study)
    chain = Chain(study)
    with_real, sources = parse_arm(arm, params)
    runs = _selected(arm, params, fraction, seed)
    meta = load_meta(require(REAL_DIR, "prepare"))
    train = load_prepared(REAL_DIR, "train") if with_real else None
    subsets = load_fractions(require(chain.fractions, "prepare")) if with_real else {}
    for f, _ in runs:
        if f is not None and fraction_key(f) not in subsets:
            raise ConfigError(f"--fraction {f}: not among the prepared fractions {sorted(subsets)}")
    synthetic = load_synthetic(chain, sources) if sources else None
    test = load_prepared(REAL_DIR, "test")
    c = params.classify
    slug = arm_slug(arm)
    records_dir, item = chain.metrics("classify") / slug, chain.classify_item(arm)
    judge_run = (max(f for f, _ in arm_runs(arm, params)), c.seeds[0]) if arm == "real" else None
    data_id = {"real": meta.get("files"), "synthetic": {s: read_manifest(chain.shards(s)).get("shards")
                                                        for s in sources}}
    inputs = input_ids(REAL_DIR if with_real else None, chain.fractions if with_real else None, chain.synthetic,
                       sources)
    settings = {"arm": arm, "sources": ",".join(sources), "synthetic_ratio": c.synthetic_ratio,
                "classifier": as_dict(c.model), **runtime.describe()}
    main = is_main_process()
    with stage_run(item, params.dataset.name, params={**settings, "runs": len(runs)},
                   tags={"arm": arm}) as parent:
        todo: list[PendingRun] = []
        for f, s in runs:
            name = run_slug(f, s)
            real = None
            if with_real:
                idx = np.asarray(subsets[fraction_key(f)], dtype=np.int64)
                real = (train.images[idx], train.labels[idx])
            # Which real images, not just how many: another `seed` draws other subsets of the same size.
            subset = None if real is None else hashlib.sha256(idx.tobytes()).hexdigest()
            fingerprint = fingerprint_of(settings, f, run_seed(study, s), data_id, subset, code=CODE)
            keep = [path for path, run in ((chain.judge, judge_run),
                                           (chain.classifier_weights(slug), analysed_run(arm, params)))
                    if run == (f, s)]  # the weight files this run leaves
            record = _existing(records_dir / f"{name}.json", fingerprint)
            if record is not None and all(path.is_file() for path in keep):
                log.info("%s %s: already recorded with these inputs; skipped", item, name)
                continue
            todo.append(PendingRun(f, s, fingerprint, keep, record, ArmData(real, synthetic)))
        size = c.bank_size or auto_bank_size(len(todo), runtime)
        for n, first in enumerate(range(0, len(todo), size)):
            bank = todo[first:first + size]
            offset = n * c.model.steps  # the parent run's curve: the banks' mean losses one after another
            results = train_bank([Member(r.data, run_seed(study, r.seed)) for r in bank], (test.images, test.labels),
                                 meta["num_classes"], c.model, c.synthetic_ratio, runtime,
                                 lambda m, step: parent.log_metrics({k: v for k, v in m.items() if "/" not in k},
                                                                    step + offset))
            if main:  # under torchrun: every rank trains, rank 0 keeps the weights, records and MLflow runs
                for pending, result in zip(bank, results):
                    _keep_run(pending, result, arm, chain, settings, parent, params, meta, inputs)
        if not main:
            return
        if fraction is None and seed is None:  # a full run: drop records of runs the params no longer define
            wanted = {f"{run_slug(f, s)}.json" for f, s in runs}
            for stale in records_dir.glob("*.json"):
                if stale.name not in wanted:
                    stale.unlink()
        summary = arm_summary(arm, params, records_dir)
        parent.log_metrics(_flat(summary))
    save_json(chain.metrics("classify") / f"{slug}.json", summary)


def auto_bank_size(runs: int, runtime) -> int:
    """`classify.bank_size: 0`: every run in one bank on a GPU, where one small net leaves the chip idle; one at a
    time on a CPU, where a member alone keeps its activations in cache and banks measured slower (README)."""
    return max(1, runs) if runtime.device.type == "cuda" else 1


class PendingRun(NamedTuple):
    """A run of the arm that is not recorded with its current inputs yet, so it trains."""

    fraction: float | None
    seed: int
    fingerprint: str
    keep: list  # the weight files this run leaves
    record: dict | None  # its record, when only its weights are missing
    data: object  # classification.ArmData


def _keep_run(run: PendingRun, result, arm: str, chain: Chain, settings: dict, parent, params, meta: dict,
              inputs: dict) -> None:
    """One trained member: its MLflow run (training curve and test metrics), kept weights and record."""
    f, s, record, slug, item = run.fraction, run.seed, run.record, arm_slug(arm), chain.classify_item(arm)
    name, metrics = run_slug(f, s), result.metrics
    with stage_run(f"{item} {name}", params.dataset.name,
                   params={**settings, "fraction": f, "seed": s, "study_seed": chain.study}, parent=parent,
                   tags={"arm": arm, "fraction": str(f), "seed": str(s), "study_seed": str(chain.study)}) as tracker:
        for point in result.history:
            tracker.log_metrics({k: v for k, v in point.items() if k != "step"}, point["step"])
        tracker.log_metrics(metrics)
    if record is not None and record["test_accuracy"] != round(metrics["test_accuracy"], 6):
        # Retrained only for its missing weights, with the same fingerprint: it should reproduce its record.
        log.warning("%s %s: test accuracy %.6f, its record said %.6f: not reproduced exactly", item, name,
                    metrics["test_accuracy"], record["test_accuracy"])
    c = params.classify
    # The record and the weight files it vouches for are replaced together (a kill leaves both or neither new).
    with replace_together(chain.metrics("classify") / slug / f"{name}.json", *run.keep) as (record_path, *weights):
        for path in weights:
            save_checkpoint(path, {"model": result.state, "arch": c.model.arch, "arm": arm,
                                   "channels": int(meta["channels"]), "num_classes": int(meta["num_classes"]),
                                   "fraction": f, "seed": s, "study_seed": chain.study,
                                   "real_images": metrics["real_images"],
                                   "test_accuracy": metrics["test_accuracy"], "inputs": inputs})
        write_metrics(record_path, {"arm": arm, "fraction": f, "seed": s, "study_seed": chain.study, **metrics,
                                    "fingerprint": run.fingerprint, "inputs": inputs})
    print(f"{item} {name}: test accuracy {metrics['test_accuracy']:.4f}")


def arm_summary(arm: str, params, records_dir) -> dict:
    """The arm's test accuracy per fraction and seed, from the records of the runs the params define."""
    out: dict = {}
    for f, s in arm_runs(arm, params):
        path = records_dir / f"{run_slug(f, s)}.json"
        if path.is_file():
            key = "synthetic_only" if f is None else f"f{fraction_key(f)}"
            out.setdefault(key, {})[f"s{s}"] = round(float(load_json(path)["test_accuracy"]), 6)
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    return {k2: v2 for k, v in d.items()
            for k2, v2 in (_flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(f"{prefix}{k}", v)])}

