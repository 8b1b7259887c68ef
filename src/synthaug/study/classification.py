"""Scoring the study's classifiers, always on the real test split, and loading the weights the classify stage keeps.

`evaluate_members` scores k classifiers that one forward pass runs at once (a bank, `classifier_training`), and
`evaluate` one plain network: what `fidelity`, `gradcam` and the tests use without any training code.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from synthaug.nets.resnet import build_classifier
from synthaug.core.runtime import Runtime
from synthaug.core.arrays import iterate_batches, to_model_range


@torch.no_grad()
def evaluate_members(forward: Callable[[torch.Tensor], torch.Tensor], k: int, images: np.ndarray,
                     labels: np.ndarray, runtime: Runtime, num_classes: int,
                     batch_size: int = 500) -> list[dict[str, float]]:
    """Accuracy, mean loss and per-class accuracy on a (real) split of each of k models that `forward` runs
    at once ([B, C, H, W] -> logits [B, k, classes])."""
    correct = np.zeros((k, num_classes))
    total = np.bincount(labels, minlength=num_classes).astype(float)
    loss_sum = np.zeros(k)
    for sl in iterate_batches(len(images), batch_size):
        x = runtime.batch(to_model_range(images[sl]))
        y = torch.from_numpy(labels[sl]).to(runtime.device)
        with runtime.autocast():
            logits = forward(x).float()  # [B, k, classes]
        loss_sum += F.cross_entropy(logits.permute(0, 2, 1), y[:, None].expand(-1, k),
                                    reduction="none").sum(0).cpu().numpy()
        hit = (logits.argmax(2) == y[:, None]).cpu().numpy()  # [B, k]
        for i in range(k):
            correct[i] += np.bincount(labels[sl], weights=hit[:, i], minlength=num_classes)
    out = []
    for i in range(k):
        m = {"test_accuracy": float(correct[i].sum() / total.sum()), "test_loss": float(loss_sum[i] / len(images))}
        m.update({f"test_accuracy_class{c}": float(correct[i, c] / total[c]) for c in range(num_classes)
                  if total[c]})
        out.append(m)
    return out


def evaluate(model, images: np.ndarray, labels: np.ndarray, runtime: Runtime, num_classes: int,
             batch_size: int = 500) -> dict[str, float]:
    """`evaluate_members` of one plain classifier ([B, C, H, W] -> [B, classes])."""
    model.eval()
    return evaluate_members(lambda x: model(x)[:, None], 1, images, labels, runtime, num_classes, batch_size)[0]


def load_classifier(path, runtime: Runtime) -> tuple[torch.nn.Module, dict]:
    """A classifier saved by the classify stage (weights only), ready for evaluation, and its record."""
    from synthaug.core.storage import load_checkpoint, load_state_strict

    state = load_checkpoint(path)
    model = build_classifier(state["arch"], int(state["channels"]), int(state["num_classes"]))
    load_state_strict(model, state["model"], path)
    return runtime.prepare(model).eval(), {k: v for k, v in state.items() if k != "model"}
