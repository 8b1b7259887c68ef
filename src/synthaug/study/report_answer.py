"""The report's answer: plain-language lines computed from the summary, worded by what the design can tell.

"Helps" / "hurts" only where the gain's interval excludes 0 at the Bonferroni level for every comparison of the
report; a result significant at 95 % alone is "a lead"; where nothing is detectable the answer says so, with the
smallest gain the design could detect (80 % power at the corrected level, `study_stats.detectable_gain`).
"""

from __future__ import annotations

import math

import numpy as np

from synthaug.study.study_stats import mean_ci, seeds_for_halfwidth

TARGET_HALFWIDTH = 0.01  # the 95 % interval of the best gain the study aims at: +-1 point


def detectable_pts(x: float | None) -> str:
    """A detectable gain in points; beyond the accuracy scale (a gain over 100 points cannot happen) as "> 100"."""
    return "> 100" if x is not None and x > 1.0 else pts(x)


def pts(x: float | None, signed: bool = False) -> str:
    """An accuracy (a share) in percentage points."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def worth(c: dict, sentence: bool = False) -> str:
    """What a mixed arm's synthetic images are worth in real images: the real count at which the real-only curve
    reaches the arm's accuracy, minus the arm's own real images (negative: the mix scores like fewer)."""
    status = c.get("real_equivalent_status")
    if status in ("above", "below"):
        return (f"{'more' if status == 'above' else 'less'} than the real-only curve can tell ({status} its measured "
                "range)") if sentence else f"{status} the measured range"
    if status is None:
        return "n/a"
    extra = round(c["real_equivalent"] - c["real_images"])
    return (f"about {extra:,} real images (interpolated on the real-only curve)" if sentence
            else f"{extra:,} (interpolated)")


def trend_over_fractions(cells: list[dict], acc: dict) -> dict | None:
    """The change of the mean gain over all sources from the smallest to the largest mixed fraction, per seed, with
    its t-interval over seeds (the difference of two means alone says nothing about its noise)."""
    mixed = [c for c in cells if c["arm"].startswith("real+") and c["arm"] != "real+all" and "gain" in c]
    fractions = sorted({c["fraction"] for c in mixed})
    if len(fractions) < 2:
        return None
    lo, hi = fractions[0], fractions[-1]
    arms = sorted({c["arm"] for c in mixed if c["fraction"] == lo} & {c["arm"] for c in mixed if c["fraction"] == hi})
    seeds = sorted(set.intersection(*(set(acc[(a, f)]) for a in arms + ["real"] for f in (lo, hi))))
    if not arms or not seeds:
        return None

    def mean_gain(f: float, s: int) -> float:
        return float(np.mean([acc[(a, f)][s] - acc[("real", f)][s] for a in arms]))

    change, ci = mean_ci([mean_gain(hi, s) - mean_gain(lo, s) for s in seeds])
    return {"from": lo, "to": hi, "at_from": float(np.mean([mean_gain(lo, s) for s in seeds])),
            "at_to": float(np.mean([mean_gain(hi, s) for s in seeds])), "change": change, "ci95": ci,
            "seeds": len(seeds), "sources": len(arms)}


def unit(ctx: dict) -> str:
    """What an interval is over: the replicates of the design, in words."""
    studies = ctx.get("study_seeds", [0])
    if len(studies) > 1:
        return f"{len(studies)} study seeds (each the mean of its {len(ctx['seeds'])} classifier seeds)"
    return f"{len(ctx['seeds'])} classifier seeds"


def replicate(ctx: dict) -> str:
    """The replicate's name (what more of would narrow an interval)."""
    return "study seeds" if len(ctx.get("study_seeds", [0])) > 1 else "classifier seeds"


def randomness(ctx: dict) -> str:
    """In words, which randomness the intervals cover."""
    studies = ctx.get("study_seeds", [0])
    if len(studies) > 1:
        return (f"The intervals are over {len(studies)} study seeds: each draws its own nested real subsets, trains "
                f"its own generators and inversion, samples its own images and trains its own {len(ctx['seeds'])} "
                "classifier seeds (initial weights, batch order, crops), whose mean is its value; so they cover the "
                "generators' training randomness as well as the classifiers'. Per-source FID, sample quality and "
                "label fidelity are means over the study seeds; the analyses (precision/recall, Grad-CAM, "
                f"inversion's group following) are study seed {studies[0]}'s.")
    return (f"The intervals are over {len(ctx['seeds'])} classifier seeds: each seed draws its classifiers' initial "
            "weights, batch order and crops, while the real subsets, the generators and their samples are one run "
            f"(study seed {studies[0]}) shared by every seed, so no interval covers the generators' own training "
            "randomness.")


