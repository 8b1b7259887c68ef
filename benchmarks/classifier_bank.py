"""K classifier runs trained one after another against the same K runs as banks (nets/bank.py), in one run.

    python benchmarks/classifier_bank.py [--params params.yaml] [--members 21] [--sizes 1 3 7 21] [--steps 20]
                                         [--test-images 10000] [--device cpu|cuda] [--precision auto|fp32]
                                         [--compile default|reduce-overhead|max-autotune]

The members are those of the params file's `classify_real` stage by default (every fraction x seed of the real
arm: 21 on the laptop default), with its classifier (`classify.model`) and the dataset's image shape, fed random
images. For each bank size s the K members train as K/s banks of s, one bank after another: bank size 1 is
"K separate runs", bank size K "one bank". Timed: --steps training steps of every bank (`BankTrainable.train_step`,
after one untimed warm-up step) and the evaluation of every member on --test-images test images
(`evaluate_bank`, `classify.model.eval_batch_size` per forward). FLOPs: K x one member's step under
`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions only, so BatchNorm, ReLU and the optimiser
are outside the figure: on a CPU they are a large share of the time). "all runs s" scales the timed steps to
`classify.model.steps` and adds the evaluation: the stage's loop work, without data loading and MLflow. Peak: `loop_flops.matmul_peak` in the
same run and precision. With --compile MODE every bank size runs again with its network under
`torch.compile(mode=MODE)` (reduce-overhead: CUDA graphs on a GPU); its warm-up (compilation, graph capture) is
timed apart, in "compile s", since a stage would pay it once per process. Prints figures only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop_flops import DATASET, flop_counter, matmul_peak, sync  # noqa: E402

from synthaug.study.arms import arm_runs  # noqa: E402
from synthaug.study.classifier_training import bank_trainable, evaluate_bank  # noqa: E402
from synthaug.core.config import load_params  # noqa: E402
from synthaug.core.runtime import make_runtime  # noqa: E402


WARMUP_STEPS = 3  # untimed: torch.compile compiles on the first call and CUDA graphs record on the next ones


def measure(size: int, members: int, p, shape: tuple[int, int, int], num_classes: int, steps: int,
            test: tuple[np.ndarray, np.ndarray], rt, compile_mode: str | None = None
            ) -> tuple[float, float, float, float]:
    """(training seconds, evaluation seconds, training FLOPs, warm-up seconds) of all members as banks of `size`,
    eager or with each bank's network under torch.compile(mode=compile_mode)."""
    train_s = eval_s = flops = warm_s = 0.0
    # The members' own model FLOPs (counted on a bank of one: the counter charges a grouped convolution as if
    # its groups were dense, K times too much), so that every bank size is charged the same work.
    one = bank_trainable(p, shape[0], num_classes, [0], rt)
    with flop_counter() as counter:
        one.train_step(rt.batch(torch.rand(p.batch_size, 1, *shape) * 2 - 1),
                       torch.randint(0, num_classes, (p.batch_size, 1)).to(rt.device), 0)
    member_flops = counter.get_total_flops()
    for first in range(0, members, size):
        seeds = list(range(first, min(first + size, members)))
        t = bank_trainable(p, shape[0], num_classes, seeds, rt)
        k = len(seeds)
        images = rt.batch(torch.rand(p.batch_size, k, *shape) * 2 - 1)
        labels = torch.randint(0, num_classes, (p.batch_size, k)).to(rt.device)
        if compile_mode:
            t.model = torch.compile(t.model, mode=compile_mode)
        start = time.perf_counter()
        for step in range(WARMUP_STEPS):
            t.train_step(images, labels, step)
        evaluate_bank(t.model, test[0][:p.eval_batch_size], test[1][:p.eval_batch_size], rt, num_classes,
                      p.eval_batch_size)
        sync(rt)
        warm_s += time.perf_counter() - start
        flops += member_flops * k * steps
        start = time.perf_counter()
        for step in range(steps):
            t.train_step(images, labels, WARMUP_STEPS + step)
        sync(rt)
        train_s += time.perf_counter() - start
        start = time.perf_counter()
        evaluate_bank(t.model, *test, rt, num_classes, p.eval_batch_size)
        sync(rt)
        eval_s += time.perf_counter() - start
    return train_s, eval_s, flops, warm_s


OP_FAMILIES = {"convolution": ("conv",), "batch norm": ("batch_norm",), "relu": ("threshold", "relu", "clamp_min"),
               "add": ("add",)}


