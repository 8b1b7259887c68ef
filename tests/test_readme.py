"""README's study section is the report's, generated: it cannot drift from reports/summary.json."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import REPO
from synthaug.cli import build_app
from synthaug.stages.readme import BEGIN, END, ReadmeError, rewritten, study_block

CONTEXT = {"dataset": "fashion_mnist", "arch": "resnet8", "steps": 600, "batch_size": 64, "seeds": [0, 1, 2],
           "generator_images": 300}


def test_the_committed_readme_shows_the_committed_report():
    result = CliRunner().invoke(build_app(["readme"]), ["readme", "--check", "--root", str(REPO)])
    assert result.exit_code == 0, result.output


def test_a_readme_edited_by_hand_or_a_new_report_fails_the_check_until_regenerated(tmp_path):
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    (tmp_path / "reports").mkdir()
    summary = {"context": CONTEXT, "answer": ["Helps, surviving ...: ddpm at 0.005 (+1.00 ± 0.50).", "No source hurts."],
               "lineage": {"stale": {}, "records": 107, "commit": "abc123def456", "dirty": False}}
    (tmp_path / "reports" / "summary.json").write_text(json.dumps(summary))
    app, root = build_app(["readme"]), ["--root", str(tmp_path)]
    stale = CliRunner().invoke(app, ["readme", "--check", *root])
    assert stale.exit_code == 1
    assert stale.output.strip() == ("README.md's study block differs from reports/summary.json: run `python -m "
                                    "synthaug readme`")  # a plain line, no error class: a failed check, not a fault
    assert CliRunner().invoke(app, ["readme", *root]).exit_code == 0
    text = (tmp_path / "README.md").read_text()
    assert "made at commit `abc123def456`; every one of its 107 records descends" in text
    assert "1. Helps, surviving ...: ddpm at 0.005 (+1.00 ± 0.50).\n2. No source hurts.\n" + END in text
    assert CliRunner().invoke(app, ["readme", "--check", *root]).exit_code == 0
    (tmp_path / "README.md").write_text(text.replace("+1.00 ± 0.50", "+1.40 ± 0.50"))  # a hand-copied figure
    assert CliRunner().invoke(app, ["readme", "--check", *root]).exit_code == 1


def test_a_report_without_an_answer_gives_a_readme_without_figures():
    stale = {"context": CONTEXT, "answer": [],
             "lineage": {"stale": {"classify_mixed@vae": ["synthetic/vae changed since"]}, "commit": "abc"}}
    block = study_block(stale)
    assert block.startswith("**No current answer.**") and "`classify_mixed@vae`" in block
    assert study_block({"context": CONTEXT, "answer": ["x"]}).startswith("**No current answer.** `reports/summary.md` "
                                                                          "was made by older code")
    with pytest.raises(ReadmeError):
        rewritten("no markers here", block)
    with pytest.raises(ReadmeError):
        rewritten(f"{BEGIN}\n{END}\n{BEGIN}\n{END}", block)
