"""Classifier arms: the per-batch real/synthetic mix, augmentation, evaluation on the real test split, nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from synthaug.study.classification import evaluate
from synthaug.study.classifier_training import ArmData, MixedStream, augment, train_and_evaluate
from synthaug.core.config import ClassifierParams
from synthaug.nets.resnet import build_classifier

REAL_LABEL, SYN_LABEL = 0, 1


def _part(n: int, label: int, seed: int, size: int = 8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8), np.full(n, label, dtype=np.int64)


# ---------------------------------------------------------------- the mix per batch
@pytest.mark.parametrize("batch_size, ratio, n_syn", [(10, 0.3, 3), (8, 0.5, 4), (16, 0.25, 4), (10, 0.0, 0),
                                                      (10, 1.0, 10)])
def test_mixed_arm_has_round_ratio_times_batch_synthetic_images(batch_size, ratio, n_syn):
    arm = ArmData(real=_part(40, REAL_LABEL, 0), synthetic=_part(40, SYN_LABEL, 1))
    s = MixedStream(arm, batch_size, ratio, seed=0)
    assert s.n_synthetic == n_syn == round(ratio * batch_size)
    for step in range(12):  # across epochs of both parts
        x, y = s.batch(step)
        assert x.shape == (batch_size, 1, 8, 8)
        assert int((y == SYN_LABEL).sum()) == n_syn and int((y == REAL_LABEL).sum()) == batch_size - n_syn
    # the mix is a pure function of (seed, step)
    t = MixedStream(arm, batch_size, ratio, seed=0)
    for step in (11, 3, 0):
        assert torch.equal(t.batch(step)[0], s.batch(step)[0])


def test_real_arm_is_all_real_and_synth_arm_all_synthetic():
    real, syn = _part(30, REAL_LABEL, 0), _part(30, SYN_LABEL, 1)
    r = MixedStream(ArmData(real=real, synthetic=None), 10, 0.5, seed=0)
    s = MixedStream(ArmData(real=None, synthetic=syn), 10, 0.5, seed=0)
    assert r.n_synthetic == 0 and s.n_synthetic == 10
    for step in range(5):
        xr, yr = r.batch(step)
        xs, ys = s.batch(step)
        assert len(yr) == len(ys) == 10
        assert (yr == REAL_LABEL).all() and (ys == SYN_LABEL).all()
    with pytest.raises(ValueError):
        MixedStream(ArmData(None, None), 10, 0.5, seed=0)


# ---------------------------------------------------------------- augmentation
def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x [C,H,W] moved so that out[i, j] = x[i + dy, j + dx], filled with -1 (black) outside."""
    c, h, w = x.shape
    out = torch.full_like(x, -1.0)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[:, yd, xd] = x[:, ys, xs]
    return out


def _offsets(x: torch.Tensor, out: torch.Tensor, allow_flip: bool) -> list[tuple[int, int, bool]]:
    found = []
    for i in range(len(x)):
        match = [(dy, dx, f) for dy in range(-4, 5) for dx in range(-4, 5) for f in ((False, True) if allow_flip
                                                                                    else (False,))
                 if torch.equal(out[i], _shift(x[i].flip(2) if f else x[i], dy, dx))]
        assert match, f"image {i} is not a shifted (flipped) copy of its input"
        found.append(match[0])
    return found


@pytest.mark.parametrize("mode", ["crop", "crop_flip"])
def test_crop_shifts_content_within_the_padding(mode):
    torch.manual_seed(0)
    x = torch.rand(24, 2, 12, 12) * 2 - 1
    out = augment(x, mode)
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets = _offsets(x, out, allow_flip=mode == "crop_flip")
    assert len({(dy, dx) for dy, dx, _ in offsets}) > 5  # random per image
    assert any((dy, dx) != (0, 0) for dy, dx, _ in offsets)
    flips = [f for _, _, f in offsets]
    if mode == "crop_flip":
        assert any(flips) and not all(flips)
    # channels_last input stays channels_last
    cl = augment(x.contiguous(memory_format=torch.channels_last), mode)
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_augment_none_is_identity():
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(augment(x, "none"), x)


# ---------------------------------------------------------------- evaluation
class _Oracle(nn.Module):
    """Reads the label written into pixel (0, 0) as label * 20 (or always answers `const`)."""

    def __init__(self, k: int, const: int | None = None):
        super().__init__()
        self.k, self.const = k, const

    def forward(self, x):
        label = torch.round((x[:, 0, 0, 0] + 1) * 127.5 / 20).long()
        if self.const is not None:
            label = torch.full_like(label, self.const)
        return nn.functional.one_hot(label, self.k).float() * 20


def _labelled_images(labels: np.ndarray) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 8, 8, 1), dtype=np.uint8)
    images[:, 0, 0, 0] = labels * 20
    return images


def test_evaluate_perfect_and_constant_predictor(runtime):
    labels = np.array([0] * 5 + [1] * 10 + [2] * 15, dtype=np.int64)
    images = _labelled_images(labels)
    m = evaluate(_Oracle(3), images, labels, runtime, num_classes=3, batch_size=7)  # several uneven batches
    assert m["test_accuracy"] == 1.0
    assert {f"test_accuracy_class{c}" for c in range(3)} <= m.keys()
    assert all(m[f"test_accuracy_class{c}"] == 1.0 for c in range(3))
    assert m["test_loss"] < 1e-6

    m = evaluate(_Oracle(3, const=2), images, labels, runtime, num_classes=3, batch_size=7)
    assert m["test_accuracy"] == pytest.approx(15 / 30)
    assert (m["test_accuracy_class0"], m["test_accuracy_class1"], m["test_accuracy_class2"]) == (0.0, 0.0, 1.0)
    # mean cross-entropy: ~20 for each of the 15 wrong confident answers, ~0 for the 15 right ones
    assert m["test_loss"] == pytest.approx(20.0 * 15 / 30, rel=1e-4)

    m = evaluate(_Oracle(4), images, labels, runtime, num_classes=4)  # a class absent from the split
    assert "test_accuracy_class3" not in m and m["test_accuracy"] == 1.0


# ---------------------------------------------------------------- nets
@pytest.mark.parametrize("arch", ["resnet20", "resnet32", "resnet18"])
def test_build_classifier_shapes(arch):
    for channels in (1, 3):
        net = build_classifier(arch, channels, 7).eval()
        with torch.no_grad():
            assert net(torch.randn(2, channels, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="unknown classifier arch"):
        build_classifier("vgg", 3, 7)


def test_resnet20_has_the_published_size():
    n = sum(p.numel() for p in build_classifier("resnet20", 3, 10).parameters())
    assert 0.26e6 < n < 0.29e6  # He et al. 2016: 0.27M


def test_train_and_evaluate_mixed_arm(runtime):
    labels = np.arange(40) % 2
    real = (_labelled_images(labels), labels)
    syn = (_labelled_images(labels[:16]), labels[:16])
    p = ClassifierParams(arch="resnet20", steps=2, batch_size=8, lr=0.01, augment="crop", eval_batch_size=16,
                         log_every=1)
    logged = []
    m, _ = train_and_evaluate(ArmData(real, syn), real, 2, p, 0.25, runtime, seed=0,
                           log_metrics=lambda d, s: logged.append(s))
    assert logged == [1, 2]
    assert m["synthetic_per_batch"] == 2 and m["real_images"] == 40 and m["synthetic_images"] == 16
    assert 0.0 <= m["test_accuracy"] <= 1.0 and np.isfinite(m["final_train_loss"])
