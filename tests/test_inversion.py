"""Diffusion Inversion: group selection, learned embeddings beat class embeddings, sampling from embeddings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from synthaug.core.config import ConfigError, Params
from synthaug.data.groups import class_groups
from synthaug.data.real import DatasetError
from synthaug.generators import diffusion, inversion
from synthaug.generators.base import GeneratorSpec
from synthaug.metrics.group_following import group_following
from synthaug.nets.unet import UNet, UNetConfig
from synthaug.core.runtime import make_runtime, seed_everything
from synthaug.core.storage import StorageError, load_checkpoint


def toy_images(n_per_class: int = 32, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 8x8 striped squares whose stripes run across with probability 0.85, 0.5 and 0.15.

    The orientation varies within each class, and the classes differ in how often it occurs, so the U-Net's
    conditioning space has an orientation direction (as Fashion-MNIST's classes differ in brightness or print
    and vary in them too). An embedding learned on one image can move along it; its class embedding cannot.
    """
    rng = np.random.default_rng(seed)
    stripes = np.arange(size) % 2 == 0
    across = np.repeat(stripes[:, None], size, axis=1).astype(np.uint8) * 255
    labels = np.repeat(np.arange(3), n_per_class)
    p_across = np.array([0.85, 0.5, 0.15])[labels]
    images = np.where((rng.random(len(labels)) < p_across)[:, None, None], across, across.T)
    box = np.zeros((size, size), dtype=np.uint8)
    box[1:-1, 1:-1] = 1
    return (images * box)[..., None], labels


def toy_params(tmp_steps: int = 800) -> Params:
    params = Params(seed=0)
    params.diffusion = dataclasses.replace(params.diffusion, base_channels=16, channel_mult=[1, 2],
                                           num_res_blocks=1, attn_resolutions=[], dropout=0.0, timesteps=50,
                                           steps=tmp_steps, batch_size=32, lr=2e-3, warmup_steps=20,
                                           ema_decay=0.99, checkpoint_every=1000, log_every=100)
    params.invert = dataclasses.replace(params.invert, group_size=1, groups_per_class=2, steps=300, batch_size=6,
                                        lr=0.1, checkpoint_every=100, log_every=25, preview_groups=1,
                                        preview_steps=10, init="class")
    params.ddim = dataclasses.replace(params.ddim, steps=10)
    return params


def train_toy(tmp_path_factory, **diffusion_changes):
    """A tiny class-conditional diffusion model trained on the toy classes (fp32, CPU), and its data."""
    runtime = make_runtime("cpu", "fp32")
    seed_everything(0)
    images, labels = toy_images()
    params = toy_params()
    params.diffusion = dataclasses.replace(params.diffusion, **diffusion_changes)
    ckpt = tmp_path_factory.mktemp("diffusion") / "checkpoint.pt"
    diffusion.train(GeneratorSpec(images, labels, 3), params, runtime, ckpt, lambda m, s: None)
    return runtime, params, images, labels, ckpt


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_toy(tmp_path_factory)


@pytest.fixture(scope="module")
def trained_code(tmp_path_factory):
    """The same, trained with per-image codes (issue 13's conditioning space), predicting v."""
    return train_toy(tmp_path_factory, code_dim=4, prediction="v")


class Killed(Exception):
    pass


def run_inversion(trained, tmp_path, kill_at: int | None = None, score_groups=None, **changes):
    """Invert the toy groups (one image each unless changed) into tmp_path/dinv.pt, grouped as the stage groups
    them; `kill_at` raises at that logged step."""
    runtime, params, images, labels, ckpt = trained
    params = dataclasses.replace(params, invert=dataclasses.replace(params.invert, **changes))
    p = params.invert
    features = inversion.grouping_features(ckpt, runtime, images) if p.grouping == "look_alike" else None
    members, group_labels = class_groups(labels, p.group_size, p.groups_per_class, 0, features)

    def log(metrics, step):
        if step == kill_at:
            raise Killed(step)

    seed_everything(0)
    result = inversion.invert(images, members, group_labels, ckpt, params, runtime, tmp_path / "dinv.pt", log,
                              fingerprint="t", score_groups=score_groups)
    return params, members, group_labels, result


