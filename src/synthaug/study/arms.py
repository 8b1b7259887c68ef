"""The study's arms (DESIGN §1): their names, which data each uses, and which runs a params file defines.

One classify stage item serves one arm of one study seed's chain and trains all of its runs (every fraction and
classifier seed it has), so the process start-up is paid once per arm, not once per classifier. Each run leaves a
record `metrics/classify/study<K>/<arm>/<run>.json`; the arm's summary is `metrics/classify/study<K>/<arm>.json`.
"""

from __future__ import annotations

from synthaug.core.config import ConfigError, Params, real_curve_fractions
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


def study_arms(params: Params) -> list[str]:
    """Every arm the params define, one classify stage item each (as dvc.yaml's stages do)."""
    return (["real", "real+all"] + [f"real+{s}" for s in params.sources]
            + [f"synth:{s}" for s in params.sources])


def arm_fractions(arm: str, params: Params) -> list[float | None]:
    """`real` runs along the whole curve; mixed arms at the study's fractions; `synth:` arms at none."""
    if arm == "real":
        return list(real_curve_fractions(params))
    if arm.startswith("synth:"):
        return [None]
    return sorted(params.fractions)


def arm_runs(arm: str, params: Params) -> list[tuple[float | None, int]]:
    """(fraction, seed) of every classifier the arm trains."""
    return [(f, seed) for f in arm_fractions(arm, params) for seed in params.classify.seeds]


def analysed_run(arm: str, params: Params) -> tuple[float | None, int]:
    """The run whose weights the arm keeps for the analyses (Grad-CAM): the study's first fraction (synthetic-only
    arms: none) and first seed, so every arm is compared at the same point."""
    return (None if arm.startswith("synth:") else min(params.fractions)), params.classify.seeds[0]


def arm_slug(arm: str) -> str:
    """File-system-safe name of an arm, e.g. `real+vae`, `synth-vae`."""
    return arm.replace(":", "-")


def run_seed(study: int, seed: int) -> int:
    """The seed a classifier run trains with (initial weights, batch order, crops): its classifier seed inside its
    study seed's chain, so that no two chains share a classifier's randomness (study 0: the classifier seed)."""
    return seed + 1_000_003 * study


def run_slug(fraction: float | None, seed: int) -> str:
    """Name of one run of an arm, e.g. `f0.02_s0`, or `s0` for a synthetic-only arm."""
    return f"s{seed}" if fraction is None else f"f{fraction_key(fraction)}_s{seed}"


def study_items(params: Params) -> list[tuple[str, float | None, int]]:
    """Every (arm, fraction, seed) classifier run that the params define."""
    return [(arm, f, seed) for arm in study_arms(params) for f, seed in arm_runs(arm, params)]
