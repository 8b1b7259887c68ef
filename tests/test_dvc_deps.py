"""dvc.yaml's code deps of the training stages equal the code their checkpoints' fingerprints hash.

Both lists say "this code defines what the stage trains": DVC re-runs the stage when one of its files changes,
and the persisted checkpoint is resumed only if the same files are unchanged. If they drifted apart, an edit
could re-run a stage that then resumes the old code's checkpoint, or change training without re-running it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from synthaug.generators.base import FAMILIES, family_module, training_code
from synthaug.training import source_file

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _render(text: str, key: str, item: dict) -> str:
    text = text.replace("${key}", key)
    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)


def _code_deps(stage: dict, key: str = "", item: dict | None = None) -> set[str]:
    deps = [_render(d, key, item or {}) for d in stage["deps"]]
    return {d for d in deps if d.startswith("src/")}


def _fingerprinted(module_name: str, stage_module: str) -> set[str]:
    names = training_code(family_module(module_name), stage_module)
    return {source_file(n).relative_to(ROOT).as_posix() for n in names}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_train_stage_deps_are_the_fingerprinted_code(family):
    train = STAGES["train"]
    deps = _code_deps(train["do"], family, train["foreach"][family])
    assert deps == _fingerprinted(family, "synthaug.stages.train")


# Code that scores the learned vectors after training ("follows its group", in Inception features): a dep of
# the stage, but not of its resume fingerprint (a new scorer re-scores the same vectors).
INVERT_SCORING = {"src/synthaug/metrics/group_following.py", "src/synthaug/metrics/fid.py",
                  "src/synthaug/stages/fid.py"}


def test_invert_stage_deps_are_the_fingerprinted_code():
    assert _code_deps(STAGES["invert"]) == _fingerprinted("dinv", "synthaug.stages.invert") | INVERT_SCORING


# Shared plumbing every stage imports; like the other stages, `analyse` does not list it as a dep.
PLUMBING = {"synthaug.config", "synthaug.storage", "synthaug.tracking", "synthaug.runtime", "synthaug.stages.common",
            "synthaug.data.real", "synthaug.data.shards"}


def _synthaug_imports(module: str, seen: set[str]) -> set[str]:
    """The synthaug modules `module` imports (at the top or inside functions), recursively, less the plumbing."""
    import ast

    tree = ast.parse(source_file(module).read_text())
    found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    for name in sorted(n for n in found if n.startswith("synthaug.") and n not in PLUMBING and n not in seen):
        seen.add(name)
        _synthaug_imports(name, seen)
    return seen


def test_analyse_stage_deps_are_its_code_and_every_sources_features_and_shards():
    from synthaug.config import SOURCES

    analyse = STAGES["analyse"]
    code = _synthaug_imports("synthaug.stages.analyse", {"synthaug.stages.analyse"})
    assert _code_deps(analyse) == {source_file(n).relative_to(ROOT).as_posix() for n in code}
    data = {d for d in analyse["deps"] if not d.startswith("src/")}
    assert data == {"data/real", "data/fid_ref.npz", *(f"data/features/{s}.npz" for s in SOURCES),
                    *(f"data/synthetic/{s}" for s in SOURCES)}
    assert set(analyse["params"]) == {"seed", "sources", "analysis"}
