"""Device choice, mixed precision, memory format and seeding: the one place that knows the hardware.

On CPU, bf16 autocast + channels_last run 2.5-6x faster than fp32 where oneDNN supports bf16 (AMX or
AVX512-BF16); where it does not, we fall back to fp32 and say so once in the log.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthaug.core import distributed
from synthaug.core.storage import pid_alive

log = logging.getLogger("synthaug")


class RuntimeConfigError(ValueError):
    """A device or precision request this machine cannot honour."""


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed: the device, and whether to use bf16 autocast."""

    device: torch.device
    bf16: bool
    channels_last: bool | None = None  # None: with bf16 only (see memory_format)

    @property
    def memory_format(self) -> torch.memory_format:
        # channels_last pays off with oneDNN/cuDNN convolutions in reduced precision. In fp32 it is mixed on a
        # 2-core AVX2 CPU: training steps ran 0.6-1.2x, inference 1.4x (U-Net) and 1.7x (FID Inception).
        wanted = self.bf16 if self.channels_last is None else self.channels_last
        return torch.channels_last if wanted else torch.contiguous_format

    def for_inference(self) -> Runtime:
        """The same device and precision in channels_last: what no-grad forward passes (sampling, FID) run in."""
        return dataclasses.replace(self, channels_last=True)

    def autocast(self):
        """Autocast context for forward passes (a no-op context in fp32)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a module to the device and the memory format that suits it."""
        return module.to(self.device, memory_format=self.memory_format)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move an image batch [N, C, H, W] to the device in the module's memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def describe(self) -> dict[str, str]:
        """What the results depend on (logged, and part of training fingerprints): the same on every torchrun
        rank, which each have their own GPU, so data-parallel runs name the device type and the process count."""
        dist = distributed.from_env()
        out = {"device": self.device.type if dist.active else str(self.device),
               "precision": "bf16-autocast" if self.bf16 else "fp32"}
        if dist.active:
            out["processes"] = str(dist.world)
        return out


def cpu_supports_bf16() -> bool:
    """True when oneDNN has fast bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older/odd builds: play safe
        return False


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeConfigError(f"device '{name}' requested but no CUDA GPU is available (use 'auto' or 'cpu')")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise RuntimeConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got '{name}'")
    return torch.device(name)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_from_env(value: str, cores: int) -> int:
    """SYNTHAUG_THREADS, validated: 1 up to 4x the cores (more only slows torch down)."""
    limit = 4 * cores
    try:
        threads = int(value.strip())
    except ValueError:
        threads = 0
    if not 1 <= threads <= limit:
        raise RuntimeConfigError(f"SYNTHAUG_THREADS must be a whole number from 1 to {limit} "
                                 f"(4x this machine's {cores} cores), got {value!r}")
    return threads


# Stages that run at once (`dvc exp run --jobs N`, or a user's second terminal) split the cores between
# them: each CPU stage leaves a file named by its pid here while it runs and counts the live ones.
# Without this, N stages of 2 threads on 2 cores ran several times slower in total (README, threads).
_RUNNING = Path(tempfile.gettempdir()) / f"synthaug-stages-{os.getuid() if hasattr(os, 'getuid') else 0}"


def proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process from /proc, None if it is gone; raises OSError
    where /proc does not exist (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        if not Path("/proc/self/stat").exists():
            raise
        return None
    return fields[0], fields[19]


def stage_state(pid: int, started: str) -> str:
    """What the stage that registered as `pid` (started at `started`, clock ticks since boot) is now: "running"
    on the cores, "paused" (stopped by Ctrl-Z, or a zombie), "gone" (exited, or its pid reused by a later process),
    or "unknown" (no /proc, or no start time recorded: only the pid can be checked)."""
    try:
        stat = proc_stat(pid) if started else ()
    except OSError:  # no /proc
        stat = ()
    if stat == ():
        return "unknown" if pid_alive(pid) else "gone"
    if stat is None or stat[1] != started:
        return "gone"
    return "paused" if stat[0] in ("T", "t", "Z", "X") else "running"


def running_stages(folder: Path = _RUNNING) -> int:
    """Register this process as a running stage and return how many are running now (itself included): stages
    of any checkout or experiment count while their process runs (not once it exited or is stopped); the files of
    exited ones are removed. Where a process's state cannot be read, a live pid counts and the log says so."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mine = folder / str(os.getpid())
        if not mine.exists():
            try:
                mine.write_text(proc_stat(os.getpid())[1])
            except (OSError, TypeError):
                mine.write_text("")
            atexit.register(mine.unlink, missing_ok=True)
        live, unsure = 1, False
        for entry in folder.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                state = stage_state(int(entry.name), entry.read_text().strip())
            except OSError:
                continue
            if state == "gone":
                entry.unlink(missing_ok=True)  # a stage that was killed before it could clean up
            live += state in ("running", "unknown")
            unsure |= state == "unknown"
        if unsure:
            log.info("some other synthaug stages were counted by pid alone (their state cannot be read here)")
        return live
    except OSError:  # no writable temp dir: behave as the only stage
        return 1


def stage_threads() -> int:
    """Torch threads of a CPU stage: SYNTHAUG_THREADS when set, else its share of the cores among the stages
    running now (a share fixed at start: a stage starting later sees the earlier ones, not the reverse)."""
    cores = usable_cores()
    value = os.environ.get("SYNTHAUG_THREADS")
    if value is not None:
        return threads_from_env(value, cores)
    running = running_stages()
    share = max(1, cores // running)
    if running > 1:
        log.info("%d synthaug stages running at once: this one uses %d of %d cores", running, share, cores)
    return share


_warned_fp32 = False


def make_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Build the Runtime for a stage. precision: `auto` (bf16 where fast, else fp32), `bf16` or `fp32`."""
    global _warned_fp32
    dev = resolve_device(device)
    dist = distributed.from_env()
    if dev.type == "cuda" and dev.index is None and dist.active:
        dev = torch.device("cuda", dist.local_rank)  # torchrun: one GPU per process
        torch.cuda.set_device(dev)
    if dev.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = cpu_supports_bf16()
        torch.set_num_threads(stage_threads())
    if precision == "fp32":
        bf16 = False
    elif precision == "bf16":
        if not supported:
            raise RuntimeConfigError(f"precision 'bf16' requested but {dev.type} has no fast bf16 support")
        bf16 = True
    elif precision == "auto":
        bf16 = supported
        if not supported and not _warned_fp32:
            log.warning("no fast bf16 on this %s: running in fp32 (expect several times slower)", dev.type)
            _warned_fp32 = True
    else:
        raise RuntimeConfigError(f"precision must be 'auto', 'bf16' or 'fp32', got '{precision}'")
    return Runtime(device=dev, bf16=bf16)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """All RNG states, as tensors/plain types so they survive `torch.load(weights_only=True)`."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_plain_to_numpy_state(state["numpy"]))
    random.setstate(_plain_to_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_plain(st) -> dict:
    name, keys, pos, has_gauss, cached = st
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _plain_to_numpy_state(d: dict):
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _python_state_to_plain(st) -> dict:
    version, internal, gauss = st
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _plain_to_python_state(d: dict):
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])
