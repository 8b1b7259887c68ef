"""The study's summary, computed only from metrics files: the real-only curve, accuracy and paired gain per arm
and fraction, what each source's images are worth in real images, per-source quality (FID, label fidelity,
diversity, and the `analyse` stage's precision / recall / density / coverage and line geometry) against
usefulness, and a short plain-language answer computed from those numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from synthaug.core.layout import Chain
from synthaug.study.arms import arm_runs, arm_slug, parse_arm, run_slug, study_arms
from synthaug.data.fractions import fraction_key
from synthaug.core.lineage import check, refresh_command
from synthaug.study.report_answer import (answer_lines, detectable_pts, pts, randomness, replicate,
                                          trend_over_fractions, unit, worth)
from synthaug.study.report_analysis import analysis_section, num as _num
from synthaug.study.report_gradcam import gradcam_section
from synthaug.core.storage import load_json
from synthaug.study.study_stats import (bonferroni_level, detectable_gain, mean_ci, paired_gain, real_images_equivalent,
                                  significant, spearman)


def _record(metrics_dir: Path, study: int, arm: str, fraction: float | None, seed: int) -> Path:
    return Chain(study).metrics("classify", metrics_dir) / arm_slug(arm) / f"{run_slug(fraction, seed)}.json"


def pending_sources(metrics_dir: Path, params) -> list[str]:
    """Sources of a study in progress whose stages have not all run in every study seed's chain (no FID, sample
    metrics or classifier records yet): the report covers the others and names these."""
    def done(s: str) -> bool:
        files = [f for k in params.study_seeds for f in (
            Chain(k).metrics("fid", metrics_dir) / f"{s}.json", Chain(k).metrics("sample", metrics_dir) / f"{s}.json",
            *(_record(metrics_dir, k, arm, f, seed) for arm in (f"real+{s}", f"synth:{s}")
              for f, seed in arm_runs(arm, params)))]
        return all(f.is_file() for f in files)
    return [s for s in params.sources if not done(s)]


def _mean_of(parts: list[dict]) -> dict:
    """Per key, the mean over study seeds of the numbers the chains' metrics files hold (other values: the first's)."""
    out = dict(parts[0])
    for key, value in parts[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [p.get(key) for p in parts]
            if all(isinstance(v, (int, float)) for v in values):
                out[key] = float(np.mean(values))
    return out


def collect(metrics_dir: Path, params, pending: tuple[str, ...] = ()) -> dict:
    """Exactly the metrics files the current params define, for every study seed's chain (stale files of other
    settings are ignored); a missing one is an error naming it. Sources in `pending` are left out, and with them
    `real+all`. Per-source figures (FID, sample quality, label fidelity) are means over the study seeds; the
    analyses (analyse, gradcam, invert's "follows its group") are the first study seed's chain's."""
    sources = [s for s in params.sources if s not in pending]
    arms = [a for a in study_arms(params) if not set(parse_arm(a, params)[1]) & set(pending)]  # real+all: all
    chains = {}
    for k in params.study_seeds:
        chains[k] = {"runs": [{"study_seed": k, **load_json(_record(metrics_dir, k, arm, f, s))}
                              for arm in arms for f, s in arm_runs(arm, params)],
                     "fid": {s: load_json(Chain(k).metrics("fid", metrics_dir) / f"{s}.json") for s in sources},
                     "sample": {s: load_json(Chain(k).metrics("sample", metrics_dir) / f"{s}.json") for s in sources},
                     "fidelity": load_json(Chain(k).metrics_file("fidelity", metrics_dir))}
    first = params.study_seeds[0]
    analysis = metrics_dir / "analysis.json"  # absent while a study in progress has not run `analyse` yet
    gradcam = metrics_dir / "gradcam.json"  # likewise for `gradcam`
    invert = Chain(first).metrics_file("invert", metrics_dir)  # dinv's "follows its group" figure
    per = list(chains.values())
    return {"runs": [r for c in per for r in c["runs"]], "chains": chains,
            "invert": load_json(invert) if "dinv" in sources and invert.is_file() else {},
            "gradcam": load_json(gradcam) if gradcam.is_file() else {},
            "fid": {s: _mean_of([c["fid"][s] for c in per]) for s in sources},
            "sample": {s: _mean_of([c["sample"][s] for c in per]) for s in sources},
            "fidelity": _mean_of([c["fidelity"] for c in per]),
            "analysis": load_json(analysis) if analysis.is_file() else {}}


def lineage_records(inputs: dict, sources: list[str]) -> dict[int, list[tuple[str, dict | None, tuple[str, ...]]]]:
    """Per study seed, (stage item, inputs it recorded, inputs it must name) of every record `collect` gathered:
    classifier records, FIDs, label fidelity, and the analyses (the first chain's) where they have run
    (`synthaug.core.lineage.check` takes each chain's against that chain's current files)."""
    every = tuple(f"synthetic/{s}" for s in sources)
    out = {}
    for k, got in inputs["chains"].items():
        chain = Chain(k)
        records = [(chain.classify_item(r["arm"]), r.get("inputs"), ()) for r in got["runs"]]
        records += [(chain.fid_item(s), m.get("inputs"), (f"synthetic/{s}",)) for s, m in got["fid"].items()]
        records.append((chain.fidelity_item, got["fidelity"].get("inputs"), every))
        out[k] = records
    first = next(iter(inputs["chains"]))
    out[first] += [(stage, inputs[key].get("inputs"), every if key == "analysis" else ())
                   for stage, key in (("analyse", "analysis"), ("gradcam", "gradcam")) if inputs[key]]
    return out


def lineage_problems(inputs: dict, sources: list[str], current: dict[int, dict[str, str]]) -> dict[str, list[str]]:
    """{stage item: why} for every record that does not descend from its chain's current upstream outputs
    (`current`: per study seed, `synthaug.core.lineage.current_ids` of that chain)."""
    stale: dict[str, list[str]] = {}
    for k, records in lineage_records(inputs, sources).items():
        stale.update(check(records, current[k]))
    return stale


# The `analyse` stage's per-source scores the report shows (metrics/analysis.json holds them as `key.source`).
ANALYSIS_KEYS = ("precision", "recall", "density", "coverage", "kid_class_mean", "line_orientation_tv",
                 "coverage_split_mean", "coverage_split_sd", "recall_split_mean", "recall_split_sd")
# metrics/invert.json's "follows its group" figure (synthaug.metrics.group_following), shown for dinv.
FOLLOWS_KEYS = ("follows_margin", "follows_margin_ci95", "follows_share", "follows_groups")
# Every per-source quality score whose rank correlation with the gain the report gives.
CORRELATED = ("fid", "kid", "label_fidelity", "precision", "recall", "density", "coverage")


def _by_cell(runs: list[dict]) -> dict[tuple[str, float | None], dict[int, dict]]:
    """{(arm, fraction): {unit: record}}: the unit an interval is over. With one study seed, each classifier seed;
    with several, each study seed, holding the mean accuracy of its classifier seeds: the chains are the
    independent replicates (their subsets, generators and samples differ), the classifier seeds inside one chain
    are not, so an interval over all runs alone would leave out the generators' randomness."""
    studies = {r.get("study_seed", 0) for r in runs}
    cells: dict[tuple[str, float | None], dict[int, dict]] = defaultdict(dict)
    if len(studies) <= 1:
        for r in runs:
            cells[(r["arm"], r["fraction"])][r["seed"]] = r
        return cells
    grouped: dict[tuple[str, float | None, int], list[dict]] = defaultdict(list)
    for r in runs:
        grouped[(r["arm"], r["fraction"], r["study_seed"])].append(r)
    for (arm, fraction, study), rs in grouped.items():
        cells[(arm, fraction)][study] = {**rs[0], "test_accuracy": float(np.mean([r["test_accuracy"] for r in rs])),
                                         "classifier_runs": len(rs)}
    return cells


def summarise(inputs: dict, context: dict) -> dict:
    """Aggregate the inputs of `collect` into the summary the report, figures and MLflow show."""
    cells_by = _by_cell(inputs["runs"])
    acc = {key: {s: r["test_accuracy"] for s, r in by_seed.items()} for key, by_seed in cells_by.items()}
    cells = []
    for (arm, fraction), by_seed in sorted(cells_by.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
        mean, ci = mean_ci([r["test_accuracy"] for r in by_seed.values()])
        first = next(iter(by_seed.values()))
        cell = {"arm": arm, "fraction": fraction, "seeds": sorted(by_seed), "accuracy": mean, "ci95": ci,
                "real_images": first.get("real_images", 0), "synthetic_images": first.get("synthetic_images", 0)}
        base = acc.get(("real", fraction))
        if arm != "real" and fraction is not None and base and (g := paired_gain(acc[(arm, fraction)], base)):
            cell.update(gain=g[0], gain_ci95=g[1], gain_seeds=g[2], significant=significant(g[0], g[1]))
        cells.append(cell)
    # Many paired comparisons at 95 % each: a few "significant" ones are expected by chance alone, so each gain
    # is also tested at the Bonferroni-corrected level for the whole family (all arms at all fractions).
    compared = [c for c in cells if "gain" in c]
    family_level = bonferroni_level(len(compared))
    for c in compared:
        arm, base = acc[(c["arm"], c["fraction"])], acc[("real", c["fraction"])]
        _, ci, _ = paired_gain(arm, base, family_level)
        diffs = [arm[s] - base[s] for s in sorted(set(arm) & set(base))]
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
        c.update(gain_ci_corrected=ci, significant_corrected=significant(c["gain"], ci), gain_sd=sd,
                 detectable=detectable_gain(sd, len(diffs), family_level))
    curve = [c for c in cells if c["arm"] == "real"]
    counts, means = [c["real_images"] for c in curve], [c["accuracy"] for c in curve]
    for c in cells:
        if c["arm"].startswith("real+") and counts:
            value, status = real_images_equivalent(counts, means, c["accuracy"])
            c["real_equivalent"], c["real_equivalent_status"] = value, status
    fidelity = inputs["fidelity"]
    sources = {}
    for s in (s for s in context["sources"] if s not in context.get("pending_sources", ())):
        synth = next((c for c in cells if c["arm"] == f"synth:{s}"), None)
        sources[s] = {"fid": inputs["fid"][s]["fid"], "kid": inputs["fid"][s].get("kid"),
                      "label_fidelity": fidelity.get(s),
                      "diversity_ratio": inputs["sample"][s].get("diversity_ratio"),
                      "saturated_share": inputs["sample"][s].get("saturated_share"),
                      "synthetic_only": synth and synth["accuracy"], "synthetic_only_ci95": synth and synth["ci95"],
                      **{k: inputs["analysis"].get(f"{k}.{s}") for k in ANALYSIS_KEYS}}
    if "dinv" in sources:  # does inversion follow its groups? (the `invert` stage's figure, issue 13)
        sources["dinv"].update({k: v for k, v in inputs.get("invert", {}).items() if k in FOLLOWS_KEYS})
    for s, q in sources.items():  # the gain at the headline fraction, which quality is compared against
        head = _cell(cells, f"real+{s}", context["headline_fraction"]) or {}
        q.update(gain=head.get("gain"), gain_ci95=head.get("gain_ci95"))
    correlation = {}
    for key in CORRELATED:
        usable = [q for q in sources.values() if q["gain"] is not None and q.get(key) is not None]
        if usable or key in ("fid", "label_fidelity"):  # analysis scores only where `analyse` has run
            correlation[f"{key}_vs_gain"] = spearman([q[key] for q in usable], [q["gain"] for q in usable])
    summary = {"context": context, "cells": cells, "sources": sources, "correlation": correlation,
               "trend": trend_over_fractions(cells, acc),
               "gradcam": inputs.get("gradcam", {}),
               "comparisons": {"count": len(compared), "corrected_level": family_level},
               "reference": {"label_fidelity": fidelity.get("real_test"), "diversity_ratio": 1.0,
                             "saturated_share": next((m.get("real_saturated_share") for m in inputs["sample"].values()
                                                      if m.get("real_saturated_share") is not None), None),
                             "judge_real_images": fidelity.get("judge_real_images"),
                             "line_orientation_tv": inputs["analysis"].get("line_orientation_tv.real_heldout"),
                             "nearest_k": inputs["analysis"].get("nearest_k"),
                             "coverage_splits": inputs["analysis"].get("coverage_splits")}}
    summary["lineage"] = context.get("lineage", {})
    # No answer from records of mixed upstream states: the report names what is stale instead.
    summary["answer"] = [] if summary["lineage"].get("stale") else answer_lines(summary)
    return summary


def _cell(cells: list[dict], arm: str, fraction: float | None) -> dict | None:
    return next((c for c in cells if c["arm"] == arm and c["fraction"] == fraction), None)


def seen_by_generators(ctx: dict) -> str:
    """The generators' data, said in every table title (DESIGN §1: no leakage, or labelled leakage)."""
    if ctx["generator_fraction"] >= 1.0:
        return f"generators saw all {ctx['train_images']:,} real training images"
    return f"generators saw {ctx['generator_images']:,} real images ({ctx['generator_fraction']:g})"


def lineage_refusal(lineage: dict) -> list[str]:
    stale = lineage["stale"]
    return ["**No answer: these records come from mixed upstream states.** Each stage item below made its records "
            "from inputs that have been replaced since (or recorded none), so its figures would be paired with "
            "figures of other data:", "",
            *(f"- `{item}`: {'; '.join(why)}" for item, why in sorted(stale.items())), "",
            f"Refresh them, then the report: `{refresh_command(stale)}`"]


def provenance(lineage: dict) -> str:
    """The report's own line on where its figures come from: the commit, and whether every input is current."""
    commit = lineage.get("commit") or "unknown (not a git checkout)"
    state = ("every record descends from the current upstream outputs" if not lineage.get("stale")
             else f"{len(lineage['stale'])} stage items are stale (see The answer)")
    return (f"Made at commit `{commit}`{' (with uncommitted changes)' if lineage.get('dirty') else ''}; lineage "
            f"checked over {lineage.get('records', 0)} records: {state}.")


def header(ctx: dict) -> list[str]:
    lines = [f"Dataset `{ctx['dataset']}`. Classifiers `{ctx['arch']}`, {ctx['steps']} steps of {ctx['batch_size']} "
             f"each, {ctx['synthetic_ratio']:g} of every mixed batch synthetic, evaluated on the real test split; "
             f"{len(ctx['seeds'])} classifier seeds ({', '.join(map(str, ctx['seeds']))}) in each of "
             f"{len(ctx.get('study_seeds', [0]))} study seeds ({', '.join(map(str, ctx.get('study_seeds', [0])))}). "
             f"Accuracy: mean ± 95% t-interval over {unit(ctx)}. Gain: the paired difference to `real` per "
             f"{replicate(ctx)[:-1]}, in points, with its own interval; significant only when that interval excludes "
             "0.", randomness(ctx)]
    if ctx["generator_fraction"] >= 1.0:
        lines.append(f"**Generators and inversion saw all {ctx['train_images']:,} real training images** "
                     "(`generator_fraction: 1.0`), including images that classifiers at smaller fractions were "
                     "not given: a gain there carries information from real images the classifier never had.")
    else:
        lines.append(f"Generators and inversion trained only on the nested {ctx['generator_fraction']:g} subset "
                     f"({ctx['generator_images']:,} of {ctx['train_images']:,} real training images); mixed arms "
                     "ran only at fractions that contain it, so no generator saw an image its classifier was not "
                     "given.")
    return lines


def markdown(summary: dict) -> str:
    ctx, cells = summary["context"], summary["cells"]
    seen = seen_by_generators(ctx)
    out = ["# synthaug study summary", ""]
    if ctx.get("pending_sources"):
        done = [s for s in ctx["sources"] if s not in ctx["pending_sources"]]
        out += [f"**Study in progress.** Not run yet: {', '.join(ctx['pending_sources'])} (and `real+all`, which "
                f"pools every source). Everything below covers {', '.join(done)} only.", ""]
    out += ["## The answer", ""] + (lineage_refusal(summary["lineage"]) if summary["lineage"].get("stale") else
                                    [f"{i}. {a}" for i, a in enumerate(summary["answer"], 1)])
    out += ["", *header(ctx), "", provenance(summary["lineage"]), "", f"## Real-only learning curve ({seen})", "",
            "| fraction | real images | accuracy (%) | ± 95% CI |", "|---|---|---|---|"]
    out += [f"| {c['fraction']:g} | {c['real_images']:,} | {pts(c['accuracy'])} | {pts(c['ci95'])} |"
            for c in cells if c["arm"] == "real"]
    for f in sorted(ctx["fractions"]):
        out += ["", f"## Arms at {f:g} of the real data ({seen})", "",
                "| arm | real + synthetic images | accuracy (%) | ± 95% CI | gain (points) | ± 95% CI | "
                "significant | detectable gain (points) | synthetic images worth (real images) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for c in sorted((c for c in cells if c["fraction"] == f),
                        key=lambda c: (c["arm"] != "real", -c.get("gain", 0))):
            verdict = ("yes, also corrected" if c["significant_corrected"] else "yes") if c.get("significant") else "no"
            gain = ((pts(c["gain"], True), pts(c["gain_ci95"]), verdict, detectable_pts(c.get("detectable")))
                    if "gain" in c else ("-", "-", "-", "-"))
            out.append(f"| {c['arm']} | {c['real_images']:,} + {c['synthetic_images']:,} | {pts(c['accuracy'])} | "
                       f"{pts(c['ci95'])} | {' | '.join(gain)} | {worth(c) if c['arm'].startswith('real+') else '-'} |")
    head = ctx["headline_fraction"]
    ref = summary["reference"]
    out += ["", f"## Sources: quality against usefulness ({seen})", "",
            f"Gain at {head:g}. Label fidelity: share of samples that the judge (the `real` arm's classifier on "
            f"{ref['judge_real_images']:,.0f} real images) assigns their conditioned class. Diversity: within-class "
            "diversity over that of held-out real images. Saturated: share of flat near-white silhouettes "
            "(`synthaug.metrics.saturation`). Synthetic only: accuracy of `synth:S`.", "",
            "| source | FID | KID (x1000) | label fidelity | diversity / real | saturated | synthetic only (%) "
            "| gain (points) | ± 95% CI |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s, q in sorted(summary["sources"].items(), key=lambda kv: kv[1]["fid"]):
        kid = _num(None if q.get("kid") is None else 1000 * q["kid"])
        out.append(f"| {s} | {q['fid']:.2f} | {kid} | {_num(q['label_fidelity'])} | {_num(q['diversity_ratio'])} | "
                   f"{_pct(q.get('saturated_share'))} | {pts(q['synthetic_only'])} ± {pts(q['synthetic_only_ci95'])} | "
                   f"{pts(q['gain'], True)} | {pts(q['gain_ci95'])} |")
    out.append(f"| held-out real (reference) | - | - | {_num(ref['label_fidelity'])} | 1.00 | "
               f"{_pct(ref.get('saturated_share'))} | - | - | - |")
    inv = summary["sources"].get("dinv", {})
    if inv.get("follows_margin") is not None:
        out += ["", f"Does dinv follow its groups? Samples from a group's learned vector sit "
                f"{pts(inv['follows_margin'], True)} % ± {pts(inv.get('follows_margin_ci95'))} (95 % CI over "
                f"{inv.get('follows_groups', 0):.0f} groups) closer to that group's real images than samples from its "
                f"class embedding from the same noise (distance to the group's centroid in Inception features); "
                f"closer in {pts(inv.get('follows_share'))} % of groups (`synthaug.metrics.group_following`)."]
    out += ["", "| rank correlation across sources | Spearman rho | p | sources |", "|---|---|---|---|"]
    for name, (rho, p, n) in summary["correlation"].items():
        out.append(f"| {name.replace('_vs_', ' vs ').replace('_', ' ')} | {_num(rho)} | {_num(p)} | {n} |")
    out += analysis_section(summary)
    out += gradcam_section(summary.get("gradcam", {}), [s for s in ctx["sources"] if s in summary["sources"]],
                           ctx["headline_fraction"], ctx["seeds"][0])
    fam = summary["comparisons"]
    out += ["", "Detectable gain: the smallest true gain that this comparison's seeds would find with 80% power at the "
            "corrected level, given the spread of its paired differences (noncentral t; `study_stats.detectable_gain`)."]
    out += ["", f"Significant: the 95% interval of the gain excludes 0; \"also corrected\": so does its interval at "
            f"{100 * fam['corrected_level']:.2f}%, the Bonferroni level for all {fam['count']} paired comparisons "
            "of this report (with that many comparisons at 95%, about one in twenty would exclude 0 by chance "
            "alone)."]
    out += ["", "Synthetic images worth: the real-only curve, interpolated linearly in log(real images), gives the "
            "real image count that reaches the arm's mean accuracy; minus the arm's own real images, that is "
            "what its synthetic images are worth (\"above/below the measured range\" where the curve does not "
            "reach). Every figure here comes from `metrics/` files written by the pipeline's stages (dvc.lock "
            "records the code, data and params) and from runs recorded in MLflow.", ""]
    return "\n".join(out)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def headline_metrics(summary: dict) -> dict[str, float]:
    """Flat figures to compare experiments by (the report's MLflow run); none but `inputs_current` 0 from a mixed
    state."""
    if summary["lineage"].get("stale"):
        return {"inputs_current": 0.0}
    out = {"inputs_current": 1.0}
    out.update({f"fid.{s}": q["fid"] for s, q in summary["sources"].items()})
    out.update({f"kid.{s}": q["kid"] for s, q in summary["sources"].items() if q.get("kid") is not None})
    out.update({f"follows_margin.{s}": q["follows_margin"] for s, q in summary["sources"].items()
                if q.get("follows_margin") is not None})
    for c in summary["cells"]:
        key = f"{c['arm']}.f{fraction_key(c['fraction'])}" if c["fraction"] is not None else c["arm"]
        out[f"accuracy.{key}"] = c["accuracy"]
        if "gain" in c:
            out[f"gain.{key}"] = c["gain"]
        if c.get("real_equivalent") is not None:
            out[f"worth_real_images.{key}"] = c["real_equivalent"] - c["real_images"]
    return out
