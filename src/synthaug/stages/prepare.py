"""`prepare`: real train/test splits as npz + meta, and each study seed's nested stratified fractions (DESIGN §3)."""

from __future__ import annotations

import numpy as np

from synthaug.core.config import as_dict, prepared_fractions
from synthaug.data.fractions import nested_fractions, save_fractions
from synthaug.data.real import load_dataset, write_prepared
from synthaug.stages.common import FRACTIONS_DIR, PARAMS_OPTION, REAL_DIR, Chain, load_stage, stage_command
from synthaug.core.storage import replace_together
from synthaug.core.tracking import stage_run


@stage_command
def prepare(params_path: str = PARAMS_OPTION) -> None:
    """Load the real dataset, write data/real/{train,test}.npz + meta.json, and data/fractions/study<K>.json."""
    params, _ = load_stage(params_path, log_runtime=False)  # computes no network
    d = params.dataset
    # The run spans the work, so its duration in MLflow is the stage's wall time.
    wanted = prepared_fractions(params)
    with stage_run("prepare", d.name, params={"dataset": as_dict(d), "fractions": wanted,
                                              "generator_fraction": params.generator_fraction,
                                              "study_seeds": params.study_seeds}) as run:
        ds = load_dataset(d.name, d.root, d.image_size)
        # One set of nested subsets per study seed, each in its own file: a chain's stages depend on their file
        # only, so adding a study seed re-runs none of the others' chains (their files keep their bytes), and
        # data/real's bytes depend only on the dataset, so a new fraction retrains no generator.
        by_study = {k: nested_fractions(ds.train.labels, wanted, k) for k in params.study_seeds}
        with replace_together(REAL_DIR, FRACTIONS_DIR) as (real_dir, fractions_dir):  # all or none
            real_dir.mkdir()
            write_prepared(ds, real_dir)
            fractions_dir.mkdir()
            for k, fractions in by_study.items():
                save_fractions(fractions_dir / Chain(k).fractions.name, fractions,
                               {"seed": k, "fractions": wanted, "generator_fraction": params.generator_fraction})
        run.log_metrics({"train_images": len(ds.train.labels), "test_images": len(ds.test.labels),
                         "num_classes": len(ds.class_names),
                         **{f"fraction_{k}_images": len(v) for k, v in by_study[params.study_seeds[0]].items()}})
        run.set_tags({"class_names": ",".join(ds.class_names)})
    counts = np.bincount(ds.train.labels)
    print(f"prepared {d.name}: {len(ds.train.labels)} train / "
          f"{len(ds.test.labels)} test images, {len(ds.class_names)} classes "
          f"({counts.min()}-{counts.max()} per class)")