# ---------------------------------------------------------------- groups
def test_class_groups_are_disjoint_single_class_and_seeded():
    labels = np.repeat(np.arange(3), [7, 9, 5])
    members, group_labels = class_groups(labels, 2, 0, seed=1)
    assert members.shape == (3 + 4 + 2, 2)
    assert list(group_labels) == [0] * 3 + [1] * 4 + [2] * 2
    assert len(np.unique(members)) == members.size  # no image in two groups
    assert all((labels[m] == k).all() for m, k in zip(members, group_labels))
    again, _ = class_groups(labels, 2, 0, seed=1)
    other, _ = class_groups(labels, 2, 0, seed=2)
    assert np.array_equal(members, again) and not np.array_equal(members, other)
    capped, capped_labels = class_groups(labels, 2, 1, seed=1)
    assert capped.shape == (3, 2) and list(capped_labels) == [0, 1, 2]


def test_look_alike_groups_gather_the_nearest_images_of_a_class():
    # class 0: two tight clusters around 0 and 10, interleaved; class 1 around 5
    x = np.array([0.0, 10.0, 0.2, 10.3, 0.1, 9.9, 5.0, 5.1, 4.9])
    labels = np.array([0] * 6 + [1] * 3)
    members, group_labels = class_groups(labels, 3, 0, seed=0, features=x[:, None])
    assert list(group_labels) == [0, 0, 1]
    groups = [sorted(x[m].tolist()) for m in members]
    # the image farthest from the class's mean (10.3) first, with its two nearest; then the rest
    assert groups == [[9.9, 10.0, 10.3], [0.0, 0.1, 0.2], [4.9, 5.0, 5.1]], groups
    random_groups = [sorted(x[m].tolist()) for m in class_groups(labels, 3, 0, seed=0)[0]]
    assert random_groups != groups  # seed 0 happens to mix the two clusters: what look-alike groups avoid
    capped, _ = class_groups(labels, 3, 1, seed=0, features=x[:, None])
    assert capped.shape == (2, 3) and all(any(np.array_equal(c, m) for m in members) for c in capped)
    with pytest.raises(ValueError, match="features has 2 rows"):
        class_groups(labels, 3, 0, seed=0, features=x[:2, None])


def test_class_groups_refuse_more_groups_than_a_class_holds():
    labels = np.repeat(np.arange(2), [10, 3])
    with pytest.raises(DatasetError, match="class 1 has 3 training images"):
        class_groups(labels, 2, 2, seed=0)
    with pytest.raises(DatasetError, match="class 1"):
        class_groups(labels, 4, 0, seed=0)


# ---------------------------------------------------------------- inversion
def test_learned_embedding_denoises_its_group_better_than_the_class_embedding(trained, tmp_path):
    params, members, group_labels, result = run_inversion(trained, tmp_path)
    assert result.summary["loss_learned"] < result.summary["loss_class_embedding"]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # the checkpoint holds what sampling needs, and the frozen model is untouched
    state = load_checkpoint(tmp_path / "dinv.pt")
    assert state["family"] == "dinv" and state["step"] == params.invert.steps
    assert torch.equal(state["group_labels"], torch.from_numpy(group_labels))
    assert state["trainable"]["embeddings"]["weight"].shape == (len(members), 64)
    assert result.images[inversion.PREVIEW].shape[0] == 3 * (8 + 2)  # one row per class (preview_groups 1)


def test_killed_inversion_resumes_to_the_same_embeddings(trained, tmp_path):
    _, _, _, whole = run_inversion(trained, tmp_path / "a")
    with pytest.raises(Killed):  # killed at step 150, after the checkpoint of step 100
        run_inversion(trained, tmp_path / "b", kill_at=150)
    assert load_checkpoint(tmp_path / "b" / "dinv.pt")["step"] == 100
    resumed = run_inversion(trained, tmp_path / "b")[3]
    a = load_checkpoint(tmp_path / "a" / "dinv.pt")["trainable"]["embeddings"]["weight"]
    b = load_checkpoint(tmp_path / "b" / "dinv.pt")["trainable"]["embeddings"]["weight"]
    assert torch.equal(a, b)
    assert resumed.history == whole.history and resumed.summary == whole.summary


