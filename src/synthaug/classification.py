"""Classifier training for the study's arms, always evaluated on the real test split.

Arms (DESIGN §1): `real` (a nested real fraction), `real+S` (that fraction plus source S's images),
`synth:S` (S's images only) and `real+all` (the fraction plus every source pooled). Fairness: every arm of
one fraction trains for the same number of optimizer steps with the same augmentation; in mixed arms each
batch holds round(synthetic_ratio * batch_size) synthetic images and the rest real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from synthaug.config import ClassifierParams
from synthaug.nets.resnet import build_classifier
from synthaug.runtime import Runtime, seed_everything
from synthaug.training import BatchStream, iterate_batches, run_training, to_model_range


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


def augment(x: torch.Tensor, mode: str, pad: int = 4) -> torch.Tensor:
    """Random crop after zero-padding by `pad` px (and horizontal flip for `crop_flip`), per image."""
    if mode == "none":
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)  # -1 is black in the [-1, 1] range
    dy = torch.randint(0, 2 * pad + 1, (n,))
    dx = torch.randint(0, 2 * pad + 1, (n,))
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # [n, w]
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if mode == "crop_flip":
        flip = (torch.rand(n) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous(memory_format=torch.channels_last if x.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format)


class ClassifierTrainable:
    """SGD with Nesterov momentum, linear warm-up then cosine decay, cross-entropy."""

    def __init__(self, model, runtime: Runtime, p: ClassifierParams):
        self.model, self.runtime, self.augment_mode = model, runtime, p.augment
        self.opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, nesterov=True,
                                   weight_decay=p.weight_decay)
        warmup = max(1, p.steps // 20)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, p.steps) / p.steps)))

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        self.model.train()
        x = augment(images, self.augment_mode)
        with self.runtime.autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        acc = (logits.argmax(1) == labels).float().mean().item()
        return {"train_loss": loss.item(), "train_acc": acc}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])


@torch.no_grad()
def evaluate(model, images: np.ndarray, labels: np.ndarray, runtime: Runtime, num_classes: int,
             batch_size: int = 500) -> dict[str, float]:
    """Accuracy, mean loss and per-class accuracy on a (real) split."""
    model.eval()
    correct = np.zeros(num_classes)
    total = np.bincount(labels, minlength=num_classes).astype(float)
    loss_sum = 0.0
    for sl in iterate_batches(len(images), batch_size):
        x = runtime.batch(to_model_range(images[sl]))
        y = torch.from_numpy(labels[sl]).to(runtime.device)
        with runtime.autocast():
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        hit = (logits.argmax(1) == y).cpu().numpy()
        correct += np.bincount(labels[sl], weights=hit, minlength=num_classes)
    out = {"test_accuracy": float(correct.sum() / total.sum()), "test_loss": loss_sum / len(images)}
    out.update({f"test_accuracy_class{c}": float(correct[c] / total[c]) for c in range(num_classes) if total[c]})
    return out


def train_and_evaluate(arm: ArmData, test: tuple[np.ndarray, np.ndarray], num_classes: int, p: ClassifierParams,
                       synthetic_ratio: float, runtime: Runtime, seed: int,
                       log_metrics: Callable[[dict, int], None]) -> tuple[dict[str, float], torch.nn.Module]:
    """Train a fresh classifier on one arm for `p.steps` steps and evaluate it on the real test split;
    returns the metrics and the trained model."""
    seed_everything(seed)
    channels = (arm.real or arm.synthetic)[0].shape[3]
    model = runtime.prepare(build_classifier(p.arch, channels, num_classes))
    stream = MixedStream(arm, p.batch_size, synthetic_ratio, seed)
    history = run_training(ClassifierTrainable(model, runtime, p), stream, runtime, p.steps, None, p.steps,
                           log_metrics, log_every=p.log_every, desc="classify")
    metrics = evaluate(model, *test, runtime, num_classes, p.eval_batch_size)
    metrics.update({"final_train_loss": history[-1]["train_loss"],
                    "synthetic_per_batch": stream.n_synthetic,
                    "real_images": 0 if arm.real is None else len(arm.real[0]),
                    "synthetic_images": 0 if arm.synthetic is None else len(arm.synthetic[0])})
    return metrics, model


def load_classifier(path, runtime: Runtime) -> tuple[torch.nn.Module, dict]:
    """A classifier saved by the classify stage (weights only), ready for evaluation, and its record."""
    from synthaug.storage import load_checkpoint, load_state_strict

    state = load_checkpoint(path)
    model = build_classifier(state["arch"], int(state["channels"]), int(state["num_classes"]))
    load_state_strict(model, state["model"], path)
    return runtime.prepare(model).eval(), {k: v for k, v in state.items() if k != "model"}
