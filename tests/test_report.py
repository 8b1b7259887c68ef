"""The study report from a fake metrics folder: exactly the files the params define, the real-only curve, paired
gains with intervals, sample efficiency, quality against gain, and the answer lines computed from them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthaug.study.arms import arm_slug, run_slug
from synthaug.core.config import Params, build
from synthaug.study.arms import parse_arm
from synthaug.study.report import (collect, headline_metrics, lineage_problems, markdown, pending_sources,
                             summarise)
from synthaug.core.storage import StorageError, save_json
from synthaug.study.study_stats import mean_ci

PARAMS: Params = build(Params, {"fractions": [0.1], "real_fractions": [0.01, 1.0], "generator_fraction": 0.1,
                                "sources": ["vae", "gan"], "classify": {"seeds": [0, 1, 2]}}, "")
CURVE = {0.01: (600, [0.60, 0.61, 0.62]), 0.1: (6000, [0.70, 0.71, 0.72]), 1.0: (60000, [0.90, 0.91, 0.92])}
# real+vae: +0.05 per seed (significant, zero spread); real+gan: -0.03, -0.02, -0.025 (significant loss);
# real+all: +0.01, -0.01, 0.00 (not significant)
MIXED = {"vae": [0.75, 0.76, 0.77], "gan": [0.67, 0.69, 0.695], "all": [0.71, 0.70, 0.72]}
SYNTH = {"vae": [0.5, 0.6, 0.55], "gan": [0.3, 0.32, 0.34]}
FID = {"vae": 40.0, "gan": 90.0}
FIDELITY = {"vae": 0.8, "gan": 0.5, "real_test": 0.9, "judge_fraction": 1.0, "judge_seed": 0,
            "judge_real_images": 60000}
CONTEXT = {"dataset": "fashion_mnist", "arch": "resnet8", "steps": 300, "batch_size": 64, "synthetic_ratio": 0.5,
           "seeds": [0, 1, 2], "sources": ["vae", "gan"], "fractions": [0.1], "real_fractions": [0.01, 0.1, 1.0],
           "headline_fraction": 0.1, "generator_fraction": 0.1, "train_images": 60000, "generator_images": 6000}


def _record(arm, fraction, seed, acc, real_images, synthetic_images=0):
    return {"arm": arm, "fraction": fraction, "seed": seed, "test_accuracy": acc, "real_images": real_images,
            "synthetic_images": synthetic_images, "fingerprint": "x"}


@pytest.fixture
def metrics(tmp_path):
    def put(arm, fraction, seed, record):
        save_json(tmp_path / "classify" / "study0" / arm_slug(arm) / f"{run_slug(fraction, seed)}.json", record)

    for f, (n, accs) in CURVE.items():
        for seed, a in enumerate(accs):
            put("real", f, seed, _record("real", f, seed, a, n))
    for name, accs in MIXED.items():
        for seed, a in enumerate(accs):
            put(f"real+{name}", 0.1, seed, _record(f"real+{name}", 0.1, seed, a, 6000, 2500))
    for name, accs in SYNTH.items():
        for seed, a in enumerate(accs):
            put(f"synth:{name}", None, seed, _record(f"synth:{name}", None, seed, a, 0, 2500))
    put("real", 0.3, 0, _record("real", 0.3, 0, 0.99, 18000))  # a stale run of another setting: ignored
    for s in ("vae", "gan"):
        save_json(tmp_path / "fid" / "study0" / f"{s}.json", {"fid": FID[s], "kid": FID[s] / 2000, "num_images": 2500,
                                                   "dims": 2048, "ref_split": "test"})
        save_json(tmp_path / "sample" / "study0" / f"{s}.json", {"diversity_ratio": 0.9 if s == "vae" else 0.6,
                                                     "saturated_share": 0.25 if s == "gan" else 0.0,
                                                     "real_saturated_share": 0.0042})
    save_json(tmp_path / "fidelity" / "study0.json", FIDELITY)
    return tmp_path


def _cell(summary, arm, fraction):
    (c,) = [c for c in summary["cells"] if c["arm"] == arm and c["fraction"] == fraction]
    return c


def test_collect_reads_exactly_the_runs_the_params_define(metrics):
    inputs = collect(metrics, PARAMS)
    assert len(inputs["runs"]) == 3 * 3 + 3 * 3 + 2 * 3  # real curve, three mixed arms, two synth arms
    assert all(r["fraction"] != 0.3 for r in inputs["runs"])
    (metrics / "classify" / "study0" / "real+gan" / "f0.1_s2.json").unlink()
    with pytest.raises(StorageError, match=r"real\+gan/f0.1_s2.json"):
        collect(metrics, PARAMS)


def test_a_study_in_progress_reports_the_sources_that_ran_and_names_the_rest(metrics):
    assert pending_sources(metrics, PARAMS) == []
    (metrics / "fid" / "study0" / "gan.json").unlink()  # gan's FID has not run yet
    (metrics / "classify" / "study0" / "real+all" / "f0.1_s0.json").unlink()  # nor has real+all
    assert pending_sources(metrics, PARAMS) == ["gan"]
    with pytest.raises(StorageError, match=r"real\+all/f0.1_s0.json"):
        collect(metrics, PARAMS)  # without pending sources, collect stays strict
    inputs = collect(metrics, PARAMS, ("gan",))
    assert {r["arm"] for r in inputs["runs"]} == {"real", "real+vae", "synth:vae"} and set(inputs["fid"]) == {"vae"}
    s = summarise(inputs, {**CONTEXT, "pending_sources": ["gan"]})
    assert set(s["sources"]) == {"vae"}
    md = markdown(s)
    assert md.splitlines()[2] == ("**Study in progress.** Not run yet: gan (and `real+all`, which pools every "
                                  "source). Everything below covers vae only.")
    assert "| real+gan |" not in md and "| gan |" not in md


def test_summary_gains_intervals_and_sample_efficiency(metrics):
    s = summarise(collect(metrics, PARAMS), CONTEXT)
    real = _cell(s, "real", 0.1)
    assert real["accuracy"] == pytest.approx(0.71) and real["real_images"] == 6000 and "gain" not in real
    vae = _cell(s, "real+vae", 0.1)
    assert vae["gain"] == pytest.approx(0.05) and vae["gain_ci95"] == pytest.approx(0.0, abs=1e-12)
    assert vae["significant"] and vae["gain_seeds"] == 3
    # 0.76 on the real curve: a quarter of the way from 0.71 (6,000) to 0.91 (60,000) in log count
    assert vae["real_equivalent"] == pytest.approx(6000 * 10 ** 0.25)
    gan = _cell(s, "real+gan", 0.1)
    g, h = mean_ci([-0.03, -0.02, -0.025])
    assert gan["gain"] == pytest.approx(g) and gan["gain_ci95"] == pytest.approx(h) and gan["significant"]
    assert gan["real_equivalent_status"] == "interpolated" and gan["real_equivalent"] < 6000
    assert not _cell(s, "real+all", 0.1)["significant"]
    assert s["sources"]["vae"]["label_fidelity"] == 0.8 and s["sources"]["gan"]["diversity_ratio"] == 0.6
    assert s["sources"]["vae"]["synthetic_only"] == pytest.approx(0.55)
    rho, p, n = s["correlation"]["fid_vs_gain"]
    assert n == 2 and math.isnan(rho)  # two sources: too few for a rank correlation


def test_markdown_leads_with_the_answer_and_labels_generator_data(metrics):
    s = summarise(collect(metrics, PARAMS), CONTEXT)
    md = markdown(s)
    lines = md.splitlines()
    assert lines[2] == "## The answer"
    assert lines[4] == ("1. Helps, surviving the Bonferroni correction for all 3 comparisons (intervals at "
                        "98.33%): vae at 0.1 (+5.00 ± 0.00) (3 classifier seeds; paired gain over `real` in points, "
                        "95% t-interval).")
    # gan: mean -0.025, sd 0.005 over 3 seeds; t(0.99167, 2) = 7.65 gives 0.0221 < 0.025: still significant
    assert lines[5] == ("2. Hurts, surviving the Bonferroni correction for all 3 comparisons (intervals at 98.33%): "
                        "gan at 0.1 (-2.50 ± 1.24).")
    assert lines[6].startswith("3. Largest mean gain at 0.1 of the real data (6,000 images): vae +5.00 ± 0.00 "
                               "points; its 2,500 synthetic images are worth about 4,670 real images (interpolated on the real-only "
                               "curve) here.")
    assert lines[7] == "4. Mean gain over all sources at 0.1 of the real data: +1.25 points (one fraction studied)."
    assert lines[8].startswith("5. FID against gain: too few sources (2)")
    assert "trained only on the nested 0.1 subset (6,000 of 60,000 real training images)" in md
    assert "## Real-only learning curve (generators saw 6,000 real images (0.1))" in md
    assert "| 0.01 | 600 | 61.00 |" in md
    assert ("| real+vae | 6,000 + 2,500 | 76.00 | 2.48 | +5.00 | 0.00 | yes, also corrected | 0.00 | 4,670 (interpolated) |"
            in lines)
    # detectable: 80 % power at 98.33 % over 3 seeds is 4.945 paired standard deviations (gan's 0.5, all's 1.0 points)
    assert ("| real+gan | 6,000 + 2,500 | 68.50 | 3.29 | -2.50 | 1.24 | yes, also corrected | 2.47 | -2,626 "
            "(interpolated) |" in lines)
    assert "| real+all | 6,000 + 2,500 | 71.00 | 2.48 | +0.00 | 2.48 | no | 4.95 | 0 (interpolated) |" in lines
    assert "| held-out real (reference) | - | - | 0.90 | 1.00 | 0.4 % | - | - | - |" in lines
    assert any(ln.startswith("| gan | 90.00 | 45.00 | ") and "| 0.60 | 25.0 % |" in ln for ln in lines), lines
    metrics_flat = headline_metrics(s)
    assert metrics_flat["gain.real+vae.f0.1"] == pytest.approx(0.05) and metrics_flat["fid.gan"] == 90.0
    assert metrics_flat["kid.gan"] == pytest.approx(0.045)


def test_generators_on_all_real_data_are_labelled(metrics):
    ctx = {**CONTEXT, "generator_fraction": 1.0}
    md = markdown(summarise(collect(metrics, PARAMS), ctx))
    assert "**Generators and inversion saw all 60,000 real training images**" in md
    titles = [line for line in md.splitlines() if line.startswith("## ") and line != "## The answer"]
    assert titles and all("generators saw all 60,000 real training images" in t for t in titles)


def test_analysis_scores_join_the_sources_their_correlations_and_the_answer(metrics):
    """With the analyse stage's metrics beside the others, the report shows them per source, correlates each with
    the gain and names the closest predictor in the answer; without them those parts are simply absent."""
    params = build(Params, {**{k: getattr(PARAMS, k) for k in ("fractions", "real_fractions", "generator_fraction")},
                            "sources": ["vae", "gan", "lsgan"], "classify": {"seeds": [0, 1, 2]}}, "")
    # a third source, so that three points give a rank correlation: lsgan between vae and gan
    for seed, a in enumerate([0.70, 0.70, 0.71]):
        save_json(metrics / "classify" / "study0" / "real+lsgan" / f"{run_slug(0.1, seed)}.json",
                  _record("real+lsgan", 0.1, seed, a, 6000, 2500))
        save_json(metrics / "classify" / "study0" / arm_slug("synth:lsgan") / f"{run_slug(None, seed)}.json",
                  _record("synth:lsgan", None, seed, 0.2, 0, 2500))
    save_json(metrics / "fid" / "study0" / "lsgan.json", {"fid": 60.0, "kid": 0.03})
    save_json(metrics / "sample" / "study0" / "lsgan.json", {"diversity_ratio": 0.7})
    save_json(metrics / "fidelity" / "study0.json", {**FIDELITY, "lsgan": 0.6})
    ctx = {**CONTEXT, "sources": ["vae", "gan", "lsgan"]}
    plain = summarise(collect(metrics, params), ctx)
    assert set(plain["correlation"]) == {"fid_vs_gain", "kid_vs_gain", "label_fidelity_vs_gain"}
    assert "## Beside FID" not in markdown(plain)

    # gains: vae +5.0 > lsgan -0.67 > gan -2.5; precision ranks them the other way round, coverage the same way
    analysis = {"nearest_k": 5, "line_orientation_tv.real_heldout": 0.05}
    for s, (prec, cov) in {"vae": (0.2, 0.9), "gan": (0.8, 0.1), "lsgan": (0.5, 0.4)}.items():
        analysis.update({f"precision.{s}": prec, f"recall.{s}": 0.3, f"density.{s}": prec, f"coverage.{s}": cov,
                         f"kid_class_mean.{s}": 0.01, f"line_orientation_tv.{s}": 0.2})
    save_json(metrics / "analysis.json", analysis)
    s = summarise(collect(metrics, params), ctx)
    assert s["sources"]["gan"]["precision"] == 0.8 and s["sources"]["vae"]["coverage"] == 0.9
    assert s["correlation"]["precision_vs_gain"][0] == pytest.approx(-1.0)
    assert s["correlation"]["coverage_vs_gain"][0] == pytest.approx(1.0)
    assert math.isnan(s["correlation"]["recall_vs_gain"][0])  # no spread: no correlation
    md = markdown(s)
    lines = md.splitlines()
    assert "## Beside FID: precision, recall, density, coverage and line geometry" in lines
    table = [ln for ln in lines if ln.startswith("| vae | 0.20 |") or ln.startswith("| lsgan | 0.50 |")
             or ln.startswith("| gan | 0.80 |")]
    assert [ln.split(" | ")[0] for ln in table] == ["| vae", "| lsgan", "| gan"]  # by gain, largest first
    assert table[0] == "| vae | 0.20 | 0.30 | 0.20 | 0.90 | 10.00 | 0.20 | +5.00 |"
    assert "| held-out real (reference) | - | - | - | - | - | 0.05 | - |" in lines
    assert "| precision vs gain | -1.00 |" in md and "(k = 5 nearest neighbours" in md
    # FID 40 / 60 / 90 against gains +5.0 / -0.67 / -2.5 is perfectly ranked too: the first of the ties is named
    answer5 = next(ln for ln in lines if ln.startswith("5. "))
    assert answer5.endswith("Of 6 quality scores, FID ranks the sources closest to their gains (rho = -1.00, "
                            "p = 0.33 over 3 sources, not corrected for picking the closest of 6).")


def test_coverage_of_parts_and_the_same_sampler_comparison_in_the_analysis_section():
    """Coverage over the analyse stage's disjoint parts: a column with its t-interval, and dinv against ddim (same
    network and sampler) as a Welch interval that says whether drawing again could undo the difference."""
    from scipy import stats

    from synthaug.study.report_analysis import analysis_section

    def source(gain, cov_mean, cov_sd, rec_mean, rec_sd):
        return {"precision": 0.6, "recall": 0.4, "density": 0.4, "coverage": 0.5, "kid_class_mean": 0.04,
                "line_orientation_tv": 0.06, "gain": gain, "coverage_split_mean": cov_mean,
                "coverage_split_sd": cov_sd, "recall_split_mean": rec_mean, "recall_split_sd": rec_sd}

    summary = {"sources": {"dinv": source(0.01, 0.45, 0.01, 0.50, 0.02), "ddim": source(0.0, 0.40, 0.01, 0.49, 0.02)},
               "reference": {"nearest_k": 5, "line_orientation_tv": 0.03, "coverage_splits": 5}}
    lines = analysis_section(summary)
    half = stats.t.ppf(0.975, 4) * 0.01 / math.sqrt(5)
    assert f"| dinv | 0.60 | 0.40 | 0.40 | 0.50 | 40.00 | 0.06 | 0.450 ± {half:.3f} | +1.00 |" in lines
    assert "| held-out real (reference) | - | - | - | - | - | 0.03 | - | - |" in lines
    line = next(ln for ln in lines if ln.startswith("dinv against ddim"))
    cov = stats.t.ppf(0.975, 8) * 0.01 * math.sqrt(2 / 5)
    assert f"coverage +0.050 ± {cov:.3f} (told apart)" in line and "recall +0.010" in line
    assert "(not told apart from 0)" in line and "over 5 disjoint parts" in line
    # an analysis.json from before the parts: no column, no comparison
    for q in summary["sources"].values():
        for key in ("coverage_split_mean", "coverage_split_sd", "recall_split_mean", "recall_split_sd"):
            q.pop(key)
    lines = analysis_section(summary)
    assert "| dinv | 0.60 | 0.40 | 0.40 | 0.50 | 40.00 | 0.06 | +1.00 |" in lines
    assert not any(ln.startswith("dinv against ddim") for ln in lines)


def test_a_gain_significant_at_95_percent_can_fail_the_bonferroni_correction(metrics):
    """gan's paired differences -0.02 / -0.035 / -0.025: mean -0.0267, se 0.00441; at 95% t(0.975, 2) = 4.303
    gives +- 0.0190 (significant); corrected for 3 comparisons t(0.99167, 2) = 7.65 gives +- 0.0337 (not)."""
    for seed, a in enumerate([0.68, 0.675, 0.695]):
        save_json(metrics / "classify" / "study0" / "real+gan" / f"{run_slug(0.1, seed)}.json",
                  _record("real+gan", 0.1, seed, a, 6000, 2500))
    s = summarise(collect(metrics, PARAMS), CONTEXT)
    gan = _cell(s, "real+gan", 0.1)
    assert gan["gain_ci95"] == pytest.approx(4.302653 * 0.0076376 / 3 ** 0.5, rel=1e-4) and gan["significant"]
    assert gan["gain_ci_corrected"] == pytest.approx(7.6488 * 0.0076376 / 3 ** 0.5, rel=1e-3)
    assert not gan["significant_corrected"]
    assert s["comparisons"] == {"count": 3, "corrected_level": pytest.approx(1 - 0.05 / 3)}
    lines = markdown(s).splitlines()
    assert lines[5] == ("2. No source hurts after the Bonferroni correction for all 3 comparisons (intervals at "
                        "98.33%); a lead only (its 95% interval excludes 0, the corrected one does not): gan at 0.1 "
                        "(-2.67 ± 1.90).")
    assert any(ln.startswith("| real+gan |") and "| yes | " in ln for ln in lines)


def test_the_gradcam_section_reads_every_arm_against_real():
    from synthaug.study.report_gradcam import gradcam_section

    assert gradcam_section({}, ["vae"], 0.005, 0) == []  # `gradcam` not run: no section
    g = {"images": 500, "foreground_share.real": 0.8, "entropy.real": 0.7, "empty_share.real": 0.0,
         "foreground_share.real+vae": 0.75, "foreground_share_vs_real.real+vae": -0.05,
         "foreground_share_vs_real_ci95.real+vae": 0.02, "entropy.real+vae": 0.72,
         "agreement_with_real.real+vae": 0.6, "empty_share.real+vae": 0.01,
         "foreground_share.synth-vae": 0.79, "foreground_share_vs_real.synth-vae": -0.01,
         "foreground_share_vs_real_ci95.synth-vae": 0.03, "entropy.synth-vae": float("nan"),
         "agreement_with_real.synth-vae": 0.3, "empty_share.synth-vae": 0.2,
         "foreground_share.real+all": 0.7, "foreground_share_vs_real.real+all": -0.1,
         "foreground_share_vs_real_ci95.real+all": 0.05, "entropy.real+all": 0.75,
         "agreement_with_real.real+all": 0.5, "empty_share.real+all": 0.0}
    lines = gradcam_section(g, ["vae"], 0.005, 0)
    assert "## Where the classifiers look: Grad-CAM" in lines
    assert any("at 0.005 of the real data" in line and "seed 0" in line and "500 real test images" in line
               for line in lines)
    vae = next(line for line in lines if line.startswith("| vae |"))
    # -0.05 +- 0.02 excludes 0: starred; -0.01 +- 0.03 does not; a nan entropy shows as n/a
    assert "0.750 (-0.050 ± 0.020 *)" in vae and "0.790 (-0.010 ± 0.030)" in vae and "| n/a |" in vae
    assert "0.600 | 0.300 | 0.010 / 0.200 |" in vae
    assert any(line.startswith("| real (reference) | 0.800 |") for line in lines)
    assert any(line.startswith("| all (real+all) | 0.700 (-0.100 ± 0.050 *)") for line in lines)


def test_dinv_reports_whether_it_follows_its_groups(metrics):
    """metrics/invert.json's figure joins dinv's source entry, its sentence in the markdown and the headline."""
    for seed, a in enumerate([0.72, 0.73, 0.74]):
        save_json(metrics / "classify" / "study0" / arm_slug("real+dinv") / f"{run_slug(0.1, seed)}.json",
                  _record("real+dinv", 0.1, seed, a, 6000, 2500))
        save_json(metrics / "classify" / "study0" / arm_slug("synth:dinv") / f"{run_slug(None, seed)}.json",
                  _record("synth:dinv", None, seed, 0.4, 0, 2500))
    save_json(metrics / "fid" / "study0" / "dinv.json", {"fid": 60.0, "kid": 0.03, "num_images": 2500, "dims": 2048,
                                              "ref_split": "test"})
    save_json(metrics / "sample" / "study0" / "dinv.json", {"diversity_ratio": 1.0, "saturated_share": 0.0})
    params = build(Params, {"fractions": [0.1], "real_fractions": [0.01, 1.0], "generator_fraction": 0.1,
                            "sources": ["vae", "gan", "dinv"], "classify": {"seeds": [0, 1, 2]}}, "")
    context = {**CONTEXT, "sources": ["vae", "gan", "dinv"]}
    without = summarise(collect(metrics, params), context)  # an older study: no figure, no sentence
    assert "follows_margin" not in without["sources"]["dinv"] and "follow its groups" not in markdown(without)
    save_json(metrics / "invert" / "study0.json", {"steps": 600, "follows_margin": 0.125, "follows_margin_ci95": 0.025,
                                        "follows_share": 0.75, "follows_groups": 60.0, "loss_learned": 0.05})
    s = summarise(collect(metrics, params), context)
    assert s["sources"]["dinv"]["follows_margin"] == 0.125 and "follows_margin" not in s["sources"]["vae"]
    assert ("Does dinv follow its groups? Samples from a group's learned vector sit +12.50 % ± 2.50 (95 % CI over "
            "60 groups) closer") in markdown(s)
    assert "closer in 75.00 % of groups" in markdown(s)
    assert headline_metrics(s)["follows_margin.dinv"] == 0.125


def _with_lineage(inputs: dict, ids: dict[str, str]) -> dict:
    """Every record names the inputs its stage read, with the given content ids."""
    for r in inputs["runs"]:
        with_real, sources = parse_arm(r["arm"], PARAMS)
        names = (["real", "fractions"] if with_real else []) + [f"synthetic/{s}" for s in sources]
        r["inputs"] = {n: ids[n] for n in names}
    chain = inputs["chains"][0]  # the records as the chain's files hold them (the top level holds their means)
    for s, m in chain["fid"].items():
        m["inputs"] = {f"synthetic/{s}": ids[f"synthetic/{s}"]}
    chain["fidelity"]["inputs"] = {n: ids[n] for n in ("real", "synthetic/vae", "synthetic/gan")}
    return inputs


def test_records_of_replaced_shards_give_no_answer_and_name_what_to_refresh(metrics):
    old = {"real": "r1", "fractions": "f1", "synthetic/vae": "v1", "synthetic/gan": "g1"}
    inputs = _with_lineage(collect(metrics, PARAMS), old)
    assert lineage_problems(inputs, ["vae", "gan"], {0: old}) == {}
    fine = summarise(inputs, {**CONTEXT, "lineage": {"stale": {}, "records": 30, "commit": "abc123", "dirty": False}})
    assert fine["answer"] and headline_metrics(fine)["inputs_current"] == 1.0
    assert ("Made at commit `abc123`; lineage checked over 30 records: every record descends from the current "
            "upstream outputs.") in markdown(fine)

    # vae's shards replaced after its classifiers, its FID and the label fidelity ran; then FID alone re-run
    now = {**old, "synthetic/vae": "v2"}
    inputs["chains"][0]["fid"]["vae"]["inputs"] = {"synthetic/vae": "v2"}
    stale = lineage_problems(inputs, ["vae", "gan"], {0: now})
    assert stale == {item: ["synthetic/vae changed since"]
                     for item in ("classify_mixed@vae-0", "classify_synth@vae-0", "classify_all@0", "fidelity@0")}
    summary = summarise(inputs, {**CONTEXT, "lineage": {"stale": stale, "records": 30, "commit": "abc123"}})
    assert summary["answer"] == [] and headline_metrics(summary) == {"inputs_current": 0.0}
    md = markdown(summary)
    assert "**No answer: these records come from mixed upstream states.**" in md
    assert "- `classify_mixed@vae-0`: synthetic/vae changed since" in md and "classify_mixed@gan" not in md
    assert ("`dvc repro --force --single-item classify_all@0 classify_mixed@vae-0 classify_synth@vae-0 fidelity@0 "
            "&& dvc repro report`") in md
    assert "Helps significantly" not in md and "No source helps" not in md

    # records without lineage (older code), and a label fidelity that never scored gan
    del inputs["runs"][0]["inputs"]
    inputs["chains"][0]["fidelity"]["inputs"] = {"real": "r1", "synthetic/vae": "v2"}
    stale = lineage_problems(inputs, ["vae", "gan"], {0: now})
    assert stale["classify_real@0"] == ["no lineage recorded (made by older code)"]
    assert "made without synthetic/gan" in stale["fidelity@0"]


def test_the_answer_says_what_the_design_can_detect_and_what_a_narrow_interval_would_take(metrics):
    from synthaug.study.study_stats import detectable_gain, seeds_for_halfwidth

    for seed, a in enumerate([0.75, 0.78, 0.72]):  # real+vae: paired differences +0.05, +0.07, 0.00
        save_json(metrics / "classify" / "study0" / "real+vae" / f"{run_slug(0.1, seed)}.json",
                  _record("real+vae", 0.1, seed, a, 6000, 2500))
    s = summarise(collect(metrics, PARAMS), CONTEXT)
    vae, gan = _cell(s, "real+vae", 0.1), _cell(s, "real+gan", 0.1)
    sd = float(np.std([0.05, 0.07, 0.0], ddof=1))
    assert vae["gain_sd"] == pytest.approx(sd) and vae["detectable"] == pytest.approx(detectable_gain(sd, 3, 1 - 0.05 / 3))
    lines = markdown(s).splitlines()
    assert "1. No source helps after the Bonferroni correction" in lines[4]  # +4.0 ± 8.7: not even a lead
    need = seeds_for_halfwidth(sd, 0.01)
    assert lines[6].endswith(f"Its interval is wider than ± 1.00 points; at the spread measured, about {need} "
                             "classifier seeds would narrow it to that.")
    median = (vae["detectable"] + gan["detectable"]) / 2
    assert lines[9] == (f"6. What this design can detect: a true gain of {100 * median:.2f} points (median over 2 "
                        f"comparisons; from {100 * gan['detectable']:.2f} to {100 * vae['detectable']:.2f}) would be "
                        "found with 80% power after the Bonferroni correction for all 3 comparisons (intervals at "
                        "98.33%), at the spread each comparison measured; smaller true gains can go undetected, so "
                        "\"no source helps\" does not mean none could.")
    assert "The intervals are over 3 classifier seeds" in markdown(s)


def test_the_trend_across_fractions_has_its_own_interval():
    from synthaug.study.report_answer import trend_over_fractions

    acc = {("real", 0.1): {0: 0.70, 1: 0.71, 2: 0.72}, ("real", 0.2): {0: 0.80, 1: 0.80, 2: 0.81},
           ("real+vae", 0.1): {0: 0.73, 1: 0.73, 2: 0.75}, ("real+vae", 0.2): {0: 0.80, 1: 0.81, 2: 0.81}}
    cells = [{"arm": a, "fraction": f, "gain": 0.0} for a, f in acc if a != "real"]
    t = trend_over_fractions(cells, acc)
    changes = [0.00 - 0.03, 0.01 - 0.02, 0.00 - 0.03]  # gain at 0.2 minus gain at 0.1, per seed
    mean, ci = mean_ci(changes)
    assert (t["from"], t["to"], t["seeds"], t["sources"]) == (0.1, 0.2, 3, 1)
    assert t["change"] == pytest.approx(mean) and t["ci95"] == pytest.approx(ci)
    assert t["at_from"] == pytest.approx(0.08 / 3) and t["at_to"] == pytest.approx(0.01 / 3)


def test_with_several_study_seeds_the_intervals_are_over_whole_chains(metrics):
    """Study seed 1 copies study seed 0's chain with real+vae's gain +0.01 instead of +0.05: the gain is the mean over
    the two chains of their classifier seeds' mean gains, and its interval has the two chains as its replicates
    (n = 2), not the six classifier runs. FID is the chains' mean; the words say which randomness is covered."""
    import shutil

    for kind in ("classify", "fid", "sample"):
        shutil.copytree(metrics / kind / "study0", metrics / kind / "study1")
    shutil.copy(metrics / "fidelity" / "study0.json", metrics / "fidelity" / "study1.json")
    for seed, a in enumerate(CURVE[0.1][1]):
        save_json(metrics / "classify" / "study1" / "real+vae" / f"{run_slug(0.1, seed)}.json",
                  _record("real+vae", 0.1, seed, a + 0.01, 6000, 2500))
    save_json(metrics / "fid" / "study1" / "vae.json", {"fid": 50.0, "kid": 0.02})
    params = build(Params, {"study_seeds": [0, 1], "fractions": [0.1], "real_fractions": [0.01, 1.0],
                            "generator_fraction": 0.1, "sources": ["vae", "gan"], "classify": {"seeds": [0, 1, 2]}},
                   "")
    ctx = {**CONTEXT, "study_seeds": [0, 1]}
    s = summarise(collect(metrics, params), ctx)
    vae = _cell(s, "real+vae", 0.1)
    g, h = mean_ci([0.05, 0.01])
    assert vae["seeds"] == [0, 1] and vae["gain_seeds"] == 2
    assert vae["gain"] == pytest.approx(g) and vae["gain_ci95"] == pytest.approx(h)
    assert s["sources"]["vae"]["fid"] == pytest.approx(45.0)
    md = markdown(s)
    assert "The intervals are over 2 study seeds: each draws its own nested real subsets" in md
    assert "(2 study seeds (each the mean of its 3 classifier seeds); paired gain" in md
    assert "classifier on 60,000 real images)" in md  # a count, though it is the chains' mean
    # one chain missing a record is an error naming it, not a silently smaller study
    (metrics / "classify" / "study1" / "real+gan" / "f0.1_s2.json").unlink()
    with pytest.raises(StorageError, match="study1/real\\+gan/f0.1_s2.json"):
        collect(metrics, params)
    assert pending_sources(metrics, params) == ["gan"]