def pixel_following(real, own, by_class):
    """The stage's scorer, in pixel space (the toy images are too small for Inception to tell apart)."""
    return group_following(*([x.astype(np.float64) for x in part] for part in (real, own, by_class)))


@pytest.mark.parametrize("model", ["trained", "trained_code"])
def test_samples_from_an_image_embedding_are_closer_to_it_than_class_samples(model, request, tmp_path):
    trained = request.getfixturevalue(model)
    runtime, params, images, labels, ckpt = trained
    # 8 samples per image from its vector and from its class embedding, the same start noise for both
    _, members, group_labels, result = run_inversion(trained, tmp_path, follow_samples=8,
                                                     score_groups=pixel_following)
    state = load_checkpoint(tmp_path / "dinv.pt")
    net, _ = inversion.frozen_diffusion(ckpt, runtime)
    space = inversion.ConditionSpace(net)
    learned, labels_g = state["trainable"]["embeddings"]["weight"], torch.from_numpy(group_labels)
    assert learned.shape == (len(members), 4 if model == "trained_code" else net.cond_dim)
    with torch.no_grad():
        assert torch.allclose(space.to_cond(space.initial(labels_g), labels_g), net.class_embedding(labels_g))
    # issue 13's "follows its group" figure, as the invert stage computes it (Inception features there)
    s = result.summary
    assert s["follows_groups"] == len(members)
    assert s["follows_distance_own"] < 0.8 * s["follows_distance_class"], s
    assert s["follows_margin"] > s["follows_margin_ci95"] > 0 and s["follows_share"] > 0.5, s


def test_vectors_of_look_alike_groups_follow_their_group(trained_code, tmp_path):
    """Issue 32: groups of several images. Look-alike groups (the frozen U-Net's codes) of the toy classes share
    a stripe direction where random groups of a class mix them, and each group's vector, started at its images'
    mean code, draws samples closer to its own group than the class point does."""
    runtime, params, images, labels, ckpt = trained_code
    changes = dict(group_size=4, groups_per_class=4, batch_size=8, init="group", follow_samples=8)
    _, members, _, result = run_inversion(trained_code, tmp_path, score_groups=pixel_following, **changes)
    across = images[:, 2, 1, 0] > 0  # stripes across: row 2 lit at the box's edge

    def mixed_groups(m):
        return int(sum(0 < across[g].sum() < len(g) for g in m))
    random_members, _ = class_groups(labels, 4, 4, 0)
    assert mixed_groups(members) < mixed_groups(random_members), (mixed_groups(members), mixed_groups(random_members))
    s = result.summary
    assert s["follows_margin"] > s["follows_margin_ci95"] > 0 and s["follows_share"] > 0.5, s


def test_group_init_needs_a_unet_with_codes(trained, tmp_path):
    with pytest.raises(ConfigError, match="diffusion.code_dim 0"):
        run_inversion(trained, tmp_path, init="group")


def test_no_follows_figure_without_a_scorer_or_samples(trained, tmp_path):
    for changes in ({"follow_samples": 8}, {"follow_samples": 0, "score_groups": pixel_following}):
        result = run_inversion(trained, tmp_path / str(len(changes)), **changes)[3]
        assert not any(k.startswith("follows_") for k in result.summary)


def test_conditioner_without_noise_or_interpolation_gives_the_embeddings_own_samples():
    vectors = torch.randn(5, 4)
    group_labels = torch.tensor([1, 0, 1, 0, 1])
    labels = torch.tensor([0, 1, 1, 0, 1, 1])
    plain = inversion.EmbeddingConditioner(vectors, group_labels, 2, noise_scale=0.0, interpolation=0.0)
    cond = plain(labels, torch.Generator().manual_seed(0))
    for c, y in zip(cond, labels):  # each row is exactly one learned vector of its own class
        assert any(torch.equal(c, vectors[g]) for g in (group_labels == y).nonzero().flatten())
    assert torch.allclose(plain.null, vectors.mean(0))
    # same draws, with perturbation: differs by exactly lambda * noise; with interpolation: stays in the class
    noisy = inversion.EmbeddingConditioner(vectors, group_labels, 2, noise_scale=0.5, interpolation=0.0)
    delta = noisy(labels, torch.Generator().manual_seed(0)) - cond
    assert 0 < delta.abs().max() and torch.allclose(delta.std(), torch.tensor(0.5), atol=0.35)
    mixed = inversion.EmbeddingConditioner(vectors, group_labels, 2, noise_scale=0.0, interpolation=1.0)
    m = mixed(labels, torch.Generator().manual_seed(0))
    for c, y in zip(m, labels):
        own = vectors[group_labels == y]
        lo, hi = own.min(0).values, own.max(0).values
        assert bool(((c >= lo - 1e-6) & (c <= hi + 1e-6)).all())  # a convex mix of same-class vectors


