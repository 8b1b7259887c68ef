"""`gradcam`: where each arm's classifier looks, on the same fixed real test images.

Reads the weights the classify stages keep (`models/study<K>/classify/<arm>.pt`: the first fraction, first seed) for
`real`, every `real+SOURCE`, every `synth:SOURCE` and `real+all`; computes Grad-CAM maps for the true class
(`synthaug.metrics.gradcam`) on `gradcam.images_per_class` seeded test images per class; writes each arm's
attention statistics against `real`'s (metrics/gradcam.json), a grid per source (reports/gradcam/<source>.png:
images, real, real+SOURCE, synth:SOURCE) and one of every arm (reports/gradcam.png), and logs them to MLflow.
"""

from __future__ import annotations

import numpy as np

from synthaug.study.arms import arm_slug, study_arms
from synthaug.data.groups import pick_per_class
from synthaug.data.real import load_meta, load_prepared
from synthaug.core.lineage import NO_LINEAGE, merged
from synthaug.stages.common import (METRICS, PARAMS_OPTION, REAL_DIR, REPORTS, STUDY_OPTION, analysed_chain,
                                    load_stage, require, stage_command, write_metrics)
from synthaug.core.storage import replace_together
from synthaug.core.tracking import stage_run

GRID_CLASSES = 10  # the grids show the first ten classes (CUB has 200)


@stage_command
def gradcam(study: int = STUDY_OPTION, params_path: str = PARAMS_OPTION) -> None:
    """Grad-CAM maps and attention statistics of every arm's classifier (one study seed's) against the real arm's."""
    from synthaug.study.classification import load_classifier
    from synthaug.figures.gradcam_plots import save_gradcam_grid
    from synthaug.metrics.gradcam import compare_to_reference, foreground_masks, grad_cams
    from synthaug.core.arrays import to_model_range

    params, runtime = load_stage(params_path)
    g, chain = params.gradcam, analysed_chain(params, study)
    arms = study_arms(params)
    paths = {arm: require(chain.classifier_weights(arm_slug(arm)), chain.classify_item(arm)) for arm in arms}
    meta = load_meta(require(REAL_DIR, "prepare"))
    test = load_prepared(REAL_DIR, "test")
    picks = pick_per_class(test.labels, range(meta["num_classes"]), g.images_per_class, params.seed)
    idx = np.concatenate([picks[c] for c in sorted(picks)])
    images, labels = test.images[idx], test.labels[idx]
    x = runtime.batch(to_model_range(images))
    cams, about = {}, {}
    for arm, path in paths.items():
        model, about[arm] = load_classifier(path, runtime)
        cams[arm] = grad_cams(model, x, labels)
    stats = compare_to_reference(cams, foreground_masks(images, g.mask_threshold))
    metrics = {f"{key}.{arm_slug(arm)}": value for arm, s in stats.items() for key, value in s.items()}
    metrics["images"] = int(len(idx))

    where = np.concatenate([np.flatnonzero(labels == c)[:g.grid_per_class] for c in sorted(picks)[:GRID_CLASSES]])
    captions = [meta["class_names"][int(labels[i])] for i in where]
    figures = {REPORTS / "gradcam.png": arms}
    figures.update({REPORTS / "gradcam" / f"{s}.png": ["real", f"real+{s}", f"synth:{s}"] for s in params.sources})
    first_fraction = about["real"]["fraction"]
    # Its inputs: those of the classifiers it read (each kept weight file names what its run trained on).
    record = {**metrics, "inputs": merged([a.get("inputs") or {NO_LINEAGE: ""} for a in about.values()])}
    with replace_together(REPORTS / "gradcam.png", REPORTS / "gradcam", METRICS / "gradcam.json") as (
            overview, folder, metrics_path):  # figures and figures' numbers together
        folder.mkdir()
        staged = {path: overview if path == REPORTS / "gradcam.png" else folder / path.name for path in figures}
        for path, rows in figures.items():
            save_gradcam_grid(staged[path], images[where], {a: cams[a][where] for a in rows}, captions,
                              f"{params.dataset.name}: Grad-CAM for the true class (classifiers at "
                              f"{first_fraction:g} of the real data, study seed {study}, seed {about['real']['seed']}; "
                              "synth: none)")
        write_metrics(metrics_path, record)
    with stage_run("gradcam", params.dataset.name,
                   params={"images": int(len(idx)), "mask_threshold": g.mask_threshold, "study_seed": study,
                           "fraction": first_fraction, "seed": about["real"]["seed"], "arms": len(arms)}) as run:
        run.log_metrics(metrics)
        for path in figures:
            run.log_artifact(path, "gradcam" if path.parent.name == "gradcam" else None)
    for arm in arms:
        s = stats[arm]
        print(f"gradcam@{arm}: foreground share {s['foreground_share']:.3f} ({s['foreground_share_vs_real']:+.3f} "
              f"+- {s['foreground_share_vs_real_ci95']:.3f} vs real), entropy {s['entropy']:.3f}, agreement with "
              f"real {s['agreement_with_real']:.3f}, empty maps {s['empty_share']:.3f}")
