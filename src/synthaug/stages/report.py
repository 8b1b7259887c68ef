"""`report`: reports/summary.{md,json}, figures and DVC plot data, from metrics files only."""

from __future__ import annotations

import logging
from collections import defaultdict

from synthaug.core.config import real_curve_fractions
from synthaug.data.fractions import fraction_key, load_fractions
from synthaug.data.real import load_meta
from synthaug.figures.plots import save_accuracy_png, save_gain_png, save_quality_png
from synthaug.core.lineage import current_ids
from synthaug.study.report import (collect, headline_metrics, lineage_problems, lineage_records, markdown,
                                   pending_sources, seen_by_generators, summarise)
from synthaug.study.report_answer import unit
from synthaug.stages.common import (METRICS, PARAMS_OPTION, REAL_DIR, REPORTS, Chain, load_stage, require,
                                    stage_command, write_metrics)
from synthaug.core.storage import atomic_path, replace_together, save_json
from synthaug.core.tracking import code_state, repo_root, stage_run

log = logging.getLogger("synthaug")


def _write_csv(path, header: str, rows: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([header, *rows]) + "\n")


@stage_command
def report(params_path: str = PARAMS_OPTION) -> None:
    """Summarise the study's metrics into reports/ (markdown, JSON, PNG figures, DVC plot data)."""
    params, _ = load_stage(params_path, log_runtime=False)  # computes no network
    meta = load_meta(require(REAL_DIR, "prepare"))
    subsets = load_fractions(require(Chain(params.study_seeds[0]).fractions, "prepare"))  # sizes: same in every chain
    c = params.classify
    context = {"dataset": params.dataset.name, "arch": c.model.arch, "steps": c.model.steps,
               "batch_size": c.model.batch_size, "synthetic_ratio": c.synthetic_ratio, "seeds": list(c.seeds),
               "study_seeds": list(params.study_seeds),
               "sources": list(params.sources), "fractions": sorted(params.fractions),
               "real_fractions": real_curve_fractions(params), "headline_fraction": min(params.fractions),
               "generator_fraction": params.generator_fraction, "train_images": meta["counts"]["train"],
               "generator_images": len(subsets[fraction_key(params.generator_fraction)])}
    pending = pending_sources(METRICS, params)
    context["pending_sources"] = pending  # a study in progress reports what has run and names the rest
    inputs = collect(METRICS, params, tuple(pending))
    done = [s for s in params.sources if s not in pending]
    current = {k: current_ids(REAL_DIR, Chain(k).fractions, Chain(k).synthetic, done) for k in params.study_seeds}
    stale = lineage_problems(inputs, done, current)
    records = sum(len(r) for r in lineage_records(inputs, done).values())
    for item, why in sorted(stale.items()):
        log.warning("report: %s is stale (%s): no answer lines from a mixed state", item, "; ".join(why))
    context["lineage"] = {"stale": stale, "records": records, **code_state(repo_root())}
    summary = summarise(inputs, context)
    cells, seen = summary["cells"], seen_by_generators(context)
    series: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    gains: dict[float, dict[str, tuple[float, float]]] = defaultdict(dict)
    for cell in cells:
        if cell["fraction"] is not None:
            series[cell["arm"]].append((cell["real_images"], cell["accuracy"], cell["ci95"]))
        if "gain" in cell:
            gains[cell["fraction"]][cell["arm"][5:]] = (cell["gain"], cell["gain_ci95"])
    head, quality = context["headline_fraction"], summary["sources"]
    figures = {"accuracy_vs_real_images.png": lambda p: save_accuracy_png(
                   p, series, f"{params.dataset.name}: accuracy against real images ({seen})"),
               "gain_per_source.png": lambda p: save_gain_png(
                   p, gains, f"paired gain over real, {unit(context)} ({seen})"),
               "quality_vs_gain.png": lambda p: save_quality_png(
                   p, quality, f"quality against usefulness at {head:g} of the real data ({seen})")}
    # The figures experiments are compared by, in one small DVC metrics file: `dvc exp show --drop '.*' --keep
    # 'Experiment|headline'` (README) shows two experiments in one screen instead of hundreds of columns.
    headline = headline_metrics(summary)
    md = REPORTS / "summary.md"
    outputs = [REPORTS / "summary.json", md, *(REPORTS / n for n in figures), REPORTS / "accuracy",
               REPORTS / "gain.csv", REPORTS / "quality.csv", METRICS / "headline.json"]
    # Every output is replaced together (storage.replace_together), so the summary, figures and headline always
    # describe the same records, even if the stage is killed while writing them.
    with replace_together(*outputs) as (summary_json, summary_md, *pngs, accuracy, gain_csv, quality_csv, hl):
        save_json(summary_json, summary)
        summary_md.write_text(markdown(summary))
        for path, draw in zip(pngs, figures.values()):
            draw(path)
        # DVC plot data: one CSV per arm (`dvc plots show` draws each file as a line), gains, FID against gain.
        accuracy.mkdir()
        for arm, points in series.items():
            _write_csv(accuracy / f"{arm}.csv", "real_images,accuracy,ci95",
                       [f"{n},{m:.6f},{ci:.6f}" for n, m, ci in sorted(points)])
        _write_csv(gain_csv, "source,fraction,gain,ci95",
                   [f"{s},{f:g},{g:.6f},{ci:.6f}" for f, by in sorted(gains.items())
                    for s, (g, ci) in sorted(by.items())])
        _write_csv(quality_csv, "source,fid,label_fidelity,gain",
                   [f"{s},{q['fid']:.4f},{q['label_fidelity']:.6f},{q['gain'] if q['gain'] is not None else 'nan'}"
                    for s, q in sorted(quality.items())])
        # Which report these figures are: until a user's own run replaces them, the workspace row of `dvc exp show`
        # shows the committed report's, and this names its commit (with "+" for uncommitted changes).
        made = context["lineage"]
        write_metrics(hl, {f"headline.{k}": v for k, v in sorted(headline.items())}
                      | {"headline.report_commit": f"{made['commit'] or 'none'}{'+' if made['dirty'] else ''}"})
    logged = {k: v for k, v in context.items() if k != "lineage"}  # stage items with "@" are not MLflow keys
    logged.update(commit=context["lineage"]["commit"], stale_items=", ".join(sorted(stale)) or "none")
    with stage_run("report", params.dataset.name, params=logged) as run:
        run.log_metrics(headline)
        run.log_group_metrics(headline)  # the `dvc exp run`'s row in MLflow carries its headline figures
        for p in (md, REPORTS / "summary.json", *(REPORTS / n for n in figures)):
            run.log_artifact(p)
    print(md.read_text())
