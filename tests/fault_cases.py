"""The fault catalogue's cases: each bad input or fault, the command that meets it, and what the user must see.

`tests/test_fault_catalogue.py` runs them (see its docstring for what every case must satisfy); README's
"Bad inputs and faults" table is made from this list.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from PIL import Image

from conftest import SMOKE

# ---------------------------------------------------------------- workspace builders
def prepared_template(root: Path) -> Path:
    """A workspace as after `prepare` (digits 32x32), `train@vae`, `sample@vae` and `fid_ref` of the smoke
    profile; built in-process with the stages' own writers (seconds, not minutes)."""
    import torch

    from synthaug.data.fractions import nested_fractions, save_fractions
    from synthaug.data.real import load_dataset, write_prepared
    from synthaug.data.shards import write_shards
    from synthaug.metrics.fid import Stats, save_stats
    from synthaug.nets.vae import ConditionalVAE, VAEConfig
    from synthaug.storage import save_checkpoint

    smoke = yaml.safe_load(SMOKE.read_text())
    ds = load_dataset("digits", None, 32)
    real = root / "data" / "real"
    write_prepared(ds, real)
    wanted = sorted(set(smoke["fractions"]) | set(smoke["real_fractions"]) | {smoke["generator_fraction"]})
    save_fractions(root / "data" / "fractions.json", nested_fractions(ds.train.labels, wanted, 0),
                   {"seed": 0, "fractions": wanted})
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    write_shards(root / "data" / "synthetic" / "vae", rng.integers(0, 256, (300, 32, 32, 1), dtype=np.uint8),
                 labels, 128, 10, extra={"source": "vae"})
    cfg = VAEConfig(channels=1, num_classes=10, image_size=32, latent_dim=8, base_channels=8)
    torch.manual_seed(0)
    save_checkpoint(root / "models" / "vae" / "checkpoint.pt",
                    {"step": 44, "trainable": {"model": ConditionalVAE(cfg).state_dict()}, "config": cfg.to_dict(),
                     "family": "vae", "fingerprint": "x", "history": []})
    save_stats(root / "data" / "fid_ref.npz", Stats(np.zeros(64), np.eye(64), 200, 64),
               {"split": "test", "num_images": 200, "dims": 64, "dataset": "digits"})
    return root


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _fashion(ws: Path) -> Path:
    """Fashion-MNIST IDX files (a tiny 20/10 version) in ws/../fashion, referenced by dataset.root."""
    root = ws.parent / f"{ws.name}-fashion"
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(rng.integers(0, 256, (n, 28, 28)))))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(np.arange(n) % 10))
    return root


def imagefolder(ws: Path, n: int = 4, size: int = 12, noise: bool = False) -> Path:
    root = ws.parent / f"{ws.name}-images"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(n):
            px = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if noise else np.full((size, size, 3), 40 * i,
                                                                                              np.uint8)
            Image.fromarray(px).save(root / "train" / c / f"{i}.png")
    return root


# mutations: ws -> params changes (the workspace is changed in place)
def fashion_missing_file(ws):
    root = _fashion(ws)
    (root / "t10k-labels-idx1-ubyte").unlink()
    return {"dataset.name": "fashion_mnist", "dataset.root": str(root)}


def fashion_truncated_file(ws):
    root = _fashion(ws)
    p = root / "t10k-images-idx3-ubyte"
    p.write_bytes(_idx(np.zeros((10, 28, 28)))[:1000])
    return {"dataset.name": "fashion_mnist", "dataset.root": str(root)}


def imagefolder_empty_class(ws):
    root = imagefolder(ws)
    (root / "train" / "bird").mkdir()
    return {"dataset.name": "imagefolder", "dataset.root": str(root)}


def imagefolder_unreadable_image(ws):
    root = imagefolder(ws)
    (root / "train" / "dog" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return {"dataset.name": "imagefolder", "dataset.root": str(root)}


def truncate(rel: str, keep: float = 0.5):
    def mutate(ws):
        p = ws / rel
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])
    return mutate


