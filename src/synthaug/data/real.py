"""Real datasets: load one of the known sources into uint8 NHWC arrays; write/read the prepared npz files.

Every bad input raises `DatasetError` with a one-line message naming the culprit file, folder or name.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthaug.data.errors import DatasetError  # noqa: F401 (raised here; importers find it here too)
from synthaug.data.fractions import stratified_holdout
from synthaug.data.image_files import GRAY_MODES, IMAGE_EXTS, open_image, peek_mode, resize_stack, to_8bit, to_array
from synthaug.core.storage import StorageError, load_json, load_npz, save_json, save_npz, sha256_file

KNOWN = ("fashion_mnist", "digits", "cifar10", "cub200", "imagefolder")
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
CACHE = Path(os.environ.get("SYNTHAUG_CACHE", Path.home() / ".cache" / "synthaug"))  # torchvision downloads


log = logging.getLogger("synthaug")


@dataclass
class RealSplit:
    images: np.ndarray  # uint8 [N,H,W,C], C=1 or 3
    labels: np.ndarray  # int64 [N]


@dataclass
class RealDataset:
    name: str
    class_names: list[str]
    train: RealSplit
    test: RealSplit
    source: dict = field(default_factory=dict)


def load_dataset(name: str, root: str | None, image_size: int) -> RealDataset:
    """Load dataset `name` (one of KNOWN) from `root` (None: its default place), images image_size^2."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise DatasetError(f"image_size: must be an integer >= 4, got {image_size!r}")
    if name not in KNOWN:
        raise DatasetError(f"dataset {name!r}: unknown; known names are {', '.join(KNOWN)}")
    ds = globals()[f"_load_{name}"](root, image_size)
    if len(ds.class_names) < 2:
        raise DatasetError(f"{ds.source.get('root', name)}: {len(ds.class_names)} class "
                           f"({', '.join(ds.class_names)}); a classification study needs at least 2")
    return ds


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Parse an IDX file (gzipped or not) of unsigned bytes with `ndim` big-endian dimensions, strictly."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: unreadable or truncated gzip ({type(e).__name__})") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DatasetError(f"{path}: wrong IDX magic number {raw[:4].hex() or '(empty)'} (expected 000008{ndim:02x}) "
                           "or truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    need = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != need:
        raise DatasetError(f"{path}: truncated or oversized IDX: {len(raw)} bytes, dims {dims} need {need}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _find_idx_files(root: str | None) -> dict[str, Path] | None:
    """The four Fashion-MNIST IDX files (plain or .gz) in root or a torchvision cache; None if absent."""
    base, cache = Path(root or FASHION_ROOT), CACHE / "FashionMNIST" / "raw"
    for d in (base, base / "FashionMNIST" / "raw", cache):
        found = {n: next((d / (n + s) for s in ("", ".gz") if (d / (n + s)).is_file()), None)
                 for pair in IDX_NAMES.values() for n in pair}
        if all(found.values()):
            return found
        if any(found.values()) and d != cache:
            missing = d / next(n for n, p in found.items() if p is None)
            raise DatasetError(f"{missing}(.gz): missing (other Fashion-MNIST files are in {d})")
    return None


def _load_fashion_mnist(root: str | None, size: int) -> RealDataset:
    files = _find_idx_files(root)
    if files is None:
        try:  # real code path for users with internet: torchvision fetches the same four IDX files
            from torchvision.datasets import FashionMNIST
            FashionMNIST(str(CACHE), download=True)
            if (files := _find_idx_files(root)) is None:
                raise FileNotFoundError(CACHE / "FashionMNIST" / "raw")
        except Exception as e:
            where = root or FASHION_ROOT
            raise DatasetError(f"fashion_mnist: no IDX files in {where}, download failed ({type(e).__name__}); "
                               "`apt-get install dataset-fashion-mnist` or set dataset.root") from None
    splits = {}
    for split, (iname, lname) in IDX_NAMES.items():
        ip, lp = files[iname], files[lname]
        images, labels = read_idx(ip, 3), read_idx(lp, 1)
        if len(images) != len(labels) or labels.max(initial=0) >= 10:
            raise DatasetError(f"{lp}: {len(labels)} labels (max {labels.max(initial=0)}) for {len(images)} "
                               f"images in {ip.name}; expected equal counts and labels 0..9")
        pad = size == 32 and images.shape[1:3] == (28, 28)  # pad, don't resize: keeps the real pixels
        images = np.pad(images, ((0, 0), (2, 2), (2, 2))) if pad else resize_stack(images[..., None], size)[..., 0]
        splits[split] = RealSplit(images[..., None], labels.astype(np.int64))
    return RealDataset("fashion_mnist", list(FASHION_CLASSES), splits["train"], splits["test"], {
        "root": str(files[IDX_NAMES["train"][0]].parent), "sha256": {p.name: sha256_file(p) for p in files.values()}})


def _load_digits(root: str | None, size: int) -> RealDataset:
    from sklearn import __version__ as sklearn_version
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    images, labels = resize_stack(images, size), bunch.target.astype(np.int64)
    tr, te = stratified_holdout(labels, 0.2, seed=0)
    train, test = RealSplit(images[tr], labels[tr]), RealSplit(images[te], labels[te])
    return RealDataset("digits", [str(i) for i in range(10)], train, test, {"loader": "sklearn.datasets.load_digits",
                       "sklearn": sklearn_version, "split": "stratified 80/20, seed 0"})


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's official distribution format is pickle; allow only the numpy globals its batches use."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # last: py3 protocol-2 bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} not allowed")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> dict:
    """One file of the official `cifar-10-batches-py` layout, as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
    except Exception as e:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None


def _load_cifar10(root: str | None, size: int) -> RealDataset:
    base = Path(root) if root else CACHE / "cifar10"
    folder = base if base.name == "cifar-10-batches-py" else base / "cifar-10-batches-py"
    if not folder.is_dir():
        try:
            from torchvision.datasets import CIFAR10
            CIFAR10(str(base), train=True, download=True)
        except Exception as e:
            raise DatasetError(f"{folder}: not found and download failed ({type(e).__name__}); put the extracted "
                               "cifar-10-batches-py folder in dataset.root") from None
    meta = _cifar_batch(folder / "batches.meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    if len(names) != 10:
        raise DatasetError(f"{folder / 'batches.meta'}: expected 10 label_names, found {len(names)}")
    splits = {}
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        ims, labs = [], []
        for fn in files:
            b = _cifar_batch(folder / fn)
            data, labels = np.asarray(b.get("data")), np.asarray(b.get("labels"), dtype=np.int64)
            if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels)
                    or labels.size == 0 or labels.min() < 0 or labels.max() >= 10):
                raise DatasetError(f"{folder / fn}: expected uint8 data [N,3072] and N labels in 0..9, got "
                                   f"{data.dtype} {data.shape}, labels {labels.shape}")
            ims.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labs.append(labels)
        splits[split] = RealSplit(resize_stack(np.concatenate(ims), size), np.concatenate(labs))
    sha = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name.startswith(("data_", "test_", "ba"))}
    return RealDataset("cifar10", names, splits["train"], splits["test"], {"root": str(folder), "sha256": sha})


def _read_table(path: Path, ncols: int) -> dict[int, list[str]]:
    """A CUB `<id> <fields...>` text file as {id: fields}."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing (official CUB_200_2011 layout expected)")
    rows = [line.split(maxsplit=ncols - 1) for line in path.read_text().splitlines() if line.strip()]
    if (bad := next((r for r in rows if len(r) != ncols or not r[0].isdigit()), None)) is not None:
        raise DatasetError(f"{path}: malformed line {' '.join(bad)[:80]!r} (expected {ncols} fields)")
    return {int(r[0]): r[1:] for r in rows}


def _load_cub200(root: str | None, size: int) -> RealDataset:
    base = Path(root or "CUB_200_2011")  # dataset.root: the extracted archive (or the folder holding it)
    if not (base / "images.txt").is_file() and (base / "CUB_200_2011").is_dir():
        base = base / "CUB_200_2011"
    images, labels, split, boxes, classes = (_read_table(base / f, 5 if "box" in f else 2) for f in CUB_FILES)
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise DatasetError(f"{base / 'classes.txt'}: class ids must be 1..{len(classes)}")
    class_names = [classes[i][0].split(".", 1)[-1] for i in sorted(classes)]  # "001.Black_footed_Albatross"
    for table, fname in ((labels, "image_class_labels.txt"), (split, "train_test_split.txt"), (boxes, CUB_FILES[3])):
        if images.keys() - table.keys():
            raise DatasetError(f"{base / fname}: no entry for image id {min(images.keys() - table.keys())}")
    out, hasher = {"1": [], "0": []}, hashlib.sha256()
    for iid in sorted(images):
        try:
            label, is_train, (x, y, w, h) = int(labels[iid][0]) - 1, split[iid][0], map(float, boxes[iid])
        except ValueError:
            raise DatasetError(f"{base}: non-numeric label, split or box for image id {iid}") from None
        if not (0 <= label < len(class_names) and is_train in out):
            raise DatasetError(f"{base}: image id {iid}: class {label + 1} or split flag {is_train!r} invalid")
        path = base / "images" / images[iid][0]
        pil = open_image(path, hasher)
        box = (max(0, round(x)), max(0, round(y)), min(pil.width, round(x + w)), min(pil.height, round(y + h)))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise DatasetError(f"{base / 'bounding_boxes.txt'}: empty box for image id {iid} ({path.name})")
        out[is_train].append((to_array(to_8bit(pil.crop(box), "RGB", path)[0], size, "RGB"), label))
    if not (out["1"] and out["0"]):
        raise DatasetError(f"{base / 'train_test_split.txt'}: the train or the test split is empty")
    train, test = (RealSplit(np.stack([a for a, _ in out[k]]), np.array([c for _, c in out[k]], np.int64))
                   for k in ("1", "0"))
    return RealDataset("cub200", class_names, train, test, {"root": str(base), "images_sha256": hasher.hexdigest(),
                       "sha256": {t: sha256_file(base / t) for t in CUB_FILES}})


def _scan_folder(folder: Path) -> dict[str, list[Path]]:
    """{class name: sorted image files} for the class sub-folders of `folder`."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{folder}: no class sub-folders")
    found = {c: sorted(f for f in c.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                       and not f.name.startswith(".")) for c in classes}
    if empty := [c for c, files in found.items() if not files]:
        raise DatasetError(f"{empty[0]}: empty class folder (no image files)")
    return {c.name: files for c, files in found.items()}


MAX_FAULTS = 5  # bad files named in one error line


def _load_imagefolder(root: str | None, size: int) -> RealDataset:
    if root is None or not Path(root).is_dir():
        raise DatasetError(f"imagefolder: dataset.root {root!r} is not a folder")
    base = Path(root)
    trees = {"train": _scan_folder(base / "train" if (base / "train").is_dir() else base)}
    if (base / "test").is_dir():
        trees["test"] = _scan_folder(base / "test")
        if diff := sorted(set(trees["test"]) ^ set(trees["train"])):
            raise DatasetError(f"{base}: train/ and test/ class folders differ ({', '.join(diff[:5])})")
    class_names = sorted(trees["train"])
    # The whole folder decides: RGB if any file holds colour (gray files are then replicated), else gray.
    modes = Counter(peek_mode(f) for tree in trees.values() for files in tree.values() for f in files)
    mode = "L" if set(modes) - {None} <= GRAY_MODES else "RGB"
    hasher, loaded, converted = hashlib.sha256(), {}, Counter()

    faults: list[str] = []

    def read(f: Path) -> np.ndarray | None:
        try:
            pil, note = to_8bit(open_image(f, hasher), mode, f)
        except DatasetError as e:  # keep going: one run names every bad file (up to MAX_FAULTS)
            faults.append(str(e))
            return None
        converted.update([note] if note else [])
        return to_array(pil, size, mode)

    for s, tree in trees.items():
        pairs = [(read(f), ci) for ci, c in enumerate(class_names) for f in tree[c]]
        if not faults:
            loaded[s] = RealSplit(np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], np.int64))
    if faults:
        more = f" (+{len(faults) - MAX_FAULTS} more)" if len(faults) > MAX_FAULTS else ""
        raise DatasetError(f"{len(faults)} unusable image file(s): " + "; ".join(faults[:MAX_FAULTS]) + more)
    converted, by_mode = dict(sorted(converted.items())), {str(m): n for m, n in sorted(modes.items(), key=str)}
    log.info("imagefolder %s: %s images (files by mode: %s); converted: %s", base, mode, by_mode, converted or "none")
    train, test, how = loaded["train"], loaded.get("test"), "train/ and test/ folders"
    if test is None:
        tr, te = stratified_holdout(train.labels, 0.2, seed=0)
        (train, test), how = (RealSplit(train.images[i], train.labels[i]) for i in (tr, te)), "stratified 80/20, seed 0"
    return RealDataset("imagefolder", class_names, train, test, {"root": str(base), "mode": mode, "split": how,
                       "file_modes": by_mode, "converted": converted, "images_sha256": hasher.hexdigest()})


def _check_split(images: np.ndarray, labels: np.ndarray, k: int, where: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DatasetError(f"{where}: images must be uint8 [N,H,W,C], C=1 or 3; got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        raise DatasetError(f"{where}: labels must be 1-D ints, one per image; got {labels.dtype} {labels.shape}")
    if (bad := labels[(labels < 0) | (labels >= k)]).size:
        raise DatasetError(f"{where}: label {int(bad[0])} out of range [0, {k})")


def write_prepared(ds: RealDataset, out_dir: str | os.PathLike) -> dict:
    """Write train.npz, test.npz, then meta.json (each atomically; meta last, and it records both hashes)."""
    out, k = Path(out_dir), len(ds.class_names)
    meta = {"dataset": ds.name, "class_names": list(ds.class_names), "num_classes": k,
            "image_size": int(ds.train.images.shape[1]), "channels": int(ds.train.images.shape[3]),
            "counts": {}, "class_counts": {}, "source": ds.source, "files": {}}
    for s, split in (("train", ds.train), ("test", ds.test)):
        _check_split(split.images, split.labels, k, f"{ds.name} {s} split")
        save_npz(out / f"{s}.npz", images=split.images, labels=split.labels.astype(np.int64))
        meta["counts"][s] = int(len(split.labels))
        meta["class_counts"][s] = np.bincount(split.labels, minlength=k).astype(int).tolist()
        meta["files"][f"{s}.npz"] = sha256_file(out / f"{s}.npz")
    save_json(out / "meta.json", meta)
    return meta


def load_meta(dir: str | os.PathLike) -> dict:
    path = Path(dir) / "meta.json"
    try:
        meta = load_json(path)
    except StorageError as e:
        raise DatasetError(str(e)) from None
    need = ("dataset", "class_names", "num_classes", "image_size", "channels", "counts")
    missing = [k for k in need if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}")
    if len(meta["class_names"]) != meta["num_classes"]:
        raise DatasetError(f"{path}: {len(meta['class_names'])} class_names but num_classes={meta['num_classes']}")
    return meta


def load_prepared(dir: str | os.PathLike, split: str) -> RealSplit:
    if split not in ("train", "test"):
        raise DatasetError(f"split {split!r}: must be 'train' or 'test'")
    meta, path = load_meta(dir), Path(dir) / f"{split}.npz"
    try:
        arrays = load_npz(path, ("images", "labels"))
    except StorageError as e:
        raise DatasetError(str(e)) from None
    images, labels = arrays["images"], arrays["labels"]
    _check_split(images, labels, int(meta["num_classes"]), str(path))
    shape = (meta["image_size"], meta["image_size"], meta["channels"])
    if images.shape[1:] != shape:
        raise DatasetError(f"{path}: images {images.shape[1:]} but meta.json says {shape}")
    if len(labels) != meta["counts"].get(split):
        raise DatasetError(f"{path}: {len(labels)} items but meta.json counts {meta['counts'].get(split)}")
    if (want := meta.get("files", {}).get(path.name)) and sha256_file(path) != want:
        raise DatasetError(f"{path}: sha256 differs from meta.json (stale or partly rewritten folder)")
    return RealSplit(images, labels.astype(np.int64))
