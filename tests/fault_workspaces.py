"""The fault catalogue's workspaces and faults: the prepared workspace every "prepared" case starts from, the
mutations that break it (each `ws -> params changes or None`), and the code injected into a command's process
for faults that cannot be caused for real. `fault_cases.py` lists the cases that use them.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from PIL import Image

from conftest import SMOKE


# ---------------------------------------------------------------- workspace builders
def prepared_template(root: Path) -> Path:
    """A workspace as after `prepare` (digits 32x32), `train_vae@0`, `sample_vae@0` and `fid_ref` of the smoke
    profile (study seed 0's chain); built in-process with the stages' own writers (seconds, not minutes)."""
    import torch

    from synthaug.data.fractions import nested_fractions, save_fractions
    from synthaug.data.real import load_dataset, write_prepared
    from synthaug.data.shards import write_shards
    from synthaug.metrics.fid import Stats, save_stats
    from synthaug.nets.vae import ConditionalVAE, VAEConfig
    from synthaug.core.storage import save_checkpoint

    smoke = yaml.safe_load(SMOKE.read_text())
    ds = load_dataset("digits", None, 32)
    real = root / "data" / "real"
    write_prepared(ds, real)
    wanted = sorted(set(smoke["fractions"]) | set(smoke["real_fractions"]) | {smoke["generator_fraction"]})
    save_fractions(root / "data" / "fractions" / "study0.json", nested_fractions(ds.train.labels, wanted, 0),
                   {"seed": 0, "fractions": wanted, "generator_fraction": smoke["generator_fraction"]})
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    write_shards(root / "data" / "synthetic" / "study0" / "vae",
                 rng.integers(0, 256, (300, 32, 32, 1), dtype=np.uint8), labels, 128, 10, extra={"source": "vae"})
    cfg = VAEConfig(channels=1, num_classes=10, image_size=32, latent_dim=8, base_channels=8)
    torch.manual_seed(0)
    save_checkpoint(root / "models" / "study0" / "vae" / "checkpoint.pt",
                    {"step": 44, "trainable": {"model": ConditionalVAE(cfg).state_dict()}, "config": cfg.to_dict(),
                     "family": "vae", "fingerprint": "x", "history": []})
    n = smoke["fid"]["num_images"]
    save_stats(root / "data" / "fid_ref.npz", Stats(np.zeros(64), np.eye(64), n, 64),
               {"split": "test", "num_images": n, "dims": 64, "dataset": "digits", "precision": "fp32"},
               features=rng.normal(size=(n, 64)))
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


def imagefolder_several_bad_files(ws):
    root = imagefolder(ws)
    (root / "train" / "dog" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "train" / "cat" / "1.png").write_bytes(b"not an image at all")
    return {"dataset.name": "imagefolder", "dataset.root": str(root)}


def imagefolder_one_class(ws):
    root = imagefolder(ws)
    shutil.rmtree(root / "train" / "dog")
    return {"dataset.name": "imagefolder", "dataset.root": str(root)}


def imagefolder_float_image(ws):
    root = imagefolder(ws)
    Image.fromarray(np.full((12, 12), 0.5, np.float32)).save(root / "train" / "dog" / "x.tiff")
    return {"dataset.name": "imagefolder", "dataset.root": str(root)}


def drop_section(name: str):
    def mutate(ws):
        d = yaml.safe_load((ws / "params.yaml").read_text())
        del d[name]
        (ws / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return mutate


def grid_is_a_directory(ws):
    """A folder (with a file of the user's) where `sample vae` writes its grid PNG."""
    (ws / "reports/grids/study0/vae.png").mkdir(parents=True)
    (ws / "reports/grids/study0/vae.png/notes.txt").write_text("mine")


def corrupt_store(ws):
    """The workspace's own mlflow.db (no MLFLOW_TRACKING_URI), its first page garbled."""
    import sqlite3
    db = ws / "mlflow.db"
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("CREATE TABLE runs (run_uuid TEXT, name TEXT)")
        c.executemany("INSERT INTO runs VALUES (?, ?)", [(str(i), "x" * 100) for i in range(100)])
        c.commit()
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xa5" * 3996
    db.write_bytes(bytes(data))


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
    from synthaug.core.storage import load_npz, save_npz
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

    torch.save({"trainable": {"model": Payload()}}, ws / "models/study0/vae/checkpoint.pt")


def checkpoint_other_architecture(ws):
    """The GAN's checkpoint copied over the VAE's (a plain dict, loads fine, wrong nets)."""
    import torch

    from synthaug.nets.gan import GANConfig, Generator
    from synthaug.core.storage import save_checkpoint
    cfg = GANConfig()
    save_checkpoint(ws / "models/study0/vae/checkpoint.pt", {"trainable": {"G": Generator(cfg).state_dict()},
                                                            "config": cfg.to_dict(), "family": "gan", "step": 1})
    del torch


def vae_checkpoint_as_gan(ws):
    (ws / "models/study0/gan").mkdir()
    shutil.copy(ws / "models/study0/vae/checkpoint.pt", ws / "models/study0/gan/checkpoint.pt")


def checkpoint_other_width(ws):
    """A VAE checkpoint whose weights are of another size than its config says (edited or mixed up files)."""
    from synthaug.nets.vae import ConditionalVAE, VAEConfig
    from synthaug.core.storage import load_checkpoint, save_checkpoint
    p = ws / "models/study0/vae/checkpoint.pt"
    state = load_checkpoint(p)
    state["trainable"]["model"] = ConditionalVAE(VAEConfig(latent_dim=16, base_channels=8)).state_dict()
    save_checkpoint(p, state)


def tamper_shard(ws):
    p = ws / "data/synthetic/study0/vae/shard-00001.npz"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))


def edit_shard(change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]):
    """Rewrite the first VAE shard as change(images, labels) says, its manifest hash updated to match (a foreign
    or buggy writer, not a corrupt file)."""
    def mutate(ws):
        from synthaug.data.shards import MANIFEST
        from synthaug.core.storage import load_npz, save_json, save_npz, sha256_file
        d = ws / "data/synthetic/study0/vae"
        p = d / "shard-00000.npz"
        z = load_npz(p, ("images", "labels"))
        images, labels = change(z["images"].copy(), z["labels"].copy())
        save_npz(p, images=images, labels=labels)
        m = json.loads((d / MANIFEST).read_text())
        m["shards"][0]["sha256"] = sha256_file(p)
        save_json(d / MANIFEST, m)
    return mutate


def label_12(images, labels):
    labels[0] = 12  # in a 10-class dataset
    return images, labels


def corrupt_manifest(ws):
    (ws / "data/synthetic/study0/vae/manifest.json").write_text('{"count": 300, "shards": [')


def too_few_shards(ws):
    """Only 5 images per class were sampled: 50 images, FID at dims 64 needs 65."""
    from synthaug.data.shards import write_shards
    rng = np.random.default_rng(1)
    write_shards(ws / "data/synthetic/study0/vae", rng.integers(0, 256, (50, 32, 32, 1), dtype=np.uint8),
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
import synthaug.core.storage as st
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

READ_ONLY_STORE = """
import sqlite3
_connect = sqlite3.dbapi2.connect
def _read_only(database, *a, uri=False, **k):  # the store opens as a read-only mlflow.db does
    return _connect(f"file:{database}?mode=ro", *a, uri=True, **k)
sqlite3.dbapi2.connect = _read_only
"""
