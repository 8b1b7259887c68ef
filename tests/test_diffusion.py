"""Tests of the diffusion family: the noise schedule, both samplers, guidance, the U-Net and resumable training."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from synthaug.generators import samplers as samplers_mod
from synthaug.core.config import Params
from synthaug.generators import diffusion
from synthaug.generators.base import GeneratorSpec, family_module, source_family
from synthaug.nets.unet import UNet, UNetConfig
from synthaug.objectives.diffusion import (NoiseSchedule, diffusion_loss, drop_labels, eps_from_output,
                                          v_target)
from synthaug.core.runtime import make_runtime, seed_everything
from synthaug.generators.samplers import DDIMSampler, DDPMSampler, MaybeCompiled, ddim_timesteps, guided_eps_fn

torch.set_num_threads(2)

TINY = dict(base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], dropout=0.0)


def tiny_unet(channels: int = 1, seed: int = 0, **config) -> UNet:
    """A tiny U-Net whose zero-initialised output layers are perturbed, so that it is not identically 0."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(channels=channels, num_classes=3, image_size=16, **TINY, **config)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def net_eps_fn(net: UNet, labels: torch.Tensor):
    return lambda x, t: net(x, t, labels)


def oracle(schedule: NoiseSchedule, c: torch.Tensor):
    """The exact noise predictor of the one-point data distribution x0 = c: eps* = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""
    def eps_fn(x, t):
        abar = NoiseSchedule.gather(schedule.alphas_cumprod, t, x)
        return (x - abar.sqrt() * c) / (1 - abar).sqrt()
    return eps_fn


# ---------------------------------------------------------------- schedule / forward process
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_sample_matches_iterated_forward_process(name):
    s = NoiseSchedule.make(name, 40)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-0.8, 0.1, 0.9], dtype=torch.float64).repeat(20_000, 1)  # [N, 3]
    x, coef_sq = x0.clone(), torch.zeros((), dtype=torch.float64)
    acc = torch.zeros_like(x0)  # the accumulated noise sum_s c_s eps_s of the iteration
    for t in range(s.timesteps):
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        a, b = s.alphas[t], s.betas[t]
        x = a.sqrt() * x + b.sqrt() * eps  # q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)  (eq. 2)
        acc, coef_sq = a.sqrt() * acc + b.sqrt() * eps, a * coef_sq + b
        tt = torch.full((len(x0),), t)
        abar = s.alphas_cumprod[t]
        # Exact: the composed Gaussian has variance 1 - abar_t, and eq. 4 with the same (normalised) noise is x_t.
        assert torch.allclose(coef_sq, 1 - abar, rtol=1e-12, atol=1e-14)
        assert torch.allclose(s.q_sample(x0, tt, acc / (1 - abar).sqrt()), x, atol=1e-12)
        if t in (0, 9, s.timesteps - 1):  # and in law, against independent closed-form draws
            closed = s.q_sample(x0, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64))
            se = ((1 - abar) / len(x0)).sqrt()
            for sample in (x, closed):
                assert (sample.mean(0) - abar.sqrt() * x0[0]).abs().max() < 5 * se
                assert (sample.var(0) / (1 - abar) - 1).abs().max() < 0.05


def test_schedules_end_near_pure_noise_and_reject_bad_names():
    for name in ("linear", "cosine"):
        for T in (50, 1000):
            s = NoiseSchedule.make(name, T)
            assert s.alphas_cumprod[-1] < 1e-3 and bool((s.betas > 0).all()) and bool((s.betas <= 0.999).all())
            assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        NoiseSchedule.make("quadratic", 10)


def test_label_dropout_and_loss():
    torch.manual_seed(0)
    y = torch.zeros(10_000, dtype=torch.long)
    dropped = drop_labels(y, 0.1, null_label=3)
    assert set(dropped.unique().tolist()) == {0, 3} and abs((dropped == 3).float().mean().item() - 0.1) < 0.015
    assert torch.equal(drop_labels(y, 0.0, 3), y)
    s = NoiseSchedule.make("cosine", 20)
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    zero = diffusion_loss(lambda x, t, y: torch.zeros_like(x), s, x0, y[:4], 0.1, 3)
    assert 0.5 < zero.item() < 2.0  # E||eps||^2 / D = 1 for a predictor of 0
    loss = diffusion_loss(lambda x, t, y: x, s, x0, y[:4], 0.1, 3)  # differentiable, finite, fp32
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.manual_seed(1)
    zero_v = diffusion_loss(lambda x, t, y: torch.zeros_like(x), s, x0, y[:4], 0.0, 3, prediction="v")
    assert 0.1 < zero_v.item() < 2.0  # E||v||^2 / D: between E x0^2 and E eps^2, weighted by abar
    with pytest.raises(ValueError, match="unknown prediction target 'x0'"):
        diffusion_loss(lambda x, t, y: x, s, x0, y[:4], 0.0, 3, prediction="x0")


def test_v_prediction_converts_back_to_the_noise_at_every_timestep():
    s = NoiseSchedule.make("cosine", 100)  # abar_T ~ 2e-7: the conversion must stay exact where eps's x0 explodes
    x0, noise = torch.rand(100, 1, 8, 8) * 2 - 1, torch.randn(100, 1, 8, 8)
    t = torch.arange(100)
    x_t = s.q_sample(x0, t, noise)
    v = v_target(x0, noise, s.gather(s.alphas_cumprod, t, x0))
    assert torch.allclose(eps_from_output(v, x_t, t, s, "v"), noise, atol=1e-5)
    assert eps_from_output(noise, x_t, t, s, "eps") is noise
    with pytest.raises(ValueError, match="unknown prediction"):
        eps_from_output(v, x_t, t, s, "x0")


# ---------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_samplers_recover_single_point_with_exact_noise_oracle(name):
    s = NoiseSchedule.make(name, 60)
    c = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9
    eps_fn = oracle(s, c)
    for sampler in (DDPMSampler(s), DDPMSampler(s, clip_x0=False), DDIMSampler(s, 10, eta=0.0),
                    DDIMSampler(s, 7, eta=0.7), DDIMSampler(s, 1)):
        out = sampler.sample(eps_fn, c.shape, torch.Generator().manual_seed(2), progress=False)
        assert (out - c).abs().max() < 1e-4, sampler.describe()


def test_ddim_eta0_is_deterministic_given_start_noise():
    net, y = tiny_unet(), torch.tensor([0, 1, 2])
    s = NoiseSchedule.make("cosine", 30)
    x_T = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ddim = DDIMSampler(s, 6, eta=0.0)
    a = ddim.sample(net_eps_fn(net, y), x_T.shape, torch.Generator().manual_seed(1), x_T=x_T, progress=False)
    b = ddim.sample(net_eps_fn(net, y), x_T.shape, torch.Generator().manual_seed(99), x_T=x_T, progress=False)
    assert torch.equal(a, b) and not torch.equal(a, x_T)
    noisy = DDIMSampler(s, 6, eta=1.0)
    c = noisy.sample(net_eps_fn(net, y), x_T.shape, torch.Generator().manual_seed(1), x_T=x_T, progress=False)
    d = noisy.sample(net_eps_fn(net, y), x_T.shape, torch.Generator().manual_seed(99), x_T=x_T, progress=False)
    assert not torch.allclose(c, d)


def test_ddim_with_eta1_on_all_steps_is_ddpm():
    """Song et al. §4.1: sigma(eta=1) on the full sequence is DDPM's beta-tilde, with the same mean (so same draws)."""
    net, y = tiny_unet(), torch.tensor([2, 0])
    s = NoiseSchedule.make("linear", 25)
    shape = (2, 1, 16, 16)
    exact = oracle(s, torch.rand(shape, generator=torch.Generator().manual_seed(4)) * 1.6 - 0.8)
    eps_fn = lambda x, t: exact(x, t) + torch.tanh(net(x, t, y))  # noqa: E731  (nonlinear, stays bounded)
    ddpm = DDPMSampler(s, clip_x0=False).sample(eps_fn, shape, torch.Generator().manual_seed(5), progress=False)
    ddim = DDIMSampler(s, 25, eta=1.0, clip_x0=False).sample(eps_fn, shape, torch.Generator().manual_seed(5),
                                                             progress=False)
    assert ddpm.abs().max() > 0.5 and torch.allclose(ddpm, ddim, atol=1e-4)


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert ddim_timesteps(10, 50) == list(range(9, -1, -1))
    assert ddim_timesteps(100, 1) == [0]
    with pytest.raises(ValueError):
        ddim_timesteps(100, 0)


