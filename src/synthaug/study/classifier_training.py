"""Classifier training for the study's arms, as banks of runs (`nets/bank.py`), each run as if trained alone.

Arms (DESIGN §1): `real` (a nested real fraction), `real+S` (that fraction plus source S's images),
`synth:S` (S's images only) and `real+all` (the fraction plus every source pooled). Fairness: every arm of
one fraction trains for the same number of optimizer steps with the same augmentation; in mixed arms each
batch holds round(synthetic_ratio * batch_size) synthetic images and the rest real.

A bank trains K runs at once; each member keeps its own seed (initial weights, batch order, crops), images,
real/synthetic mix and result, so that it ends where its run trained alone would, up to rounding
(tests/test_bank.py). Whether banks pay depends on the device: README "Performance".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from synthaug.core import distributed
from synthaug.study.classification import evaluate_members
from synthaug.core.config import ClassifierParams
from synthaug.nets.bank import ModelBank
from synthaug.nets.resnet import build_classifier
from synthaug.core.runtime import Runtime, seed_everything
from synthaug.generators.training import BatchStream, run_training


@dataclass
class ArmData:
    """The training images of one arm: a real part, a synthetic part, or both."""

    real: tuple[np.ndarray, np.ndarray] | None
    synthetic: tuple[np.ndarray, np.ndarray] | None


class MixedStream:
    """Batches of n_real real + n_syn synthetic images, each part a pure function of (seed, step)."""

    def __init__(self, arm: ArmData, batch_size: int, synthetic_ratio: float, seed: int):
        if arm.real is None and arm.synthetic is None:
            raise ValueError("an arm needs real or synthetic images")
        n_syn = batch_size if arm.real is None else (0 if arm.synthetic is None
                                                     else round(synthetic_ratio * batch_size))
        self.parts = []
        if n_syn < batch_size:
            self.parts.append(BatchStream(*_at_least(arm.real, batch_size - n_syn), batch_size - n_syn, seed))
        if n_syn > 0:
            self.parts.append(BatchStream(*_at_least(arm.synthetic, n_syn), n_syn, seed + 7919))
        self.n_synthetic = n_syn

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(p.batch(step) for p in self.parts))
        return torch.cat(xs), torch.cat(ys)


def _at_least(part: tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat a pool smaller than its share of a batch, so every arm keeps the same batch size (fairness)."""
    images, labels = part
    if len(labels) >= n:
        return images, labels
    reps = -(-n // len(labels))
    return np.concatenate([images] * reps), np.concatenate([labels] * reps)


def augment_offsets(n: int, mode: str, generator: torch.Generator, pad: int = 4):
    """The random part of `augment` for n images: crop offsets (dy, dx) and flips, drawn from `generator`."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if mode == "crop_flip" else torch.zeros(n, dtype=torch.bool)
    return dy, dx, flip


def augment(x: torch.Tensor, mode: str, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Random crop after zero-padding by `pad` px (and horizontal flip for `crop_flip`), per image.

    Each classifier draws its crops from its own generator, so a run's augmentation does not depend on what else
    trains beside it (a bank's other members)."""
    if mode == "none":
        return x
    n, _, h, w = x.shape
    dy, dx, flip = augment_offsets(n, mode, generator if generator is not None else torch.default_generator, pad)
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)  # -1 is black in the [-1, 1] range
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # [n, w]
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip.any():
        out = torch.where(flip.to(x.device)[:, None, None, None], out.flip(3), out)
    # A fresh tensor in canonical strides: for one channel the gather's strides pass as either format, and
    # oneDNN's fp32 convolution backward took a path 1e-3 less accurate on them (measured against float64).
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.clone(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def evaluate_bank(bank: ModelBank, images: np.ndarray, labels: np.ndarray, runtime: Runtime, num_classes: int,
                  batch_size: int = 500) -> list[dict[str, float]]:
    """`evaluate_members` of every member of a bank: each test batch goes through all members in one pass."""
    bank.eval()
    fmt = runtime.memory_format
    return evaluate_members(lambda x: bank(x.repeat(1, bank.k, 1, 1).contiguous(memory_format=fmt)), bank.k,
                            images, labels, runtime, num_classes, batch_size)


@dataclass
class Member:
    """One classifier run of a bank: its training images and its seed (initial weights, batches, crops)."""

    arm: ArmData
    seed: int


@dataclass
class MemberResult:
    metrics: dict[str, float]
    history: list[dict[str, float]]  # {"step", "train_loss", "train_acc"} every log_every steps
    state: dict[str, torch.Tensor]  # the trained weights, a state_dict of the plain network


class BankStream:
    """The members' own batches side by side: images [N, K, C, H, W], labels [N, K] (batch axis first, so that
    data-parallel training shards every member's batch)."""

    def __init__(self, members: list[Member], batch_size: int, synthetic_ratio: float):
        self.streams = [MixedStream(m.arm, batch_size, synthetic_ratio, m.seed) for m in members]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(s.batch(step) for s in self.streams))
        return torch.stack(xs, 1), torch.stack(ys, 1)


AUGMENT_SEED = 15_485_863  # added to a member's seed for its crops, apart from its batch order's seeds


