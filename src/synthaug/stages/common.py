"""What every stage command shares: where things live on disk, loading validated params, error handling."""

from __future__ import annotations

import functools
import hashlib
import logging
import signal
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import typer

from synthaug.core import distributed, progress
from synthaug.core.config import ConfigError, Params, load_params, with_study
# The on-disk layout and each study seed's chain, re-exported for the stages (one place: synthaug.core.layout).
from synthaug.core.layout import FID_REF, FRACTIONS_DIR, METRICS, REAL_DIR, REPORTS, Chain  # noqa: F401
from synthaug.core.runtime import Runtime, RuntimeConfigError, make_runtime, seed_everything
from synthaug.core.storage import StorageError, recover_commits, save_json

log = logging.getLogger("synthaug")

PARAMS_OPTION = typer.Option("params.yaml", "--params", help="params file (validated whole before any work)")
STUDY_OPTION = typer.Option(0, "--study", help="study seed: whose chain (subsets, generators, samples, classifiers) "
                                               "this stage item serves; one of `study_seeds`")


class StageError(RuntimeError):
    """A runtime fault inside a stage (exit code 1), as opposed to bad input (exit code 2)."""


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    from synthaug.data.real import DatasetError
    from synthaug.metrics.fid import FidError

    return (ConfigError, StorageError, RuntimeConfigError, DatasetError, FidError)


def _fault_errors() -> tuple[type[BaseException], ...]:
    from synthaug.core.tracking import TrackingError
    from synthaug.generators.training import NonFiniteLossError

    return (StageError, TrackingError, NonFiniteLossError, OSError)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def stage_command(fn: Callable) -> Callable:
    """Turn our known errors into one line on stderr and an exit code: 2 for bad input, 1 for a fault."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # SIGTERM (a scheduler's or `kill`'s) unwinds like Ctrl-C, so the stage's MLflow run ends KILLED, not RUNNING
        signal.signal(signal.SIGTERM, _interrupt)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                            datefmt="%H:%M:%S", stream=sys.stderr)
        try:
            return fn(*args, **kwargs)
        except _bad_input_errors() as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except _fault_errors() as e:
            typer.echo(f"error: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def load_stage(params_path: str | Path, data_parallel: bool = False, log_runtime: bool = True,
               study: int | None = None) -> tuple[Params, Runtime]:
    """Validated params and the runtime (device, precision) of a stage; seeds every RNG. `log_runtime`: say in the
    log what the stage computes in (off for stages that compute no network, or in another precision: `fid`).

    `data_parallel` (the training stages): with `processes` > 1 the command starts again under torchrun in that
    many processes (`distributed.relaunch`, which does not return), and each of those joins the process group
    here; only rank 0 then writes outputs and MLflow records (the stage checks `is_main_process()`).

    `study`: the chain stages' study seed (`--study`): `params.seed` becomes it (`config.with_study`)."""
    recover_commits()  # outputs a killed stage left half replaced are completed before anything reads them
    params = load_params(params_path)
    if study is not None:
        params = with_study(params, study)
    if data_parallel:
        distributed.relaunch(params.processes)
    runtime = make_runtime(params.device, params.precision)
    distributed.init(distributed.from_env(), runtime.device.type)
    progress.stage_started()  # under `dvc repro`: the run's journal, and "stage 7 of 42 (...): ~1 h left" in the log
    seed_everything(params.seed)
    if log_runtime:
        log.info("runtime: %s", runtime.describe())
    return params, runtime


def analysed_chain(params: Params, study: int) -> Chain:
    """The chain the analyses (`analyse`, `gradcam`) look at: by default the first study seed's. Unlike the chain
    stages they keep the shared `seed` for their picks of real test images."""
    if study not in params.study_seeds:
        raise ConfigError(f"--study {study}: not among study_seeds {params.study_seeds}")
    return Chain(study)


def is_main_process() -> bool:
    """False in torchrun's ranks other than 0: they train, but leave outputs and records to rank 0."""
    return distributed.from_env().is_main


def require(path: Path, made_by: str) -> Path:
    if not path.exists():
        raise StorageError(f"{path}: not found (run the `{made_by}` stage first: dvc repro {made_by})")
    return path


def write_metrics(path: Path, metrics: dict) -> None:
    """A small flat JSON of numbers (DVC metrics, `cache: false`)."""
    save_json(path, {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()})


def seen_real_images(indices: np.ndarray, fraction: float) -> dict:
    """What a generator saw, for MLflow and metrics: how many real training images, of which fraction, and a hash
    of their sorted indices (so two runs can be checked to have seen exactly the same images)."""
    idx = np.sort(np.asarray(indices, dtype=np.int64))
    return {"generator_fraction": fraction, "train_images": int(idx.size),
            "train_indices_sha256": hashlib.sha256(idx.tobytes()).hexdigest()[:16]}