def test_conditioner_maps_codes_to_conditioning_after_mixing_and_noise():
    codes, group_labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    labels = torch.tensor([1, 0, 1])

    def to_cond(v, y):  # a stand-in for class + W z
        return torch.cat([v, y[:, None].float()], 1)

    plain = inversion.EmbeddingConditioner(codes, group_labels, 2, 0.0, 0.0)
    coded = inversion.EmbeddingConditioner(codes, group_labels, 2, 0.0, 0.0, to_cond)
    cond = coded(labels, torch.Generator().manual_seed(0))
    assert torch.equal(cond, to_cond(plain(labels, torch.Generator().manual_seed(0)), labels))
    assert torch.allclose(coded.null, to_cond(codes, group_labels).mean(0))


def test_sampling_with_lambda_0_reproduces_the_embeddings_own_samples(trained, tmp_path):
    runtime, params, *_ = trained
    run_inversion(trained, tmp_path)
    p = dataclasses.replace(params, dinv=dataclasses.replace(params.dinv, noise_scale=0.0, interpolation=0.0))
    sample_fn, settings = inversion.load_sampler(tmp_path / "dinv.pt", runtime, p)
    sample_fn.progress = False
    assert settings["sampler"] == "ddim" and settings["steps"] == 10 and settings["noise_scale"] == 0.0
    labels = torch.tensor([0, 1, 2, 2])
    x = sample_fn(labels, torch.Generator().manual_seed(5))
    # redo by hand: the same generator draws the vectors, then the start noise
    gen = torch.Generator().manual_seed(5)
    cond = sample_fn.conditioner(labels, gen)
    again = sample_fn.sample_vectors(cond, gen, sample_fn.conditioner.null)
    assert torch.equal(x, again)
    vectors = load_checkpoint(tmp_path / "dinv.pt")["trainable"]["embeddings"]["weight"]
    assert all(any(torch.equal(c, v) for v in vectors) for c in cond)


def test_sampler_refuses_embeddings_of_another_diffusion_model(trained, tmp_path):
    runtime, params, *_ = trained
    run_inversion(trained, tmp_path)
    state = load_checkpoint(tmp_path / "dinv.pt")
    state["diffusion_sha256"] = "0" * 64
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(StorageError, match="re-run the `invert` stage"):
        inversion.load_sampler(tmp_path / "other.pt", runtime, params)


@pytest.mark.parametrize("code_dim", [0, 4])
def test_the_conditioner_gives_vectors_on_the_nets_device(code_dim):
    """sample@dinv on CUDA failed in EmbeddingConditioner (vectors kept on the CPU, the U-Net on the GPU). A net on
    the `meta` device stands in for the GPU: every tensor the conditioner hands the sampler must be where the net is
    (code_dim 0 hands back the CPU vectors themselves, which the sampler moves with the noise)."""
    net = UNet(UNetConfig(channels=1, num_classes=3, image_size=16, base_channels=8, channel_mult=[1, 2],
                          num_res_blocks=1, attn_resolutions=[], code_dim=code_dim)).to("meta")
    space = inversion.ConditionSpace(net)
    group_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    conditioner = inversion.EmbeddingConditioner(torch.randn(6, space.dim), group_labels, 3, 0.1, 0.5, space.to_cond)
    cond = conditioner(torch.tensor([0, 1, 2, 2]), torch.Generator().manual_seed(0))
    want = "meta" if code_dim else "cpu"
    assert cond.shape == (4, net.cond_dim) and cond.device.type == want
    assert conditioner.null.device.type == want
