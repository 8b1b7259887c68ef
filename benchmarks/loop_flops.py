"""Images/s and model FLOP/s of every training loop's `train_step`, as a share of this machine's matmul peak.

    python benchmarks/loop_flops.py [--params params.yaml] [--steps 5] [--only vae gan lsgan wgan_gp ...]

Each loop's Trainable is built as its family's `train(...)` builds it, with the sizes of the params file, and
fed random images in [-1, 1] of the dataset's shape through `runtime.batch`, as `run_training` does; only
`train_step` is timed. FLOPs: one step run under `torch.utils.flop_counter.FlopCounterMode` (forward +
backward, and the double backward of the gradient penalty); it counts matmuls and convolutions only, so
norms, activations and optimiser updates are not in the figure. Time: the mean of --steps steps after an
untimed warm-up (on CUDA between synchronisations). Peak: the best of 5 timed 2048x2048 matmuls (8192x8192 on
`--device cuda`) in the loops' precision (bf16 autocast where `make_runtime` picks it, else fp32), in the same run.

GAN loops: one step = n_critic critic updates (each on its own real batch) + one generator update, the unit
`gan.steps` counts, so `batch` is n_critic x batch_size real images. wgan_gp's lazy penalty runs on every
gp_every-th critic update: its FLOPs are counted over one whole period of the penalty and divided by its
length, and its timed steps are rounded up to whole periods, so ms/step and GFLOP/step are long-run means.
Prints figures only.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from synthaug.study.classifier_training import bank_trainable
from synthaug.core.config import Params, load_params
from synthaug.data.fractions import generator_indices
from synthaug.data.groups import class_groups
from synthaug.generators import gan
from synthaug.generators.base import GeneratorSpec
from synthaug.generators.diffusion import DiffusionTrainable, unet_config
from synthaug.generators.inversion import ConditionSpace, InversionTrainable
from synthaug.generators.vae import VAETrainable
from synthaug.nets.gan import Discriminator, Generator
from synthaug.nets.unet import UNet
from synthaug.nets.vae import ConditionalVAE, VAEConfig
from synthaug.objectives.diffusion import NoiseSchedule
from synthaug.core.runtime import Runtime, make_runtime, seed_everything

LOOPS = ("vae", "gan", "lsgan", "wgan_gp", "diffusion", "inversion", "classifier")
# Fashion-MNIST's shape, so no prepared data is needed (the `prepare` stage's meta.json says the same).
DATASET = {"fashion_mnist": {"channels": 1, "num_classes": 10, "train_images": 60_000}}
PEAK_N, PEAK_REPS = 2048, 5
CUDA_PEAK_N = 8192  # a GPU finishes a 2048 matmul in microseconds: launch overhead, not its peak


def sync(rt: Runtime) -> None:
    """Wait for queued GPU work, so wall-clock intervals measure it (a no-op on the CPU)."""
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: its backward hooks make torch.autograd.grad fail
    ("A leaf node was passed to _will_engine_execute_node", pytorch/pytorch#131753), which wgan_gp's gradient
    penalty calls. Every op is then counted under "Global" only, the total this script reads."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


@dataclass
class Loop:
    trainable: object
    batch: int  # real images one train_step consumes
    period: int = 1  # steps after which the step's work repeats (wgan_gp's lazy penalty), else 1
    label_high: int = 0  # labels are drawn in [0, label_high): classes, or groups for the inversion
    batch_text: str = ""
    members: int = 0  # a classifier bank's: images [batch, members, C, H, W], labels [batch, members]


def generator_spec(params: Params, cap: int = 0) -> GeneratorSpec:
    """The generators' real subset as `train` sees it, with blank images: its size sets epoch-based schedules
    (VAE annealing) and the number of inversion groups, and its shape the nets."""
    d = DATASET[params.dataset.name]
    k = d["num_classes"]
    labels = np.repeat(np.arange(k), d["train_images"] // k)
    seen = generator_indices(labels, params.generator_fraction, params.seed, cap)
    size = params.dataset.image_size
    return GeneratorSpec(np.zeros((len(seen), size, size, d["channels"]), np.uint8), labels[seen], k)


def build(name: str, params: Params, rt: Runtime) -> Loop:
    """The Trainable of loop `name`, constructed as its module's train(...) does."""
    seed_everything(params.seed)
    if name == "vae":
        p = params.vae
        spec = generator_spec(params, p.max_train_images)
        cfg = VAEConfig(channels=spec.channels, num_classes=spec.num_classes, image_size=spec.image_size,
                        latent_dim=p.latent_dim, base_channels=p.base_channels)
        per_epoch = len(spec.labels) // p.batch_size  # BatchStream.per_epoch
        t = VAETrainable(rt.prepare(ConditionalVAE(cfg)), rt, p.lr, params.beta,
                         round(p.beta_anneal_epochs * per_epoch))
        return Loop(t, p.batch_size, label_high=spec.num_classes)
    if name in ("gan", "lsgan", "wgan_gp"):
        p = getattr(params, name)
        spec = generator_spec(params, p.max_train_images)
        cfg = gan.make_config(spec, p)
        t = gan.GANTrainable(rt.prepare(Generator(cfg)), rt.prepare(Discriminator(cfg)), rt, p, name, p.steps)
        # The penalty applies when (step * n_critic + i) % gp_every == 0: a pattern that repeats every
        # gp_every / gcd(gp_every, n_critic) generator steps.
        period = p.gp_every // math.gcd(p.gp_every, p.n_critic) if name == "wgan_gp" else 1
        return Loop(t, p.n_critic * p.batch_size, period, spec.num_classes, f"{p.n_critic}x{p.batch_size}")
    if name in ("diffusion", "inversion"):
        d = params.diffusion
        spec = generator_spec(params, d.max_train_images if name == "diffusion" else 0)
        net = rt.prepare(UNet(unet_config(spec, params)))
        schedule = NoiseSchedule.make(d.schedule, d.timesteps)
        if name == "diffusion":
            t = DiffusionTrainable(net, schedule, rt, d.lr, d.warmup_steps, d.ema_decay, d.label_dropout,
                                   d.code_dropout)
            return Loop(t, d.batch_size, label_high=spec.num_classes)
        # inversion.frozen_diffusion only loads a checkpoint and then does this; a random U-Net of the same
        # size costs the same, so no checkpoint file is needed.
        net = net.eval().requires_grad_(False)
        p = params.invert
        _, group_labels = class_groups(spec.labels, p.group_size, p.groups_per_class, params.seed)
        groups = torch.from_numpy(group_labels).to(rt.device)
        t = InversionTrainable(net, schedule, rt, ConditionSpace(net).initial(groups), p.lr, p.steps, groups)
        return Loop(t, p.batch_size, label_high=len(group_labels))  # its "labels" are group indices
    if name == "classifier":
        p = params.classify.model
        d = DATASET[params.dataset.name]
        # One classifier run: a bank of one, as the classify stage trains it with classify.bank_size 1
        # (benchmarks/classifier_bank.py compares bank sizes).
        t = bank_trainable(p, d["channels"], d["num_classes"], [params.seed], rt)
        return Loop(t, p.batch_size, label_high=d["num_classes"], members=1)
    raise ValueError(f"unknown loop '{name}' (known: {', '.join(LOOPS)})")


