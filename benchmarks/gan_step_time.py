"""Seconds per GAN training step (n_critic D updates + one G update) per objective, width and precision.

    python benchmarks/gan_step_time.py [--widths 64 128] [--batch-size 64] [--steps 3] [--fp32-steps 1]

Random 32x32 grayscale data; each objective uses its default n_critic from `Params()` (wgan_gp: 5).
The first step of each configuration is a warm-up and is not timed. Prints figures only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from synthaug.config import GANParams, Params
from synthaug.generators.gan import CriticBatches, GANTrainable
from synthaug.nets.gan import Discriminator, GANConfig, Generator
from synthaug.runtime import cpu_supports_bf16, make_runtime, seed_everything
from synthaug.training import BatchStream


def time_steps(objective: str, width: int, precision: str, batch: int, steps: int) -> tuple[float, int]:
    """Mean wall seconds of one training step (after one warm-up step), and the n_critic used."""
    rt = make_runtime("cpu", precision)
    seed_everything(0)
    p = GANParams(**{**vars(getattr(Params(), objective)), "width": width, "batch_size": batch})
    cfg = GANConfig(channels=1, num_classes=10, width=width, z_dim=p.z_dim, spectral_norm=p.spectral_norm)
    trainable = GANTrainable(rt.prepare(Generator(cfg)), rt.prepare(Discriminator(cfg)), rt, p, objective, 1000)
    rng = np.random.default_rng(0)
    n = batch * p.n_critic * (steps + 1)
    stream = CriticBatches(BatchStream(rng.integers(0, 256, (n, 32, 32, 1), dtype=np.uint8),
                                       rng.integers(0, 10, n), batch, seed=0), p.n_critic)
    times = []
    for step in range(steps + 1):
        x, y = stream.batch(step)
        t0 = time.perf_counter()
        trainable.train_step(rt.batch(x), y, step)
        times.append(time.perf_counter() - t0)
    return float(np.mean(times[1:])), p.n_critic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--objectives", nargs="+", default=["gan", "lsgan", "wgan_gp"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps in bf16")
    parser.add_argument("--fp32-steps", type=int, default=1, help="timed steps in fp32 (0: skip fp32)")
    args = parser.parse_args()

    precisions = [("bf16", args.steps)] if cpu_supports_bf16() else []
    if args.fp32_steps:
        precisions.append(("fp32", args.fp32_steps))
    print(f"batch {args.batch_size}; s/step = n_critic D steps + 1 G step")
    for width in args.widths:
        for objective in args.objectives:
            for precision, steps in precisions:
                sec, n_critic = time_steps(objective, width, precision, args.batch_size, steps)
                print(f"{objective:8s} width {width:4d} {precision}: {sec:7.3f} s/step  (n_critic {n_critic}, "
                      f"{steps} timed step{'s' * (steps > 1)}, {torch.get_num_threads()} threads)", flush=True)


if __name__ == "__main__":
    main()
