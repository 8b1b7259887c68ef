"""Lineage: the exact upstream outputs a record was made from, and whether they are still the current ones.

Every record the study's report combines names its inputs as `{"inputs": {name: content id}}`:
- `synthetic/<source>`: the shards' manifest (it lists every shard's sha256, the checkpoint's hash and the
  sampler's settings), so it changes whenever `sample_<source>@<K>` writes other images;
- `real`: data/real/meta.json (the dataset's source-file checksums and counts);
- `fractions`: data/fractions/study<K>.json (the chain's nested real subsets).
A content id is the first 16 hex digits of the file's sha256. The report compares every record's ids with the
files as they are now and gives no answer from records of mixed upstream states (DESIGN §1, lineage).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "manifest.json"  # data.shards.MANIFEST (not imported: this module reads files only)
NO_LINEAGE = "no lineage recorded (made by older code)"


def content_id(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _files(real_dir: Path | None, fractions: Path | None, synth_dir: Path | None, sources) -> dict[str, Path]:
    files = {}
    if real_dir is not None:
        files["real"] = Path(real_dir) / "meta.json"
    if fractions is not None:
        files["fractions"] = Path(fractions)
    files.update({f"synthetic/{s}": Path(synth_dir) / s / MANIFEST for s in sources})
    return files


def input_ids(real_dir: Path | None = None, fractions: Path | None = None, synth_dir: Path | None = None,
              sources: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """The content ids of the inputs a record is made from (those given; a missing file is an error upstream)."""
    return {name: content_id(path) for name, path in _files(real_dir, fractions, synth_dir, sources).items()}


def current_ids(real_dir: Path, fractions: Path, synth_dir: Path, sources) -> dict[str, str]:
    """Content ids of the upstream outputs as they are now (skipping those not made yet)."""
    return {name: content_id(path) for name, path in _files(real_dir, fractions, synth_dir, sources).items()
            if path.is_file()}


def merged(parts: list[dict[str, str]]) -> dict[str, str]:
    """One record's inputs from several (e.g. gradcam's classifiers): an input that two of them name with different
    ids is itself a mixed state, kept as an id that matches nothing."""
    out: dict[str, str] = {}
    for part in parts:
        for name, ident in part.items():
            out[name] = ident if out.get(name, ident) == ident else f"mixed:{out[name]}/{ident}"
    return out


def stale_inputs(record_inputs: dict | None, current: dict[str, str], required: tuple[str, ...] = ()) -> list[str]:
    """Why a record does not descend from the current upstream outputs: the inputs whose recorded id differs from
    the current one, and `required` inputs it does not name at all. Empty: it is current."""
    if not isinstance(record_inputs, dict):
        return [NO_LINEAGE]
    why = [f"{name} changed since" for name, ident in sorted(record_inputs.items())
           if name in current and current[name] != ident]
    why += [f"made without {name}" for name in required if name not in record_inputs]
    return why


def check(records: list[tuple[str, dict | None, tuple[str, ...]]], current: dict[str, str]) -> dict[str, list[str]]:
    """{stage item: reasons} for every (stage item, record inputs, required inputs) that is not current."""
    stale: dict[str, list[str]] = {}
    for item, inputs, required in records:
        for reason in stale_inputs(inputs, current, required):
            if reason not in stale.setdefault(item, []):
                stale[item].append(reason)
    return {item: why for item, why in stale.items() if why}


def refresh_command(stale: dict[str, list[str]]) -> str:
    """The command that re-runs exactly the stale stage items (forced: DVC may hold their old state as current, e.g.
    after a stage was run by hand), then the report."""
    return "dvc repro --force --single-item " + " ".join(sorted(stale)) + " && dvc repro report"
