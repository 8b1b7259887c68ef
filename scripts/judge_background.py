"""Does the judge misread a source because of its background? Prints, per source, the mean corner pixel of its
shards (real Fashion-MNIST: 0) and its label fidelity as sampled and with dim pixels set to 0.

Run after `fidelity` on the laptop default: `python scripts/judge_background.py ddim vae`. Not a pipeline stage:
a check behind README's reading of the label-fidelity column.
"""

from __future__ import annotations

import sys

import numpy as np

from synthaug.study.classification import evaluate, load_classifier
from synthaug.data.real import load_meta, load_prepared
from synthaug.data.shards import read_shards
from synthaug.metrics.saturation import background_level
from synthaug.core.runtime import make_runtime
from synthaug.stages.common import JUDGE, REAL_DIR, SYNTH_DIR


def main(sources: list[str]) -> None:
    runtime = make_runtime("cpu", "fp32")
    model, _ = load_classifier(JUDGE, runtime)
    k = load_meta(REAL_DIR)["num_classes"]
    test = load_prepared(REAL_DIR, "test")
    print(f"real test: corner mean {background_level(test.images):.1f}")
    for source in sources:
        images, labels = read_shards(SYNTH_DIR / source)
        row = [f"{source}: corner mean {background_level(images):.1f}; label fidelity as sampled "
               f"{evaluate(model, images, labels, runtime, k)['test_accuracy']:.4f}"]
        for cut in (20, 40, 60):
            zeroed = np.where(images < cut, 0, images).astype(np.uint8)
            row.append(f"pixels < {cut} -> 0: {evaluate(model, zeroed, labels, runtime, k)['test_accuracy']:.4f}")
        print("; ".join(row))


if __name__ == "__main__":
    main(sys.argv[1:] or ["ddim", "vae"])