def remove(rel: str):
    def mutate(ws):
        p = ws / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return mutate


def real_labels_out_of_range(ws):
    from synthaug.storage import load_npz, save_npz
    p = ws / "data/real/train.npz"
    z = load_npz(p, ("images", "labels"))
    labels = z["labels"].copy()
    labels[5] = 10  # 10 classes: 0..9
    save_npz(p, images=z["images"], labels=labels)


def checkpoint_pickled_object(ws):
    """A checkpoint that would run a shell command if unpickled (weights_only=True must refuse it)."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {ws.parent / (ws.name + '-PWNED')}",))

    torch.save({"trainable": {"model": Payload()}}, ws / "models/vae/checkpoint.pt")


def checkpoint_other_architecture(ws):
    """The GAN's checkpoint copied over the VAE's (a plain dict, loads fine, wrong nets)."""
    import torch

    from synthaug.nets.gan import GANConfig, Generator
    from synthaug.storage import save_checkpoint
    cfg = GANConfig()
    save_checkpoint(ws / "models/vae/checkpoint.pt", {"trainable": {"G": Generator(cfg).state_dict()},
                                                     "config": cfg.to_dict(), "family": "gan", "step": 1})
    del torch


def vae_checkpoint_as_gan(ws):
    (ws / "models/gan").mkdir()
    shutil.copy(ws / "models/vae/checkpoint.pt", ws / "models/gan/checkpoint.pt")


def checkpoint_other_width(ws):
    """A VAE checkpoint whose weights are of another size than its config says (edited or mixed up files)."""
    from synthaug.nets.vae import ConditionalVAE, VAEConfig
    from synthaug.storage import load_checkpoint, save_checkpoint
    p = ws / "models/vae/checkpoint.pt"
    state = load_checkpoint(p)
    state["trainable"]["model"] = ConditionalVAE(VAEConfig(latent_dim=16, base_channels=8)).state_dict()
    save_checkpoint(p, state)


def tamper_shard(ws):
    p = ws / "data/synthetic/vae/shard-00001.npz"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))


def shard_labels_out_of_range(ws):
    """Shards whose manifest hashes match, but one label is 12 in a 10-class dataset (a foreign or buggy writer)."""
    from synthaug.data.shards import MANIFEST
    from synthaug.storage import load_npz, save_json, save_npz, sha256_file
    d = ws / "data/synthetic/vae"
    p = d / "shard-00000.npz"
    z = load_npz(p, ("images", "labels"))
    labels = z["labels"].copy()
    labels[0] = 12
    save_npz(p, images=z["images"], labels=labels)
    m = json.loads((d / MANIFEST).read_text())
    m["shards"][0]["sha256"] = sha256_file(p)
    save_json(d / MANIFEST, m)


def corrupt_manifest(ws):
    (ws / "data/synthetic/vae/manifest.json").write_text('{"count": 300, "shards": [')


def too_few_shards(ws):
    """Only 5 images per class were sampled: 50 images, FID at dims 64 needs 65."""
    from synthaug.data.shards import write_shards
    rng = np.random.default_rng(1)
    write_shards(ws / "data/synthetic/vae", rng.integers(0, 256, (50, 32, 32, 1), dtype=np.uint8),
                 np.repeat(np.arange(10), 5), 128, 10)


# Code run in the command's process before it starts (fault injection for faults we cannot cause for real).
NAN_LOSS = """
import synthaug.generators.vae as g
_loss = g.vae_loss
g.vae_loss = lambda *a: tuple(t * float("nan") for t in _loss(*a))  # the loss diverges at the first step
"""
DISK_FULL = """
import errno, numpy
def _full(f, *a, **k):  # part of the file reaches the disk, then the disk is full
    f.write(bytes(4096))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
