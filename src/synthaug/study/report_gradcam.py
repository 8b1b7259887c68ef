"""The report's Grad-CAM section: where each arm's classifier looks, against the real arm's (metrics/gradcam.json).

metrics/gradcam.json holds `<statistic>.<arm slug>` (e.g. `foreground_share.real+vae`, `entropy.synth-vae`);
definitions in `synthaug.metrics.gradcam`.
"""

from __future__ import annotations

import math


def _f(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def arm_cell(g: dict, slug: str) -> str:
    """`share (difference ± 95 % CI vs real)` of one arm."""
    diff, ci = g.get(f"foreground_share_vs_real.{slug}"), g.get(f"foreground_share_vs_real_ci95.{slug}")
    flag = " *" if diff is not None and ci is not None and math.isfinite(ci) and abs(diff) > ci else ""
    return f"{_f(g.get(f'foreground_share.{slug}'))} ({_f(diff, True)} ± {_f(ci)}{flag})"


def gradcam_section(gradcam: dict, sources: list[str], fraction: float, seed: int) -> list[str]:
    """Markdown lines; empty where the `gradcam` stage has not run."""
    if not gradcam:
        return []
    out = ["", "## Where the classifiers look: Grad-CAM", "",
           f"Grad-CAM for the true class of each arm's classifier at {fraction:g} of the real data (synth: none), "
           f"seed {seed}, on the same {gradcam.get('images', 0):,} real test images. Foreground share: share of the "
           "map's mass on the object's pixels (brighter than a tenth of the image's maximum; a uniform map scores "
           "the object's area share); * : its paired difference from `real` on the same images has a 95% "
           "interval excluding 0. Entropy: of the normalised map over log(pixels), 1 uniform, lower more focused. "
           "Agreement: mean Pearson correlation of the arm's map with `real`'s on the same image. Empty: share "
           "of maps with no positive evidence for the class, left out of the other figures.", "",
           "| source | real+S: foreground share (vs real) | synth:S: foreground share (vs real) | real+S: entropy "
           "| synth:S: entropy | real+S: agreement | synth:S: agreement | real+S / synth:S: empty |",
           "|---|---|---|---|---|---|---|---|"]
    for s in sources:
        mixed, synth = f"real+{s}", f"synth-{s}"
        out.append(f"| {s} | {arm_cell(gradcam, mixed)} | {arm_cell(gradcam, synth)} | "
                   f"{_f(gradcam.get(f'entropy.{mixed}'))} | {_f(gradcam.get(f'entropy.{synth}'))} | "
                   f"{_f(gradcam.get(f'agreement_with_real.{mixed}'))} | "
                   f"{_f(gradcam.get(f'agreement_with_real.{synth}'))} | {_f(gradcam.get(f'empty_share.{mixed}'))} "
                   f"/ {_f(gradcam.get(f'empty_share.{synth}'))} |")
    out += [f"| all (real+all) | {arm_cell(gradcam, 'real+all')} | - | {_f(gradcam.get('entropy.real+all'))} | - | "
            f"{_f(gradcam.get('agreement_with_real.real+all'))} | - | {_f(gradcam.get('empty_share.real+all'))} |",
            f"| real (reference) | {_f(gradcam.get('foreground_share.real'))} | - | {_f(gradcam.get('entropy.real'))} "
            f"| - | 1.000 | - | {_f(gradcam.get('empty_share.real'))} |", "",
            "![Grad-CAM of every arm's classifier on the same test images](gradcam.png)", "",
            "One grid per source, rows real / real+S / synth:S: `reports/gradcam/<source>.png`."]
    return out
