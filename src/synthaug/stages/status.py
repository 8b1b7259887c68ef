"""`python -m synthaug status`: where a `dvc repro` stands, readable while it runs (not a stage).

`dvc status` refuses while `dvc repro` runs a stage (DVC's read locks on the stage's outputs); this command
takes no DVC lock and writes nothing: it reads the stages' progress journal (`.synthaug/progress/`), dvc.yaml,
dvc.lock and the files (`synthaug.core.run_plan`), and the MLflow store for durations (`synthaug.core.progress`).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import typer

from synthaug.core.progress import duration, snapshot, sources_words
from synthaug.core.run_plan import PlanError
from synthaug.stages.common import stage_command


def _find_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise PlanError(f"{start}: not inside a DVC project (no .dvc folder here or above)")


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "?"


def _progress(p: dict | None) -> str:
    if not p:
        return "no progress bar yet"
    desc = f' of "{p["desc"].strip()}"' if p.get("desc", "").strip() else ""
    return f"{100 * p['fraction']:.0f} %{desc} ({p['n']}/{p['total']}, at {_clock(p.get('at'))})"


def _wrapped(head: str, names: list[str]) -> list[str]:
    text = f"{head}: " + (", ".join(names) if names else "none")
    return textwrap.wrap(text, width=110, subsequent_indent="    ", break_on_hyphens=False)


def render(snap: dict) -> str:
    """The report people read; `--json` prints `snap` itself."""
    lines = [f"synthaug status of {snap['root']} (no DVC lock taken)"]
    run = snap["run"]
    command = f"`dvc {' '.join(run['args'])}` (dvc pid {run['dvc_pid']})" if run else "a run"
    counts = f"{len(snap['done'])} done, {len(snap['failed'])} failed"
    if snap["starting"]:
        lines.append(f"run: {command}, in progress: DVC is checking which items to run, none started yet")
    elif snap["in_progress"]:
        lines.append(f"run: {command}, in progress since {_clock(snap['run_start'])}")
    elif run or snap["done"] or snap["failed"]:
        lines.append(f"run: none in progress; the last, {command}, started {_clock(snap['run_start'])}: {counts}")
    else:
        lines.append("run: none recorded in this workspace (.synthaug/progress/ is empty)")
    this = "this run" if snap["in_progress"] else "last run"
    lines += _wrapped(f"done ({len(snap['done'])}, {this})",
                      [f"{d['item']} ({duration(d['seconds'])})" for d in snap["done"]])
    if snap["failed"]:
        lines += _wrapped(f"failed ({len(snap['failed'])}, {this})", [f"{f['item']} ({f['why']})" for f in snap["failed"]])
    lines.append(f"running ({len(snap['running'])}):" + ("" if snap["running"] else " none"))
    for r in snap["running"]:
        lines.append(f"  {r['item']}: pid {r['pid']} {r['state']}, {_progress(r['progress'])}, "
                     f"{duration(r['elapsed'])} elapsed, ~{duration(r['remaining'])} left "
                     f"({r['estimate_source']}: ~{duration(r['estimate'])} in all)")
    left = snap["left"]
    head = "left" if snap["in_progress"] else f"left if you run `{snap['command']}` now"
    lines += _wrapped(f"{head} ({len(left)})", [x["item"] + ("?" if x["maybe"] else "") for x in left])
    maybe = sum(x["maybe"] for x in left)
    if maybe:
        lines.append(f"    ?: {maybe} run only if an upstream item's outputs change (DVC decides when it gets there)")
    if snap["running"] or left:
        sources = [x["estimate_source"] for x in (*snap["running"], *left)]
        bound = f", ~{duration(snap['remaining_seconds'] - snap['maybe_seconds'])} without the ?-items" if maybe else ""
        lines.append(f"estimate: ~{duration(snap['remaining_seconds'])} for the rest, one item after another{bound} "
                     f"({sources_words(sources)})")
    else:
        lines.append("estimate: nothing left to run")
    return "\n".join(lines)


@stage_command
def status(
    repo: Path = typer.Option(None, "--repo", help="the DVC project (default: the one holding this folder)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
) -> None:
    """Where `dvc repro` stands: items done, running (with progress) and left, and how long the rest takes.

    Works while `dvc repro` runs (it takes no DVC lock and writes nothing)."""
    try:
        root = _find_root((repo or Path.cwd()).absolute())
        os.chdir(root)  # `dvc repro TARGET` names targets from the repo root, as DVC runs the stages
        snap = snapshot(root)
    except PlanError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(snap, indent=1) if as_json else render(snap))