numpy.lib.format.write_array = _full
"""
DISK_FULL_CHECKPOINT = """
import errno, io, torch
import synthaug.storage as st
class _Full(io.RawIOBase):  # torch.save's writes fail as on a full disk, after the first 2 kB
    def __init__(self, f): self.f, self.n = f, 0
    def writable(self): return True
    def write(self, b):
        self.n += len(b)
        if self.n > 2048: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(b)
    def flush(self): self.f.flush()
_Rec = st._RecordingWriter
st._RecordingWriter = lambda f: _Rec(_Full(f))
"""


@dataclass(frozen=True)
class Case:
    id: str
    fault: str
    args: tuple[str, ...]
    expect: str  # the error line contains this: it names the culprit (key, file, name)
    code: int  # 2 bad input, 1 runtime fault
    changes: dict[str, Any] = field(default_factory=dict)  # params.yaml keys changed from the smoke profile
    workspace: str = "empty"  # "empty": only params.yaml; "prepared": data/real, a VAE checkpoint, shards, fid_ref
    mutate: Callable | None = None  # changes the workspace; may return more params changes
    inject: str = ""
    env: dict[str, str] = field(default_factory=dict)
    covered: str = ""  # existing lower-level tests of the same fault ("" = new with this file)
    pending: str = ""  # the fix this case still needs (in files owned elsewhere): xfail(strict) until made


P = "prepared"
CATALOGUE: list[Case] = [
    # -- params.yaml, validated whole before any work
    Case("params-unknown-key", "unknown params key", ("prepare",), "params.yaml: unknown key 'vae.epochz' (did you "
         "mean 'vae.epochs'?)", 2, {"vae.epochz": 4}, covered="test_config, test_cli_errors"),
    Case("params-wrong-type", "wrong type", ("train", "vae"), "vae.epochs: expected int, got str 'ten'", 2,
         {"vae.epochs": "ten"}, covered="test_config, test_cli_errors"),
    Case("params-fraction-range", "fraction outside (0, 1]", ("classify", "real", "--fraction", "0.5"),
         "fractions[1]: a fraction must be in (0, 1], got 1.5", 2, {"fractions": [0.5, 1.5]},
         covered="test_config, test_cli_errors"),
    Case("params-negative-beta", "negative beta", ("sample", "vae"), "beta: must be >= 0, got -1.0", 2,
         {"beta": -1.0}, covered="test_config, test_cli_errors"),
    Case("params-steps-zero", "training steps out of range", ("train", "gan"), "gan.steps: must be >= 1, got 0", 2,
         {"gan.steps": 0}),
    Case("params-batch-size-range", "batch size out of range", ("classify", "real", "--fraction", "0.5"),
         "classify.model.batch_size: must be >= 2, got 1", 2, {"classify.model.batch_size": 1}),
    Case("params-batch-larger-than-data", "batch size larger than the training set", ("train", "vae"),
         "vae.batch_size: 5000 exceeds the 721 training images", 2, {"vae.batch_size": 5000}, P),
    Case("params-fid-count", "FID sample count not above its dims", ("fid-ref",),
         "fid.num_images: FID with dims=64 needs at least 65 images", 2, {"fid.num_images": 64},
         covered="test_config"),
    Case("params-missing-file", "params file missing", ("prepare", "--params", "nope.yaml"),
         "nope.yaml: params file not found", 2, covered="test_config"),
    Case("params-invalid-yaml", "params file not YAML", ("prepare",), "params.yaml: not valid YAML at line", 2,
         mutate=lambda ws: (ws / "params.yaml").write_text("seed: 0\nbeta: [1.0,\n"), covered="test_config"),
    Case("params-no-gpu", "device cuda on a machine without GPU", ("train", "vae"),
         "device 'cuda' requested but no CUDA GPU is available", 2, {"device": "cuda"}),
    # -- names on the command line
    Case("unknown-dataset", "unknown dataset name", ("fid-ref",), "dataset.name: must be one of", 2,
         {"dataset.name": "mnist"}, covered="test_config, test_cli_errors, test_data"),
    Case("unknown-family", "unknown generator family", ("train", "nope"), "unknown generator family 'nope'", 2,
         covered="test_cli_errors"),
    Case("unknown-source", "unknown source name", ("fid", "nope"), "unknown source 'nope'", 2,
         covered="test_cli_errors (sample)"),
    Case("unknown-source-in-arm", "unknown source in a classifier arm", ("classify", "synth:nope"),
         "arm 'synth:nope': source 'nope' is not in `sources`", 2, covered="test_cli_errors"),
    Case("fraction-not-in-arm", "--fraction the arm does not run at", ("classify", "real+vae", "--fraction", "0.25"),
         "--fraction 0.25: arm 'real+vae' does not run there", 2, workspace=P),
    Case("fraction-not-prepared", "a fraction `prepare` has not written", ("classify", "real", "--fraction", "0.3"),
         "--fraction 0.3: not among the prepared fractions", 2, {"real_fractions": [0.25, 0.3]}, workspace=P),
    Case("params-generator-leak", "mixed arms below the generators' subset", ("classify", "real+vae"),
         "fractions: 0.25 is below generator_fraction 0.5", 2, {"fractions": [0.25, 0.5]}),
    # -- dataset files
    Case("dataset-file-missing", "a Fashion-MNIST file missing", ("prepare",), "t10k-labels-idx1-ubyte(.gz): missing",
         2, mutate=fashion_missing_file, covered="test_data"),
    Case("dataset-file-truncated", "a truncated Fashion-MNIST file", ("prepare",),
         "t10k-images-idx3-ubyte: truncated or oversized IDX", 2, mutate=fashion_truncated_file, covered="test_data"),
    Case("imagefolder-empty-class", "image folder with an empty class", ("prepare",),
         "train/bird: empty class folder", 2, mutate=imagefolder_empty_class, covered="test_data"),
    Case("imagefolder-unreadable", "image folder with an unreadable image", ("prepare",),
         "train/dog/2.png: unreadable image", 2, mutate=imagefolder_unreadable_image, covered="test_data"),
    # -- files between stages
    Case("prepared-missing", "stage run before `prepare`", ("train", "vae"),
         "data/real: not found (run the `prepare` stage first", 2),
    Case("prepared-truncated", "truncated prepared split", ("train", "vae"),
         "data/real/train.npz: corrupt or truncated npz", 2, workspace=P, mutate=truncate("data/real/train.npz"),
         covered="test_storage"),
    Case("prepared-labels-range", "labels outside the class range (real split)", ("train", "vae"),
         "data/real/train.npz: label 10 out of range [0, 10)", 2, workspace=P, mutate=real_labels_out_of_range,
         covered="test_data"),
    Case("checkpoint-missing", "sampling before training", ("sample", "vae"),
         "models/vae/checkpoint.pt: not found (run the `train@vae` stage first", 2, workspace=P,
         mutate=remove("models/vae")),
    Case("invert-before-diffusion", "inversion before the diffusion model exists", ("invert",),
         "models/diffusion/checkpoint.pt: not found (run the `train@diffusion` stage first", 2, workspace=P),
    Case("dinv-before-invert", "sampling dinv before inversion", ("sample", "dinv"),
         "models/dinv/checkpoint.pt: not found (run the `invert` stage first", 2, workspace=P),
    Case("train-derived-family", "`train dinv` (made by `invert`, not trained)", ("train", "dinv"),
         "unknown generator family 'dinv'", 2),
    Case("checkpoint-truncated", "truncated checkpoint", ("sample", "vae"),
         "models/vae/checkpoint.pt: corrupt, truncated or unsafe checkpoint", 2, workspace=P,
         mutate=truncate("models/vae/checkpoint.pt"), covered="test_storage"),
    Case("checkpoint-pickled-code", "checkpoint holding pickled code", ("sample", "vae"),
         "models/vae/checkpoint.pt: corrupt, truncated or unsafe checkpoint (UnpicklingError)", 2, workspace=P,
         mutate=checkpoint_pickled_object, covered="test_storage"),
    Case("checkpoint-other-family", "checkpoint of another architecture (GAN file as VAE)", ("sample", "vae"),
         "models/vae/checkpoint.pt: holds a 'gan' model, not 'vae'", 2, workspace=P,
         mutate=checkpoint_other_architecture),
    Case("checkpoint-other-family-gan", "checkpoint of another architecture (VAE file as GAN)", ("sample", "gan"),
         "models/gan/checkpoint.pt: holds a 'vae' model, not 'gan'", 2, workspace=P, mutate=vae_checkpoint_as_gan),
    Case("checkpoint-other-shape", "checkpoint weights of another size", ("sample", "vae"),
         "models/vae/checkpoint.pt: checkpoint does not match this architecture", 2, workspace=P,
         mutate=checkpoint_other_width, covered="test_storage"),
    Case("shard-sha256", "shard whose sha256 does not match its manifest", ("classify", "synth:vae"),
         "data/synthetic/vae/shard-00001.npz: sha256 does not match", 2, workspace=P, mutate=tamper_shard,
         covered="test_storage"),
    Case("shard-missing", "shard listed in the manifest but missing", ("fid", "vae"),
         "data/synthetic/vae/shard-00002.npz: file not found", 2, workspace=P,
         mutate=remove("data/synthetic/vae/shard-00002.npz"), covered="test_storage"),
    Case("shard-labels-range", "labels outside the class range (synthetic shards)", ("classify", "synth:vae"),
         "data/synthetic/vae: labels outside [0, 10) (found 0..12)", 2, workspace=P, mutate=shard_labels_out_of_range),
    Case("manifest-corrupt", "corrupt shard manifest", ("fid", "vae"),
         "data/synthetic/vae/manifest.json: not valid JSON", 2, workspace=P, mutate=corrupt_manifest,
         covered="test_storage"),
    Case("fid-too-few-samples", "fewer samples than FID needs", ("fid", "vae"),
         "FID at dims=64 needs at least dims+1 images (65) for a non-singular covariance, got 50", 2, workspace=P,
         mutate=too_few_shards, covered="test_fid"),
    Case("fid-ref-truncated", "truncated FID reference statistics", ("fid", "vae"),
         "data/fid_ref.npz: corrupt or truncated npz", 2, workspace=P, mutate=truncate("data/fid_ref.npz")),
    # -- runtime faults (exit 1)
    Case("nan-loss", "the loss becomes NaN (injected)", ("train", "vae"),
         "NonFiniteLossError: loss loss, recon, kl became nan at step 0", 1, workspace=P, inject=NAN_LOSS,
         covered="test_training, test_gan"),
    Case("disk-full-outputs", "disk full while writing the prepared data (ENOSPC injected)", ("prepare",),
         "data/real/train.npz: cannot write (No space left on device)", 1, workspace=P, inject=DISK_FULL),
    Case("disk-full-checkpoint", "disk full while writing a checkpoint (ENOSPC injected)", ("train", "vae"),
         "models/vae/checkpoint.pt: cannot write (No space left on device)", 1, {"vae.epochs": 1}, P,
         mutate=remove("models/vae"), inject=DISK_FULL_CHECKPOINT),
    Case("mlflow-unreachable", "MLFLOW_TRACKING_URI server unreachable", ("prepare",),
         "TrackingError: MLFLOW_TRACKING_URI=http://***@127.0.0.1:9 is unreachable", 1,
         env={"MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:9"}, covered="test_tracking"),
    Case("mlflow-bad-uri", "MLFLOW_TRACKING_URI of an unusable kind", ("prepare",),
         "TrackingError: cannot use MLflow store nosuch://store", 1, env={"MLFLOW_TRACKING_URI": "nosuch://store"}),
]