def answer_lines(summary: dict) -> list[str]:
    """The answer, each line computed from the summary's numbers."""
    ctx, cells, fam = summary["context"], summary["cells"], summary["comparisons"]
    mixed = [c for c in cells if c["arm"].startswith("real+") and c["arm"] != "real+all" and "gain" in c]
    corrected = f"the Bonferroni correction for all {fam['count']} comparisons (intervals at " \
                f"{100 * fam['corrected_level']:.2f}%)"

    def where(c: dict) -> str:
        return f"{c['arm'][5:]} at {c['fraction']:g} ({pts(c['gain'], True)} ± {pts(c['gain_ci95'])})"

    def verdict(sign: int, verb: str) -> str:
        firm = [where(c) for c in mixed if c["significant_corrected"] and sign * c["gain"] > 0]
        leads = [where(c) for c in mixed if c["significant"] and not c["significant_corrected"] and sign * c["gain"] > 0]
        line = (f"{verb.capitalize()}s, surviving {corrected}: " + "; ".join(firm) if firm
                else f"No source {verb}s after {corrected}")
        if leads:
            line += "; a lead only (its 95% interval excludes 0, the corrected one does not): " + "; ".join(leads)
        return line

    lines = [verdict(+1, "help") + f" ({unit(ctx)}; paired gain over `real` in points, "
             "95% t-interval).", verdict(-1, "hurt") + "."]
    head = [c for c in mixed if c["fraction"] == ctx["headline_fraction"]]
    if head:
        best = max(head, key=lambda c: c["gain"])
        line = (f"Largest mean gain at {best['fraction']:g} of the real data ({best['real_images']:,} images): "
                f"{best['arm'][5:]} {pts(best['gain'], True)} ± {pts(best['gain_ci95'])} points; its "
                f"{best['synthetic_images']:,} synthetic images are worth {worth(best, sentence=True)} here.")
        if best["gain_ci95"] > TARGET_HALFWIDTH:
            need = seeds_for_halfwidth(best["gain_sd"], TARGET_HALFWIDTH)
            line += (f" Its interval is wider than ± {pts(TARGET_HALFWIDTH)} points; at the spread measured, "
                     + (f"about {need} {replicate(ctx)} would narrow it to that." if need
                        else f"no number of {replicate(ctx)} would."))
        lines.append(line)
    else:
        lines.append("No mixed arm ran at the headline fraction.")
    trend = summary.get("trend")
    if trend:
        moves = "falls" if trend["change"] < 0 else "rises"
        sure = (f"it {moves} as real data grows" if abs(trend["change"]) > trend["ci95"]
                else "no trend across fractions can be told from the noise")
        lines.append(f"Mean gain over {trend['sources']} sources: {pts(trend['at_from'], True)} points at "
                     f"{trend['from']:g} of the real data, {pts(trend['at_to'], True)} at {trend['to']:g}; the change, "
                     f"{pts(trend['change'], True)} ± {pts(trend['ci95'])} (95% t over {trend['seeds']} {replicate(ctx)}), says "
                     f"{sure}.")
    elif mixed:
        g = [c["gain"] for c in mixed]
        lines.append(f"Mean gain over all sources at {mixed[0]['fraction']:g} of the real data: "
                     f"{pts(sum(g) / len(g), True)} points (one fraction studied).")
    else:
        lines.append("No paired gains to compare across fractions.")
    lines.append(_fid_line(summary))
    detectable = [c["detectable"] for c in mixed if math.isfinite(c.get("detectable", math.nan))]
    if detectable and min(detectable) > 1.0:
        lines.append(f"What this design can detect: nothing. At the spread each of the {len(detectable)} comparisons "
                     f"measured, even a gain of 100 points would be found with less than 80% power after {corrected}: "
                     f"too few {replicate(ctx)} for any conclusion either way.")
    elif detectable:
        lines.append(f"What this design can detect: a true gain of {detectable_pts(float(np.median(detectable)))} "
                     f"points (median over {len(detectable)} comparisons; from {detectable_pts(min(detectable))} to "
                     f"{detectable_pts(max(detectable))}) would be found with 80% power after {corrected}, at the "
                     "spread each comparison measured; smaller true gains can go undetected, so \"no source helps\" "
                     "does not mean none could.")
    return lines


def _fid_line(summary: dict) -> str:
    ctx = summary["context"]
    rho, p, n = summary["correlation"]["fid_vs_gain"]
    if math.isnan(rho):
        return f"FID against gain: too few sources ({n}) for a rank correlation."
    verdict = "lower FID went with larger gains" if rho < 0 else "lower FID did not go with larger gains"
    sig = "significant" if p < 0.05 else "not significant"
    line = (f"Does FID predict usefulness here? Spearman rho(FID, gain at {ctx['headline_fraction']:g}) = "
            f"{rho:.2f} over {n} sources (p = {p:.2f}, {sig}): {verdict}.")
    ranked = [(name[:-len("_vs_gain")], r) for name, r in summary["correlation"].items() if not math.isnan(r[0])]
    if len(ranked) > 1:
        best, (b_rho, b_p, b_n) = max(ranked, key=lambda kv: abs(kv[1][0]))
        line += (f" Of {len(ranked)} quality scores, {SCORE_NAMES.get(best, best)} ranks the sources closest to "
                 f"their gains (rho = {b_rho:.2f}, p = {b_p:.2f} over {b_n} sources, not corrected for picking "
                 f"the closest of {len(ranked)}).")
    return line


SCORE_NAMES = {"fid": "FID", "kid": "KID", "label_fidelity": "label fidelity"}


