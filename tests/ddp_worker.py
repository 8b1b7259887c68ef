"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (gloo on CPU), or alone as one process:
`training.run_training` (the loop every stage trains with) on a toy regression whose maths is a mean over samples:
a linear layer with gradient clipping under SGD, plus a per-class offset in a sparse embedding under SparseAdam
(the inversion's kind of table). Rank 0 writes the final weights, the logged history and the checkpoint's
distributed fields to argv[1]; argv[2] is the checkpoint, argv[3] the step to train to (resuming from it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthaug.core import distributed
from synthaug.core.runtime import make_runtime, seed_everything
from synthaug.core.storage import load_checkpoint
from synthaug.generators.training import BatchStream, run_training


class ToyRegression:
    def __init__(self):
        self.linear = torch.nn.Linear(16, 1)
        self.offset = torch.nn.Embedding(4, 1, sparse=True)
        self.opt = torch.optim.SGD(self.linear.parameters(), lr=0.05)
        self.opt_sparse = torch.optim.SparseAdam(list(self.offset.parameters()), lr=0.01)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        x = images.flatten(1)
        target = x.mean(1, keepdim=True) * (1 + labels[:, None].float())
        loss = F.mse_loss(self.linear(x) + self.offset(labels), target)
        self.opt.zero_grad()
        self.opt_sparse.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.linear.parameters(), 0.5)  # after averaging: the global gradient's
        self.opt.step()
        self.opt_sparse.step()
        return {"loss": loss.item()}

    def state_dict(self) -> dict:
        return {"linear": self.linear.state_dict(), "offset": self.offset.state_dict(), "opt": self.opt.state_dict(),
                "opt_sparse": self.opt_sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.linear.load_state_dict(state["linear"])
        self.offset.load_state_dict(state["offset"])
        self.opt.load_state_dict(state["opt"])
        self.opt_sparse.load_state_dict(state["opt_sparse"])


def main(out: str, checkpoint: str, steps: int) -> None:
    dist = distributed.from_env()
    runtime = make_runtime("cpu", "fp32")
    distributed.init(dist, "cpu")
    seed_everything(0)
    trainable = ToyRegression()
    data = np.random.default_rng(1)
    images = data.integers(0, 256, (96, 4, 4, 1), dtype=np.uint8)
    labels = data.integers(0, 4, 96)
    stream = BatchStream(images, labels, batch_size=8, seed=3)  # 12 batches an epoch: the runs cross epochs
    history = run_training(trainable, stream, runtime, steps, Path(checkpoint), checkpoint_every=10,
                           log_metrics=lambda metrics, step: None, log_every=5)
    # Buffers are averaged at the end: a buffer holding each rank's number comes out as their mean.
    probe = torch.nn.Module()
    probe.register_buffer("rank", torch.tensor([float(dist.rank)]))
    distributed.average_buffers(dist, [probe])
    ranks = distributed.gather_objects(dist, dist.rank)
    if dist.is_main:
        state = load_checkpoint(Path(checkpoint))
        Path(out).write_text(json.dumps({
            "weight": trainable.linear.weight.tolist(), "bias": trainable.linear.bias.tolist(),
            "offset": trainable.offset.weight.tolist(), "history": history, "ranks": ranks, "world": dist.world,
            "rank_buffer_mean": probe.rank.item(), "step": int(state["step"]),
            "processes": int(state.get("processes", 1)), "rank_rng": len(state.get("rank_rng", []))}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
