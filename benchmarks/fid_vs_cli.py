"""FID agreement and speed: the `fid` stage's code against `python -m pytorch_fid` on the same images.

    python benchmarks/fid_vs_cli.py [--n 2100] [--dims 2048] [--batch-size 50] [--real data/real]

Two pairs of n images each, taken from the prepared dataset (`dvc repro prepare` first):
- low FID: n training images vs n test images;
- high FID: n test images vs a degraded copy of them (3x3 box blur, then Gaussian noise of std 40, seeded).
Each set is written as a folder of PNGs (grayscale expands to RGB in both tools, as the stage sees it), then:
- the CLI: `python -m pytorch_fid A B --device cpu --dims D --batch-size B --num-workers 0` in a subprocess,
  which decodes both folders and runs Inception on both, timed by wall clock;
- ours: `synthaug.metrics.fid.compute_stats` on both sets (fp32, the stage's default) and
  `frechet_distance`, timed the same way. In the pipeline the reference set's statistics are computed once
  by `fid_ref`, so a source's FID costs one of these two passes: the "ours, per source" column.
Both run with the same torch thread count (SYNTHAUG_THREADS, else every core), one after the other.
Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthaug.data.real import load_prepared
from synthaug.metrics import fid
from synthaug.core.runtime import make_runtime


def degrade(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """3x3 box blur then Gaussian noise (std 40 grey levels): a set far from the original in FID."""
    x = images.astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    blurred = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
    noisy = blurred + np.random.default_rng(seed).normal(0.0, 40.0, size=x.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:05d}.png")
    return folder


def run_cli(a: Path, b: Path, dims: int, batch_size: int, threads: int) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # the same thread count as ours
    cmd = [sys.executable, "-m", "pytorch_fid", str(a), str(b), "--device", "cpu", "--dims", str(dims),
           "--batch-size", str(batch_size), "--num-workers", "0"]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    elapsed = time.perf_counter() - start
    match = re.search(r"FID:\s*([0-9.eE+-]+)", out)
    if not match:
        raise SystemExit(f"could not read the CLI's FID from: {out!r}")
    return float(match.group(1)), elapsed


def run_ours(a: np.ndarray, b: np.ndarray, dims: int, batch_size: int) -> tuple[float, float, float]:
    rt = make_runtime("cpu", "fp32")  # sets torch's threads from SYNTHAUG_THREADS, as a stage does
    start = time.perf_counter()
    stats_a = fid.compute_stats(a, dims, rt, batch_size)
    one_pass = time.perf_counter() - start
    stats_b = fid.compute_stats(b, dims, rt, batch_size)
    value = fid.frechet_distance(stats_a, stats_b)
    return value, time.perf_counter() - start, one_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2100, help="images per set (> dims)")
    parser.add_argument("--dims", type=int, default=2048, choices=fid.ALLOWED_DIMS)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--real", default="data/real", help="the prepare stage's output folder")
    args = parser.parse_args()
    fid.validate_sample_count(args.n, args.dims)
    fid.ensure_inception_weights()
    train, test = (load_prepared(args.real, split) for split in ("train", "test"))
    rng = np.random.default_rng(0)
    a = train.images[rng.choice(len(train.labels), args.n, replace=False)]
    b = test.images[rng.choice(len(test.labels), args.n, replace=False)]
    pairs = {"low (train vs test)": (a, b), "high (test vs degraded test)": (b, degrade(b))}
    make_runtime("cpu", "fp32")
    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (x, y)) in enumerate(pairs.items()):
            dx, dy = write_pngs(x, Path(tmp) / f"{i}a"), write_pngs(y, Path(tmp) / f"{i}b")
            cli_fid, cli_s = run_cli(dx, dy, args.dims, args.batch_size, threads)
            our_fid, our_s, one_pass = run_ours(x, y, args.dims, args.batch_size)
            rows.append((name, cli_fid, our_fid, cli_s, our_s, one_pass))
    print(f"{args.n} images per set, dims {args.dims}, batch {args.batch_size}, {threads} torch threads, "
          f"SYNTHAUG_THREADS={os.environ.get('SYNTHAUG_THREADS', 'unset')}; ours in fp32, channels_last")
    print(f"{'pair':30s} {'CLI FID':>11s} {'our FID':>11s} {'diff %':>8s} {'CLI s':>7s} {'ours s':>7s} "
          f"{'speed-up':>8s} {'ours, per source s':>18s} {'speed-up':>8s}")
    for name, cli_fid, our_fid, cli_s, our_s, one_pass in rows:
        diff = 100.0 * (our_fid - cli_fid) / cli_fid
        print(f"{name:30s} {cli_fid:11.6f} {our_fid:11.6f} {diff:+8.4f} {cli_s:7.1f} {our_s:7.1f} "
              f"{cli_s / our_s:7.2f}x {one_pass:18.1f} {cli_s / one_pass:7.2f}x")


if __name__ == "__main__":
    main()
