"""The shared training loop: batches as a function of (seed, step), EMA, NaN guard, exact resume (with the VAE
family's real Trainable), fingerprint checks, and the beta-VAE objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from synthaug.core.config import Params
from synthaug.generators import vae as vae_family
from synthaug.generators.base import GeneratorSpec
from synthaug.generators.vae import VAETrainable
from synthaug.nets.vae import ConditionalVAE, VAEConfig
from synthaug.objectives.vae import annealed_beta, kl_to_standard_normal, vae_loss
from synthaug.core.runtime import seed_everything
from synthaug.core.storage import load_checkpoint
from synthaug.core.arrays import to_model_range, to_uint8
from synthaug.generators.training import EMA, BatchStream, NonFiniteLossError, check_finite, fingerprint_of, run_training

NUM_CLASSES = 4


def _data(n: int = 32, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8),
            (np.arange(n) % NUM_CLASSES).astype(np.int64))


# ---------------------------------------------------------------- batches
def test_batch_stream_depends_only_on_seed_and_step():
    images, labels = _data(50, size=8)
    a = BatchStream(images, labels, batch_size=8, seed=3)
    b = BatchStream(images, labels, batch_size=8, seed=3)
    assert a.per_epoch == 6  # 50 // 8, remainder dropped
    steps = list(range(20))
    fwd = {s: a.batch(s) for s in steps}
    order = [17, 2, 11, 0, 19, 6, 5, 12, 1, 18, 3, 7, 13, 4, 16, 8, 15, 9, 14, 10]
    for s in order:  # another access order, jumping across epochs
        x, y = b.batch(s)
        assert torch.equal(x, fwd[s][0]) and torch.equal(y, fwd[s][1]), s
        assert x.shape == (8, 1, 8, 8)
    # within an epoch, batches are disjoint; epochs are reshuffled; another seed gives other batches
    epoch0 = torch.cat([fwd[s][0] for s in range(6)]).flatten(1)
    assert len({tuple(r.tolist()) for r in epoch0}) == 48
    assert not torch.equal(fwd[0][0], fwd[6][0])
    assert not torch.equal(BatchStream(images, labels, 8, seed=4).batch(0)[0], fwd[0][0])
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(images[:4], labels[:4], batch_size=8, seed=0)


def test_model_range_round_trip():
    images, _ = _data(4, size=8)
    x = to_model_range(images)
    assert x.shape == (4, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), images)


# ---------------------------------------------------------------- EMA, NaN guard
def test_ema_update_math_and_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.9)
    e0 = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(5.0)
    ema.update(net)
    for e, old, p in zip(ema.module.parameters(), e0, net.parameters()):
        assert torch.allclose(e, 0.9 * old + 0.1 * p, atol=1e-6)
        assert not e.requires_grad
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 5.0))
    ema.update(net)  # again: 0.9 * (0.9 e0 + 0.1 p) + 0.1 p
    for e, old, p in zip(ema.module.parameters(), e0, net.parameters()):
        assert torch.allclose(e, 0.81 * old + 0.19 * p, atol=1e-6)


def test_check_finite():
    check_finite({"loss": 1.0, "kl": 0.0}, step=3)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(NonFiniteLossError, match="kl.*step 7"):
            check_finite({"loss": 1.0, "kl": bad}, step=7)


class _NaNAt:
    """A Trainable whose loss turns NaN at a given step."""

    def __init__(self, bad_step: int):
        self.bad_step, self.w = bad_step, torch.zeros(1)

    def train_step(self, images, labels, step):
        self.w += 1
        return {"loss": math.nan if step == self.bad_step else 1.0}

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, state):
        self.w = state["w"].clone()


def test_nan_stops_training_without_checkpointing_garbage(tmp_path, runtime):
    images, labels = _data(16, size=8)
    ckpt = tmp_path / "c.pt"
    with pytest.raises(NonFiniteLossError, match="step 3"):
        run_training(_NaNAt(3), BatchStream(images, labels, 4, 0), runtime, 10, ckpt, 2, lambda m, s: None,
                     log_every=1)
    state = load_checkpoint(ckpt)
    assert state["step"] == 2 and float(state["trainable"]["w"]) == 2.0  # the last good checkpoint


# ---------------------------------------------------------------- exact resume with the VAE Trainable
class _Stop(Exception):
    pass


def _vae_run(runtime, ckpt, total, fingerprint="fp", stop_at=None, logged=None, ckpt_every=2, log_every=3):
    """Build a tiny VAE from scratch (as a new process would) and train it to `total` steps."""
    seed_everything(0)
    images, labels = _data(32)
    cfg = VAEConfig(channels=1, num_classes=NUM_CLASSES, image_size=32, latent_dim=4, base_channels=8)
    model = runtime.prepare(ConditionalVAE(cfg))
    trainable = VAETrainable(model, runtime, lr=2e-3, beta=1.0, anneal_steps=3)
    stream = BatchStream(images, labels, batch_size=8, seed=0)
    logged = [] if logged is None else logged

    def log_metrics(metrics, step):
        if stop_at is not None and step >= stop_at:
            raise _Stop  # a kill between two checkpoints
        logged.append((step, dict(metrics)))

    history = run_training(trainable, stream, runtime, total, ckpt, ckpt_every, log_metrics, log_every=log_every,
                           desc="test", fingerprint=fingerprint,
                           extra_state=lambda: {"config": cfg.to_dict(), "family": "vae"})
    return trainable, history, logged


def _assert_same_state(a: VAETrainable, b: VAETrainable):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    for i in oa:
        for k in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][k]), torch.as_tensor(ob[i][k])), (i, k)


def test_killed_then_resumed_run_equals_uninterrupted_run(tmp_path, runtime):
    ref, ref_hist, ref_logged = _vae_run(runtime, None, total=7)
    assert [h["step"] for h in ref_hist] == [2, 3, 4, 6, 7]  # log_every 3, flushed at checkpoints (every 2)

    # (1) killed at step 6 before its checkpoint (the last one is at step 4), then resumed in a "new process"
    ckpt = tmp_path / "a.pt"
    with pytest.raises(_Stop):
        _vae_run(runtime, ckpt, total=7, stop_at=6)
    assert load_checkpoint(ckpt)["step"] == 4
    seed_everything(12345)  # the new process's RNG is not where the old one stopped: the checkpoint's state is
    resumed, hist, logged = _vae_run(runtime, ckpt, total=7)
    assert hist == ref_hist
    assert [s for s, _ in logged] == [6, 7]  # only the steps after the checkpoint are logged again
    _assert_same_state(resumed, ref)

    # (2) a run to total=4, then continued to total=7 from its checkpoint
    ckpt = tmp_path / "b.pt"
    _vae_run(runtime, ckpt, total=4)
    cont, hist, _ = _vae_run(runtime, ckpt, total=7)
    assert hist == ref_hist
    _assert_same_state(cont, ref)

    # the checkpoint is a plain dict, weights_only-loadable, with everything resume needs
    state = load_checkpoint(ckpt)
    assert state["step"] == 7 and state["fingerprint"] == "fp" and state["family"] == "vae"
    assert state["config"]["latent_dim"] == 4 and state["history"] == ref_hist
    assert {"model", "opt"} <= state["trainable"].keys() and {"torch", "numpy", "python"} <= state["rng"].keys()

    # already complete: nothing is trained again
    _, hist, logged = _vae_run(runtime, ckpt, total=7)
    assert hist == ref_hist and logged == []


def test_checkpoint_with_other_fingerprint_is_not_resumed(tmp_path, runtime):
    ckpt = tmp_path / "c.pt"
    _vae_run(runtime, ckpt, total=4, fingerprint="old-settings")
    fresh, fresh_hist, _ = _vae_run(runtime, None, total=4, fingerprint="new-settings")
    trained, hist, logged = _vae_run(runtime, ckpt, total=4, fingerprint="new-settings")
    assert [s for s, _ in logged] == [2, 3, 4]  # trained from step 0, not returned as complete
    assert hist == fresh_hist
    _assert_same_state(trained, fresh)
    assert load_checkpoint(ckpt)["fingerprint"] == "new-settings"


def test_checkpoint_made_by_other_code_is_not_resumed(tmp_path, runtime):
    ckpt = tmp_path / "c.pt"
    _vae_run(runtime, ckpt, total=4, fingerprint="settings+old-code")
    _, fresh_hist, _ = _vae_run(runtime, None, total=4, fingerprint="settings+new-code")
    _, hist, logged = _vae_run(runtime, ckpt, total=4, fingerprint="settings+new-code")
    assert [s for s, _ in logged] == [2, 3, 4] and hist == fresh_hist  # retrained, not taken as complete
    assert load_checkpoint(ckpt)["fingerprint"] == "settings+new-code"


def test_checkpoint_from_before_code_hashes_is_resumed(tmp_path, runtime):
    ckpt = tmp_path / "c.pt"
    _vae_run(runtime, ckpt, total=4, fingerprint="settings")  # written before fingerprints carried a code hash
    _, _, logged = _vae_run(runtime, ckpt, total=4, fingerprint="settings+any-code")
    assert logged == []  # complete: nothing trained again
    _, _, logged = _vae_run(runtime, ckpt, total=4, fingerprint="other-settings+any-code")
    assert [s for s, _ in logged] == [2, 3, 4]


def test_fingerprint_hashes_the_code_it_names(tmp_path, monkeypatch):
    module = tmp_path / "fp_probe_module.py"
    module.write_text("LOSS = 'l2'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = fingerprint_of({"lr": 1e-3}, code=["fp_probe_module", "synthaug.generators.training"])
    assert before == fingerprint_of({"lr": 1e-3}, code=["synthaug.generators.training", "fp_probe_module"])
    settings, code = before.split("+")
    assert settings == fingerprint_of({"lr": 1e-3})
    other_lr = fingerprint_of({"lr": 2e-3}, code=["fp_probe_module", "synthaug.generators.training"])
    assert other_lr == f"{fingerprint_of({'lr': 2e-3})}+{code}"
    module.write_text("LOSS = 'l1'\n")  # an edited loss: same settings, other code hash
    after = fingerprint_of({"lr": 1e-3}, code=["fp_probe_module", "synthaug.generators.training"])
    assert after.split("+")[0] == settings and after.split("+")[1] != code


def test_vae_family_train_and_sample(tmp_path, runtime):
    images, labels = _data(16)
    params = Params()
    params.vae.latent_dim, params.vae.base_channels, params.vae.epochs = 4, 8, 1
    params.vae.batch_size, params.vae.checkpoint_every, params.vae.log_every = 8, 1, 1
    params.vae.beta_anneal_epochs = 1.0
    logged = []
    ckpt = tmp_path / "models" / "vae" / "checkpoint.pt"
    result = vae_family.train(GeneratorSpec(images, labels, NUM_CLASSES), params, runtime, ckpt,
                              lambda m, s: logged.append((s, m)), fingerprint="x")
    assert result.steps == 2 and [h["step"] for h in result.history] == [1, 2]
    assert result.history[0]["beta_t"] == 0.0 and result.history[1]["beta_t"] == 0.5  # annealed over 2 steps
    assert math.isfinite(result.summary["final_loss"])
    sample, settings = vae_family.load_sampler(ckpt, runtime, params, "vae")
    assert settings == {"latent_dim": 4}
    out = sample(torch.tensor([0, 1, 2, 3, 3]), torch.Generator().manual_seed(0))
    assert out.shape == (5, 1, 32, 32) and out.min() >= -1 and out.max() <= 1
    again = sample(torch.tensor([0, 1, 2, 3, 3]), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # sampling is a function of the generator's seed


# ---------------------------------------------------------------- objective
def test_annealed_beta_schedule():
    assert annealed_beta(1.0, 0, 4) == 0.0
    assert annealed_beta(1.0, 1, 4) == 0.25
    assert annealed_beta(0.8, 2, 4) == pytest.approx(0.4)
    assert annealed_beta(0.8, 4, 4) == pytest.approx(0.8)
    assert annealed_beta(0.8, 1000, 4) == pytest.approx(0.8)  # flat after the ramp
    assert annealed_beta(0.8, 0, 0) == 0.8  # no annealing: beta from the first step


def test_kl_to_standard_normal():
    z = kl_to_standard_normal(torch.zeros(3, 5), torch.zeros(3, 5))
    assert z.shape == (3,) and torch.equal(z, torch.zeros(3))
    mu = torch.tensor([[1.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 * [(1 + 1 - 0 - 1) + (4 + 4 - ln 4 - 1)]
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(0.5 * (8 - math.log(4.0)), rel=1e-6)


def test_vae_loss_is_recon_plus_beta_kl_and_train_step_uses_annealed_beta(runtime):
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    mu, logvar = torch.randn(2, 3), torch.randn(2, 3)
    loss, recon, kl = vae_loss(logits, target, mu, logvar, beta=0.3)
    bce = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    assert recon.item() == pytest.approx(bce.flatten(1).sum(1).mean().item(), rel=1e-5)
    assert kl.item() == pytest.approx(kl_to_standard_normal(mu, logvar).mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(recon.item() + 0.3 * kl.item(), rel=1e-6)

    images, labels = _data(8)
    cfg = VAEConfig(channels=1, num_classes=NUM_CLASSES, latent_dim=4, base_channels=8)
    t = VAETrainable(ConditionalVAE(cfg), runtime, lr=1e-3, beta=2.0, anneal_steps=4)
    out = t.train_step(to_model_range(images), torch.from_numpy(labels), step=1)
    assert out["beta_t"] == 0.5
    assert out["loss"] == pytest.approx(out["recon"] + 0.5 * out["kl"], rel=1e-5)
