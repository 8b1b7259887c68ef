"""The one training loop every model family shares: batches, checkpoints, resume, NaN guard, logging.

A family supplies a `Trainable` (its nets, optimizers, EMA and one `train_step`); this module owns the
rest. Batches are a pure function of (seed, step), and the checkpoint carries the step, the Trainable's
state and every RNG state, so a killed run resumed from its last checkpoint continues exactly as an
uninterrupted run would. Under torchrun the same loop is data-parallel (`synthaug.core.distributed`): each process
trains on its rows of every global batch, gradients are averaged, rank 0 alone writes checkpoints (holding
every rank's RNG state) and logs.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import math
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
import torch
from tqdm import tqdm

from synthaug.core import distributed
from synthaug.core.arrays import to_model_range
from synthaug.core.runtime import Runtime, rng_state, seed_everything, set_rng_state
from synthaug.core.storage import load_checkpoint, save_checkpoint

log = logging.getLogger("synthaug")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf: training stops before writing a checkpoint of garbage."""


class Trainable(Protocol):
    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        """One optimisation step on a batch; returns the scalar losses to log."""

    def state_dict(self) -> dict:
        """Everything needed to resume: state dicts of nets, optimizers, schedulers, EMA."""

    def load_state_dict(self, state: dict) -> None: ...


class BatchStream:
    """Shuffled batches whose content depends only on (seed, step): resuming needs no data-loader state.

    Each epoch is a fresh permutation drawn from `seed + epoch`; a batch never straddles two epochs
    (the remainder of an epoch is dropped), so every step sees a full batch.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        if len(images) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(images)} training images")
        self.images = to_model_range(images)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = len(images) // batch_size
        self._perm_epoch, self._perm = -1, None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.labels), generator=g), epoch
        idx = self._perm[k * self.batch_size:(k + 1) * self.batch_size]
        return self.images[idx], self.labels[idx]


class EMA:
    """Exponential moving average of a module's weights (buffers copied), used for sampling."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for e, p in zip(self.module.parameters(), module.parameters()):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), module.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


def trained_modules(trainable: Trainable) -> list[torch.nn.Module]:
    """The nets a Trainable holds as attributes, EMA copies included: what data-parallel training keeps equal
    across ranks. Gradients are averaged only for parameters that require them (not frozen nets, not EMA)."""
    return [v.module if isinstance(v, EMA) else v for v in vars(trainable).values()
            if isinstance(v, (torch.nn.Module, EMA))]


def check_finite(losses: dict[str, float], step: int) -> None:
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(f"loss {', '.join(bad)} became {losses[bad[0]]} at step {step}; "
                                 "lower the learning rate or check the data (no checkpoint written)")


