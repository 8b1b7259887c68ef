"""Data-parallel training under `torchrun` (issue 16): one process per device, each on its share of every batch.

Single-process runs (no torchrun) see `Dist(rank=0, world=1)` and every function here is a no-op for them, so the
single-process path stays exactly what it was.

Semantics, so that N processes train what one process would: every rank draws the same global batch (batches are
a pure function of (seed, step), `training.BatchStream`) and takes rows rank, rank+N, ... of it (`shard`); after
every backward pass each parameter's gradient is averaged across ranks (`average_gradients`), so with mean-reduced
losses and equal shards every optimiser step sees the gradient of the global batch's mean loss, as in one process.
Where one process's maths is not a mean over samples the results differ: BatchNorm normalises by each rank's shard
(the classifiers), and noise drawn inside a step (diffusion timesteps, GAN latents, augmentation) comes from each
rank's own generator, seeded per rank (`seed_offset`). Logged losses are the mean over ranks.

Every rank starts from rank 0's weights (`broadcast_modules`), and buffers (BatchNorm's running statistics, each
rank's over its shard) are averaged at the end of training (`average_buffers`: exact for running means, a close
estimate for running variances), so every rank ends with the same model. The stages (`training.run_training`)
use all of this by themselves when they run under torchrun; `processes` in params.yaml makes a training stage's
plain `python -m synthaug ...` command start torchrun itself (`relaunch`).

Gradients are averaged by a hook on each parameter after its gradient is accumulated, not by
`DistributedDataParallel`: the critics' gradient penalty (a double backward) and the GANs' alternating G/D passes
are outside what DDP's reducer supports, and a hook after accumulation gives every family the same averaging,
before its gradient clipping, as one process would clip the global gradient. (Per-parameter all-reduce is slower
than DDP's buckets; it is correct first.)
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes outputs, checkpoints and MLflow records."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def from_env(environ: dict | None = None) -> Dist:
    """The process's place among `torchrun`'s (RANK, WORLD_SIZE, LOCAL_RANK); one process without them."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Dist(rank=int(env["RANK"]), world=world, local_rank=int(env.get("LOCAL_RANK", env["RANK"])))


def relaunch(processes: int, argv: list[str] | None = None) -> None:
    """Replace this process by `torchrun` running the same synthaug command in `processes` processes; nothing
    when `processes` is 1 or this process already runs under torchrun. The process keeps its pid (exec), so DVC
    waits on torchrun, which exits with the ranks' status."""
    if processes <= 1 or "WORLD_SIZE" in os.environ:
        return
    args = sys.argv[1:] if argv is None else argv
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "synthaug", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


def init(dist: Dist, device_type: str) -> None:
    """Join the process group (NCCL between GPUs, gloo on CPUs); torchrun provides the rendezvous address. The
    group is left at exit."""
    if dist.active and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=dist.rank,
                                      world_size=dist.world)
        atexit.register(shutdown)


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def seed_offset(dist: Dist) -> int:
    """Added to the seed of the noise drawn inside training steps, so ranks do not draw identical noise."""
    return 1_000_003 * dist.rank


def shard(dist: Dist, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows rank, rank+world, ... of each (global) batch tensor."""
    if not dist.active:
        return tensors
    for t in tensors:
        if len(t) % dist.world:
            raise ValueError(f"a batch of {len(t)} does not split evenly over {dist.world} processes: "
                             f"use a batch size divisible by the process count")
    return tuple(t[dist.rank::dist.world] for t in tensors)


def average_gradients(dist: Dist, modules: list[torch.nn.Module]) -> list:
    """Average each trainable parameter's gradient across ranks right after it is accumulated; returns the hook
    handles (`handle.remove()` undoes it). A parameter accumulated twice in one step (two backward passes) is
    averaged twice, which is still the average: the first average is the same on every rank."""
    if not dist.active:
        return []

    def hook(p: torch.Tensor) -> None:
        if p.grad.is_sparse:  # an embedding table under SparseAdam (inversion): NCCL reduces dense tensors only
            dense = p.grad.to_dense()
            torch_dist.all_reduce(dense, op=torch_dist.ReduceOp.SUM)
            p.grad = dense.div_(dist.world).to_sparse(1)  # the rows any rank touched, as one process would
            return
        torch_dist.all_reduce(p.grad, op=torch_dist.ReduceOp.SUM)
        p.grad.div_(dist.world)

    seen: set[int] = set()
    handles = []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                handles.append(p.register_post_accumulate_grad_hook(hook))
    return handles


def broadcast_modules(dist: Dist, modules: list[torch.nn.Module]) -> None:
    """Rank 0's parameters and buffers on every rank: all ranks start from the same weights."""
    if not dist.active:
        return
    with torch.no_grad():
        for m in modules:
            for t in [*m.parameters(), *m.buffers()]:
                torch_dist.broadcast(t.data, src=0)


def average_buffers(dist: Dist, modules: list[torch.nn.Module]) -> None:
    """The mean over ranks of every floating-point buffer (BatchNorm's running statistics, each rank's over its
    shard); integer buffers (batch counters) are the same on every rank already."""
    if not dist.active:
        return
    with torch.no_grad():
        for m in modules:
            for b in m.buffers():
                if b.is_floating_point():
                    torch_dist.all_reduce(b.data, op=torch_dist.ReduceOp.SUM)
                    b.data.div_(dist.world)


def mean_across(dist: Dist, values: dict[str, float]) -> dict[str, float]:
    """The mean of each logged scalar over ranks (the same keys in the same order on every rank)."""
    if not dist.active or not values:
        return values
    t = torch.tensor([values[k] for k in values], dtype=torch.float64)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return {k: float(v) / dist.world for k, v in zip(values, t.tolist())}


def barrier(dist: Dist) -> None:
    if dist.active:
        torch_dist.barrier()


def gather_objects(dist: Dist, obj) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank: e.g. the RNG states a checkpoint keeps."""
    if not dist.active:
        return [obj]
    out = [None] * dist.world
    torch_dist.all_gather_object(out, obj)
    return out
