"""GAN family: the three losses and the gradient penalty by hand, conditioning, exact resume, NaN guard,
sampling, and the within-class diversity metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthaug.core.config import GANParams, Params
from synthaug.generators import gan as family
from synthaug.generators.base import GeneratorSpec, family_module, source_family
from synthaug.metrics.diversity import diversity_ratio, pairwise_mean_distance, within_class_diversity
from synthaug.nets.gan import Discriminator, GANConfig, Generator
from synthaug.objectives import gan as obj
from synthaug.core.runtime import make_runtime, seed_everything
from synthaug.core.storage import StorageError, load_checkpoint
from synthaug.generators.training import NonFiniteLossError

torch.set_num_threads(2)

REAL = torch.tensor([1.0, -2.0, 0.5])
FAKE = torch.tensor([0.5, 3.0, -1.0])


def _softplus(t: float) -> float:
    return math.log1p(math.exp(t))


# ---------------------------------------------------------------- losses, by hand
def test_bce_losses_match_hand_computation():
    r, f = REAL.tolist(), FAKE.tolist()
    # -log sigma(r) = log(1 + e^-r); -log(1 - sigma(f)) = log(1 + e^f)
    d = np.mean([_softplus(-v) for v in r]) + np.mean([_softplus(v) for v in f])
    g = np.mean([_softplus(-v) for v in f])
    assert obj.d_loss_bce(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert obj.g_loss_bce(FAKE).item() == pytest.approx(g, rel=1e-6)
    # Same value from the textbook form with probabilities.
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    assert d == pytest.approx(-np.mean([math.log(sig(v)) for v in r]) - np.mean([math.log(1 - sig(v)) for v in f]))


def test_least_squares_losses_match_hand_computation():
    # a = -1 (fake), b = 1 (real), c = 0 (G's target)
    d = 0.5 * np.mean([(v - 1) ** 2 for v in REAL.tolist()]) + 0.5 * np.mean([(v + 1) ** 2 for v in FAKE.tolist()])
    g = 0.5 * np.mean([v ** 2 for v in FAKE.tolist()])
    assert (obj.LSGAN_A, obj.LSGAN_B, obj.LSGAN_C) == (-1.0, 1.0, 0.0)
    assert obj.d_loss_ls(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert obj.g_loss_ls(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_wasserstein_losses_match_hand_computation():
    mr, mf = np.mean(REAL.tolist()), np.mean(FAKE.tolist())
    assert obj.d_loss_wgan(REAL, FAKE).item() == pytest.approx(mf - mr, rel=1e-6)
    assert obj.g_loss_wgan(FAKE).item() == pytest.approx(-mf, rel=1e-6)
    assert obj.wasserstein_estimate(REAL, FAKE).item() == pytest.approx(mr - mf, rel=1e-6)


def test_losses_are_fp32_for_bf16_scores_and_dispatch_by_name():
    r, f = REAL.bfloat16(), FAKE.bfloat16()
    for name in obj.OBJECTIVES:
        assert obj.discriminator_loss(name, r, f).dtype == torch.float32
        assert obj.generator_loss(name, f).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown GAN objective 'hinge'"):
        obj.discriminator_loss("hinge", r, f)


def _linear_critic(norm: float, dim: int):
    w = torch.randn(dim, generator=torch.Generator().manual_seed(1))
    w = w / w.norm() * norm
    return lambda x, y: x.flatten(1) @ w


@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (2.0, 10.0), (0.5, 2.5)])
def test_gradient_penalty_of_linear_critic(norm, expected):
    """f(x) = <w, x> has gradient w everywhere: penalty = lam * (||w|| - 1)^2, 0 iff 1-Lipschitz."""
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    gp = obj.gradient_penalty(_linear_critic(norm, 16), real, fake, torch.zeros(6, dtype=torch.long), lam=10.0)
    assert gp.dtype == torch.float32
    assert gp.item() == pytest.approx(expected, abs=1e-5)


def test_gradient_penalty_interpolates_and_backpropagates():
    """A quadratic critic f(x) = ||x||^2 / 2 has gradient x_hat: checks where the penalty is evaluated."""
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    eps = torch.tensor([0.25, 1.0]).view(2, 1, 1, 1)
    scale = torch.tensor(1.0, requires_grad=True)
    critic = lambda x, y: 0.5 * scale * x.flatten(1).pow(2).sum(1)  # noqa: E731
    gp = obj.gradient_penalty(critic, real, fake, torch.zeros(2, dtype=torch.long), lam=1.0, eps=eps)
    # x_hat = eps * 1, ||grad|| = scale * eps * sqrt(4) = 0.5 and 2.0 -> mean((-0.5)^2, 1^2) = 0.625
    assert gp.item() == pytest.approx(0.625, rel=1e-5)
    gp.backward()  # d/dscale of mean((2 eps s - 1)^2) at s=1: mean(2 (2 eps - 1) 2 eps) = (-0.5 + 4) / 2
    assert scale.grad.item() == pytest.approx(1.75, rel=1e-5)


def test_gradient_penalty_under_bf16_autocast_is_close_to_fp32():
    torch.manual_seed(0)
    D = Discriminator(GANConfig(channels=1, width=16, spectral_norm=False)).eval()
    real, fake, y = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.arange(4)
    eps = torch.rand(4, 1, 1, 1)
    ref = obj.gradient_penalty(D, real, fake, y, eps=eps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = obj.gradient_penalty(D, real, fake, y, eps=eps)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(ref.item(), rel=0.05)


# ---------------------------------------------------------------- nets and conditioning
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(channels):
    cfg = GANConfig(channels=channels, num_classes=5, z_dim=8, width=16)
    x = Generator(cfg)(torch.randn(4, 8), torch.arange(4))
    assert x.shape == (4, channels, 32, 32) and x.abs().max() <= 1
    assert Discriminator(cfg)(x, torch.arange(4)).shape == (4,)
    with pytest.raises(ValueError, match="power of two"):
        Generator(GANConfig(image_size=28))


def test_conditioning_changes_generator_output():
    torch.manual_seed(0)
    G = Generator(GANConfig(num_classes=3, z_dim=8, width=16))
    # At init every class has gain 1 and bias 0; give the classes distinct embeddings, as training does.
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.add_(0.5 * torch.randn_like(m.weight))
    G.train()(torch.randn(8, 8), torch.randint(0, 3, (8,)))  # fill BN running stats
    G.eval()
    z = torch.randn(1, 8).repeat(2, 1)
    same = G(z, torch.tensor([1, 1]))
    diff = G(z, torch.tensor([0, 2]))
    assert torch.equal(same[0], same[1])
    assert (diff[0] - diff[1]).abs().mean() > 1e-3


def test_projection_discriminator_uses_the_label():
    torch.manual_seed(0)
    D = Discriminator(GANConfig(num_classes=3, width=16, spectral_norm=False))
    x = torch.randn(1, 1, 32, 32).repeat(2, 1, 1, 1)
    out = D(x, torch.tensor([0, 2]))
    # The only label path is the projection term: D(x,0) - D(x,2) = <e_0 - e_2, phi(x)>.
    phi = torch.relu(D.blocks(x[:1])).sum(dim=(2, 3))[0]
    expected = (D.embed.weight[0] - D.embed.weight[2]) @ phi
    assert (out[0] - out[1]).item() == pytest.approx(expected.item(), rel=1e-4)
    assert abs(expected.item()) > 1e-3


def test_spectral_norm_is_an_option():
    with_sn = Discriminator(GANConfig(width=16, spectral_norm=True))
    without = Discriminator(GANConfig(width=16, spectral_norm=False))
    assert any("parametrizations" in k for k in with_sn.state_dict())
    assert not any("parametrizations" in k for k in without.state_dict())


# ---------------------------------------------------------------- training loop integration
def _spec(n: int = 64) -> GeneratorSpec:
    rng = np.random.default_rng(0)
    return GeneratorSpec(rng.integers(0, 256, (n, 32, 32, 1), dtype=np.uint8),
                         np.arange(n, dtype=np.int64) % 4, num_classes=4)


def _params(name: str, **kw) -> Params:
    p = Params()
    base = dict(width=8, z_dim=8, steps=4, batch_size=4, checkpoint_every=1, log_every=1, ema_decay=0.9,
                n_critic=2 if name == "wgan_gp" else 1)
    setattr(p, name, GANParams(**{**base, **kw}))
    return p


class Killed(Exception):
    pass


def _train(name, params, ckpt, kill_at=None):
    logged = []

    def log(metrics, step):
        if step == kill_at:
            raise Killed(step)
        logged.append((step, metrics))

    seed_everything(0)
    result = family.train(_spec(), params, make_runtime("cpu", "fp32"), ckpt, log, family=name)
    return result, logged


@pytest.mark.parametrize("name", ["gan", "lsgan", "wgan_gp"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, name):
    params = _params(name)
    full, full_log = _train(name, params, tmp_path / "full.pt")
    # Killed after step 3 was computed but before its checkpoint was written: resume redoes 3..4.
    with pytest.raises(Killed):
        _train(name, params, tmp_path / "resumed.pt", kill_at=3)
    assert load_checkpoint(tmp_path / "resumed.pt")["step"] == 2
    resumed, resumed_log = _train(name, params, tmp_path / "resumed.pt")
    assert resumed.history == full.history
    assert resumed_log == [entry for entry in full_log if entry[0] > 2]
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert a["family"] == b["family"] == name and a["config"] == b["config"]
    for net in ("G", "D", "ema"):
        for k, v in a["trainable"][net].items():
            assert torch.equal(v, b["trainable"][net][k]), f"{net}.{k} differs after resume"
    expected_keys = {"d_loss", "g_loss"} | ({"gp", "wasserstein"} if name == "wgan_gp" else set())
    assert set(full.history[-1]) == expected_keys | {"step"}
    # Linear LR decay reached 0 at the last step, and was saved with the schedulers.
    assert a["trainable"]["sched_g"]["_last_lr"] == [0.0]


def test_lazy_gradient_penalty_on_every_kth_critic_update_weighted_k_times(tmp_path, monkeypatch):
    lams = []
    real_gp = family.gradient_penalty

    def recording_gp(D, real, fake, y, lam, *args, **kwargs):
        lams.append(lam)
        return real_gp(D, real, fake, y, lam, *args, **kwargs)

    monkeypatch.setattr(family, "gradient_penalty", recording_gp)
    params = _params("wgan_gp", n_critic=2, gp_every=3, steps=4, gp_lambda=10.0)
    full, _ = _train("wgan_gp", params, tmp_path / "full.pt")
    # critic updates 0..7 (step * n_critic + k): penalised are 0, 3, 6 -> in G steps 1, 2 and 4 (1-based)
    assert lams == [30.0] * 3
    assert [h["step"] for h in full.history if "gp" in h] == [1, 2, 4]
    assert all("wasserstein" in h for h in full.history)
    lams.clear()
    with pytest.raises(Killed):
        _train("wgan_gp", params, tmp_path / "resumed.pt", kill_at=3)
    resumed, _ = _train("wgan_gp", params, tmp_path / "resumed.pt")
    assert resumed.history == full.history  # the schedule of penalised updates survives a resume


def test_critic_batches_are_distinct_and_a_function_of_the_step():
    spec = _spec()
    stream = family.BatchStream(spec.images, spec.labels, batch_size=8, seed=0)
    crit = family.CriticBatches(stream, n_critic=3)
    x, y = crit.batch(1)
    assert x.shape == (24, 1, 32, 32) and y.shape == (24,)
    assert torch.equal(x[:8], stream.batch(3)[0]) and torch.equal(x[16:], stream.batch(5)[0])
    assert not torch.equal(x[:8], x[8:16])


def test_nan_guard_fires_on_a_diverging_run_and_writes_nothing(tmp_path):
    ckpt = tmp_path / "gan.pt"
    params = _params("gan", lr_g=1e30, lr_d=1e30, checkpoint_every=1)
    seed_everything(0)
    with pytest.raises(NonFiniteLossError, match="became nan at step 0"):
        family.train(_spec(), params, make_runtime("cpu", "fp32"), ckpt, lambda m, s: None, family="gan")
    assert not ckpt.exists()


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    ckpt = tmp_path / "lsgan.pt"
    calls = []

    def poisoned(objective, fake):  # G's loss (and so its weights, via backward) turn NaN at step 2
        calls.append(1)
        loss = obj.generator_loss(objective, fake)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(family, "generator_loss", poisoned)
    seed_everything(0)
    with pytest.raises(NonFiniteLossError, match="g_loss became nan at step 2"):
        family.train(_spec(), _params("lsgan", checkpoint_every=1), make_runtime("cpu", "fp32"), ckpt,
                     lambda m, s: None, family="lsgan")
    state = load_checkpoint(ckpt)
    assert state["step"] == 2  # the last good step; nothing was written for the NaN one
    for net in ("G", "D", "ema"):
        assert all(torch.isfinite(v).all() for v in state["trainable"][net].values() if v.is_floating_point())


# ---------------------------------------------------------------- sampling
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("gan") / "wgan_gp.pt"
    params = _params("wgan_gp", steps=2)
    seed_everything(0)
    family.train(_spec(), params, make_runtime("cpu", "fp32"), ckpt, lambda m, s: None, family="wgan_gp")
    return ckpt, params


def test_registered_as_three_sources():
    for name in ("gan", "lsgan", "wgan_gp"):
        assert source_family(name) == name and family_module(name) is family


def test_sampler_is_deterministic_and_in_range(trained):
    ckpt, params = trained
    rt = make_runtime("cpu", "fp32")
    sample, settings = family.load_sampler(ckpt, rt, params, "wgan_gp")
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    a = sample(labels, torch.Generator().manual_seed(5))
    b = sample(labels, torch.Generator().manual_seed(5))
    assert a.shape == (6, 1, 32, 32) and a.dtype == torch.float32 and a.abs().max() <= 1
    assert torch.equal(a, b)
    assert settings["family"] == "wgan_gp" and settings["weights"] == "ema"
    with pytest.raises(StorageError, match="holds a 'wgan_gp' model, not 'gan'"):
        family.load_sampler(ckpt, rt, params, "gan")


def test_interpolation_grid(trained):
    ckpt, _ = trained
    rt = make_runtime("cpu", "fp32")
    grid = family.interpolation_grid(family.load_generator(ckpt, rt), rt, steps=5)
    assert grid.shape == (4 * 32, 5 * 32, 1) and grid.dtype == np.uint8
    z = family.slerp(torch.ones(3), -torch.ones(3) + torch.tensor([0, 0, 1e-3]), torch.tensor([0.0, 1.0]))
    assert torch.allclose(z[0], torch.ones(3)) and torch.allclose(z[1], torch.tensor([-1, -1, -1 + 1e-3]))


# ---------------------------------------------------------------- diversity
def test_pairwise_distance_by_hand():
    imgs = np.zeros((3, 2, 2, 1), np.uint8)
    imgs[1, 0, 0] = 255  # distance 1 from image 0
    imgs[2] = 255  # distance 2 from image 0, sqrt(3) from image 1
    assert pairwise_mean_distance(imgs) == pytest.approx((1 + 2 + math.sqrt(3)) / 3)


def test_identical_images_have_zero_diversity():
    img = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    assert within_class_diversity(np.repeat(img, 20, 0), np.arange(20) % 2) == 0.0


def test_collapsed_set_scores_far_below_a_varied_one():
    rng = np.random.default_rng(0)
    varied = rng.integers(0, 256, (300, 32, 32, 1), dtype=np.uint8)
    labels = np.arange(300) % 3
    # Mode collapse: each class repeats one of two images with slight noise.
    modes = rng.integers(0, 256, (3, 2, 32, 32, 1)).astype(np.int16)
    collapsed = modes[labels, np.arange(300) % 2] + rng.integers(-3, 4, (300, 32, 32, 1))
    collapsed = collapsed.clip(0, 255).astype(np.uint8)
    assert diversity_ratio(collapsed, labels, varied, labels, per_class=50) < 0.6
    assert diversity_ratio(varied, labels, varied, labels, per_class=50) == 1.0
    # The K-per-class subset is seeded: same figure every call, and K caps the work.
    assert within_class_diversity(varied, labels, 20, seed=1) == within_class_diversity(varied, labels, 20, seed=1)
    with pytest.raises(ValueError, match="uint8"):
        within_class_diversity(varied.astype(np.float32), labels)