def profile_member(p, shape, num_classes: int, rt, steps: int = 20) -> None:
    """One member's training step: the share of its op time per op family, and eager vs torch.compile timing."""
    from torch.profiler import profile

    t = bank_trainable(p, shape[0], num_classes, [0], rt)
    images = rt.batch(torch.rand(p.batch_size, 1, *shape) * 2 - 1)
    labels = torch.randint(0, num_classes, (p.batch_size, 1)).to(rt.device)
    t.train_step(images, labels, 0)
    with profile() as prof:
        for step in range(steps):
            t.train_step(images, labels, 1 + step)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    shares = {name: sum(e.self_cpu_time_total for e in events if any(w in e.key for w in words)) / total
              for name, words in OP_FAMILIES.items()}
    print("one member's step, share of op time: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items()))
    for compiled in (False, True):
        t = bank_trainable(p, shape[0], num_classes, [0], rt)
        if compiled:
            t.model = torch.compile(t.model)
        for step in range(3):  # warm-up (and compilation)
            t.train_step(images, labels, step)
        sync(rt)
        start = time.perf_counter()
        for step in range(steps):
            t.train_step(images, labels, 3 + step)
        sync(rt)
        print(f"one member's step, {'torch.compile' if compiled else 'eager'}: "
              f"{(time.perf_counter() - start) / steps * 1e3:.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--members", type=int, default=0, help="K (default: the classify_real stage's runs)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="bank sizes (default: 1 and K)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per bank")
    parser.add_argument("--test-images", type=int, default=10_000)
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] (scripts/gpu_check.sh passes cuda)")
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp32 (as params.yaml's `precision`)")
    parser.add_argument("--profile", action="store_true",
                        help="also: where one member's step spends its time (torch.profiler, by op family), and "
                             "its step time under torch.compile against eager")
    parser.add_argument("--compile", default=None, metavar="MODE",
                        help="also every bank size under torch.compile(mode=MODE): default | reduce-overhead "
                             "(CUDA graphs on a GPU) | max-autotune")
    args = parser.parse_args()

    params = load_params(args.params)
    if params.dataset.name not in DATASET:
        parser.error(f"dataset '{params.dataset.name}': only {', '.join(DATASET)} is described here")
    members = args.members or len(arm_runs("real", params))
    sizes = args.sizes or [1, members]
    p = params.classify.model
    d = DATASET[params.dataset.name]
    shape = (d["channels"], params.dataset.image_size, params.dataset.image_size)
    rt = make_runtime(args.device, args.precision)
    rng = np.random.default_rng(0)
    test = (rng.integers(0, 256, (args.test_images, shape[1], shape[2], shape[0]), dtype=np.uint8),
            rng.integers(0, d["num_classes"], args.test_images))
    peak = matmul_peak(rt)
    print(f"{p.arch}, batch {p.batch_size} per member, {members} members, {args.steps} timed steps each, "
          f"{args.test_images} test images each; {rt.device.type} {rt.describe()['precision']}, "
          f"{torch.get_num_threads()} threads; matmul peak {peak / 1e9:.1f} GFLOP/s (same run)", flush=True)
    if args.profile:
        profile_member(p, shape, d["num_classes"], rt)
    print(f"{'bank size':>9s} {'compile':>15s} {'train s':>8s} {'images/s':>9s} {'GFLOP/s':>8s} {'% peak':>7s} "
          f"{'eval s':>7s} {'eval img/s':>10s} {'all runs s':>10s} {'speed-up':>9s} {'compile s':>9s}", flush=True)
    base = None
    for mode in (None, args.compile) if args.compile else (None,):
        for size in sizes:
            train_s, eval_s, flops, warm_s = measure(size, members, p, shape, d["num_classes"], args.steps, test, rt,
                                                     mode)
            total = train_s * p.steps / args.steps + eval_s  # the members' whole training + eval, warm-up apart
            base = base or total
            print(f"{size:9d} {mode or 'eager':>15s} {train_s:8.2f} {members * args.steps * p.batch_size / train_s:9.0f} "
                  f"{flops / train_s / 1e9:8.1f} {100 * flops / train_s / peak:6.1f}% {eval_s:7.2f} "
                  f"{members * args.test_images / eval_s:10.0f} {total:10.1f} {base / total:8.2f}x "
                  f"{warm_s if mode else 0.0:9.1f}", flush=True)


if __name__ == "__main__":
    main()
