"""`fidelity`: label fidelity of every source, scored by the judge (the `real` arm's classifier on the most real data).

Label fidelity of a source: the share of its samples that the judge assigns the class they were generated for,
overall and per class. The reference line is the same judge on held-out real images (the test split): a source
cannot be expected to score above what real images score.
"""

from __future__ import annotations

import logging

from synthaug.data.real import load_meta, load_prepared
from synthaug.data.shards import read_shards
from synthaug.core.lineage import input_ids
from synthaug.stages.common import (PARAMS_OPTION, REAL_DIR, REPORTS, STUDY_OPTION, Chain, load_stage, require,
                                    stage_command, write_metrics)
from synthaug.core.storage import replace_together
from synthaug.core.tracking import stage_run

log = logging.getLogger("synthaug")


@stage_command
def fidelity(study: int = STUDY_OPTION, params_path: str = PARAMS_OPTION) -> None:
    """Score every source's labels with the chain's judge: metrics/fidelity/study<K>.json and a per-class CSV."""
    from synthaug.study.classification import evaluate, load_classifier  # torchvision: import only when used

    params, runtime = load_stage(params_path, study=study)
    chain = Chain(study)
    meta = load_meta(require(REAL_DIR, "prepare"))
    model, judge = load_classifier(require(chain.judge, chain.classify_item("real")), runtime)
    k, bs = meta["num_classes"], params.classify.model.eval_batch_size
    test = load_prepared(REAL_DIR, "test")
    scored = {"real_test": evaluate(model, test.images, test.labels, runtime, k, bs)}
    pending = [s for s in params.sources if not chain.shards(s).exists()]
    if pending:  # a study in progress: score what has been sampled; the report names the rest
        log.warning("not sampled yet, left out of label fidelity: %s", ", ".join(pending))
    for source in (s for s in params.sources if s not in pending):
        scored[source] = evaluate(model, *read_shards(chain.shards(source)), runtime, k, bs)
    overall = {name: m["test_accuracy"] for name, m in scored.items()}
    about = {"judge_fraction": judge["fraction"], "judge_seed": judge["seed"],
             "judge_real_images": judge["real_images"]}
    scored_sources = [s for s in params.sources if s not in pending]
    with stage_run(chain.fidelity_item, params.dataset.name, params={**about, **runtime.describe()}) as run:
        run.log_metrics({f"label_fidelity.{name}": v for name, v in overall.items()})
        csv = REPORTS / "fidelity_per_class" / f"{chain.name}.csv"
        with replace_together(csv, chain.metrics_file("fidelity")) as (csv_path, record):  # both or neither
            rows = ["source,class,label_fidelity"] + [
                f"{name},{meta['class_names'][c]},{m[f'test_accuracy_class{c}']:.6f}"
                for name, m in scored.items() for c in range(k) if f"test_accuracy_class{c}" in m]
            csv_path.write_text("\n".join(rows) + "\n")
            write_metrics(record, {**overall, **about, "inputs": input_ids(REAL_DIR, synth_dir=chain.synthetic,
                                                                            sources=scored_sources)})
        run.log_artifact(csv)
    print("label fidelity (judge: real arm, "
          f"{judge['real_images']} real images): " + ", ".join(f"{n} {v:.3f}" for n, v in overall.items()))
