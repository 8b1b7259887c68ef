"""`python -m synthaug <command>`: one Typer command per DVC stage."""

from __future__ import annotations

import typer

from synthaug.stages.analyse import analyse
from synthaug.stages.classify import classify
from synthaug.stages.fid import fid, fid_ref
from synthaug.stages.fidelity import fidelity
from synthaug.stages.invert import invert
from synthaug.stages.prepare import prepare
from synthaug.stages.report import report
from synthaug.stages.sample import sample
from synthaug.stages.train import train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="synthaug: does synthetic data from generative models make an image classifier better?")
app.command("prepare")(prepare)
app.command("train")(train)
app.command("invert")(invert)
app.command("sample")(sample)
app.command("fid-ref")(fid_ref)
app.command("fid")(fid)
app.command("classify")(classify)
app.command("fidelity")(fidelity)
app.command("analyse")(analyse)
app.command("report")(report)


def main() -> None:
    app()
