"""Atomic writes, safe loads, and the synthetic-image shards built on them."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synthaug.data.shards import MANIFEST, ShardError, read_manifest, read_shards, write_shards
from synthaug.core.storage import (StorageError, WriteError, _UMASK, atomic_dir, atomic_path, load_checkpoint, load_json,
                              load_npz, load_state_strict, replace_together, save_checkpoint, save_json, save_npz,
                              sha256_file)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


# ---------------------------------------------------------------- atomic writes
def test_atomic_path_keeps_old_file_when_block_raises(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left behind


def test_atomic_path_leaves_no_file_when_block_raises(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 10)
            raise KeyError("x")
    assert not target.exists()
    assert not target.parent.exists()  # the folder made for it is removed again: no trace of the failed write


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the block succeeds
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "shards"
    target.mkdir()
    (target / "a.txt").write_text("a")
    (target / "b.txt").write_text("b")
    # failure: the old folder is untouched, no temp folder left
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "c.txt").write_text("c")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]
    # success: the new folder replaces the old one whole (stale files do not survive)
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("c")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]
    # and a folder that did not exist appears
    with atomic_dir(tmp_path / "fresh") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "fresh" / "x").read_text() == "x"


@pytest.mark.skipif(_UMASK != 0o022, reason="checks the modes under the usual umask 022")
def _outputs(root: Path) -> tuple[Path, Path, Path]:
    """A stage's three outputs as `sample` has them: a shard folder, a grid and a metrics file, in other folders."""
    return root / "data" / "vae", root / "reports" / "vae.png", root / "metrics" / "sample" / "vae.json"


def _write_all(shards: Path, grid: Path, metrics: Path, tag: str) -> None:
    write_shards(shards, _images(4), np.arange(4) % 2, 2, 2, extra={"tag": tag})
    grid.parent.mkdir(parents=True, exist_ok=True)
    grid.write_text(tag)
    save_json(metrics, {"tag": tag})


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else p.read_bytes().hex()[:64] for p in root.rglob("*")}


def test_replace_together_replaces_all_outputs_or_none(tmp_path):
    _write_all(*_outputs(tmp_path), "old")
    before = _tree(tmp_path)
    with pytest.raises(MemoryError):  # the last output fails (the grid's memory, say): nothing is replaced
        with replace_together(*_outputs(tmp_path)) as (shards, grid, metrics):
            write_shards(shards, _images(6), np.arange(6) % 2, 2, 2, extra={"tag": "new"})
            raise MemoryError
    assert _tree(tmp_path) == before
    with replace_together(*_outputs(tmp_path)) as staged:
        _write_all(*staged, "new")
    assert read_manifest(tmp_path / "data" / "vae")["tag"] == "new"
    assert (tmp_path / "reports/vae.png").read_text() == "new"
    assert load_json(tmp_path / "metrics/sample/vae.json") == {"tag": "new"}
    assert not [p for p in tmp_path.rglob(".*")]  # no staging folder, no old output left behind


def test_replace_together_on_a_fresh_tree_leaves_nothing_when_it_fails(tmp_path):
    with pytest.raises(WriteError, match=r"metrics/sample/vae.json: cannot write \(No space"):
        with replace_together(*_outputs(tmp_path)) as (shards, grid, metrics):
            _write_all(shards, grid, tmp_path / "x", "new")
            with atomic_path(metrics) as tmp:  # fails as a full disk does, naming the output, not the stage
                raise OSError(28, "No space left on device", str(tmp))
    assert list(tmp_path.iterdir()) == [tmp_path / "x"]  # the folders made for the outputs are gone too


