"""Speed of the diffusion U-Net on this machine: seconds per training step and per denoising step.

    .venv/bin/python benchmarks/diffusion_speed.py                 # all configs, fp32 and bf16, + torch.compile
    .venv/bin/python benchmarks/diffusion_speed.py --no-compile --repeats 5

Training step = the family's real `DiffusionTrainable.train_step` (forward under autocast, fp32 loss, backward,
clipping, Adam, EMA) on a batch of 64 32x32 gray images. Denoising step = one no-grad forward of the U-Net on
256 images (what each of the T (DDPM) or `steps` (DDIM) sampler iterations costs, guidance scale 1).
Only prints; the CPU may be shared, so read the numbers as approximate.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from synthaug.generators.diffusion import DiffusionTrainable
from synthaug.nets.unet import UNet, UNetConfig
from synthaug.objectives.diffusion import NoiseSchedule
from synthaug.runtime import cpu_supports_bf16, make_runtime
from synthaug.samplers import MaybeCompiled

CONFIGS = {
    "base64-[1,2,2]x2": dict(base_channels=64, channel_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8]),
    "base32-[1,2,2]x2": dict(base_channels=32, channel_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8]),
    "base32-[1,2,2]x1": dict(base_channels=32, channel_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8]),
}


def timed(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench(name: str, arch: dict, precision: str, repeats: int, compile: bool) -> None:
    runtime = make_runtime("cpu", precision)
    torch.manual_seed(0)
    net = runtime.prepare(UNet(UNetConfig(channels=1, num_classes=10, image_size=32, dropout=0.1, **arch)))
    params = sum(p.numel() for p in net.parameters()) / 1e6
    schedule = NoiseSchedule.make("cosine", 1000)
    trainable = DiffusionTrainable(net, schedule, runtime, lr=2e-4, warmup_steps=10, ema_decay=0.999,
                                   label_dropout=0.1)
    x, y = runtime.batch(torch.rand(64, 1, 32, 32) * 2 - 1), torch.randint(0, 10, (64,))
    step = [0]

    def train_step():
        trainable.train_step(x, y, step[0])
        step[0] += 1

    t_train = timed(train_step, warmup=2, repeats=repeats)

    ema = trainable.ema.module
    xs, ts, ys = torch.randn(256, 1, 32, 32), torch.full((256,), 500), torch.randint(0, 10, (256,))

    def eps(x_, t_, y_):
        with runtime.autocast():
            return ema(runtime.batch(x_), t_, y_).float()

    with torch.no_grad():
        t_denoise = timed(lambda: eps(xs, ts, ys), warmup=1, repeats=repeats)
        line = (f"{name:18s} {params:5.2f}M {precision:4s}  train step (batch 64): {t_train:6.3f} s   "
                f"denoise step (256 images): {t_denoise:6.3f} s")
        if compile:
            fn = MaybeCompiled(eps)
            start = time.perf_counter()
            fn(xs, ts, ys)
            first = time.perf_counter() - start
            if fn.active:
                t_comp = timed(lambda: fn(xs, ts, ys), warmup=1, repeats=repeats)
                line += f"   compiled: {t_comp:6.3f} s (first call {first:.0f} s)"
            else:
                line += "   compiled: failed (fell back to eager)"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: all cores; 1 is steadier on a CPU shared with other jobs)")
    args = ap.parse_args()
    if args.threads:
        os.environ["SYNTHAUG_THREADS"] = str(args.threads)  # make_runtime sets torch's thread count from it
    make_runtime("cpu", "fp32")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 supported: {cpu_supports_bf16()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for name in args.configs:
        for precision in args.precisions:
            if precision == "bf16" and not cpu_supports_bf16():
                print(f"{name}: bf16 not supported on this CPU, skipped")
                continue
            bench(name, CONFIGS[name], precision, args.repeats, compile=not args.no_compile and precision == "bf16")


if __name__ == "__main__":
    main()
