"""The study summary: confidence intervals, paired gains per seed, the markdown table, plot series."""

from __future__ import annotations

import math

import pytest

from synthaug.storage import StorageError
from synthaug.report import accuracy_series, collect, markdown, mean_ci, summarise
from synthaug.storage import save_json

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174705


def test_mean_ci_known_values():
    m, h = mean_ci([1.0, 2.0, 3.0])  # sd 1
    assert m == 2.0 and h == pytest.approx(T_975_DF2 / math.sqrt(3), rel=1e-9)
    m, h = mean_ci([0.5, 0.7])  # sd = 0.1 * sqrt(2)
    assert m == pytest.approx(0.6) and h == pytest.approx(T_975_DF1 * 0.1 * math.sqrt(2) / math.sqrt(2), rel=1e-9)
    m, h = mean_ci([0.9])
    assert m == 0.9 and math.isnan(h)
    assert mean_ci([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.0, abs=1e-12))


def _run(arm, fraction, seed, acc):
    return {"arm": arm, "fraction": fraction, "seed": seed, "test_accuracy": acc}


RUNS = [
    _run("real", 0.5, 0, 0.80), _run("real", 0.5, 1, 0.82), _run("real", 0.5, 2, 0.84),
    _run("real+vae", 0.5, 0, 0.85), _run("real+vae", 0.5, 1, 0.83), _run("real+vae", 0.5, 2, 0.88),
    _run("real+vae", 0.5, 3, 0.99),  # no `real` run with seed 3: counted in accuracy, not in the paired gain
    _run("real", 1.0, 0, 0.90), _run("real+vae", 1.0, 0, 0.89),
    _run("synth:vae", None, 0, 0.50), _run("synth:vae", None, 1, 0.60),
]
FIDS = {"vae": {"fid": 12.3, "num_images": 200, "dims": 64, "ref_split": "test", "ref_num_images": 200}}


def _cell(summary, arm, fraction):
    (c,) = [c for c in summary["cells"] if c["arm"] == arm and c["fraction"] == fraction]
    return c


def test_summarise_paired_gains_per_seed():
    s = summarise(RUNS, FIDS)
    real = _cell(s, "real", 0.5)
    assert real["seeds"] == [0, 1, 2] and real["accuracy"] == pytest.approx(0.82)
    assert real["ci95"] == pytest.approx(T_975_DF2 * 0.02 / math.sqrt(3), rel=1e-6)
    assert "gain" not in real

    mixed = _cell(s, "real+vae", 0.5)
    assert mixed["seeds"] == [0, 1, 2, 3]
    assert mixed["accuracy"] == pytest.approx((0.85 + 0.83 + 0.88 + 0.99) / 4)
    gains = [0.05, 0.01, 0.04]  # per seed, seed 3 unpaired
    g, h = mean_ci(gains)
    assert mixed["gain"] == pytest.approx(0.1 / 3) and mixed["gain"] == pytest.approx(g)
    assert mixed["gain_ci95"] == pytest.approx(h)

    one = _cell(s, "real+vae", 1.0)
    assert one["gain"] == pytest.approx(-0.01) and math.isnan(one["gain_ci95"])

    synth = _cell(s, "synth:vae", None)
    assert synth["accuracy"] == pytest.approx(0.55) and "gain" not in synth

    assert s["fid"] == {"vae": {"fid": 12.3, "num_images": 200, "dims": 64, "ref_split": "test"}}
    # fraction-less cells first, then by fraction; every (arm, fraction) once
    assert [(c["arm"], c["fraction"]) for c in s["cells"]] == [
        ("synth:vae", None), ("real", 0.5), ("real+vae", 0.5), ("real", 1.0), ("real+vae", 1.0)]


def test_markdown_table_rows():
    s = summarise(RUNS, FIDS)
    md = markdown(s, {"dataset": "digits", "protocol": "full", "arch": "resnet20", "steps": 20,
                      "synthetic_ratio": 0.5})
    rows = md.splitlines()
    assert "| real | 0.5 | 3 | 82.00 | " + f"{100 * T_975_DF2 * 0.02 / math.sqrt(3):.2f} | - | - |" in rows
    (mixed,) = [r for r in rows if r.startswith("| real+vae | 0.5 |")]
    assert mixed.startswith("| real+vae | 0.5 | 4 | 88.75 | ") and "| +3.33 |" in mixed
    assert "| real+vae | 1 | 1 | 89.00 | n/a | -1.00 | n/a |" in rows
    assert "| synth:vae | - | 2 | 55.00 | " in md
    assert "| vae | 12.30 | 200 | 64 | test split |" in rows
    assert "`digits`" in md and "resnet20" in md and "20 steps" in md


def test_accuracy_series_only_fraction_arms():
    series = accuracy_series(summarise(RUNS, FIDS))
    assert set(series) == {"real", "real+vae"}
    assert series["real"][0.5][0] == pytest.approx(0.82)
    assert series["real"][1.0] == (pytest.approx(0.90), 0.0)  # one seed: no interval, drawn as 0
    assert set(series["real+vae"]) == {0.5, 1.0}


def test_collect_reads_exactly_the_named_metrics_files(tmp_path):
    slugs = [f"run{i:02d}" for i in range(len(RUNS))]
    for slug, r in zip(slugs, RUNS):
        save_json(tmp_path / "classify" / f"{slug}.json", r)
    save_json(tmp_path / "classify" / "stale_f0.3_s9.json", {**RUNS[0], "fraction": 0.3})  # another setting's
    save_json(tmp_path / "fid" / "vae.json", FIDS["vae"])
    runs, fids = collect(tmp_path, slugs, ["vae"])
    assert sorted(map(str, runs)) == sorted(map(str, RUNS)) and fids == FIDS
    with pytest.raises(StorageError, match="run99.json"):
        collect(tmp_path, slugs + ["run99"], ["vae"])