def measure(loop: Loop, params: Params, rt: Runtime, steps: int) -> tuple[float, float]:
    """(seconds per step, FLOPs per step), both means over whole periods of the loop."""
    d = DATASET[params.dataset.name]
    size = params.dataset.image_size
    per_image = (loop.members,) if loop.members else ()
    images = rt.batch(torch.rand(loop.batch, *per_image, d["channels"], size, size) * 2 - 1)
    labels = torch.randint(0, loop.label_high, (loop.batch, *per_image)).to(rt.device)
    step = 0

    def run(n: int) -> None:
        nonlocal step
        for _ in range(n):
            loop.trainable.train_step(images, labels, step)
            step += 1

    with flop_counter() as counter:
        run(loop.period)
    flops = counter.get_total_flops() / loop.period
    # One warm-up step outside the counter (its dispatch hook slows every op); the counted steps already ran
    # every code path once. Any `period` consecutive steps hold each phase of the penalty once.
    run(1)
    timed = -(-steps // loop.period) * loop.period
    sync(rt)
    start = time.perf_counter()
    run(timed)
    sync(rt)
    return (time.perf_counter() - start) / timed, flops


def matmul_peak(rt: Runtime) -> float:
    """FLOP/s of the best of PEAK_REPS 2048x2048 matmuls under the loops' autocast (the cast is included,
    as in the loops); the best, not the mean, since the peak is what the machine can do at all."""
    n = CUDA_PEAK_N if rt.device.type == "cuda" else PEAK_N
    a, b = torch.randn(n, n, device=rt.device), torch.randn(n, n, device=rt.device)
    best = math.inf
    with rt.autocast():
        for i in range(PEAK_REPS + 2):  # 2 warm-ups
            sync(rt)
            start = time.perf_counter()
            torch.mm(a, b)
            sync(rt)
            if i >= 2:
                best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per loop, after a warm-up")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] (scripts/gpu_check.sh passes cuda)")
    parser.add_argument("--only", nargs="+", choices=LOOPS, default=list(LOOPS), metavar="NAME",
                        help=f"loops to measure (default all: {' '.join(LOOPS)})")
    args = parser.parse_args()

    params = load_params(args.params)
    if params.dataset.name not in DATASET:
        parser.error(f"dataset '{params.dataset.name}': only {', '.join(DATASET)} is described here")
    rt = make_runtime(args.device, "auto")  # on the CPU it sets the thread count, as every stage does
    peak = matmul_peak(rt)
    print(f"precision {rt.describe()['precision']}, {torch.get_num_threads()} threads, matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s ({rt.device.type}, best of {PEAK_REPS} square matmuls); params {args.params}; "
          f"{args.steps} timed steps per loop (wgan_gp: whole gp_every periods)", flush=True)
    print(f"{'loop':10s} {'batch':>6s} {'ms/step':>9s} {'images/s':>9s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} "
          f"{'% peak':>7s}", flush=True)
    for name in args.only:
        loop = build(name, params, rt)
        sec, flops = measure(loop, params, rt, args.steps)
        print(f"{name:10s} {loop.batch_text or loop.batch:>6} {sec * 1e3:9.1f} {loop.batch / sec:9.1f} "
              f"{flops / 1e9:11.2f} {flops / sec / 1e9:8.1f} {100 * flops / sec / peak:6.1f}%", flush=True)


if __name__ == "__main__":
    main()
