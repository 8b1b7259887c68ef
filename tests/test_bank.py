"""The classifier bank: K networks as one computation, each member what it would be trained alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthaug.study.classification import evaluate
from synthaug.study.classifier_training import (AUGMENT_SEED, ArmData, Member, MixedStream, augment, initial_weights,
                                          train_bank)
from synthaug.core.config import ClassifierParams
from synthaug.nets.bank import ModelBank
from synthaug.nets.resnet import build_classifier


def _states(arch: str, channels: int, seeds) -> list[dict]:
    return [initial_weights(arch, channels, 5, s) for s in seeds]


@pytest.mark.parametrize("arch", ["resnet8", "resnet18"])
def test_members_unpack_to_the_weights_they_were_packed_from(arch):
    states = _states(arch, 3, [0, 1, 2])
    bank = ModelBank(build_classifier(arch, 3, 5), states)
    for i, state in enumerate(states):
        got = bank.member_state(i)
        assert got.keys() == state.keys()
        assert all(torch.equal(got[k], state[k]) for k in state)
        build_classifier(arch, 3, 5).load_state_dict(got)  # loadable into the plain network


@pytest.mark.parametrize("train", [False, True])
def test_a_bank_computes_what_each_member_computes_alone(train):
    torch.manual_seed(0)
    states = _states("resnet20", 2, [3, 4, 5])
    bank = ModelBank(build_classifier("resnet20", 2, 5), states).train(train)
    x = torch.randn(6, 3, 2, 16, 16)  # member k's batch is x[:, k]
    out = bank(x.reshape(6, 6, 16, 16))
    assert out.shape == (6, 3, 5)
    for k, state in enumerate(states):
        alone = build_classifier("resnet20", 2, 5).train(train)
        alone.load_state_dict(state)
        # BatchNorm in training mode normalises member k's batch by its own statistics
        torch.testing.assert_close(out[:, k], alone(x[:, k]), rtol=1e-4, atol=1e-5)


def test_a_layer_the_bank_cannot_widen_is_refused():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LayerNorm([4, 6, 6]), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(ValueError, match="cannot bank layer 1 \\(LayerNorm\\)"):
        ModelBank(net, [net.state_dict()] * 2)


def _part(n: int, seed: int):
    """A learnable 3-class task: the brightness of a centre square says the class."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    x = r.integers(0, 60, (n, 16, 16, 1))
    x[:, 4:12, 4:12, 0] += 60 * y[:, None, None] + 60
    return x.astype(np.uint8), y


def _trained_alone(member: Member, p: ClassifierParams, ratio: float) -> nn.Module:
    """The reference: one plain network trained by a loop written out here, with the member's seed."""
    model = build_classifier(p.arch, 1, 3)
    model.load_state_dict(initial_weights(p.arch, 1, 3, member.seed))
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, nesterov=True, weight_decay=p.weight_decay)
    warmup = max(1, p.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, p.steps) / p.steps)))
    crops = torch.Generator().manual_seed(member.seed + AUGMENT_SEED)
    stream = MixedStream(member.arm, p.batch_size, ratio, member.seed)
    model.train()
    for step in range(p.steps):
        x, y = stream.batch(step)
        loss = F.cross_entropy(model(augment(x, p.augment, crops)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def test_a_member_trained_in_a_bank_equals_its_run_trained_alone(runtime):
    """Same initial weights, batches and crops: every member of a bank of three (a real, a mixed and a
    synthetic-only arm, three seeds) ends with the weights and test scores of its run trained alone, up to fp32
    rounding; and a member's result does not depend on which other members share its bank."""
    p = ClassifierParams(arch="resnet8", steps=40, batch_size=8, lr=0.05, augment="crop_flip", eval_batch_size=20,
                         log_every=20)
    test = _part(60, 9)
    members = [Member(ArmData(_part(40, 1), None), 0), Member(ArmData(_part(40, 1), _part(30, 2)), 1),
               Member(ArmData(None, _part(30, 3)), 2)]
    logged = []
    results = train_bank(members, test, 3, p, 0.5, runtime, lambda m, s: logged.append((s, sorted(m))))
    assert [s for s, _ in logged] == [20, 40]
    assert {"train_loss", "train_acc", "m0/train_loss", "m2/train_acc"} <= set(logged[0][1])
    for member, result in zip(members, results):
        alone = _trained_alone(member, p, 0.5)
        ref = alone.state_dict()
        num = sum(((result.state[k].double() - v.double()) ** 2).sum() for k, v in ref.items() if v.is_floating_point())
        den = sum((v.double() ** 2).sum() for k, v in ref.items() if v.is_floating_point())
        assert math.sqrt(num / den) < 1e-5
        scores = evaluate(alone, *test, runtime, 3, 20)
        assert result.metrics["test_accuracy"] == scores["test_accuracy"]
        assert result.metrics["test_loss"] == pytest.approx(scores["test_loss"], rel=1e-5)
        assert [h["step"] for h in result.history] == [20, 40]
    assert results[1].metrics["synthetic_per_batch"] == 4 and results[2].metrics["real_images"] == 0
    assert results[0].metrics["test_accuracy"] > 0.5  # the task is learnt, so the comparison means something
    (second_alone,) = train_bank(members[1:2], test, 3, p, 0.5, runtime)
    assert second_alone.metrics["test_accuracy"] == results[1].metrics["test_accuracy"]


def test_the_bank_benchmark_prints_its_table_at_a_tiny_size(tmp_path):
    """benchmarks/classifier_bank.py as README runs it, shrunk: two members as banks of 1 and 2, one timed step; and
    scripts/gpu_check.sh's form with --compile (on a GPU mode reduce-overhead), here at one bank of 2 (CI time)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SYNTHAUG_THREADS": "1"}

    def table(*args: str) -> list[list[str]]:
        out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "classifier_bank.py"), "--params",
                              str(REPO / "params.yaml"), "--members", "2", "--steps", "1", "--test-images", "100",
                              "--precision", "fp32", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        lines = out.stdout.splitlines()
        assert lines[0].startswith("resnet8, batch 64 per member, 2 members, 1 timed steps each, 100 test images each")
        rows = [ln.split() for ln in lines[2:]]
        assert rows[0][-2] == "1.00x" and all(r[-2].endswith("x") for r in rows)  # speed-up against the first row
        assert all(float(r[4]) > 0 and r[5].endswith("%") for r in rows)  # model GFLOP/s and share of peak
        return rows

    assert [(r[0], r[1], r[-1]) for r in table("--sizes", "1", "2")] == [("1", "eager", "0.0"), ("2", "eager", "0.0")]
    rows = table("--sizes", "2", "--compile", "default")
    assert [(r[0], r[1]) for r in rows] == [("2", "eager"), ("2", "default")]
    assert float(rows[0][-1]) == 0 < float(rows[1][-1])  # compilation timed apart
