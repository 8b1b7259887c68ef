"""`python -m synthaug compare`: the experiments' headline figures as a narrow table, readable anywhere (not a stage).

`dvc exp show` lays every experiment out as one row with a column per figure: with the study's ~80 headline figures
that is wider than any terminal, and without one (a pipe, CI, a notebook) DVC cuts columns without a word. This
command turns the table around, one row per figure and one column per experiment (the workspace, the commit it
descends from, and each `dvc exp run`), and splits the experiments into blocks that fit `--width`. It reads
`dvc exp show --json` (so it needs DVC's lock: run it when no `dvc repro` is running; `python -m synthaug status`
is the command for a run in progress). The `report_commit` row says whose report each column shows: the committed
study's until the user's own run replaces it.
"""

from __future__ import annotations

import json
import re
import subprocess

import typer

from synthaug.stages.common import StageError, stage_command

HEADLINE = "metrics/headline.json"
PREFIX = "headline."


def columns(shown: list[dict]) -> list[tuple[str, dict]]:
    """(name, headline figures) of every row `dvc exp show --json` printed: each base revision (the workspace and
    the commits) and the experiments run from it (DVC 3 nests an experiment's own revisions under "revs")."""
    out = []

    def add(entry: dict, fallback: str) -> None:
        data = entry.get("data") or {}
        metrics = ((data.get("metrics") or {}).get(HEADLINE) or {}).get("data") or {}
        name = entry.get("name") or data.get("name") or fallback
        out.append((str(name), {k.removeprefix(PREFIX): v for k, v in metrics.items()}))

    for base in shown:
        add(base, _short(base.get("rev")))
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or [exp]:
                add(rev, exp.get("name") or _short(rev.get("rev")))
    return out


def _short(rev) -> str:
    """"workspace" as it is; a commit's hash to 7 digits."""
    rev = str(rev or "?")
    return rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table(cols: list[tuple[str, dict]], keep: str = "", width: int = 100) -> str:
    """Rows: figures (those matching `keep`, a regex); columns: experiments, in blocks no wider than `width`."""
    pattern = re.compile(keep) if keep else None
    keys = sorted({k for _, figures in cols for k in figures if pattern is None or pattern.search(k)})
    if not keys:
        return "no headline figures" + (f" matching {keep!r}" if keep else "") + " (has `dvc repro` made the report?)"
    label = max(len(k) for k in keys)
    cells = [[_cell(figures.get(k)) for k in keys] for _, figures in cols]
    widths = [max(len(name), *(len(c) for c in col)) for (name, _), col in zip(cols, cells)]
    blocks, start = [], 0
    while start < len(cols):  # as many columns as fit beside the label column, at least one
        end, used = start + 1, label + 2 + widths[start]
        while end < len(cols) and used + 2 + widths[end] <= width:
            used, end = used + 2 + widths[end], end + 1
        lines = ["  ".join([" " * label, *(cols[i][0].rjust(widths[i]) for i in range(start, end))])]
        lines += ["  ".join([k.ljust(label), *(cells[i][r].rjust(widths[i]) for i in range(start, end))])
                  for r, k in enumerate(keys)]
        blocks.append("\n".join(lines))
        start = end
    return "\n\n".join(blocks)


@stage_command
def compare(keep: str = typer.Option("", help="only the figures matching this regex, e.g. 'fid|gain.*f0.005'"),
            width: int = typer.Option(100, min=40, help="the widest line to print (columns split into blocks)"),
            all_commits: bool = typer.Option(False, "--all-commits", help="every commit's row, not only HEAD's")
            ) -> None:
    """The headline figures of the workspace, its commit and every experiment: one row per figure."""
    cmd = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise StageError("dvc not found on PATH (activate the project's .venv)") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise StageError(f"`{' '.join(cmd)}` failed: {last}")
    try:
        shown = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise StageError(f"`{' '.join(cmd)}` printed no JSON") from None
    for row in shown:  # DVC reports a revision it could not read inside the JSON, with exit status 0
        if row.get("error"):
            typer.echo(f"warning: dvc could not read {_short(row.get('rev'))}: {row['error'].get('msg')}", err=True)
    typer.echo(table(columns(shown), keep, width))
