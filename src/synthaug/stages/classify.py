"""`classify ARM`: train a classifier on one arm of the study and evaluate it on the real test split.

ARM is `real`, `real+SOURCE`, `real+all` (with --fraction) or `synth:SOURCE` (synthetic only).
"""

from __future__ import annotations

import numpy as np
import typer

from synthaug.config import ConfigError, as_dict
from synthaug.arms import arm_slug, parse_arm
from synthaug.data.fractions import fraction_key, load_fractions
from synthaug.data.real import load_meta, load_prepared
from synthaug.data.shards import read_shards
from synthaug.stages.common import (FRACTIONS, METRICS, PARAMS_OPTION, REAL_DIR, SYNTH_DIR, load_stage, require,
                                    stage_command, write_metrics)
from synthaug.tracking import stage_run


def load_synthetic(sources: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_shards(require(SYNTH_DIR / s, f"sample@{s}")) for s in sources]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@stage_command
def classify(arm: str = typer.Argument(..., help="real | real+SOURCE | real+all | synth:SOURCE"),
             fraction: float = typer.Option(None, help="real-data fraction (not for synth: arms)"),
             seed: int = typer.Option(0, help="classifier seed (one of classify.seeds)"),
             params_path: str = PARAMS_OPTION) -> None:
    """Train and evaluate one classifier; writes metrics/classify/<arm>_f<fraction>_s<seed>.json."""
    from synthaug.classification import ArmData, train_and_evaluate  # torchvision: import only when used

    params, runtime = load_stage(params_path)
    with_real, sources = parse_arm(arm, params)
    if with_real and fraction is None:
        raise ConfigError(f"arm '{arm}' needs --fraction (one of {params.fractions})")
    if not with_real:
        fraction = None
    meta = load_meta(require(REAL_DIR, "prepare"))
    real = None
    if with_real:
        subsets = load_fractions(FRACTIONS)
        key = fraction_key(fraction)
        if key not in subsets:
            raise ConfigError(f"--fraction {fraction}: not among the prepared fractions {sorted(subsets)}")
        train = load_prepared(REAL_DIR, "train")
        idx = np.asarray(subsets[key], dtype=np.int64)
        real = (train.images[idx], train.labels[idx])
    synthetic = load_synthetic(sources) if sources else None
    test = load_prepared(REAL_DIR, "test")
    c = params.classify
    slug = arm_slug(arm, fraction, seed)
    logged = {"arm": arm, "fraction": fraction, "seed": seed, "sources": ",".join(sources),
              "synthetic_ratio": c.synthetic_ratio, "classifier": as_dict(c.model), **runtime.describe()}
    with stage_run(f"classify@{slug}", params.dataset.name, params=logged,
                   tags={"arm": arm, "fraction": str(fraction), "seed": str(seed)}) as run:
        metrics = train_and_evaluate(ArmData(real, synthetic), (test.images, test.labels), meta["num_classes"],
                                     c.model, c.synthetic_ratio, runtime, seed, run.log_metrics)
        run.log_metrics(metrics)
    write_metrics(METRICS / "classify" / f"{slug}.json",
                  {"arm": arm, "fraction": fraction, "seed": seed, **metrics})
    print(f"classify@{slug}: test accuracy {metrics['test_accuracy']:.4f}")
