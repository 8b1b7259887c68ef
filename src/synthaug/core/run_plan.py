"""Which stage items a `dvc repro` runs, read without DVC's locks (for `python -m synthaug status`).

`dvc status` takes DVC's repo lock and read-locks every dep and out (`Stage.changed` is `@rwlocked`), so while
`dvc repro` runs a stage it refuses ("... is busy, it is being blocked by ... dvc repro"). Everything here is
what DVC's own commands do minus those locks, in DVC's own code (dvc 3.x):
- the stage items (`foreach` and `matrix` included, rendered by DVC) with their dvc.lock entries: `Repo.index`,
  which parses dvc.yaml, params and dvc.lock and takes no lock;
- the items a command considers, in the order it runs them: its arguments parsed by DVC's own parser, then
  `collect_stages` and `plan_repro` of `dvc.repo.reproduce`, pure functions of the graph;
- whether an item is stale: `Stage.changed`'s three tests (`changed_stage`, each dep's and out's `status()`)
  called one by one, without the `@rwlocked` wrapper. A dep's or out's status hashes the file as DVC does,
  through DVC's state database (a file whose size and mtime DVC has seen costs a lookup, not a hash).
Nothing is written but what `Repo()` itself creates (`.dvc/tmp/`). Also here: which `dvc` process runs a stage
(its parents in /proc), and one that holds DVC's rwlock before its first stage (`.dvc/tmp/rwlock`, read as a file).

What is estimated: an item is `stale` when its own dvc.lock entry differs from the files (missing entry, changed
command, dep, param or out); an item downstream of a stale or running one is `maybe`: DVC decides when it gets
there, and skips it if the upstream outputs come out the same. Items DVC restores from its run cache instead of
running count as stale here.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from synthaug.core.runtime import proc_stat, stage_state  # the /proc reading that tells a reused pid apart


class PlanError(RuntimeError):
    """The DVC project cannot be read (no dvc.yaml, a broken dvc.yaml); the message says which."""


@dataclass
class Plan:
    """The items a dvc command considers, in its run order, and which of them it will (`stale`) or may run."""

    command: str                                           # what the plan is for, e.g. "dvc repro fid_ref"
    order: list[str] = field(default_factory=list)         # every item the command considers, in run order
    stale: dict[str, str] = field(default_factory=dict)    # item -> why it runs ("dep data/real modified")
    maybe: dict[str, str] = field(default_factory=dict)    # item -> the upstream item it waits on
    all_items: list[str] = field(default_factory=list)     # every item of dvc.yaml

    def to_run(self, exclude: set[str] = frozenset()) -> list[str]:
        return [i for i in self.order if (i in self.stale or i in self.maybe) and i not in exclude]


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator:
    """DVC's Repo of `root`, without taking its lock (`Repo()` and `Repo.index` take none)."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(os.fspath(root))
    except NotDvcRepoError:
        raise PlanError(f"{root}: not a DVC project (no .dvc folder)") from None
    try:
        try:
            repo.index.stages  # parse now: a broken dvc.yaml is one error line, not a traceback
        except DvcException as e:
            raise PlanError(f"{root / 'dvc.yaml'}: cannot be read by DVC ({e})") from None
        yield repo
    finally:
        repo.close()


def item_name(stage, root: Path) -> str:
    """A stage item as DVC names it from the repo root, in DVC_STAGE and in `dvc repro` (`train@vae`,
    `fid@vae-0` of a matrix; `sub/dvc.yaml:name` in another folder's dvc.yaml)."""
    where = os.path.relpath(stage.path, root)
    return stage.name if where == "dvc.yaml" else f"{where}:{stage.name}"


def stage_items(root: Path) -> list[str]:
    """Every stage item of the project, in DVC's run order."""
    root = Path(root).absolute()
    with open_repo(root) as repo:
        return [item_name(s, root) for s in _all_in_order(repo)]


def _all_in_order(repo) -> list:
    from dvc.repo.reproduce import get_active_graph, plan_repro

    return plan_repro(get_active_graph(repo.index.graph), list(repo.index.stages))


def _repro_args(dvc_argv: list[str] | None):
    """DVC's own parse of a `dvc repro ...` / `dvc exp run ...` command line; None for anything else."""
    if not dvc_argv or not (dvc_argv[0] == "repro" or dvc_argv[:2] == ["exp", "run"]):
        return None
    from dvc.cli import parse_args

    try:
        return parse_args(dvc_argv)
    except (SystemExit, Exception):  # argparse exits on an argument it does not know
        return None


