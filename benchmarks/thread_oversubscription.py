"""Milliseconds per resnet20 training step (batch 32, bf16 where fast) with this process's thread count.

Run it beside another CPU-heavy process to see oversubscription, e.g. on a 2-core machine:
    python benchmarks/thread_oversubscription.py                       # every core
    SYNTHAUG_THREADS=1 python benchmarks/thread_oversubscription.py    # one thread
    OMP_WAIT_POLICY=PASSIVE python benchmarks/thread_oversubscription.py
--steps N (default 10) timed steps after --warmup N (default 3). Only prints figures.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from synthaug.nets.resnet import build_classifier
from synthaug.core.runtime import make_runtime


def main(warmup: int = 3, steps: int = 10) -> None:
    rt = make_runtime("cpu", "auto")
    model = rt.prepare(build_classifier("resnet20", 1, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = rt.batch(torch.randn(32, 1, 32, 32)), torch.randint(0, 10, (32,))
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        with rt.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ms = (time.perf_counter() - t0) / steps * 1000
    print(f"threads={torch.get_num_threads()} precision={rt.describe()['precision']}: {ms:.0f} ms/step")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    args = ap.parse_args()
    main(args.warmup, args.steps)
