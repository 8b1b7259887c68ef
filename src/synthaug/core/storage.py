"""Atomic, safe reading and writing of every file a stage produces.

Every output goes to a temporary file in the destination folder and is renamed into place, so a killed
stage leaves either the old file or none, never half of one. A stage's several outputs are replaced together
through a journal (`replace_together`): once every new output is staged, a commit record lists the renames, and
a run killed part-way through them (even by SIGKILL) is completed by the next stage that starts
(`recover_commits`), so the outputs are all old or all new. Temporary paths carry their writer's pid; those of
dead writers are removed when the same output is written next. Loads never unpickle arbitrary objects.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


_UMASK = os.umask(0)
os.umask(_UMASK)
# Commit records of multi-output replacements in progress, relative to the stage's working directory (the repo root).
JOURNAL_DIR = Path(".synthaug") / "commits"


class StorageError(RuntimeError):
    """A file that is missing, corrupt or of the wrong kind; the message names it."""


class WriteError(OSError):
    """Writing an output failed (a full disk, a file-size limit, a read-only folder); the message names the
    output. A runtime fault (exit code 1): the previous version of the output, if any, is left untouched."""

    def __str__(self) -> str:
        return f"{self.filename}: cannot write ({self.strerror}); nothing was replaced"


def _write_error(e: OSError, path: Path) -> WriteError:
    return WriteError(e.errno, e.strerror or str(e), str(path))


def _make_parents(folder: Path) -> Path | None:
    """mkdir -p `folder`; returns the topmost folder this created (None if it existed)."""
    top = None
    p = folder
    while not p.exists():
        top, p = p, p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return top


def _remove_empty(folder: Path, top: Path | None) -> None:
    """After a failed write, remove the folders `_make_parents` created for it, if they are still empty."""
    if top is None:
        return
    p = folder
    while True:
        try:
            p.rmdir()
        except OSError:  # not empty (another output lives there) or already gone
            return
        if p == top:
            return
        p = p.parent


def _temp_prefix(path: Path) -> str:
    """Temporary paths beside `path` are named `.<name>.<pid>.<random>.tmp`: the pid tells a live writer's from the
    litter of a killed one."""
    return f".{path.name}.{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def sweep_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary paths that killed writers of `path` left beside it (their pid is not running); a live
    writer's are kept. Returns what it removed."""
    recover_commits()  # a killed commit's staged outputs are not litter: complete it first
    removed = []
    try:
        siblings = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in siblings:
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink(
                missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    created = _make_parents(path.parent)
    sweep_stale_temps(path)
    done = False
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs should be readable like any other
            yield tmp
            os.replace(tmp, path)
            done = True
        except WriteError:
            raise
        except OSError as e:  # ENOSPC, EFBIG, EROFS...: one line naming the output, not the temp file
            raise _write_error(e, path) from None
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        if not done:
            _remove_empty(path.parent, created)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` (whole) only if the block succeeds (one output of
    `replace_together`, so a kill between moving the old folder aside and the new one in is completed too)."""
    with replace_together(path) as (staged,):
        staged.mkdir()
        os.chmod(staged, 0o777 & ~_UMASK)
        yield staged


@contextlib.contextmanager
def replace_together(*paths: str | os.PathLike) -> Iterator[tuple[Path, ...]]:
    """A stage's several outputs, replaced together and last: yields, for each output, a path of the same name
    in a temporary folder beside it (write a file or a folder there). Only when the block succeeds and every new
    output can take its place are the old ones replaced, one rename each. A failed write replaces nothing; a rename
    that fails is undone; a kill during the renames leaves a commit record in JOURNAL_DIR that the next stage to
    start completes (`recover_commits`), so the outputs end all new (or, killed before the record, all old)."""
    targets = [Path(p) for p in paths]  # as given: errors name them as the stage does
    created = [_make_parents(t.parent) for t in targets]
    for t in targets:
        sweep_stale_temps(t)  # after completing any half-done commit (recover_commits)
    stages: list[Path] = []
    done = False
    try:
        for t in targets:
            try:
                stages.append(Path(tempfile.mkdtemp(prefix=_temp_prefix(t), suffix=".tmp", dir=t.parent)))
            except OSError as e:  # a read-only or full folder
                raise _write_error(e, t) from None
        try:
            yield tuple(s / t.name for s, t in zip(stages, targets))
        except WriteError as e:  # a file written in a staging folder: name it by its final place
            name = Path(e.filename)
            raise next((_write_error(e, t.parent / name.relative_to(s)) for s, t in zip(stages, targets)
                        if name.is_relative_to(s)), e) from None
        _swap_in(targets, stages, JOURNAL_DIR)
        done = True
    finally:
        for s in stages:
            shutil.rmtree(s, ignore_errors=True)
        if not done:
            for t, top in zip(targets, created):
                _remove_empty(t.parent, top)


def _swap_in(targets: list[Path], stages: list[Path], journal_dir: Path) -> None:
    """Move each staged output onto its target, the old one aside into its staging folder (deleted with it), under
    a commit record written before the first rename and removed after the last."""
    for t, s in zip(targets, stages):  # a target that cannot take the new output fails before any rename
        new = s / t.name
        if not new.exists():
            raise _write_error(OSError(errno.ENOENT, "the stage did not write it"), t)
        if t.exists() and t.is_dir() != new.is_dir():
            code = errno.EISDIR if t.is_dir() else errno.ENOTDIR
            raise _write_error(OSError(code, os.strerror(code)), t)
    moves = [{"target": str(t.absolute()), "new": str((s / t.name).absolute()),
              "old": str((s / f".old-{t.name}").absolute()), "staging": str(s.absolute())}
             for t, s in zip(targets, stages)]  # absolute: the record is read from wherever the next stage runs
    try:
        created = _make_parents(journal_dir)  # removed again below when this commit made it and it is empty
        record = journal_dir / f"{os.getpid()}-{os.urandom(4).hex()}.json"
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps({"moves": moves}, indent=1))
    except OSError as e:
        raise _write_error(e, journal_dir) from None
    placed: list[tuple[Path, Path | None]] = []  # targets holding their new output, and where their old one is
    current = targets[0]
    try:
        for t, s in zip(targets, stages):
            current, old = t, (s / f".old-{t.name}" if os.path.lexists(t) else None)
            if old is not None:
                os.rename(t, old)
            try:
                os.rename(s / t.name, t)
            except OSError:
                if old is not None:
                    os.rename(old, t)
                raise
            placed.append((t, old))
    except OSError as e:
        for t, old in reversed(placed):  # put every old output back
            shutil.rmtree(t) if t.is_dir() and not t.is_symlink() else t.unlink()
            if old is not None:
                os.rename(old, t)
        record.unlink(missing_ok=True)
        _remove_empty(journal_dir, created)
        raise _write_error(e, current) from None
    record.unlink(missing_ok=True)
    _remove_empty(journal_dir, created)


def recover_commits(journal_dir: Path | None = None) -> list[str]:
    """Complete the multi-output replacements that a killed stage left half done: every rename of a commit record
    is carried out (those already done are skipped), the old outputs and staging folders are removed, then the
    record. Records of live writers are left alone. Returns the targets it completed."""
    journal_dir = JOURNAL_DIR if journal_dir is None else journal_dir
    done: list[str] = []
    if not journal_dir.is_dir():
        return done
    for partial in journal_dir.glob(".*.tmp"):  # a record whose writer died before it was complete: no commit
        pid = partial.name[1:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            partial.unlink(missing_ok=True)
    for record in sorted(journal_dir.glob("*.json")):
        pid = record.name.split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or pid_alive(int(pid))):
            continue  # its writer is still at it
        try:
            moves = json.loads(record.read_text())["moves"]
        except (OSError, ValueError, KeyError):  # a record cut short is never written: atomic_path
            continue
        for m in moves:
            target, new, old = Path(m["target"]), Path(m["new"]), Path(m["old"])
            if os.path.lexists(new):  # not placed yet
                if os.path.lexists(target):
                    if os.path.lexists(old):
                        raise StorageError(f"{record}: cannot complete the replacement of {target}: both it and "
                                           f"{old} exist; move one away by hand")
                    os.rename(target, old)
                os.rename(new, target)
                done.append(str(target))
        for m in moves:
            shutil.rmtree(m["staging"], ignore_errors=True)
        record.unlink(missing_ok=True)
    return done


def save_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StorageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """A compressed .npz (readable by `np.load`) whose bytes depend only on the arrays: the zip entries carry a
    fixed timestamp, so re-running a stage on the same input leaves the same file and DVC re-runs nothing
    downstream of it (np.savez_compressed stamps each entry with the current time)."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def load_npz(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load the named arrays of an .npz, with a clear error if it is missing, truncated or lacks a key."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise StorageError(f"{path}: missing array(s) {', '.join(missing)}")
            return {k: z[k] for k in keys}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:  # zlib: corrupt deflate data
        raise StorageError(f"{path}: corrupt or truncated npz ({e})") from None


class _RecordingWriter:
    """A file wrapper for torch.save that keeps the OSError of a failed write: torch reports a full disk as
    an opaque RuntimeError ("unexpected pos ..."), and we want the real cause in the error line."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save a plain dict of tensors/state dicts (loadable with weights_only=True)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            writer = _RecordingWriter(f)
            try:
                torch.save(state, writer)
            except RuntimeError:
                if writer.error is not None:
                    raise writer.error from None
                raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated/corrupt/pickled files
        raise StorageError(f"{path}: corrupt, truncated or unsafe checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise StorageError(f"{path}: checkpoint is not a dict")
    return state


def load_state_strict(module: torch.nn.Module, state: dict, source: str | os.PathLike) -> None:
    """load_state_dict that turns an architecture mismatch into a one-line error naming the file."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise StorageError(f"{source}: checkpoint does not match this architecture ({detail[:200]})") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
