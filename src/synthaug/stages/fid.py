"""`fid-ref` and `fid SOURCE`: pytorch-fid Inception statistics of a real split, and FID of each source."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import typer

from synthaug.core.config import ConfigError, as_dict
from synthaug.data.real import load_meta, load_prepared
from synthaug.data.shards import read_shards
from synthaug.generators.base import SOURCE_FAMILY
from synthaug.core.runtime import Runtime
from synthaug.core.lineage import input_ids
from synthaug.stages.common import (FID_REF, PARAMS_OPTION, REAL_DIR, STUDY_OPTION, Chain, load_stage, require,
                                    stage_command, write_metrics)
from synthaug.core.storage import replace_together, save_npz
from synthaug.core.tracking import stage_run

log = logging.getLogger("synthaug")


def class_balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n images, classes interleaved in seeded order, so any n is (nearly) class-balanced."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = [idx for rank in range(max(map(len, per_class))) for perm in per_class if rank < len(perm)
             for idx in [perm[rank]]]
    return np.sort(np.asarray(order[:n], dtype=np.int64))


def fid_runtime(runtime: Runtime, precision: str) -> Runtime:
    """The runtime Inception runs in: fp32 unless `fid.precision: runtime` asks for the stage's own (logged)."""
    used = runtime if precision == "runtime" else dataclasses.replace(runtime, bf16=False)
    log.info("runtime: %s (Inception)", used.describe())
    return used


@stage_command
def fid_ref(params_path: str = PARAMS_OPTION) -> None:
    """Reference Inception statistics of `fid.num_images` real images of `fid.split`."""
    from synthaug.metrics.fid import compute_features, save_stats, stats_from_activations  # import when used

    params, runtime = load_stage(params_path, log_runtime=False)  # Inception's precision is fid.precision
    f = params.fid
    runtime = fid_runtime(runtime, f.precision)
    split = load_prepared(require(REAL_DIR, "prepare"), f.split)
    if len(split.labels) < f.num_images:
        raise ConfigError(f"fid.num_images: {f.num_images} exceeds the {len(split.labels)} images of the "
                          f"{f.split} split")
    with stage_run("fid_ref", params.dataset.name, params={"fid": as_dict(f), **runtime.describe()}) as run:
        idx = class_balanced_subset(split.labels, f.num_images, params.seed)
        features = compute_features(split.images[idx], f.dims, runtime, f.batch_size)
        save_stats(FID_REF, stats_from_activations(features), {
            "split": f.split, "num_images": f.num_images, "dims": f.dims, "dataset": params.dataset.name,
            **runtime.describe()}, features=features, labels=split.labels[idx])
        run.log_metrics({"num_images": f.num_images})
    print(f"fid_ref: {f.num_images} {f.split} images, dims {f.dims}")


@stage_command
def fid(source: str = typer.Argument(..., help="synthetic source"), study: int = STUDY_OPTION,
        params_path: str = PARAMS_OPTION) -> None:
    """FID of a source's shards against the reference statistics (written to metrics/fid/study<K>/SOURCE.json)."""
    from synthaug.metrics.fid import (compute_features, frechet_distance, load_features, load_stats,
                                      stats_from_activations, validate_sample_count)
    from synthaug.metrics.kid import kernel_inception_distance

    params, runtime = load_stage(params_path, log_runtime=False, study=study)  # Inception's: fid.precision
    chain = Chain(study)
    if source not in SOURCE_FAMILY:
        raise ConfigError(f"unknown source '{source}' (known: {', '.join(SOURCE_FAMILY)})")
    f = params.fid
    runtime = fid_runtime(runtime, f.precision)
    ref, ref_meta = load_stats(require(FID_REF, "fid_ref"))
    if ref_meta.get("dims") != f.dims:
        raise ConfigError(f"fid.dims: {f.dims}, but {FID_REF} was computed with dims={ref_meta.get('dims')}")
    if ref_meta.get("precision", "fp32") != runtime.describe()["precision"]:  # mixed precisions do not cancel
        raise ConfigError(f"fid.precision: Inception runs in {runtime.describe()['precision']}, but {FID_REF} was "
                          f"computed in {ref_meta.get('precision')}; re-run `dvc repro fid_ref`")
    ref_features = load_features(FID_REF)
    images, labels = read_shards(require(chain.shards(source), chain.sample_item(source)))
    n = min(f.num_images, len(labels))
    validate_sample_count(n, f.dims)
    with stage_run(chain.fid_item(source), params.dataset.name,
                   params={"fid": as_dict(f), "ref_split": ref_meta["split"], **runtime.describe()}) as run:
        idx = class_balanced_subset(labels, n, params.seed)
        features = compute_features(images[idx], f.dims, runtime, f.batch_size)
        value = frechet_distance(stats_from_activations(features), ref)
        kid, kid_std = kernel_inception_distance(features, ref_features, seed=params.seed)
        metrics = {"fid": value, "kid": kid, "kid_std": kid_std, "num_images": n,
                   "ref_num_images": ref_meta["num_images"], "dims": f.dims}
        # The features (what `analyse` reads) and the FID they gave are replaced together, or neither is.
        with replace_together(chain.features(source), chain.metrics("fid") / f"{source}.json") as (feats, record):
            save_npz(feats, features=features.astype(np.float32), labels=labels[idx])
            write_metrics(record, {**metrics, "ref_split": ref_meta["split"],
                                   "inputs": input_ids(synth_dir=chain.synthetic, sources=[source])})
        run.log_metrics(metrics)
        run.set_tags({"source": source, "ref_split": ref_meta["split"]})
    print(f"{chain.fid_item(source)}: {value:.2f}, KID {kid:.4f} ± {kid_std:.4f} ({n} images vs {ref_meta['num_images']} "
          f"{ref_meta['split']} images, "
          f"dims {f.dims}; dataset {load_meta(REAL_DIR)['dataset']})")