def test_a_design_that_cannot_detect_any_possible_gain_says_so(metrics):
    """Two classifier seeds whose paired differences spread widely: at the Bonferroni level with one degree of
    freedom no gain on the accuracy scale has 80% power, so the answer says nothing is detectable (not "a gain of
    2,800 points") and the table shows "> 100"."""
    params = build(Params, {"fractions": [0.1], "real_fractions": [0.01, 1.0], "generator_fraction": 0.1,
                            "sources": ["vae", "gan"], "classify": {"seeds": [0, 1]}}, "")
    for arm, accs in (("real+vae", [0.80, 0.62]), ("real+gan", [0.81, 0.60]), ("real+all", [0.82, 0.61])):
        for seed, a in enumerate(accs):  # about +0.10 and -0.10 against real's 0.70 and 0.71
            save_json(metrics / "classify" / "study0" / arm / f"{run_slug(0.1, seed)}.json",
                      _record(arm, 0.1, seed, a, 6000, 2500))
    s = summarise(collect(metrics, params), {**CONTEXT, "seeds": [0, 1]})
    assert all(_cell(s, arm, 0.1)["detectable"] > 1.0 for arm in ("real+vae", "real+gan", "real+all"))
    md = markdown(s)
    assert "What this design can detect: nothing." in md and "too few classifier seeds" in md
    assert "| > 100 |" in md and "2,8" not in md
