"""`train FAMILY`: train one generator family, leaving a resumable checkpoint and its loss curves."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from synthaug.core.config import ConfigError, as_dict
from synthaug.data.fractions import generator_indices
from synthaug.data.real import load_meta, load_prepared
from synthaug.generators.base import FAMILIES, GeneratorSpec, family_module, training_code
from synthaug.figures.plots import save_curves_png, save_grid_png
from synthaug.stages.common import (PARAMS_OPTION, REAL_DIR, STUDY_OPTION, Chain, is_main_process, load_stage, require,
                                    seen_real_images, stage_command, write_metrics)
from synthaug.core.storage import replace_together, save_json
from synthaug.core.tracking import LOSS_ARTIFACT, stage_run
from synthaug.generators.training import fingerprint_of


@stage_command
def train(family: str = typer.Argument(..., help=f"generator family: {', '.join(FAMILIES)}"),
          study: int = STUDY_OPTION, params_path: str = PARAMS_OPTION) -> None:
    """Train a generator family on the `generator_fraction` real subset (resumes from its checkpoint if killed)."""
    params, runtime = load_stage(params_path, data_parallel=True, study=study)
    chain = Chain(study)
    item = chain.train_item(family)
    if family not in FAMILIES:
        raise ConfigError(f"unknown generator family '{family}' (known: {', '.join(FAMILIES)})")
    section = getattr(params, family)
    meta = load_meta(require(REAL_DIR, "prepare"))
    split = load_prepared(REAL_DIR, "train")
    seen = generator_indices(split.labels, params.generator_fraction, params.seed, section.max_train_images)
    images, labels = split.images[seen], split.labels[seen]
    if section.batch_size > len(labels):
        raise ConfigError(f"{family}.batch_size: {section.batch_size} exceeds the {len(labels)} training images")
    spec = GeneratorSpec(images=images, labels=labels, num_classes=meta["num_classes"])
    checkpoint = chain.checkpoint(family)
    logged = {family: as_dict(section), "seed": params.seed, **seen_real_images(seen, params.generator_fraction),
              **runtime.describe()}
    if family == "vae":
        logged["beta"] = params.beta
    # `logged` holds runtime.describe() (device, precision, processes): another device does not resume it
    fingerprint = fingerprint_of(logged, meta.get("source"), code=training_code(family_module(family), __name__))
    with stage_run(item, params.dataset.name, params=logged) as run:
        result = family_module(family).train(spec, params, runtime, checkpoint, run.log_metrics,
                                             family=family, fingerprint=fingerprint)
        if not is_main_process():  # under torchrun: rank 0 writes the outputs
            return
        curves = chain.plots("train") / f"{family}.png"
        summary = {"steps": result.steps, "train_images": len(seen), "generator_fraction": params.generator_fraction,
                   **result.summary}
        with replace_together(chain.plots("train") / f"{family}.json", curves, chain.metrics("train") / f"{family}.json") as (
                history_path, curves_path, metrics_path):  # the loss history, its figure and the summary together
            save_json(history_path, result.history)
            save_curves_png(curves_path, result.history, item)
            write_metrics(metrics_path, summary)
        run.log_artifact_as(curves, LOSS_ARTIFACT)  # one name in every run: compare view
        run.log_metrics(summary)
        with tempfile.TemporaryDirectory() as tmp:
            for name, grid in result.images.items():
                save_grid_png(Path(tmp) / name, grid, title=f"{item}: {name.rsplit('.', 1)[0]}")
                run.log_artifact(Path(tmp) / name)
    print(f"{item}: {result.steps} steps, " + ", ".join(f"{k}={v:.4g}" for k, v in result.summary.items()))