def _steps(repo, dvc_argv: list[str] | None) -> tuple[list, str, tuple[bool, bool]]:
    """(the stages the command considers in run order, the command in words, (--force, --force-downstream)) as
    `dvc.repo.reproduce.reproduce` derives them."""
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    args = _repro_args(dvc_argv)
    if args is None:
        words = "dvc repro" if not dvc_argv else f"dvc repro (for `dvc {' '.join(dvc_argv)}`, whose items "\
                                                 f"are not read here)"
        return _all_in_order(repo), words, (False, False)
    words = "dvc " + " ".join(dvc_argv)
    all_pipelines, pipeline = getattr(args, "all_pipelines", False), getattr(args, "pipeline", False)
    single, downstream = getattr(args, "single_item", False), getattr(args, "downstream", False)
    if all_pipelines or pipeline:
        single = downstream = False
    from dvc.exceptions import DvcException

    try:
        stages = list(repo.index.stages) if all_pipelines else collect_stages(
            repo, getattr(args, "targets", None) or ["dvc.yaml"], recursive=getattr(args, "recursive", False),
            glob=getattr(args, "glob", False))
    except DvcException as e:  # a target that is not a stage (here: DVC then failed as well)
        raise PlanError(f"`{words}`: {e}") from None
    if not single:
        stages = plan_repro(get_active_graph(repo.index.graph), stages, pipeline=pipeline, downstream=downstream)
    return stages, words, (bool(getattr(args, "force", False)), bool(getattr(args, "force_downstream", False)))


def why_stale(stage, in_flux: set[str] = frozenset()) -> str | None:
    """Why DVC would run `stage` (None: up to date): `Stage.changed` less its `@rwlocked` wrapper. Deps at paths in
    `in_flux` (outputs of a running stage: DVC removed them before running it) are not judged."""
    if stage.frozen:
        return None
    if stage.is_callback or stage.always_changed:
        return "always changed"
    if stage.changed_stage():
        return "command changed"
    for kind, entries in (("dep", stage.deps), ("out", stage.outs)):
        for entry in entries:
            if kind == "dep" and entry.fs_path in in_flux:
                continue
            try:
                status = entry.status()
            except Exception as e:  # e.g. params missing from params.yaml: DVC fails there, we call it stale
                return f"{kind} {entry}: {type(e).__name__}"
            if status:
                what = status[str(entry)]
                return f"{kind} {entry} {'changed' if isinstance(what, dict) else what}"
    return None


def plan(root: Path, dvc_argv: list[str] | None = None, busy: set[str] = frozenset()) -> Plan:
    """What `dvc <dvc_argv>` (a plain `dvc repro` when None) runs from the current files: stale items and, below
    a stale or `busy` (running) item, those DVC decides on later. Targets in `dvc_argv` are read as DVC reads
    them, from the working directory (run from the repo root, as DVC runs the stages)."""
    root = Path(root).absolute()
    with open_repo(root) as repo:
        steps, words, (force, force_downstream) = _steps(repo, dvc_argv)
        graph = repo.index.graph  # edge stage -> a stage whose outs it depends on
        names = {s: item_name(s, root) for s in repo.index.stages}
        result = Plan(command=words, order=[names[s] for s in steps],
                      all_items=[names[s] for s in _all_in_order(repo)])
        considered = set(steps)
        in_flux = {out.fs_path for s in repo.index.stages if names[s] in busy for out in s.outs}
        for stage in steps:  # upstream before downstream
            name = names[stage]
            if name in busy:
                continue
            waits = [names[u] for u in graph.successors(stage) if u in considered and (
                names[u] in result.stale or names[u] in result.maybe or names[u] in busy)]
            reason = "forced (--force)" if force else why_stale(stage, in_flux)
            if not reason and force_downstream and waits:
                reason = f"forced (--force-downstream, below {waits[0]})"
            if reason:
                result.stale[name] = reason
            elif waits:
                result.maybe[name] = waits[0]
        return result


# ---- the dvc process of a run -------------------------------------------------------------------------------


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _dvc_args(argv: list[str]) -> list[str] | None:
    """The arguments after `dvc` when argv runs DVC (`dvc ...`, `python .../bin/dvc ...`, `python -m dvc ...`)."""
    for i, arg in enumerate(argv[:3]):
        if os.path.basename(arg) == "dvc" or (arg == "dvc" and i > 0 and argv[i - 1] == "-m"):
            return argv[i + 1:]
    return None


def dvc_process(pid: int | None = None) -> dict | None:
    """The `dvc` process this one runs under (walking up its parents in /proc): pid, start time (clock ticks since
    boot, so a reused pid is told apart) and arguments. None outside DVC or where /proc cannot be read."""
    try:
        pid = os.getppid() if pid is None else pid
        for _ in range(12):
            if pid <= 1:
                return None
            argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
            args = _dvc_args(argv)
            if args is not None:
                return {"pid": pid, "started": proc_stat(pid)[1], "args": args}
            pid = _ppid(pid)
    except (OSError, TypeError, ValueError, IndexError):
        return None
    return None


def starting_dvc(root: Path) -> dict | None:
    """A live `dvc repro` / `dvc exp run` holding DVC's read or write locks of this project's files, from
    `.dvc/tmp/rwlock` (read as a plain file; DVC locks it only while editing it): DVC checking what to run before
    its first stage, which the journal cannot show yet."""
    try:
        locks = json.loads((Path(root) / ".dvc" / "tmp" / "rwlock").read_text())
        holders = [*locks.get("write", {}).values(), *(h for hs in locks.get("read", {}).values() for h in hs)]
        for pid in sorted({int(h["pid"]) for h in holders}):
            proc = dvc_process(pid)
            if proc and (proc["args"][:1] == ["repro"] or proc["args"][:2] == ["exp", "run"]) and \
                    stage_state(int(proc["pid"]), str(proc["started"])) != "gone":
                return proc
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # no lock file, or one being rewritten
        return None
    return None