def test_guidance_scale_one_is_plain_conditional_sampling_bitwise():
    net, y = tiny_unet(), torch.tensor([0, 1, 2, 1])
    model_fn = lambda x, t, labels: net(x, t, labels)  # noqa: E731
    shape = (4, 1, 16, 16)
    s = NoiseSchedule.make("cosine", 10)
    for sampler in (DDPMSampler(s), DDIMSampler(s, 5, eta=0.5)):
        plain = sampler.sample(net_eps_fn(net, y), shape, torch.Generator().manual_seed(3), progress=False)
        guided = sampler.sample(guided_eps_fn(model_fn, y, net.null_label, 1.0), shape,
                                torch.Generator().manual_seed(3), progress=False)
        assert torch.equal(plain, guided)
    x, t = torch.randn(shape), torch.full((4,), 7)
    eps_c, eps_u = net(x, t, y), net(x, t, torch.full_like(y, net.null_label))
    assert torch.allclose(guided_eps_fn(model_fn, y, net.null_label, 3.0)(x, t), eps_u + 3.0 * (eps_c - eps_u),
                          atol=1e-5)
    assert torch.equal(guided_eps_fn(model_fn, y, net.null_label, 0.0)(x, t), eps_u)


def test_compile_failure_falls_back_with_warning(monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(samplers_mod.torch, "compile", lambda fn, **k: broken)
    fn = MaybeCompiled(lambda x: x + 1)
    with caplog.at_level(logging.WARNING, logger="synthaug"):
        assert fn(1) == 2 and fn(2) == 3
    assert not fn.active and sum("torch.compile failed" in r.message for r in caplog.records) == 1
    assert MaybeCompiled(lambda x: x * 2, enabled=False)(4) == 8


# ---------------------------------------------------------------- U-Net
def test_unet_shapes_class_conditioning_and_cond_vectors():
    for channels in (1, 3):
        net = tiny_unet(channels)
        x, t, y = torch.randn(3, channels, 16, 16), torch.tensor([0, 5, 19]), torch.tensor([0, 2, 3])
        out = net(x, t, y=y)
        assert out.shape == x.shape
        assert torch.equal(net(x, t, cond=net.class_embedding(y)), out)
        other = net(x, t, y=torch.tensor([1, 0, 0]))
        assert all(not torch.allclose(out[i], other[i]) for i in range(3))  # the label changes every output
        assert net.class_embedding(y).shape == (3, net.cond_dim)
    with pytest.raises(ValueError, match="exactly one"):
        net(x, t)
    with pytest.raises(ValueError, match="conditioning must be"):
        net(x, t, cond=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="cannot be halved"):
        UNet(UNetConfig(image_size=20, channel_mult=[1, 2, 2, 2]))
    fresh = UNet(UNetConfig(channels=1, num_classes=3, image_size=16, **TINY))
    assert torch.count_nonzero(fresh(x[:, :1], t, y)) == 0  # zero-initialised output layer: eps starts at 0


def test_per_image_code_shifts_the_class_point_and_zero_code_is_the_class():
    net = tiny_unet(code_dim=4)
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor([0, 5, 19]), torch.tensor([0, 2, 3])
    z = net.encode(torch.rand(3, 1, 16, 16) * 2 - 1)
    assert z.shape == (3, 4) and z.abs().max() < 1  # bounded codes
    assert torch.equal(net.condition(y, torch.zeros(3, 4)), net.class_embedding(y))
    assert torch.allclose(net(x, t, y, code=torch.zeros(3, 4)), net(x, t, y))
    assert not torch.allclose(net(x, t, y, code=z), net(x, t, y))
    assert torch.allclose(net(x, t, y, code=z), net(x, t, cond=net.condition(y, z)))
    with pytest.raises(ValueError, match="not with cond"):
        net(x, t, cond=net.class_embedding(y), code=z)
    with pytest.raises(ValueError, match="code must be"):
        net.condition(y, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="no per-image code"):
        tiny_unet().encode(x)


def test_training_with_codes_trains_the_encoder_and_samples_class_only(tmp_path):
    runtime, spec = make_runtime("cpu", "fp32"), tiny_spec()
    params = tiny_params(3)
    params.diffusion.code_dim, params.diffusion.prediction = 4, "v"
    seed_everything(0)
    diffusion.train(spec, params, runtime, tmp_path / "m.pt", lambda m, s: None)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["config"]["code_dim"] == 4 and state["config"]["prediction"] == "v"
    fresh = UNet(UNetConfig(**state["config"]))
    trained = state["trainable"]["model"]
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.state_dict().items() if k.startswith("code_"))
    fn, _ = diffusion.load_sampler(tmp_path / "m.pt", runtime, params, "ddim")
    x = fn(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))  # no code: the class points
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()


