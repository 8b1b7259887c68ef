"""`prepare`: real train/test splits as npz + meta, and the nested stratified fractions (DESIGN §3)."""

from __future__ import annotations

import numpy as np

from synthaug.core.config import as_dict, prepared_fractions
from synthaug.data.fractions import nested_fractions, save_fractions
from synthaug.data.real import load_dataset, write_prepared
from synthaug.stages.common import FRACTIONS, PARAMS_OPTION, REAL_DIR, load_stage, stage_command
from synthaug.core.storage import replace_together
from synthaug.core.tracking import stage_run


@stage_command
def prepare(params_path: str = PARAMS_OPTION) -> None:
    """Load the real dataset, write data/real/{train,test}.npz + meta.json, and data/fractions.json."""
    params, _ = load_stage(params_path, log_runtime=False)  # computes no network
    d = params.dataset
    # The run spans the work, so its duration in MLflow is the stage's wall time.
    wanted = prepared_fractions(params)
    with stage_run("prepare", d.name, params={"dataset": as_dict(d), "fractions": wanted,
                                              "generator_fraction": params.generator_fraction,
                                              "seed": params.seed}) as run:
        ds = load_dataset(d.name, d.root, d.image_size)
        fractions = nested_fractions(ds.train.labels, wanted, params.seed)
        # data/real's bytes depend only on the dataset (deterministic npz), so changing the fractions re-runs
        # this cheap stage but none of the generators that read data/real.
        with replace_together(REAL_DIR, FRACTIONS) as (real_dir, fractions_path):  # both or neither
            real_dir.mkdir()
            write_prepared(ds, real_dir)
            save_fractions(fractions_path, fractions, {"seed": params.seed, "fractions": wanted,
                                                       "generator_fraction": params.generator_fraction})
        run.log_metrics({"train_images": len(ds.train.labels), "test_images": len(ds.test.labels),
                         "num_classes": len(ds.class_names),
                         **{f"fraction_{k}_images": len(v) for k, v in fractions.items()}})
        run.set_tags({"class_names": ",".join(ds.class_names)})
    counts = np.bincount(ds.train.labels)
    print(f"prepared {d.name}: {len(ds.train.labels)} train / "
          f"{len(ds.test.labels)} test images, {len(ds.class_names)} classes "
          f"({counts.min()}-{counts.max()} per class)")
