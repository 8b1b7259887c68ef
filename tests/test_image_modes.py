"""Image folders in any PIL mode: the colour mode comes from the whole folder, 16-bit files are scaled (not
clipped), transparency is composited onto black, and what was converted is logged and kept in meta.json."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, SMOKE, set_key
from synthaug.data.real import DatasetError, load_dataset

SIZE = 8


def gray16(value: int) -> Image.Image:
    return Image.fromarray(np.full((SIZE, SIZE), value, np.uint16))  # mode I;16, as a 16-bit PNG opens


def rgb(value: tuple[int, int, int]) -> Image.Image:
    return Image.fromarray(np.full((SIZE, SIZE, 3), value, np.uint8))


def rgba(value: tuple[int, int, int, int]) -> Image.Image:
    return Image.fromarray(np.full((SIZE, SIZE, 4), value, np.uint8))


def folder(root: Path, images: dict[str, list[Image.Image]]) -> Path:
    """root/train/<class>/<i>.png for each class's images."""
    for c, ims in images.items():
        (root / "train" / c).mkdir(parents=True)
        for i, im in enumerate(ims):
            im.save(root / "train" / c / f"{i}.png")
    return root


def pixels(ds) -> dict[tuple[int, ...], int]:
    """Every distinct pixel value of the training images -> how many images hold it (images are constant)."""
    out: dict = {}
    for im in np.concatenate([ds.train.images, ds.test.images]):
        key = tuple(int(v) for v in im[0, 0])
        out[key] = out.get(key, 0) + 1
    return out


def test_16_bit_gray_folder_is_scaled_not_clipped(tmp_path, caplog):
    """Before: PIL's convert("L") clipped at 255, so 98.9 % of a 0..65535 ramp came out white."""
    root = folder(tmp_path, {"a": [gray16(0), gray16(32768), gray16(65535)] * 2, "b": [gray16(16384)] * 6})
    with caplog.at_level(logging.INFO, logger="synthaug"):
        ds = load_dataset("imagefolder", str(root), SIZE)
    assert ds.train.images.shape[3] == 1 and ds.source["mode"] == "L"
    assert pixels(ds) == {(0,): 2, (128,): 2, (255,): 2, (64,): 6}
    assert ds.source["file_modes"] == {"I;16": 12}
    assert ds.source["converted"] == {"I;16 (16-bit): 0..65535 scaled to 0..255": 12}
    assert "'I;16 (16-bit): 0..65535 scaled to 0..255': 12" in caplog.text


def test_one_gray_16_bit_file_first_does_not_turn_an_rgb_folder_gray(tmp_path):
    """Before: the first file of the first class alone decided the mode of the whole dataset."""
    root = folder(tmp_path, {"a": [gray16(65535), rgb((200, 10, 10)), rgb((200, 10, 10))],
                             "b": [rgb((10, 200, 10))] * 3})
    ds = load_dataset("imagefolder", str(root), SIZE)
    assert ds.source["mode"] == "RGB" and ds.train.images.shape[3] == 3
    assert pixels(ds) == {(255, 255, 255): 1, (200, 10, 10): 2, (10, 200, 10): 3}
    assert ds.source["file_modes"] == {"I;16": 1, "RGB": 5}


def test_transparency_is_composited_onto_black(tmp_path):
    root = folder(tmp_path, {"a": [rgba((255, 255, 255, 0)), rgba((200, 100, 50, 255))],
                             "b": [rgba((255, 255, 255, 128)), rgb((1, 2, 3))]})
    ds = load_dataset("imagefolder", str(root), SIZE)
    assert pixels(ds) == {(0, 0, 0): 1, (200, 100, 50): 1, (128, 128, 128): 1, (1, 2, 3): 1}
    assert ds.source["converted"] == {"RGBA (alpha): composited onto black": 3}


def test_float_image_is_refused_naming_it(tmp_path):
    root = folder(tmp_path, {"a": [rgb((1, 1, 1))] * 2, "b": [rgb((2, 2, 2))] * 2})
    Image.fromarray(np.full((SIZE, SIZE), 0.5, np.float32)).save(root / "train" / "b" / "x.tiff")
    with pytest.raises(DatasetError, match=r"train/b/x.tiff: float image \(mode F\) has no defined value range"):
        load_dataset("imagefolder", str(root), SIZE)


def test_prepare_records_the_conversion_in_meta_and_log(tmp_path):
    """The real command: exit 0, meta.json names the colour mode and what was converted, the log says it."""
    root = folder(tmp_path / "images", {"a": [gray16(65535)] + [rgb((9, 9, 9))] * 4, "b": [rgba((9, 9, 9, 255))] * 5})
    ws = tmp_path / "ws"
    ws.mkdir()
    d = yaml.safe_load(SMOKE.read_text())
    for k, v in {"dataset.name": "imagefolder", "dataset.root": str(root), "dataset.image_size": 8}.items():
        set_key(d, k, v)
    (ws / "params.yaml").write_text(yaml.safe_dump(d))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(ws), SYNTHAUG_THREADS="1", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-m", "synthaug", "prepare"], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = json.loads((ws / "data/real/meta.json").read_text())["source"]
    assert source["mode"] == "RGB" and source["file_modes"] == {"I;16": 1, "RGB": 4, "RGBA": 5}
    converted = {"I;16 (16-bit): 0..65535 scaled to 0..255": 1, "RGBA (alpha): composited onto black": 5}
    assert source["converted"] == converted
    assert f"converted: {converted}" in proc.stderr
