"""`report`: reports/summary.{md,json}, DVC plot data and an accuracy-vs-fraction figure, from metrics only."""

from __future__ import annotations

from synthaug.arms import arm_slug, study_items
from synthaug.plots import save_accuracy_png
from synthaug.report import accuracy_series, collect, markdown, summarise
from synthaug.stages.common import METRICS, PARAMS_OPTION, REPORTS, load_stage, stage_command
from synthaug.storage import atomic_dir, atomic_path, save_json
from synthaug.tracking import stage_run


@stage_command
def report(params_path: str = PARAMS_OPTION) -> None:
    """Summarise every metrics/classify and metrics/fid file into reports/."""
    params, _ = load_stage(params_path)
    slugs = [arm_slug(*item) for item in study_items(params)]
    runs, fids = collect(METRICS, slugs, list(params.sources))
    summary = summarise(runs, fids)
    context = {"dataset": params.dataset.name, "protocol": "full", "arch": params.classify.model.arch,
               "steps": params.classify.model.steps, "synthetic_ratio": params.classify.synthetic_ratio}
    summary["context"] = context
    save_json(REPORTS / "summary.json", summary)
    md = REPORTS / "summary.md"
    with atomic_path(md) as tmp:
        tmp.write_text(markdown(summary, context))
    series = accuracy_series(summary)
    # One CSV per arm in one folder: `dvc plots show` draws each file as a line.
    with atomic_dir(REPORTS / "accuracy") as tmp:
        for arm, by_fraction in series.items():
            rows = ["fraction,accuracy,ci95"] + [f"{f},{m:.6f},{c:.6f}" for f, (m, c) in sorted(by_fraction.items())]
            (tmp / f"{arm}.csv").write_text("\n".join(rows) + "\n")
    with atomic_path(REPORTS / "fid.csv") as tmp:
        tmp.write_text("source,fid\n" + "".join(f"{s},{f['fid']:.4f}\n" for s, f in sorted(summary["fid"].items())))
    png = REPORTS / "accuracy_vs_fraction.png"
    save_accuracy_png(png, series, f"{params.dataset.name}: accuracy vs real-data fraction")
    with stage_run("report", params.dataset.name, params=context) as run:
        for c in summary["cells"]:
            if c["fraction"] is not None:
                run.log_metrics({f"accuracy.{c['arm']}.f{c['fraction']:g}": c["accuracy"]})
        run.log_metrics({f"fid.{s}": f["fid"] for s, f in summary["fid"].items()})
        for p in (md, png, REPORTS / "summary.json"):
            run.log_artifact(p)
    print(md.read_text())
