"""`sample SOURCE`: N labelled images per class from a trained generator, as shards + manifest + grid."""

from __future__ import annotations

import time

import numpy as np
import torch
import typer
from tqdm import tqdm

from synthaug.core.config import ConfigError, as_dict
from synthaug.data.real import load_meta, load_prepared
from synthaug.data.shards import write_shards
from synthaug.generators.base import SOURCE_FAMILY, family_module
from synthaug.metrics.diversity import within_class_diversity
from synthaug.metrics.saturation import saturated_share
from synthaug.figures.plots import save_sample_grid_png
from synthaug.stages.common import (PARAMS_OPTION, REAL_DIR, STUDY_OPTION, Chain, load_stage, require, stage_command,
                                    write_metrics)
from synthaug.core.storage import replace_together, sha256_file
from synthaug.core.tracking import GRID_ARTIFACT, stage_run
from synthaug.core.arrays import iterate_batches, to_uint8


def generate(sample_fn, labels: np.ndarray, batch_size: int, seed: int, desc: str) -> np.ndarray:
    """Run a sampler over `labels` in batches; batch i draws its noise from its own seeded generator."""
    out = []
    for i, sl in enumerate(tqdm(list(iterate_batches(len(labels), batch_size)), desc=desc, dynamic_ncols=True)):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        out.append(to_uint8(sample_fn(torch.from_numpy(labels[sl]), gen)))
    return np.concatenate(out)


@stage_command
def sample(source: str = typer.Argument(..., help=f"synthetic source: {', '.join(SOURCE_FAMILY)}"),
           study: int = STUDY_OPTION, params_path: str = PARAMS_OPTION) -> None:
    """Sample `sample.per_class` images per class from SOURCE into data/synthetic/study<K>/SOURCE/."""
    params, runtime = load_stage(params_path, study=study)
    chain = Chain(study)
    if source not in SOURCE_FAMILY:
        raise ConfigError(f"unknown source '{source}' (known: {', '.join(SOURCE_FAMILY)})")
    family = SOURCE_FAMILY[source]
    checkpoint = require(chain.checkpoint(family), chain.train_item(family))
    meta = load_meta(require(REAL_DIR, "prepare"))
    k, p = meta["num_classes"], params.sample
    sample_fn, settings = family_module(family).load_sampler(checkpoint, runtime, params, source)
    labels = np.repeat(np.arange(k, dtype=np.int64), p.per_class)
    with stage_run(chain.sample_item(source), params.dataset.name,
                   params={"sample": as_dict(p), "seed": params.seed, "sampler": settings,
                           **runtime.describe()}) as run:
        t0 = time.perf_counter()
        images = generate(sample_fn, labels, p.batch_size, params.seed, f"sample {source}")
        seconds = time.perf_counter() - t0
        # Shards, grid and metrics are written aside, then replace the old ones together: a failure in any of
        # them leaves all three as they were (and a metrics file that describes the shards beside it).
        with replace_together(chain.shards(source), chain.grids / f"{source}.png",
                              chain.metrics("sample") / f"{source}.json") as (shard_dir, grid_path, metrics_path):
            manifest = write_shards(shard_dir, images, labels, p.shard_size, k, extra={
                "source": source, "family": family, "seed": params.seed, "study_seed": study,
                "checkpoint_sha256": sha256_file(checkpoint), "sampler": settings})
            save_sample_grid_png(grid_path, images, labels, meta["class_names"], p.grid_per_class,
                                 title=f"{source}: {p.grid_per_class} samples per class")
            metrics = {"count": manifest["count"], **sample_quality(images, labels)}
            write_metrics(metrics_path, metrics)
            run.log_metrics({**metrics, "seconds_per_image": seconds / len(labels), "sampling_seconds": seconds})
            run.log_artifact_as(grid_path, GRID_ARTIFACT)  # one root-level name in every sample run: compare view
    print(f"{chain.sample_item(source)}: {len(labels)} images in {seconds:.1f} s ({1000 * seconds / len(labels):.2f} ms/image)")


def sample_quality(images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Within-class diversity (a mode-collapse check) and the saturated-sample share (flat white blobs) of the
    samples, each beside that of held-out real images (the test split, which no generator saw)."""
    real = load_prepared(REAL_DIR, "test")
    synth_div = within_class_diversity(images, labels)
    real_div = within_class_diversity(real.images, real.labels)
    return {"diversity": synth_div, "real_diversity": real_div, "diversity_ratio": synth_div / real_div,
            "saturated_share": saturated_share(images), "real_saturated_share": saturated_share(real.images)}