def test_replace_together_refuses_a_target_of_another_kind_before_replacing_any(tmp_path):
    """A folder where the grid PNG goes: before, the shards were already replaced when this failed."""
    _write_all(*_outputs(tmp_path), "old")
    grid = tmp_path / "reports" / "vae.png"
    grid.unlink()
    (grid / "keep.txt").parent.mkdir()
    (grid / "keep.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(WriteError, match=r"reports/vae.png: cannot write \(Is a directory\); nothing was replaced"):
        with replace_together(*_outputs(tmp_path)) as staged:
            _write_all(*staged, "new")
    assert _tree(tmp_path) == before


def test_replace_together_undoes_its_renames_when_one_fails(tmp_path, monkeypatch):
    _write_all(*_outputs(tmp_path), "old")
    before = _tree(tmp_path)
    real_rename, calls = os.rename, []

    def rename(src, dst):  # the 4th rename (the second output's new file onto its place) fails
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(WriteError, match="reports/vae.png: cannot write"):
        with replace_together(*_outputs(tmp_path)) as staged:
            _write_all(*staged, "new")
    assert _tree(tmp_path) == before


def test_written_files_and_folders_have_normal_permissions(tmp_path):
    save_json(tmp_path / "a.json", {"x": 1})
    save_npz(tmp_path / "b.npz", x=np.zeros(3))
    save_checkpoint(tmp_path / "c.pt", {"x": torch.zeros(2)})
    with atomic_dir(tmp_path / "d") as tmp:
        save_json(tmp / "e.json", [])
    for name in ("a.json", "b.npz", "c.pt", "d/e.json"):
        assert _mode(tmp_path / name) == 0o644, name
    assert _mode(tmp_path / "d") == 0o755


# ---------------------------------------------------------------- npz / json
def test_npz_round_trip_and_errors_name_the_file(tmp_path):
    path = tmp_path / "split.npz"
    x, y = _images(40), np.arange(40, dtype=np.int64)
    save_npz(path, images=x, labels=y)
    out = load_npz(path, ("images", "labels"))
    assert np.array_equal(out["images"], x) and np.array_equal(out["labels"], y)

    with pytest.raises(StorageError, match="missing array.*boxes") as ei:
        load_npz(path, ("images", "boxes"))
    assert str(path) in str(ei.value)

    with pytest.raises(StorageError, match="not found"):
        load_npz(tmp_path / "none.npz", ("images",))

    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(StorageError) as ei:
        load_npz(truncated, ("images", "labels"))
    assert str(truncated) in str(ei.value) and "\n" not in str(ei.value)

    # bytes flipped inside the compressed stream (the zip directory intact)
    corrupt = tmp_path / "corrupt.npz"
    b = bytearray(data)
    for i in range(200, 260):
        b[i] ^= 0xFF
    corrupt.write_bytes(bytes(b))
    with pytest.raises(StorageError) as ei:
        load_npz(corrupt, ("images", "labels"))
    assert str(corrupt) in str(ei.value)


def test_load_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,')
    with pytest.raises(StorageError, match="not valid JSON") as ei:
        load_json(bad)
    assert str(bad) in str(ei.value)
    with pytest.raises(StorageError, match="not found"):
        load_json(tmp_path / "none.json")


# ---------------------------------------------------------------- checkpoints
class _Evil:
    """Unpickling this would create a marker file: weights_only must refuse to run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_round_trip_is_weights_only_loadable(tmp_path):
    state = {"step": 3, "model": nn.Linear(3, 2).state_dict(), "history": [{"step": 1, "loss": 0.5}]}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["step"] == 3 and loaded["history"] == state["history"]
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])


def test_load_checkpoint_refuses_truncated_nondict_pickled_and_missing(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.randn(100, 100)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    nondict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], nondict)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"obj": _Evil(marker)}, evil)
    evil_pickle = tmp_path / "evil.pkl"
    evil_pickle.write_bytes(pickle.dumps({"obj": _Evil(marker)}, protocol=2))

    for path, what in ((truncated, "corrupt"), (nondict, "not a dict"), (evil, "unsafe"), (evil_pickle, "unsafe"),
                       (tmp_path / "none.pt", "not found")):
        with pytest.raises(StorageError) as ei:
            load_checkpoint(path)
        msg = str(ei.value)
        assert str(path) in msg and what in msg and "\n" not in msg, msg
    assert not marker.exists(), "an arbitrary object was unpickled"
    pickle.loads(evil_pickle.read_bytes())  # the probe itself works: plain unpickling runs it
    assert marker.exists()


def test_load_state_strict_on_another_architecture_names_the_file(tmp_path):
    source = tmp_path / "model.pt"
    with pytest.raises(StorageError) as ei:
        load_state_strict(nn.Linear(4, 3), nn.Linear(4, 2).state_dict(), source)  # shape mismatch
    assert str(source) in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(StorageError) as ei:
        load_state_strict(nn.Sequential(nn.Linear(4, 2)), nn.Linear(4, 2).state_dict(), source)  # other keys
    assert str(source) in str(ei.value) and "\n" not in str(ei.value)
    m = nn.Linear(4, 2)
    load_state_strict(m, nn.Linear(4, 2).state_dict(), source)  # the same architecture loads


# ---------------------------------------------------------------- shards
def test_shards_round_trip_with_manifest(tmp_path):
    x = _images(25)
    y = np.array([0] * 10 + [1] * 3 + [3] * 12, dtype=np.int64)
    out = tmp_path / "synthetic" / "vae"
    m = write_shards(out, x, y, shard_size=10, num_classes=4, extra={"source": "vae", "sampler": {"t": 1}})
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "shard-00000.npz", "shard-00001.npz",
                                                     "shard-00002.npz"]
    assert m == read_manifest(out)
    assert m["count"] == 25 and m["per_class"] == [10, 3, 0, 12] and m["num_classes"] == 4
    assert [s["count"] for s in m["shards"]] == [10, 10, 5]
    assert m["shape"] == [8, 8, 1] and m["source"] == "vae" and m["sampler"] == {"t": 1}
    rx, ry = read_shards(out)
    assert np.array_equal(rx, x) and np.array_equal(ry, y) and ry.dtype == np.int64

    # rewriting with fewer images replaces the folder whole: no stale shard survives
    write_shards(out, x[:5], y[:5], shard_size=10, num_classes=4)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "shard-00000.npz"]
    assert len(read_shards(out)[0]) == 5


def test_tampered_shard_is_caught_and_named(tmp_path):
    out = tmp_path / "s"
    write_shards(out, _images(20), np.arange(20) % 2, shard_size=8, num_classes=2)
    shard = out / "shard-00001.npz"
    b = bytearray(shard.read_bytes())
    b[len(b) // 2] ^= 0x01
    shard.write_bytes(bytes(b))
    with pytest.raises(ShardError) as ei:
        read_shards(out)
    assert "shard-00001.npz" in str(ei.value) and "sha256" in str(ei.value)

    # a shard swapped for another valid one is caught too
    out2 = tmp_path / "s2"
    write_shards(out2, _images(20), np.arange(20) % 2, shard_size=8, num_classes=2)
    os.replace(out2 / "shard-00001.npz", out2 / "shard-00000.npz")
    (out2 / "shard-00001.npz").write_bytes((out / "shard-00002.npz").read_bytes())  # an unrelated shard
    with pytest.raises(ShardError, match="shard-0000[01].npz"):
        read_shards(out2)


@pytest.mark.parametrize("images, labels, expect", [
    (_images(4).astype(np.uint16), np.arange(4), "images must be uint8 [N,8,8,1] as the manifest says, got uint16"),
    (_images(4, size=6), np.arange(4), "got uint8 [4, 6, 6, 1]"),
    (_images(4), np.arange(4) + 0.5, "labels must be a 1-D integer array, got float64 [4]"),
    (_images(4), np.arange(4)[:, None], "labels must be a 1-D integer array, got int64 [4, 1]"),
    (_images(4), np.arange(3), "holds 4 images and 3 labels, manifest says 4"),
])
def test_a_shard_unlike_its_manifest_is_named(tmp_path, images, labels, expect):
    """Shards a foreign or buggy writer made, with matching hashes: before, float labels were truncated, uint16
    images trained on, and another size or 2-D labels ended in a NumPy traceback."""
    write_shards(tmp_path / "s", _images(8), np.arange(8) % 4, 4, 4)
    path = tmp_path / "s" / "shard-00001.npz"
    save_npz(path, images=images, labels=labels)
    manifest = read_manifest(tmp_path / "s")
    manifest["shards"][1]["sha256"] = sha256_file(path)
    save_json(tmp_path / "s" / MANIFEST, manifest)
    with pytest.raises(ShardError) as e:
        read_shards(tmp_path / "s")
    assert str(e.value).startswith(f"{path}: ") and expect in str(e.value), e.value


def test_missing_shard_is_an_error_naming_it(tmp_path):
    out = tmp_path / "s"
    write_shards(out, _images(20), np.arange(20) % 2, shard_size=8, num_classes=2)
    (out / "shard-00002.npz").unlink()
    with pytest.raises(StorageError, match="shard-00002.npz"):
        read_shards(out)
    (out / MANIFEST).unlink()
    with pytest.raises(StorageError, match=MANIFEST):
        read_shards(out)


@pytest.mark.parametrize("labels", [[0, 1, 2, 5], [0, -1, 1, 1]])
def test_labels_outside_range_refused_at_write(tmp_path, labels):
    out = tmp_path / "s"
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        write_shards(out, _images(4), np.array(labels), shard_size=2, num_classes=3)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_write_shards_refuses_wrong_dtype_and_length(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_shards(tmp_path / "s", _images(4).astype(np.float32), np.zeros(4), 2, 2)
    with pytest.raises(ValueError, match="labels"):
        write_shards(tmp_path / "s", _images(4), np.zeros(3), 2, 2)
    assert not (tmp_path / "s").exists()
