"""`train FAMILY`: train one generator family, leaving a resumable checkpoint and its loss curves."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import typer

from synthaug.config import ConfigError, as_dict
from synthaug.data.real import load_meta, load_prepared
from synthaug.generators.base import FAMILIES, GeneratorSpec, family_module, training_code
from synthaug.plots import save_curves_png, save_grid_png
from synthaug.stages.common import (METRICS, MODELS, PARAMS_OPTION, PLOTS, REAL_DIR, load_stage, require,
                                    stage_command, write_metrics)
from synthaug.storage import save_json
from synthaug.tracking import stage_run
from synthaug.training import fingerprint_of


def training_subset(images: np.ndarray, labels: np.ndarray, cap: int, seed: int):
    """All images, or a seeded class-balanced subset of about `cap` of them (smoke runs, tests)."""
    if cap <= 0 or cap >= len(labels):
        return images, labels
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, cap // len(classes))
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]))
    return images[keep], labels[keep]


@stage_command
def train(family: str = typer.Argument(..., help=f"generator family: {', '.join(FAMILIES)}"),
          params_path: str = PARAMS_OPTION) -> None:
    """Train a generator family on the real training split (resumes from its checkpoint if killed)."""
    params, runtime = load_stage(params_path)
    if family not in FAMILIES:
        raise ConfigError(f"unknown generator family '{family}' (known: {', '.join(FAMILIES)})")
    section = getattr(params, family)
    meta = load_meta(require(REAL_DIR, "prepare"))
    split = load_prepared(REAL_DIR, "train")
    images, labels = training_subset(split.images, split.labels, section.max_train_images, params.seed)
    if section.batch_size > len(labels):
        raise ConfigError(f"{family}.batch_size: {section.batch_size} exceeds the {len(labels)} training images")
    spec = GeneratorSpec(images=images, labels=labels, num_classes=meta["num_classes"])
    checkpoint = MODELS / family / "checkpoint.pt"
    logged = {family: as_dict(section), "seed": params.seed, "train_images": len(labels), **runtime.describe()}
    if family == "vae":
        logged["beta"] = params.beta
    fingerprint = fingerprint_of(logged, meta.get("source"), str(runtime.device),
                                 code=training_code(family_module(family), __name__))
    with stage_run(f"train@{family}", params.dataset.name, params=logged) as run:
        result = family_module(family).train(spec, params, runtime, checkpoint, run.log_metrics,
                                             family=family, fingerprint=fingerprint)
        save_json(PLOTS / "train" / f"{family}.json", result.history)
        curves = PLOTS / "train" / f"{family}.png"
        save_curves_png(curves, result.history, f"train@{family}")
        run.log_artifact(curves)
        summary = {"steps": result.steps, **result.summary}
        run.log_metrics(summary)
        with tempfile.TemporaryDirectory() as tmp:
            for name, grid in result.images.items():
                save_grid_png(Path(tmp) / name, grid, title=f"train@{family}: {name.rsplit('.', 1)[0]}")
                run.log_artifact(Path(tmp) / name)
    write_metrics(METRICS / "train" / f"{family}.json", summary)
    print(f"train@{family}: {result.steps} steps, " + ", ".join(f"{k}={v:.4g}" for k, v in result.summary.items()))
