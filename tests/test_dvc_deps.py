"""dvc.yaml's code deps of the training stages equal the code their checkpoints' fingerprints hash.

Both lists say "this code defines what the stage trains": DVC re-runs the stage when one of its files changes,
and the persisted checkpoint is resumed only if the same files are unchanged. If they drifted apart, an edit
could re-run a stage that then resumes the old code's checkpoint, or change training without re-running it.
Beyond training: every stage item lists each synthaug module its command imports, so no edit to code that
decides an output (a metric, which runs exist, which images) leaves that output stale.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from synthaug.generators.base import FAMILIES, family_module, training_code
from synthaug.generators.training import source_file

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _code_deps(stage: dict) -> set[str]:
    return {d for d in stage["deps"] if d.startswith("src/")}


def _fingerprinted(module_name: str, stage_module: str) -> set[str]:
    names = training_code(family_module(module_name), stage_module)
    return {source_file(n).relative_to(ROOT).as_posix() for n in names}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_train_stage_deps_are_the_fingerprinted_code(family):
    assert _code_deps(STAGES[f"train_{family}"]) == _fingerprinted(family, "synthaug.stages.train")


# Code that scores the learned vectors after training ("follows its group", in Inception features): a dep of
# the stage, but not of its resume fingerprint (a new scorer re-scores the same vectors).
INVERT_SCORING = {"src/synthaug/metrics/group_following.py", "src/synthaug/study/study_stats.py",
                  "src/synthaug/metrics/fid.py", "src/synthaug/metrics/kid.py", "src/synthaug/stages/fid.py"}


def test_invert_stage_deps_are_the_fingerprinted_code():
    assert _code_deps(STAGES["invert"]) == _fingerprinted("dinv", "synthaug.stages.invert") | INVERT_SCORING


# Shared plumbing every stage imports; like the other stages, `analyse` does not list it as a dep.
# synthaug.core.lineage only names a record's inputs (content ids): plumbing for the stages that write records, a real
# dependency of the report, which judges them (dvc.yaml lists it there).
# Packages whose __init__ holds only a docstring: importing one runs no code of the study.
PACKAGES = {"synthaug", "synthaug.core", "synthaug.study", "synthaug.figures", "synthaug.data", "synthaug.metrics",
            "synthaug.nets", "synthaug.objectives", "synthaug.stages"}
# synthaug.core.distributed (process groups, gradient all-reduce) is imported by stages.common, like the runtime.
# synthaug.core.progress (the run's progress journal and estimate, `python -m synthaug status`) too: it records
# when a stage runs and how far it got, never what it computes.
PLUMBING = {"synthaug.core.distributed", "synthaug.core.progress", "synthaug.core.config", "synthaug.core.storage", "synthaug.core.tracking", "synthaug.core.runtime", "synthaug.stages.common",
            "synthaug.data.real", "synthaug.data.shards", "synthaug.data.errors", "synthaug.core.lineage"}


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _synthaug_imports(module: str, seen: set[str]) -> set[str]:
    """The synthaug modules `module` imports (at the top or inside functions), recursively, less the plumbing."""
    import ast

    tree = ast.parse(source_file(module).read_text())
    found = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            # `from synthaug.core import storage` imports the module synthaug.core.storage, not only the package
            found |= {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
            found.add(node.module)
    for name in sorted(n for n in found if n.startswith("synthaug.") and n not in PLUMBING and n not in seen):
        seen.add(name)
        _synthaug_imports(name, seen)
    return seen


def test_analyse_stage_deps_are_its_code_and_every_sources_features_and_shards():
    from synthaug.core.config import SOURCES

    analyse = STAGES["analyse"]
    code = _synthaug_imports("synthaug.stages.analyse", {"synthaug.stages.analyse"})
    assert _code_deps(analyse) == {source_file(n).relative_to(ROOT).as_posix() for n in code}
    data = {d for d in analyse["deps"] if not d.startswith("src/")}
    chain = "study${study_seeds[0]}"  # the analyses look at the first study seed's chain
    assert data == {"data/real", "data/fid_ref.npz", *(f"data/features/{chain}/{s}.npz" for s in SOURCES),
                    *(f"data/synthetic/{chain}/{s}" for s in SOURCES)}
    assert set(analyse["params"]) == {"seed", "sources", "analysis"}


# Imported by a stage's code without deciding its outputs' values: figures drawn for people (grids, curves: a new
# style re-runs nothing) and the family registry (names and import paths).
NOT_RESULT_CODE = {"synthaug.figures.plots", "synthaug.generators", "synthaug.generators.base"} | PACKAGES
# generators/diffusion.py imports the samplers for the sample stage's `load_sampler`; training never calls them.
SAMPLING_ONLY = {("train_diffusion", "src/synthaug/generators/samplers.py")}


def test_no_stage_item_changes_the_code_a_stage_lists():
    """Matrix items (study seeds, sources) differ in data paths only: one check per stage covers all its items."""
    for name, stage in STAGES.items():
        assert "foreach" not in stage, f"{name}: write each family out as its own stage (code deps per family)"
        assert not any("${" in d for d in stage["deps"] if d.startswith("src/")), name


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_lists_the_code_its_command_imports(name):
    """An edit to any module a stage runs re-runs it: e.g. metrics/kid.py for the KID in fid@S's metrics,
    arms.py (which classifier runs exist) for classify. The stage module is found through the CLI's command
    table; the generator modules the stage imports by name at run time are the item's listed generators/."""
    from synthaug.cli import COMMANDS

    stage = STAGES[name]
    command = re.search(r"-m synthaug ([\w-]+)", stage["cmd"]).group(1)
    code = _code_deps(stage)
    families = {family_module(f).__name__ for f in [*FAMILIES, "dinv"]}
    roots = {COMMANDS[command][0]} | ({d[len("src/"):-len(".py")].replace("/", ".") for d in code} & families)
    seen = set(roots)
    for module in roots:
        _synthaug_imports(module, seen)
    imported = {source_file(m).relative_to(ROOT).as_posix() for m in seen - NOT_RESULT_CODE - PLUMBING}
    missing = {f for f in imported - code if (name, f) not in SAMPLING_ONLY}
    assert not missing, f"dvc.yaml stage {name} runs code it does not list: {sorted(missing)}"
