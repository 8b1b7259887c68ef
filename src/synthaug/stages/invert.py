"""`invert`: Diffusion Inversion: learn conditioning vectors for groups of real images on the frozen diffusion model."""

from __future__ import annotations

import math
from functools import partial

from synthaug.core.config import ConfigError, as_dict
from synthaug.data.fractions import generator_indices
from synthaug.data.groups import class_groups
from synthaug.data.real import load_meta, load_prepared
from synthaug.generators import inversion
from synthaug.generators.base import training_code
from synthaug.generators.inversion import PREVIEW, invert as invert_groups, preview_rows
from synthaug.metrics.group_following import inception_following
from synthaug.figures.plots import save_curves_png, save_grid_png
from synthaug.stages.fid import fid_runtime  # Inception's precision, as the fid stage's
from synthaug.stages.common import (PARAMS_OPTION, REAL_DIR, STUDY_OPTION, Chain, is_main_process, load_stage, require,
                                    seen_real_images, stage_command, write_metrics)
from synthaug.core.storage import replace_together, save_json, sha256_file
from synthaug.core.tracking import GRID_ARTIFACT, LOSS_ARTIFACT, stage_run
from synthaug.generators.training import fingerprint_of

@stage_command
def invert(study: int = STUDY_OPTION, params_path: str = PARAMS_OPTION) -> None:
    """Learn one embedding per group of `invert.group_size` real training images (resumes if killed)."""
    params, runtime = load_stage(params_path, data_parallel=True, study=study)
    p, chain = params.invert, Chain(study)
    diffusion = require(chain.checkpoint("diffusion"), chain.train_item("diffusion"))
    meta = load_meta(require(REAL_DIR, "prepare"))
    split = load_prepared(REAL_DIR, "train")
    # Inversion sees only what the generators saw: groups are drawn from the generator_fraction subset.
    seen = generator_indices(split.labels, params.generator_fraction, params.seed)
    features = (inversion.grouping_features(diffusion, runtime, split.images[seen])
                if p.grouping == "look_alike" else None)
    members, group_labels = class_groups(split.labels[seen], p.group_size, p.groups_per_class, params.seed, features)
    members = seen[members]
    if p.batch_size > members.size:
        raise ConfigError(f"invert.batch_size: {p.batch_size} exceeds the {members.size} images in the groups")
    logged = {"invert": as_dict(p), "seed": params.seed, "groups": len(group_labels),
              **seen_real_images(members.ravel(), params.generator_fraction),
              **runtime.describe()}
    fingerprint = fingerprint_of(logged, meta.get("source"), sha256_file(diffusion),  # logged: runtime.describe()
                                 code=training_code(inversion, __name__))
    with stage_run(chain.train_item("dinv"), params.dataset.name, params=logged) as run:
        # "follows its group" (issue 13) in the FID network's feature space, in fp32 as the fid stage
        scorer = partial(inception_following, dims=params.fid.dims,
                         runtime=fid_runtime(runtime, params.fid.precision), batch_size=params.fid.batch_size)
        main = is_main_process()  # under torchrun: every rank learns the vectors, rank 0 scores and writes
        result = invert_groups(split.images, members, group_labels, diffusion, params, runtime,
                               chain.checkpoint("dinv"),
                               run.log_metrics, fingerprint=fingerprint, score_groups=scorer if main else None)
        if not main:
            return
        result.summary = {k: v for k, v in result.summary.items() if math.isfinite(v)}  # one group: no interval
        curves = chain.plots("invert") / "dinv.png"
        outputs = [chain.plots("invert") / "dinv.json", curves, chain.metrics_file("invert")]
        preview = PREVIEW in result.images  # absent with invert.preview_groups 0
        with replace_together(*outputs, *([chain.grids / PREVIEW] if preview else [])) as staged:
            save_json(staged[0], result.history)
            save_curves_png(staged[1], result.history, "invert: denoising loss of the learned embeddings")
            write_metrics(staged[2], {"steps": result.steps, "train_images": int(members.size),
                                      "generator_fraction": params.generator_fraction, **result.summary})
            if preview:
                names = [meta["class_names"][group_labels[g]] for g in preview_rows(group_labels, p.preview_groups)]
                save_grid_png(staged[3], result.images[PREVIEW], names,
                              title="real group | samples from its learned embedding | from its class embedding")
        run.log_artifact_as(curves, LOSS_ARTIFACT)  # one name in every run: compare view
        run.log_metrics(result.summary)
        if preview:
            run.log_artifact_as(chain.grids / PREVIEW, GRID_ARTIFACT)
    print(f"invert: {len(group_labels)} groups of {p.group_size}; denoising loss {result.summary['loss_learned']:.4f} "
          f"with learned embeddings vs {result.summary['loss_class_embedding']:.4f} with class embeddings")
    if "follows_margin" in result.summary:
        s = result.summary
        print(f"invert: samples from a group's vector sit {100 * s['follows_margin']:+.1f} % "
              f"(+- {100 * s.get('follows_margin_ci95', math.nan):.1f} %) closer to its real images than samples "
              f"from its class embedding (Inception features; closer in {100 * s['follows_share']:.0f} % of groups)")
