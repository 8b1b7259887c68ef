"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (gloo on CPU), or alone as one process:
a toy linear regression trained for a few SGD steps on shards of the same global batches, with gradients averaged
by synthaug.distributed; rank 0 writes the final weights and the logged losses to argv[1]."""

from __future__ import annotations

import json
import sys

import torch

from synthaug import distributed


def main(out: str) -> None:
    dist = distributed.from_env()
    distributed.init(dist, "cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    distributed.average_gradients(dist, [model])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(1)
    x_all, y_all = torch.randn(40, 8, 4, generator=data), torch.randn(40, 8, 1, generator=data)
    losses = []
    for step in range(40):
        x, y = distributed.shard(dist, x_all[step], y_all[step])  # every rank: the same global batch of 8
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # after averaging: the global gradient's norm
        opt.step()
        losses.append(distributed.mean_across(dist, {"loss": loss.item()})["loss"])
    ranks = distributed.gather_objects(dist, dist.rank)
    if dist.is_main:
        with open(out, "w") as f:
            json.dump({"weight": model.weight.tolist(), "bias": model.bias.tolist(), "losses": losses,
                       "ranks": ranks, "world": dist.world}, f)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
