"""Throughput of FID feature extraction (dims=2048) in fp32 and bf16, and how much bf16 moves the features.

    python benchmarks/fid_throughput.py [--n 256] [--batch-size 64]

Random 32x32 RGB images, resized to 299x299 inside pytorch-fid's InceptionV3 as in real use.
Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from synthaug.metrics import fid
from synthaug.runtime import cpu_supports_bf16, make_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    images = np.random.default_rng(0).integers(0, 256, size=(args.n, 32, 32, 3), dtype=np.uint8)
    precisions = ["fp32"] + (["bf16"] if args.device != "cpu" or cpu_supports_bf16() else [])
    feats = {}
    for precision in precisions:
        rt = make_runtime(args.device, precision)
        model = fid.load_inception(2048, rt)
        fid.activations(images[: args.batch_size], model, rt, batch_size=args.batch_size, desc="warm-up")
        start = time.perf_counter()
        feats[precision] = fid.activations(images, model, rt, batch_size=args.batch_size, desc=precision)
        elapsed = time.perf_counter() - start
        print(f"{precision}: {args.n / elapsed:6.1f} img/s  ({args.n} images, batch {args.batch_size}, "
              f"{torch.get_num_threads()} threads, {rt.describe()['precision']})")
    if "bf16" in feats:
        a, b = feats["fp32"], feats["bf16"]
        rel = np.linalg.norm(b - a) / np.linalg.norm(a)
        per_image = np.median(np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1))
        print(f"bf16 vs fp32 features: relative L2 difference {rel:.4f} (median per image {per_image:.4f}), "
              f"max abs {np.abs(b - a).max():.4f} (max |feature| {np.abs(a).max():.2f})")
    else:
        print("bf16 not supported on this CPU: fp32 only")
    print(f"SYNTHAUG_THREADS={os.environ.get('SYNTHAUG_THREADS', 'unset')}")


if __name__ == "__main__":
    main()