class BankTrainable:
    """K classifiers as one ModelBank: SGD with Nesterov momentum, linear warm-up then cosine decay, each member's
    cross-entropy on its own batch (their sum is minimised: member k's gradient is its own loss's)."""

    def __init__(self, bank: ModelBank, runtime: Runtime, p: ClassifierParams, seeds: list[int]):
        self.model, self.runtime, self.augment_mode = bank, runtime, p.augment
        self.opt = torch.optim.SGD(bank.parameters(), lr=p.lr, momentum=0.9, nesterov=True,
                                   weight_decay=p.weight_decay)
        warmup = max(1, p.steps // 20)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, p.steps) / p.steps)))
        offset = distributed.seed_offset(distributed.from_env())  # ranks crop their rows differently
        self.generators = [torch.Generator().manual_seed(s + AUGMENT_SEED + offset) for s in seeds]

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        self.model.train()
        n, k = labels.shape
        x = torch.stack([augment(images[:, i], self.augment_mode, g) for i, g in enumerate(self.generators)], 1)
        x = x.reshape(n, -1, *x.shape[3:]).contiguous(memory_format=self.runtime.memory_format)
        with self.runtime.autocast():
            logits = self.model(x).float()  # [N, K, classes]
        member_loss = F.cross_entropy(logits.permute(0, 2, 1), labels, reduction="none").mean(0)  # [K]
        self.opt.zero_grad(set_to_none=True)
        member_loss.sum().backward()
        self.opt.step()
        self.sched.step()
        member_acc = (logits.argmax(2) == labels).float().mean(0)
        loss, acc = member_loss.tolist(), member_acc.tolist()
        out = {"train_loss": float(np.mean(loss)), "train_acc": float(np.mean(acc))}  # the bank's: the bar shows
        for i in range(k):
            out[f"m{i}/train_loss"], out[f"m{i}/train_acc"] = loss[i], acc[i]
        return out

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "augment_rng": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        for g, s in zip(self.generators, state["augment_rng"]):
            g.set_state(s)


def initial_weights(arch: str, channels: int, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """A member's initial weights: the network built right after seeding with its seed, as a run alone would."""
    seed_everything(seed)
    return build_classifier(arch, channels, num_classes).state_dict()


def bank_trainable(p: ClassifierParams, channels: int, num_classes: int, seeds: list[int],
                   runtime: Runtime) -> BankTrainable:
    """A fresh bank of `p.arch` classifiers, one per seed (each with its own initial weights), ready to train."""
    template = build_classifier(p.arch, channels, num_classes)
    members = [initial_weights(p.arch, channels, num_classes, s) for s in seeds]
    return BankTrainable(runtime.prepare(ModelBank(template, members)), runtime, p, seeds)


def train_bank(members: list[Member], test: tuple[np.ndarray, np.ndarray], num_classes: int, p: ClassifierParams,
               synthetic_ratio: float, runtime: Runtime,
               log_metrics: Callable[[dict, int], None] = lambda m, s: None) -> list[MemberResult]:
    """Train fresh classifiers, one per member, as one bank for `p.steps` steps and evaluate each on the real test
    split. Each member's result is what it would be trained alone with its seed (up to floating-point summation
    order). `log_metrics` gets the bank's mean training loss and accuracy, and every member's."""
    channels = (members[0].arm.real or members[0].arm.synthetic)[0].shape[3]
    trainable = bank_trainable(p, channels, num_classes, [m.seed for m in members], runtime)
    bank = trainable.model
    stream = BankStream(members, p.batch_size, synthetic_ratio)
    desc = "classify" if len(members) == 1 else f"classify (bank of {len(members)})"
    history = run_training(trainable, stream, runtime, p.steps, None, p.steps, log_metrics,
                           log_every=p.log_every, desc=desc)
    scores = evaluate_bank(bank, *test, runtime, num_classes, p.eval_batch_size)
    results = []
    for i, (member, part, metrics) in enumerate(zip(members, stream.streams, scores)):
        own = [{"step": h["step"], "train_loss": h[f"m{i}/train_loss"], "train_acc": h[f"m{i}/train_acc"]}
               for h in history]
        metrics.update({"final_train_loss": own[-1]["train_loss"], "synthetic_per_batch": part.n_synthetic,
                        "real_images": 0 if member.arm.real is None else len(member.arm.real[0]),
                        "synthetic_images": 0 if member.arm.synthetic is None else len(member.arm.synthetic[0])})
        results.append(MemberResult(metrics, own, bank.member_state(i)))
    return results


def train_and_evaluate(arm: ArmData, test: tuple[np.ndarray, np.ndarray], num_classes: int, p: ClassifierParams,
                       synthetic_ratio: float, runtime: Runtime, seed: int,
                       log_metrics: Callable[[dict, int], None]) -> tuple[dict[str, float], torch.nn.Module]:
    """One classifier (a bank of one); returns its metrics and the trained plain network."""
    (result,) = train_bank([Member(arm, seed)], test, num_classes, p, synthetic_ratio, runtime, log_metrics)
    channels = (arm.real or arm.synthetic)[0].shape[3]
    model = build_classifier(p.arch, channels, num_classes)
    model.load_state_dict(result.state)
    return result.metrics, runtime.prepare(model).eval()
