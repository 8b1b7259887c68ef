"""The study's arms (DESIGN §1): their names, which data each uses, and which runs a params file defines."""

from __future__ import annotations

from synthaug.config import ConfigError, Params
from synthaug.data.fractions import fraction_key


def parse_arm(arm: str, params: Params) -> tuple[bool, list[str]]:
    """(uses real data, synthetic sources) of an arm name; a clear error for anything else."""
    if arm == "real":
        return True, []
    if arm == "real+all":
        return True, list(params.sources)
    for prefix, with_real in (("real+", True), ("synth:", False)):
        if arm.startswith(prefix):
            source = arm[len(prefix):]
            if source not in params.sources:
                raise ConfigError(f"arm '{arm}': source '{source}' is not in `sources` ({', '.join(params.sources)})")
            return with_real, [source]
    raise ConfigError(f"unknown arm '{arm}' (use real, real+SOURCE, real+all or synth:SOURCE)")


def arm_slug(arm: str, fraction: float | None, seed: int) -> str:
    """File-system-safe name of one classify item, e.g. `real+vae_f0.1_s0`, `synth-vae_s0`."""
    base = arm.replace(":", "-")
    return f"{base}_s{seed}" if fraction is None else f"{base}_f{fraction_key(fraction)}_s{seed}"


def study_items(params: Params) -> list[tuple[str, float | None, int]]:
    """Every (arm, fraction, seed) classify run that the params define, as dvc.yaml's matrices do."""
    items: list[tuple[str, float | None, int]] = []
    for seed in params.classify.seeds:
        for f in params.fractions:
            items += [("real", f, seed), ("real+all", f, seed)] + [(f"real+{s}", f, seed) for s in params.sources]
        items += [(f"synth:{s}", None, seed) for s in params.sources]
    return items
