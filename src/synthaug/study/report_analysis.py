"""The report's "Beside FID" section: the `analyse` stage's precision / recall / density / coverage, per-class KID
and line geometry per source (metrics/analysis.json), with coverage over disjoint parts of each source's images and
the same-sampler comparison (dinv against ddim) that issue 32 asks for.
"""

from __future__ import annotations

import math

from synthaug.study.report_answer import pts
from synthaug.study.study_stats import significant, t_halfwidth, welch_difference


def num(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def analysis_section(summary: dict) -> list[str]:
    """Beside FID (the `analyse` stage): feature-space fidelity and coverage and line geometry against the gain."""
    sources = {s: q for s, q in summary["sources"].items() if q.get("precision") is not None}
    if not sources:
        return []
    n = summary["reference"].get("coverage_splits") if any(
        q.get("coverage_split_mean") is not None for q in sources.values()) else None
    out = ["", "## Beside FID: precision, recall, density, coverage and line geometry", "",
           f"On the same Inception features as FID (k = {summary['reference']['nearest_k']} nearest neighbours of "
           "the real test features): precision "
           "and density, how much of a source lies on the real manifold; recall and coverage, how much of the real "
           "manifold it reaches (Kynkäänniemi et al. 2019; Naeem et al. 2020). Per-class KID: mean over classes of "
           "KID against real test images of that class. Line orientation TV: total-variation distance between the "
           "orientation histograms of LSD line segments in a source's images and in real test images of the same "
           "classes (held-out real images score the reference value). `reports/analysis_per_class.csv` has every "
           "figure per class."
           + (f" Coverage of 1/{n}: the same score on each of {n} disjoint class-balanced parts of a source's images, "
              "each an independent draw of its sampler (every image has its own noise); its interval says how far "
              "drawing that many images again can move their coverage, which reads lower than the whole set's "
              "(fewer images reach fewer real neighbourhoods)." if n else ""), "",
           "| source | precision | recall | density | coverage | per-class KID (x1000) | line orientation TV | "
           f"{split_header(n)}gain (points) |", "|---|---|---|---|---|---|---|" + "---|" * (2 if n else 1)]
    for s, q in sorted(sources.items(), key=lambda kv: (kv[1]["gain"] is None, -(kv[1]["gain"] or 0))):
        kid = None if q.get("kid_class_mean") is None else 1000 * q["kid_class_mean"]
        out.append(f"| {s} | {num(q['precision'])} | {num(q['recall'])} | {num(q['density'])} | "
                   f"{num(q['coverage'])} | {num(kid)} | {num(q.get('line_orientation_tv'))} | "
                   f"{split_cell(q, 'coverage', n) if n else ''}{pts(q['gain'], True)} |")
    ref = summary["reference"].get("line_orientation_tv")
    out += [f"| held-out real (reference) | - | - | - | - | - | {num(ref)} | {'- | ' if n else ''}- |"]
    out += split_comparison(sources, n)
    out += ["", "![precision against recall, per-class KID, line orientations](analysis.png)"]
    return out


def split_header(n: int | None) -> str:
    return f"coverage of 1/{n} of the images (mean ± 95 %) | " if n else ""


def split_cell(q: dict, key: str, n: int) -> str:
    mean, sd = q.get(f"{key}_split_mean"), q.get(f"{key}_split_sd")
    if mean is None or sd is None:
        return "n/a | "
    return f"{mean:.3f} ± {t_halfwidth(sd, n):.3f} | "


# Same U-Net and DDIM settings, differing only in conditioning: the comparison issue 32 asks the report to make.
SAME_SAMPLER_PAIRS = (("dinv", "ddim"),)


def split_comparison(sources: dict, n: int | None) -> list[str]:
    """Coverage and recall of a source against its same-sampler counterpart over the `analyse` parts: a
    difference whose interval holds 0 is what drawing the images again could undo."""
    out = []
    for a, b in SAME_SAMPLER_PAIRS:
        qa, qb = sources.get(a, {}), sources.get(b, {})
        parts = []
        for key in ("coverage", "recall"):
            stats = [q.get(f"{key}_split_{x}") for q in (qa, qb) for x in ("mean", "sd")]
            if not n or None in stats:
                break
            diff, half = welch_difference(stats[0], stats[1], n, stats[2], stats[3], n)
            told = "told apart" if significant(diff, half) else "not told apart from 0"
            parts.append(f"{key} {diff:+.3f} ± {half:.3f} ({told})")
        if len(parts) == 2:
            out += ["", f"{a} against {b} (the same network and sampler settings, differing only in conditioning), "
                        f"over {n} disjoint parts of each source's images (independent draws; Welch 95 % "
                        f"intervals): {'; '.join(parts)}."]
    return out