def run_training(
    trainable: Trainable,
    stream: BatchStream,
    runtime: Runtime,
    total_steps: int,
    checkpoint: Path | None,
    checkpoint_every: int,
    log_metrics: Callable[[dict[str, float], int], None],
    log_every: int = 50,
    desc: str = "train",
    extra_state: Callable[[], dict] | None = None,
    fingerprint: str = "",
    dist: distributed.Dist | None = None,
) -> list[dict[str, float]]:
    """Train to `total_steps`, resuming from `checkpoint` if it exists; returns the logged history.

    The checkpoint holds {"step", "trainable", "rng", "history", "fingerprint"} (+ `extra_state()`),
    written atomically every `checkpoint_every` steps and at the end. It is resumed only when it was made
    by the same run (see `fingerprint_of`): DVC keeps the file between runs (`persist: true`) so that a
    killed stage resumes, and a changed parameter or changed training code must start afresh.
    With `checkpoint=None` nothing is saved.

    `dist` (default: torchrun's environment, one process without it): each rank trains on its rows of every
    batch with gradients averaged; the logged losses are the ranks' mean; rank 0 writes the checkpoint, which
    also records the process count and every rank's RNG state (`rank_rng`), so that the same count resumes it
    exactly.
    """
    dist = distributed.from_env() if dist is None else dist
    modules = trained_modules(trainable)
    start, history = 0, []
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, map_location=runtime.device)
        why_not = _why_not_resumable(str(state.get("fingerprint", "")), fingerprint)
        if why_not is None and int(state.get("processes", 1)) != dist.world:
            why_not = f"by {int(state.get('processes', 1))} processes, not {dist.world}"
        if why_not is None:
            trainable.load_state_dict(state["trainable"])
            set_rng_state(state["rank_rng"][dist.rank] if dist.active else state["rng"])
            start, history = int(state["step"]), list(state["history"])
            log.info("resuming %s from step %d of %d (%s)", desc, start, total_steps, checkpoint)
        else:
            log.warning("%s: %s was made %s; training from scratch", desc, checkpoint, why_not)
    if start >= total_steps:
        return history
    if dist.active and start == 0:
        # Same weights everywhere (the same seed built them; rank 0's win if not), then each rank its own noise.
        distributed.broadcast_modules(dist, modules)
        seed_everything(torch.initial_seed() + distributed.seed_offset(dist))
    hooks = distributed.average_gradients(dist, modules)

    def save(step: int) -> None:
        if checkpoint is None:
            return
        ranks_rng = distributed.gather_objects(dist, rng_state())  # every rank takes part; rank 0 writes
        if not dist.is_main:
            return
        state = {"step": step, "trainable": trainable.state_dict(), "rng": ranks_rng[0], "history": history,
                 "fingerprint": fingerprint}
        if dist.active:
            state.update(processes=dist.world, rank_rng=ranks_rng)
        if extra_state is not None:
            state.update(extra_state())
        save_checkpoint(checkpoint, state)

    window: dict[str, list[float]] = {}
    bar = tqdm(range(start, total_steps), desc=desc, initial=start, total=total_steps, dynamic_ncols=True,
               mininterval=2.0, disable=not dist.is_main)
    for step in bar:
        images, labels = distributed.shard(dist, *stream.batch(step))
        losses = distributed.mean_across(
            dist, trainable.train_step(runtime.batch(images), labels.to(runtime.device), step))
        check_finite(losses, step)
        for k, v in losses.items():
            window.setdefault(k, []).append(v)
        done = step + 1
        # Flush at checkpoints too, so a resumed run logs exactly what an uninterrupted one does.
        at_checkpoint = done % checkpoint_every == 0 or done == total_steps
        if done % log_every == 0 or at_checkpoint:
            means = {k: float(np.mean(v)) for k, v in window.items()}
            history.append({"step": done, **means})
            log_metrics(means, done)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:3]})
            window = {}
        if at_checkpoint:
            if done == total_steps:  # the final model: the same statistics on every rank (BatchNorm)
                distributed.average_buffers(dist, modules)
            save(done)
    for handle in hooks:
        handle.remove()
    return history


def fingerprint_of(*parts, code: Iterable[str] = ()) -> str:
    """What defines a training run, as "<settings hash>+<code hash>".

    `parts`: JSON-able settings (params section, data checksum, seed...). `code`: the dotted names of the
    modules whose source defines the training (the stage's code deps in dvc.yaml), hashed by file
    content, so an edited loss or network never resumes a checkpoint the old code made.
    """
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    settings = hashlib.sha256(blob).hexdigest()[:16]
    if not code:
        return settings
    digest = hashlib.sha256()
    for name in sorted(set(code)):
        digest.update(name.encode() + b"\0" + source_file(name).read_bytes())
    return f"{settings}+{digest.hexdigest()[:16]}"


def source_file(module: str) -> Path:
    return Path(importlib.import_module(module).__file__).resolve()


def _why_not_resumable(stored: str, ours: str) -> str | None:
    settings, _, made_by = stored.partition("+")
    our_settings, _, our_code = ours.partition("+")
    if settings != our_settings:
        return "with other settings"
    # A checkpoint without a code hash predates them (written before code hashes were recorded): resumed
    # as before, so that finished runs are not thrown away; every checkpoint written now carries one.
    if made_by and made_by != our_code:
        return "by other training code"
    return None
