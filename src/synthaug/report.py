"""The study's summary, computed only from metrics files: accuracy per arm and fraction, gains, FID.

Accuracy is given as the mean over seeds with a 95% t-interval; the gain of an arm over `real` is the
paired difference per seed (same fraction, same classifier seed), again with a 95% t-interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats as st

from synthaug.storage import load_json


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t confidence interval (nan for a single value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(st.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def collect(metrics_dir: Path, classify_slugs: list[str], sources: list[str]) -> tuple[list[dict], dict[str, dict]]:
    """Exactly the metrics files the current params define (stale files of other settings are ignored);
    a missing one is an error naming it."""
    runs = [load_json(metrics_dir / "classify" / f"{slug}.json") for slug in classify_slugs]
    fids = {s: load_json(metrics_dir / "fid" / f"{s}.json") for s in sources}
    return runs, fids


def summarise(runs: list[dict], fids: dict[str, dict]) -> dict:
    """Aggregate classify runs into per-(arm, fraction) accuracy and paired gains over `real`."""
    acc: dict[tuple[str, float | None], dict[int, float]] = defaultdict(dict)
    for r in runs:
        acc[(r["arm"], r["fraction"])][r["seed"]] = r["test_accuracy"]
    cells = []
    for (arm, fraction), by_seed in sorted(acc.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
        mean, ci = mean_ci(list(by_seed.values()))
        cell = {"arm": arm, "fraction": fraction, "seeds": sorted(by_seed), "accuracy": mean, "ci95": ci}
        base = acc.get(("real", fraction))
        if arm != "real" and fraction is not None and base:
            paired = [by_seed[s] - base[s] for s in by_seed if s in base]
            if paired:
                cell["gain"], cell["gain_ci95"] = mean_ci(paired)
        cells.append(cell)
    return {"cells": cells, "fid": {s: {"fid": f["fid"], "num_images": f["num_images"], "dims": f["dims"],
                                        "ref_split": f.get("ref_split")} for s, f in fids.items()}}


def _fmt(x: float | None, pct: bool = True, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    v = 100 * x if pct else x
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def markdown(summary: dict, context: dict) -> str:
    lines = ["# synthaug study summary", "",
             f"Dataset `{context['dataset']}`; generators trained on the {context['protocol']} real training set; "
             f"classifiers `{context['arch']}`, {context['steps']} steps each, synthetic share per batch "
             f"{context['synthetic_ratio']}; evaluated on the real test split. "
             "Accuracy: mean over seeds ± 95% t-interval (n/a with one seed). Gain: paired difference to `real` "
             "per seed, in points.", "",
             "## Test accuracy (%)", "", "| arm | fraction | seeds | accuracy | ± 95% CI | gain vs real | ± 95% CI |",
             "|---|---|---|---|---|---|---|"]
    for c in summary["cells"]:
        fr = "-" if c["fraction"] is None else f"{c['fraction']:g}"
        lines.append(f"| {c['arm']} | {fr} | {len(c['seeds'])} | {_fmt(c['accuracy'])} | {_fmt(c['ci95'])} | "
                     f"{_fmt(c.get('gain'), signed=True) if 'gain' in c else '-'} | "
                     f"{_fmt(c.get('gain_ci95')) if 'gain' in c else '-'} |")
    lines += ["", "## FID (lower is better)", "", "| source | FID | images | dims | reference |", "|---|---|---|---|---|"]
    for s, f in sorted(summary["fid"].items(), key=lambda kv: kv[1]["fid"]):
        lines.append(f"| {s} | {f['fid']:.2f} | {f['num_images']} | {f['dims']} | {f['ref_split']} split |")
    lines += ["", "Every figure above comes from `metrics/` files written by the pipeline's stages (see dvc.lock "
              "for the exact code, data and params) and from runs recorded in MLflow.", ""]
    return "\n".join(lines)


def accuracy_series(summary: dict) -> dict[str, dict[float, tuple[float, float]]]:
    """arm -> fraction -> (mean, ci) for the arms that depend on the real fraction."""
    out: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
    for c in summary["cells"]:
        if c["fraction"] is not None:
            out[c["arm"]][c["fraction"]] = (c["accuracy"], 0.0 if math.isnan(c["ci95"]) else c["ci95"])
    return dict(out)
