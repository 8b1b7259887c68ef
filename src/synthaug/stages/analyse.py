"""`analyse`: beside FID, for every source: precision / recall / density / coverage and per-class KID (FID where a
class is large enough) on the Inception features the fid stages saved, and line-segment geometry against real
test images of the same classes (`synthaug.study.analysis`), for one study seed's chain (`--study`, dvc.yaml: the
first). Writes metrics/analysis.json (flat numbers),
reports/analysis_per_class.csv and reports/analysis.png, and logs them to MLflow.
"""

from __future__ import annotations

import math

from synthaug.core.config import as_dict
from synthaug.data.real import load_meta, load_prepared
from synthaug.data.shards import read_shards
from synthaug.core.lineage import input_ids
from synthaug.stages.common import (FID_REF, METRICS, PARAMS_OPTION, REAL_DIR, REPORTS, STUDY_OPTION, analysed_chain,
                                    load_stage, require, stage_command, write_metrics)
from synthaug.core.storage import StorageError, replace_together
from synthaug.core.tracking import stage_run


@stage_command
def analyse(study: int = STUDY_OPTION, params_path: str = PARAMS_OPTION) -> None:
    """Precision/recall, density/coverage, per-class KID/FID and line geometry of every source (one study seed's)."""
    from synthaug.study.analysis import (HELDOUT, class_line_stats, flat_metrics, line_scores, load_labelled_features,
                                   mean_orientation, per_class_table, reference_halves, source_analysis)
    from synthaug.figures.analysis_plots import save_analysis_png

    params, _ = load_stage(params_path, log_runtime=False)  # computes no network
    a, chain = params.analysis, analysed_chain(params, study)
    meta = load_meta(require(REAL_DIR, "prepare"))
    for source in params.sources:  # every input is there before any work
        require(chain.features(source), chain.fid_item(source))
        require(chain.shards(source), chain.sample_item(source))
    ref, ref_labels = load_labelled_features(require(FID_REF, "fid_ref"), "fid_ref", a.nearest_k)
    test = load_prepared(REAL_DIR, "test")
    ref_picks, heldout_picks = reference_halves(test.labels, a.line_images_per_class, params.seed)
    real_lines, heldout_lines = (class_line_stats(test.images, picks, a) for picks in (ref_picks, heldout_picks))
    summaries, rows = {}, {}
    summaries[HELDOUT], rows[HELDOUT] = line_scores(heldout_lines, real_lines)
    orientation = {"real": mean_orientation(real_lines), HELDOUT: mean_orientation(heldout_lines)}
    for source in params.sources:
        path = chain.features(source)
        features, labels = load_labelled_features(path, chain.fid_item(source), a.nearest_k)
        if features.shape[1] != ref.shape[1]:
            raise StorageError(f"{path}: features of {features.shape[1]} dims, but {FID_REF} holds "
                               f"{ref.shape[1]}; re-run `dvc repro {chain.fid_item(source)}`")
        images, image_labels = read_shards(chain.shards(source))
        summaries[source], rows[source], lines = source_analysis(features, labels, images, image_labels, ref,
                                                                 ref_labels, real_lines, a, params.seed)
        orientation[source] = mean_orientation(lines)
    dims = int(ref.shape[1])
    metrics = {**flat_metrics(summaries), "nearest_k": a.nearest_k, "feature_dims": dims,
               "coverage_splits": a.coverage_splits}
    names = meta["class_names"]
    with stage_run("analyse", params.dataset.name,
                   params={"analysis": as_dict(a), "sources": list(params.sources), "feature_dims": dims,
                           "study_seed": study}) as run:
        csv, png = REPORTS / "analysis_per_class.csv", REPORTS / "analysis.png"
        kid = {s: [rows[s].get(c, {}).get("kid", math.nan) for c in range(len(names))] for s in params.sources}
        with replace_together(csv, png, METRICS / "analysis.json") as (csv_path, png_path, record):  # all or none
            csv_path.write_text(per_class_table(rows, names))
            save_analysis_png(png_path, {s: summaries[s] for s in params.sources}, kid, names, orientation,
                              f"{params.dataset.name}: beside FID ({dims}-d Inception features, k={a.nearest_k})")
            write_metrics(record, {**metrics, "inputs": input_ids(synth_dir=chain.synthetic, sources=params.sources)})
        run.log_metrics(metrics)
        for p in (csv, png):
            run.log_artifact(p)
    for source in params.sources:
        s = summaries[source]
        print(f"analyse@{source}: precision {s['precision']:.3f}, recall {s['recall']:.3f}, density "
              f"{s['density']:.3f}, coverage {s['coverage']:.3f}, per-class KID mean {s['kid_class_mean']:.4f}, "
              f"line orientation TV {s['line_orientation_tv']:.3f} (real held out: "
              f"{summaries[HELDOUT]['line_orientation_tv']:.3f})")
