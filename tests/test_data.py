"""Tests of the real-data layer: dataset loaders, prepared npz files and nested fractions."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthaug.data import real
from synthaug.data.fractions import (generator_indices, load_fractions, nested_fractions, save_fractions,
                                     subset_indices,
                                     stratified_holdout)
from synthaug.data.real import (DatasetError, RealDataset, RealSplit, load_dataset, load_meta,
                                load_prepared, read_idx, write_prepared)
from synthaug.core.storage import save_npz

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- Fashion-MNIST / IDX
def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_fashion(root: Path, n_train=12, n_test=5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(1, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": (np.arange(n_train) % 10).astype(np.uint8),
              "test_x": rng.integers(1, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": (np.arange(n_test) % 10).astype(np.uint8)}
    # train files gzipped, test files plain: both forms are accepted
    write_idx(root / "train-images-idx3-ubyte", arrays["train_x"], gz=True)
    write_idx(root / "train-labels-idx1-ubyte", arrays["train_y"], gz=True)
    write_idx(root / "t10k-images-idx3-ubyte", arrays["test_x"], gz=False)
    write_idx(root / "t10k-labels-idx1-ubyte", arrays["test_y"], gz=False)
    return arrays


def test_fashion_idx_gz_and_plain_padded_to_32(tmp_path):
    arrays = make_fashion(tmp_path)
    ds = load_dataset("fashion_mnist", str(tmp_path), 32)
    assert ds.train.images.shape == (12, 32, 32, 1) and ds.test.images.shape == (5, 32, 32, 1)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int64
    # padded, not resized: original pixels in the middle, zeros around them
    assert np.array_equal(ds.train.images[:, 2:30, 2:30, 0], arrays["train_x"])
    assert ds.train.images[:, :2].max() == 0 and ds.train.images[:, :, 30:].max() == 0
    assert np.array_equal(ds.test.labels, arrays["test_y"])
    assert len(ds.class_names) == 10
    assert set(ds.source["sha256"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}


def test_fashion_other_size_resizes(tmp_path):
    make_fashion(tmp_path)
    assert load_dataset("fashion_mnist", str(tmp_path), 16).train.images.shape == (12, 16, 16, 1)


def test_idx_truncated_plain_and_gz(tmp_path):
    arr = np.zeros((3, 28, 28), np.uint8)
    p = tmp_path / "imgs-idx3-ubyte"
    p.write_bytes(idx_bytes(arr)[:-10])
    with pytest.raises(DatasetError, match="imgs-idx3-ubyte: truncated"):
        read_idx(p, 3)
    g = tmp_path / "imgs-idx3-ubyte.gz"
    g.write_bytes(gzip.compress(idx_bytes(arr))[:-12])
    with pytest.raises(DatasetError, match=r"imgs-idx3-ubyte\.gz"):
        read_idx(g, 3)


def test_idx_wrong_magic(tmp_path):
    p = tmp_path / "labels-idx1-ubyte"
    p.write_bytes(b"\x00\x00\x08\x03" + idx_bytes(np.zeros(5, np.uint8))[4:])
    with pytest.raises(DatasetError, match="labels-idx1-ubyte: wrong IDX magic") as e:
        read_idx(p, 1)
    assert "\n" not in str(e.value)


def test_fashion_truncated_file_named_via_loader(tmp_path):
    make_fashion(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte: truncated"):
        load_dataset("fashion_mnist", str(tmp_path), 32)


def test_fashion_count_mismatch(tmp_path):
    make_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte: 4 labels .* 5 images"):
        load_dataset("fashion_mnist", str(tmp_path), 32)


def test_fashion_partial_files_names_missing(tmp_path):
    make_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*missing"):
        load_dataset("fashion_mnist", str(tmp_path), 32)


def test_fashion_absent_and_download_fails(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(real, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", str(tmp_path / "nothing"), 32)


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion_mnist", None, 32)
    assert ds.train.images.shape == (60000, 32, 32, 1) and ds.test.images.shape == (10000, 32, 32, 1)
    assert len(ds.class_names) == 10
    assert np.bincount(ds.train.labels).tolist() == [6000] * 10


# ---------------------------------------------------------------- digits, unknown name
def test_digits():
    ds = load_dataset("digits", None, 16)
    assert ds.train.images.shape == (1438, 16, 16, 1) and ds.test.images.shape == (359, 16, 16, 1)
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.train.images.max() == 255 and ds.train.images.dtype == np.uint8
    assert set(np.unique(ds.test.labels)) == set(range(10))
    again = load_dataset("digits", None, 16)
    assert np.array_equal(again.test.labels, ds.test.labels)


def test_unknown_name_and_bad_size():
    with pytest.raises(DatasetError, match="known names are fashion_mnist, digits"):
        load_dataset("mnist", None, 32)
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset("digits", None, 0)


# ---------------------------------------------------------------- CUB-200-2011
CUB_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def make_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, labels, split, boxes = [], [], [], []
    iid = 0
    for c, name in enumerate(classes):
        (base / "images" / name).mkdir(parents=True)
        for j in range(3):
            iid += 1
            im = Image.new("RGB", (48, 40), (128, 128, 128))
            im.paste(CUB_COLORS[c], (10, 8, 30, 28))  # the bird: a coloured box
            rel = f"{name}/{name.split('.')[1]}_{j:04d}.jpg"
            im.save(base / "images" / rel, quality=95)
            images.append(f"{iid} {rel}")
            labels.append(f"{iid} {c + 1}")
            split.append(f"{iid} {1 if j < 2 else 0}")
            boxes.append(f"{iid} 10.0 8.0 20.0 20.0")
    for fname, rows in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("bounding_boxes.txt", boxes),
                        ("classes.txt", [f"{i + 1} {n}" for i, n in enumerate(classes)])):
        (base / fname).write_text("\n".join(rows) + "\n")
    return base


def test_cub200_crops_and_official_split(tmp_path):
    make_cub(tmp_path)
    ds = load_dataset("cub200", str(tmp_path), 16)
    assert ds.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert ds.train.images.shape == (6, 16, 16, 3) and ds.test.images.shape == (3, 16, 16, 3)
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 2, 2] and ds.test.labels.tolist() == [0, 1, 2]
    for im, lab in zip(ds.train.images, ds.train.labels):  # cropped to the box: all bird colour, no grey
        mean = im.reshape(-1, 3).mean(0)
        assert mean.argmax() == lab and mean.max() > 180 and np.delete(mean, lab).max() < 40
    assert "bounding_boxes.txt" in ds.source["sha256"]


def test_cub200_missing_file_and_image(tmp_path):
    base = make_cub(tmp_path)
    (base / "bounding_boxes.txt").unlink()
    with pytest.raises(DatasetError, match="bounding_boxes.txt: missing"):
        load_dataset("cub200", str(base), 16)
    base = make_cub(tmp_path / "b")
    victim = next((base / "images").rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(DatasetError, match=victim.name):
        load_dataset("cub200", str(base), 16)


# ---------------------------------------------------------------- CIFAR-10 official batches
def make_cifar(root: Path) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    made = {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 2).tolist()
        made["test" if name == "test_batch" else "train"].append(data)
        raw = pickle.dumps({b"batch_label": name.encode(), b"data": data, b"labels": labels}, protocol=2)
        if name == "data_batch_1":  # as written by numpy 1.x, like the official files
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)  # official layout: a dict with bytes keys
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}, f, protocol=2)
    return {k: np.concatenate(v) for k, v in made.items()}


def test_cifar10_batches_folder(tmp_path):
    made = make_cifar(tmp_path)
    ds = load_dataset("cifar10", str(tmp_path), 32)
    assert ds.train.images.shape == (10, 32, 32, 3) and ds.test.images.shape == (2, 32, 32, 3)
    assert ds.class_names[0] == "class0" and len(ds.class_names) == 10
    # rows are 1024 R, then 1024 G, then 1024 B values
    assert ds.train.images[0, 0, 0].tolist() == [made["train"][0, 0], made["train"][0, 1024],
                                                  made["train"][0, 2048]]
    assert np.array_equal(ds.test.images[1, :, :, 2].reshape(-1), made["test"][1, 2048:])


def test_cifar10_rejects_foreign_pickle(tmp_path):
    make_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": print}, f)
    with pytest.raises(DatasetError, match="test_batch: not a CIFAR-10 python batch"):
        load_dataset("cifar10", str(tmp_path), 32)


# ---------------------------------------------------------------- image folder
def make_folder(root: Path, splits=("train", "test"), mode="RGB", n=5) -> Path:
    for split in splits:
        for c, color in (("cat", 40), ("dog", 200)):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new(mode, (12, 10), color if mode == "L" else (color, i, 0)).save(d / f"{i}.png")
    return root


def test_imagefolder_train_test(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")  # ignored: not an image type
    ds = load_dataset("imagefolder", str(tmp_path), 8)
    assert ds.class_names == ["cat", "dog"]
    assert ds.train.images.shape == (10, 8, 8, 3) and ds.test.images.shape == (10, 8, 8, 3)
    assert ds.train.labels.tolist() == [0] * 5 + [1] * 5
    assert ds.train.images[7, 0, 0, 0] == 200


def test_imagefolder_gray_and_split(tmp_path):
    make_folder(tmp_path, splits=("train",), mode="L", n=10)
    ds = load_dataset("imagefolder", str(tmp_path), 8)
    assert ds.train.images.shape == (16, 8, 8, 1) and ds.test.images.shape == (4, 8, 8, 1)
    assert np.bincount(ds.test.labels).tolist() == [2, 2]


def test_imagefolder_errors(tmp_path):
    root = make_folder(tmp_path / "a")
    (root / "train" / "bird").mkdir()
    with pytest.raises(DatasetError, match=r"train/bird: empty class folder"):
        load_dataset("imagefolder", str(root), 8)
    root = make_folder(tmp_path / "b")
    (root / "test" / "dog" / "3.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"test/dog/3\.png: unreadable image") as e:
        load_dataset("imagefolder", str(root), 8)
    assert "\n" not in str(e.value)
    root = make_folder(tmp_path / "c")
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    (root / "test" / "dog").rmdir()
    with pytest.raises(DatasetError, match="class folders differ"):
        load_dataset("imagefolder", str(root), 8)


# ---------------------------------------------------------------- prepared files
def tiny_dataset() -> RealDataset:
    rng = np.random.default_rng(0)
    split = lambda n: RealSplit(rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), np.arange(n) % 3)  # noqa: E731
    return RealDataset("tiny", ["a", "b", "c"], split(9), split(6), {"what": "test"})


def test_prepared_round_trip(tmp_path):
    ds = tiny_dataset()
    meta = write_prepared(ds, tmp_path / "real")
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["meta.json", "test.npz", "train.npz"]
    assert meta["num_classes"] == 3 and meta["channels"] == 1 and meta["image_size"] == 8
    assert meta["counts"] == {"train": 9, "test": 6} and meta["class_counts"]["test"] == [2, 2, 2]
    assert load_meta(tmp_path / "real") == meta
    for name in ("train", "test"):
        back = load_prepared(tmp_path / "real", name)
        orig = getattr(ds, name)
        assert np.array_equal(back.images, orig.images) and np.array_equal(back.labels, orig.labels)
        assert back.labels.dtype == np.int64


def test_prepared_label_out_of_range(tmp_path):
    ds = tiny_dataset()
    write_prepared(ds, tmp_path)
    save_npz(tmp_path / "train.npz", images=ds.train.images, labels=np.array([0, 1, 2, 3, 0, 1, 2, 0, 1]))
    with pytest.raises(DatasetError, match=r"train\.npz: label 3 out of range"):
        load_prepared(tmp_path, "train")
    save_npz(tmp_path / "train.npz", images=ds.train.images[:4], labels=ds.train.labels[:4])
    with pytest.raises(DatasetError, match="train.npz: 4 items but meta.json counts 9"):
        load_prepared(tmp_path, "train")
    labels = ds.train.labels.copy()
    labels[[0, 1]] = labels[[1, 0]]  # same count, same range, different file
    save_npz(tmp_path / "train.npz", images=ds.train.images, labels=labels)
    with pytest.raises(DatasetError, match="train.npz: sha256 differs from meta.json"):
        load_prepared(tmp_path, "train")
    bad = RealDataset("tiny", ["a"], ds.train, ds.test, {})
    with pytest.raises(DatasetError, match="out of range"):
        write_prepared(bad, tmp_path / "x")


def test_prepared_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="meta.json: file not found"):
        load_prepared(tmp_path, "train")


# ---------------------------------------------------------------- fractions
LABELS = np.repeat(np.arange(3), [100, 40, 7])


def test_fractions_nested_stratified_deterministic():
    fr = [0.1, 0.25, 0.5, 1.0]
    d = nested_fractions(LABELS, fr, seed=3)
    assert list(d) == ["0.1", "0.25", "0.5", "1.0"]
    assert d["1.0"] == list(range(len(LABELS)))
    for small, big in zip(fr, fr[1:]):
        assert set(d[str(small)]) <= set(d[str(big)])
    for f in fr:
        idx = d[str(f)]
        assert idx == sorted(idx)
        counts = np.bincount(LABELS[idx], minlength=3).tolist()
        assert counts == [max(1, int(np.floor(f * n + 0.5))) for n in (100, 40, 7)]
    assert d == nested_fractions(LABELS, fr, seed=3)
    assert d["0.1"] != nested_fractions(LABELS, fr, seed=4)["0.1"]


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, float("nan")])
def test_fractions_reject_bad(bad):
    with pytest.raises(ValueError, match=f"fraction {bad!r}".replace("(", r"\(").replace(".", r"\.")):
        nested_fractions(LABELS, [0.5, bad], seed=0)


def test_fractions_save_load(tmp_path):
    d = nested_fractions(LABELS, [0.1, 1.0], seed=0)
    save_fractions(tmp_path / "fractions.json", d, {"seed": 0})
    assert load_fractions(tmp_path / "fractions.json") == d
    assert load_fractions(tmp_path / "fractions.json", with_meta=True)[1] == {"seed": 0}
    save_fractions(tmp_path / "bad.json", {"0.1": [3, 1]}, {})
    with pytest.raises(DatasetError, match="bad.json: fraction 0.1: indices must be sorted"):
        load_fractions(tmp_path / "bad.json")


def test_generator_subset_is_the_listed_fraction_whatever_else_is_listed():
    """The generators' subset equals data/fractions/study<K>.json's entry for generator_fraction, however many other
    fractions are prepared beside it, and lies inside every larger fraction (so mixed arms contain it)."""
    for others in ([0.1, 1.0], [0.05, 0.25, 0.5, 1.0], [0.25]):
        d = nested_fractions(LABELS, [*others, 0.25], seed=5)
        assert subset_indices(LABELS, 0.25, seed=5).tolist() == d["0.25"]
        assert generator_indices(LABELS, 0.25, seed=5).tolist() == d["0.25"]
        for f in others:
            if f >= 0.25:
                assert set(d["0.25"]) <= set(d[str(f)])
    capped = generator_indices(LABELS, 0.5, seed=5, cap=30)  # smoke-size cap: a class-balanced part of the subset
    assert set(capped) <= set(subset_indices(LABELS, 0.5, seed=5))
    assert np.bincount(LABELS[capped]).tolist() == [10, 10, 4]  # 10 a class, or all of a smaller class


def test_prepared_npz_bytes_depend_only_on_the_arrays(tmp_path):
    """Re-running `prepare` leaves byte-identical files, so DVC re-runs nothing downstream of data/real."""
    x = np.arange(600, dtype=np.uint8).reshape(6, 10, 10, 1)
    save_npz(tmp_path / "a.npz", images=x, labels=np.arange(6))
    first = (tmp_path / "a.npz").read_bytes()
    import time

    time.sleep(2.1)  # zip timestamps have a 2 s resolution
    save_npz(tmp_path / "a.npz", images=x, labels=np.arange(6))
    assert (tmp_path / "a.npz").read_bytes() == first
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert np.array_equal(z["images"], x) and z["labels"].tolist() == list(range(6))


def test_stratified_holdout():
    tr, te = stratified_holdout(LABELS, 0.2, seed=0)
    assert np.bincount(LABELS[te]).tolist() == [20, 8, 1]
    assert not set(tr) & set(te) and len(tr) + len(te) == len(LABELS)
    assert np.array_equal(te, stratified_holdout(LABELS, 0.2, seed=0)[1])