# ---------------------------------------------------------------- family: training, resume, sampling
def tiny_params(steps: int) -> Params:
    p = Params()
    d = p.diffusion
    for k, v in dict(TINY, dropout=0.1, timesteps=12, steps=steps, batch_size=4, checkpoint_every=2, log_every=1,
                     warmup_steps=2, ema_decay=0.9).items():
        setattr(d, k, v)
    p.ddim.steps, p.ddim.eta = 4, 0.0
    return p


def tiny_spec() -> GeneratorSpec:
    rng = np.random.default_rng(0)
    return GeneratorSpec(images=rng.integers(0, 256, (24, 16, 16, 1), dtype=np.uint8),
                         labels=rng.integers(0, 3, 24).astype(np.int64), num_classes=3)


def test_resumed_training_equals_uninterrupted(tmp_path):
    runtime, spec = make_runtime("cpu", "fp32"), tiny_spec()
    seed_everything(0)
    whole = diffusion.train(spec, tiny_params(4), runtime, tmp_path / "a.pt", lambda m, s: None)
    seed_everything(0)
    diffusion.train(spec, tiny_params(2), runtime, tmp_path / "b.pt", lambda m, s: None)
    seed_everything(123)  # a resumed run restores every RNG from the checkpoint
    resumed = diffusion.train(spec, tiny_params(4), runtime, tmp_path / "b.pt", lambda m, s: None)
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["step"] == b["step"] == 4 and whole.history == resumed.history
    for part in ("model", "ema"):
        for k, v in a["trainable"][part].items():
            assert torch.equal(v, b["trainable"][part][k]), (part, k)
    assert not torch.equal(a["trainable"]["model"]["out.2.weight"], a["trainable"]["ema"]["out.2.weight"])


def test_load_sampler_both_sources_share_one_checkpoint(tmp_path):
    runtime, spec = make_runtime("cpu", "fp32"), tiny_spec()
    seed_everything(0)
    diffusion.train(spec, tiny_params(2), runtime, tmp_path / "m.pt", lambda m, s: None)
    assert family_module(source_family("ddpm")) is diffusion and source_family("ddim") == "diffusion"
    labels = torch.tensor([0, 1, 2])
    for source, steps in (("ddpm", 12), ("ddim", 4)):
        fn, settings = diffusion.load_sampler(tmp_path / "m.pt", runtime, tiny_params(2), source)
        x = fn(labels, torch.Generator().manual_seed(0))
        assert x.shape == (3, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
        assert settings["sampler"] == source and settings["steps"] == steps and settings["timesteps"] == 12
        assert settings["guidance_scale"] == 1.0 and settings["schedule"] == "cosine"
        assert fn.images == 3 and fn.seconds_per_image > 0
        assert torch.equal(x, fn(labels, torch.Generator().manual_seed(0)))  # a seed fixes the images
    with pytest.raises(ValueError, match="no sampler for source 'vae'"):
        diffusion.load_sampler(tmp_path / "m.pt", runtime, tiny_params(2), "vae")
