"""`python -m synthaug <command>`: one Typer command per DVC stage.

Each command's module is imported only when that command runs: a stage process then skips the other stages'
imports (matplotlib, SciPy's statistics, OpenCV), about a second and a half of every one of the ~40 stage
processes of a `dvc repro`. `--help` and an unknown command load them all, so both list every command.
"""

from __future__ import annotations

import importlib
import sys

import typer

# command name -> (module, function): the one list of commands
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("synthaug.stages.prepare", "prepare"),
    "train": ("synthaug.stages.train", "train"),
    "invert": ("synthaug.stages.invert", "invert"),
    "sample": ("synthaug.stages.sample", "sample"),
    "fid-ref": ("synthaug.stages.fid", "fid_ref"),
    "fid": ("synthaug.stages.fid", "fid"),
    "classify": ("synthaug.stages.classify", "classify"),
    "fidelity": ("synthaug.stages.fidelity", "fidelity"),
    "analyse": ("synthaug.stages.analyse", "analyse"),
    "gradcam": ("synthaug.stages.gradcam", "gradcam"),
    "report": ("synthaug.stages.report", "report"),
    "ui": ("synthaug.stages.ui", "ui"),  # not a stage: MLflow's server on the repo's store
    "readme": ("synthaug.stages.readme", "readme"),  # not a stage: README's study section from the report
    "status": ("synthaug.stages.status", "status"),  # not a stage: where `dvc repro` stands, while it runs
    "compare": ("synthaug.stages.compare", "compare"),  # not a stage: experiments side by side, one row a figure
}
HELP = "synthaug: does synthetic data from generative models make an image classifier better?"


def build_app(names: list[str] | None = None) -> typer.Typer:
    """The Typer app with the named commands (all of them by default)."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=HELP)

    @app.callback()
    def _group() -> None:
        # a callback keeps `synthaug <command>` a group even when only one command is registered
        pass

    for name in names or list(COMMANDS):
        module, function = COMMANDS[name]
        app.command(name)(getattr(importlib.import_module(module), function))
    return app


def __getattr__(name: str):
    if name == "app":  # `from synthaug.cli import app`: every command (tests drive it with CliRunner)
        return build_app()
    raise AttributeError(name)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
    build_app([command] if command in COMMANDS else None)()
