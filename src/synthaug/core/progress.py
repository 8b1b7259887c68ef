"""Whole-run progress of `dvc repro`: a journal of the stage items it runs, and an estimate of the rest.

The journal: every stage process that DVC starts (it sets DVC_STAGE) records itself in
`.synthaug/progress/<stage item>.json` (`stage_started`, called by `load_stage`): the `dvc` process that runs it
(pid, start time, arguments: one `dvc repro` is one run), its own pid, start, end, exit status, and the progress of
its outermost live tqdm bar, written at most every PROGRESS_EVERY seconds by a daemon thread (nothing to add to
the bars themselves). Every write is atomic (`storage.save_json`: temp file and rename), so a reader never sees
half an entry. An item keeps its last completed duration (`last`) when it runs again.

At start a stage logs `stage 7 of 42 (train@vae): ~1 h 20 min left for the rest (...)`, and
`python -m synthaug status` prints what is done, running and left, with an estimate; both read the journal and
`run_plan` (the items DVC will run, from dvc.yaml, dvc.lock and the files), neither takes DVC's locks.

Estimates of an item's duration, first found: its last completed run in this workspace's journal ("this machine's
last run", or the host's name when another host ran it); the duration of its last stage process recorded in the
MLflow store (a local sqlite store, read only), plus the median start-up that MLflow's runs do not see when this
machine recorded it ("MLflow record + 12 s start-up"), scaled by the median ratio of the durations measured both
ways when another host did ("MLflow record from gpu1 x0.2"); else a coarse default per stage family ("default
guess"), scaled as this run's finished items compare with their own defaults ("default guess x0.03").
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import socket
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

from synthaug.core import distributed, run_plan
from synthaug.core.runtime import proc_stat, stage_state  # the /proc reading that tells a reused pid apart
from synthaug.core.storage import StorageError, load_json, save_json
from synthaug.core.tracking import HOST_TAG, PID_TAG

log = logging.getLogger("synthaug")

JOURNAL = Path(".synthaug") / "progress"
PROGRESS_EVERY = 5.0  # seconds between journal writes of a running stage's progress (only when it moved)
# Coarse duration guesses per stage family (seconds), used when neither this machine nor MLflow has measured an
# item: the laptop default on a 2-core CPU (README "Quick start"); a matrix stage `train_vae@0` is a `train` one.
DEFAULT_SECONDS = {"prepare": 60, "fid_ref": 600, "train": 1800, "invert": 1200, "sample": 300, "fid": 300,
                   "classify": 900, "fidelity": 120, "analyse": 300, "gradcam": 300, "report": 60}
DEFAULT_OTHER = 300
ANNOUNCE_WAIT = 30.0  # seconds a stage that ends early waits at exit for its start line


def entry_path(root: Path, item: str) -> Path:
    return Path(root) / JOURNAL / f"{quote(item, safe='@+-_.,=')}.json"


def read_journal(root: Path) -> dict[str, dict]:
    """Stage item -> its latest journal entry (entries that cannot be read are skipped)."""
    entries = {}
    for path in sorted((Path(root) / JOURNAL).glob("*.json")):
        try:
            entry = load_json(path)
        except StorageError:
            continue
        if isinstance(entry, dict) and "item" in entry:
            entries[entry["item"]] = entry
    return entries


def _params_md5(root: Path) -> str:
    try:
        return hashlib.md5((Path(root) / "params.yaml").read_bytes()).hexdigest()
    except OSError:
        return ""


class _StageJournal:
    """This process's entry: written at start, on progress (by a daemon thread) and at exit."""

    def __init__(self, root: Path, item: str, run: dict | None):
        self.path, self.lock, self.stopped = entry_path(root, item), threading.Lock(), threading.Event()
        self.exit_code: int | None = None
        try:
            previous = load_json(self.path)
        except StorageError:
            previous = {}
        try:
            started = proc_stat(os.getpid())[1]
        except (OSError, TypeError):
            started = ""
        self.entry = {"item": item, "run": f"{run['pid']}:{run['started']}" if run else None, "dvc": run,
                      "host": socket.gethostname(), "pid": os.getpid(), "pid_started": started,
                      "start": time.time(), "end": None, "status": "running", "exit_code": None, "progress": None,
                      "params_md5": _params_md5(root), "last": previous.get("last") if isinstance(previous, dict)
                      else None}
        self.write()

    def write(self) -> None:
        with self.lock:
            save_json(self.path, self.entry)

    def watch(self) -> None:
        """Every second, the outermost live tqdm bar's position; written when it moved, at most every PROGRESS_EVERY s."""
        written = 0.0
        while not self.stopped.wait(1.0):
            bar = current_bar()
            if bar and bar != self.entry["progress"] and time.monotonic() - written >= PROGRESS_EVERY:
                self.entry["progress"] = dict(bar, at=time.time())
                try:
                    self.write()
                except OSError:
                    return
                written = time.monotonic()

    def finish(self) -> None:
        self.stopped.set()
        code = 0 if self.exit_code is None else self.exit_code
        end = time.time()
        self.entry.update(end=end, exit_code=code, status="done" if code == 0 else "failed")
        if code == 0:
            self.entry["last"] = {"seconds": round(end - self.entry["start"], 1), "end": end,
                                  "host": self.entry["host"], "params_md5": self.entry["params_md5"]}
        self.write()


def current_bar() -> dict | None:
    """The outermost live tqdm bar with a total: description, position and fraction done."""
    from tqdm import tqdm

    try:  # not under tqdm.get_lock(): a bar that the main thread makes meanwhile fails on a lock held here
        bars = [b for b in list(getattr(tqdm, "_instances", ())) if getattr(b, "total", None)]
    except RuntimeError:  # a bar made meanwhile ("changed size during iteration"): next second
        return None
    if not bars:
        return None
    bar = min(bars, key=lambda b: abs(getattr(b, "pos", 0)))
    return {"desc": str(bar.desc or ""), "n": int(bar.n), "total": int(bar.total),
            "fraction": round(min(1.0, bar.n / bar.total), 4)}


def _exit_code(code) -> int:
    return 0 if code is None else code if isinstance(code, int) else 1


def _record_exit(journal: _StageJournal) -> None:
    """Keep the exit status for the journal: `sys.exit(code)` (how Typer ends every command) and an uncaught
    exception (traceback, exit 1); atexit then writes the entry. A SIGKILL leaves it `running` with a dead pid."""
    exit_, hook = sys.exit, sys.excepthook

    def recording_exit(code=None):
        journal.exit_code = _exit_code(code)
        exit_(code)

    def recording_hook(kind, value, tb):
        journal.exit_code = 1
        hook(kind, value, tb)

    sys.exit, sys.excepthook = recording_exit, recording_hook
    atexit.register(journal.finish)


_started: list[_StageJournal] = []


def stage_started() -> None:
    """Called by every stage at start (`load_stage`): under `dvc repro` (DVC_STAGE set), and in rank 0 alone under
    torchrun, record the item in the journal, follow its tqdm bars, and log which item of how many this is and how
    long the rest takes. Never fails the stage: a journal that cannot be written is one log line."""
    item = os.environ.get("DVC_STAGE")
    if not item or _started or not distributed.from_env().is_main:
        return
    root = Path(os.environ.get("DVC_ROOT") or ".")
    try:
        journal = _StageJournal(root, item, run_plan.dvc_process())
    except OSError as e:
        log.warning("progress: cannot write the journal (%s); `python -m synthaug status` will not see %s", e, item)
        return
    _started.append(journal)
    _record_exit(journal)
    threading.Thread(target=journal.watch, name="synthaug-progress", daemon=True).start()
    # DVC replaces tqdm's global lock when dvc.progress is imported (`tqdm.set_lock(RLock())`): done in the estimate
    # thread, it raced the stage's own bars ("cannot release un-acquired lock"); here, before any bar, it cannot.
    import dvc.progress  # noqa: F401  (~10 ms)

    # The line needs dvc.yaml, dvc.lock and the files' hashes (~1 s, mostly DVC parsing dvc.lock): a low-priority
    # thread computes it while the stage starts its work; at exit the stage waits for it (ANNOUNCE_WAIT at most).
    announcer = threading.Thread(target=_announce, args=(root, item), name="synthaug-estimate", daemon=True)
    announcer.start()
    atexit.register(announcer.join, ANNOUNCE_WAIT)  # runs before journal.finish (atexit: last registered first)


def _announce(root: Path, item: str) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread only (Linux)
    except (AttributeError, OSError):
        pass
    try:
        log.info("%s", start_line(root, item))
    except Exception as e:  # an estimate is a convenience: the stage runs on
        log.warning("progress: no estimate for the rest of the run (%s: %s)", type(e).__name__, e)


# ---- estimates ----------------------------------------------------------------------------------------------


def _family(item: str) -> str:
    """`train` for `train@vae` and for a matrix stage's `train_vae@0`; `fid_ref` for `fid_ref`."""
    stage = item.split("@", 1)[0]
    return max((k for k in DEFAULT_SECONDS if stage == k or stage.startswith(k + "_")), key=len, default="")


def mlflow_durations(root: Path) -> dict[str, tuple[float, str]]:
    """Stage item -> (seconds of its last finished stage process in the MLflow store, host): from the first run
    start to the last run end of that process's runs (a classify item's nested runs included). Only a local sqlite
    store is read (opened read-only); a server or a missing store gives nothing."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and not uri.startswith("sqlite:///"):
        return {}
    path = Path(uri[len("sqlite:///"):]) if uri else Path(root) / "mlflow.db"
    if not path.is_file():
        return {}
    query = ("SELECT s.value, p.value, h.value, MIN(r.start_time), MAX(r.end_time), "
             "SUM(r.status != 'FINISHED') FROM runs r "
             "JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'dvc.stage' "
             "LEFT JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = ? "
             "LEFT JOIN tags h ON h.run_uuid = r.run_uuid AND h.key = ? "
             "WHERE r.lifecycle_stage = 'active' GROUP BY s.value, p.value, h.value ORDER BY MIN(r.start_time)")
    try:
        with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=2.0) as db:
            rows = db.execute(query, (PID_TAG, HOST_TAG)).fetchall()
    except sqlite3.Error:
        return {}
    found = {}
    for item, _, host, start, end, unfinished in rows:  # oldest first: the last one stays
        if not unfinished and start and end and end >= start:
            found[item] = ((end - start) / 1000.0, host or "")
    return found


def _mlflow_estimate(seconds: float, run_host: str, host: str, pairs: list[tuple[float, float]]) -> tuple[float, str]:
    """An MLflow duration made comparable with a stage process's: `pairs` are (journal, MLflow) seconds of items
    measured both ways here. A run of this host lacks the process's start-up (imports, params): add the median
    difference. Another host's run: scale by the median ratio (its speed against this machine's)."""
    if run_host == host:
        extra = statistics.median(j - m for j, m in pairs) if pairs else 0.0
        return seconds + extra, "MLflow record" + (f" + {duration(extra)} start-up" if pairs else "")
    ratio = statistics.median(j / m for j, m in pairs if m > 0) if pairs else 1.0
    return seconds * ratio, f"MLflow record from {run_host}" + (f" x{ratio:.2g}" if pairs else "")


def estimates(root: Path, items: list[str], journal: dict[str, dict]) -> dict[str, tuple[float, str]]:
    """Item -> (seconds, where the figure comes from) for each of `items` (module docstring: which source wins)."""
    host, params = socket.gethostname(), _params_md5(root)
    measured = {i: e["last"] for i, e in journal.items() if isinstance(e.get("last"), dict)}
    mlflow = mlflow_durations(root)
    pairs: dict[str, list[tuple[float, float]]] = {}  # MLflow host -> (journal, MLflow) seconds of shared items
    for i, last in measured.items():
        if i in mlflow and last.get("host") == host:
            pairs.setdefault(mlflow[i][1], []).append((last["seconds"], mlflow[i][0]))
    guess_scale, guess_words = _guess_scale(measured, host, params)
    out = {}
    for item in items:
        if item in measured:
            last = measured[item]
            where = "this machine's last run" if last.get("host") == host else f"{last.get('host')}'s last run"
            out[item] = (last["seconds"], where + ("" if last.get("params_md5") == params else ", other params"))
        elif item in mlflow:
            seconds, run_host = mlflow[item]
            out[item] = _mlflow_estimate(seconds, run_host, host, pairs.get(run_host, []))
        else:
            out[item] = (DEFAULT_SECONDS.get(_family(item), DEFAULT_OTHER) * guess_scale, guess_words)
    return out


def _guess_scale(measured: dict[str, dict], host: str, params: str) -> tuple[float, str]:
    """How far this run's params and machine sit from the default guesses (sized for the laptop default on 2
    cores): the median of measured / guessed seconds over the items this machine ran with these params; a smoke
    profile's stages take seconds where the guesses say minutes. (1, "default guess") when nothing is measured."""
    ratios = [last["seconds"] / DEFAULT_SECONDS.get(_family(i), DEFAULT_OTHER) for i, last in measured.items()
              if last.get("host") == host and last.get("params_md5") == params and last.get("seconds", -1) >= 0]
    if not ratios:
        return 1.0, "default guess"
    r = statistics.median(ratios)
    return r, f"default guess x{r:.2g} (as {len(ratios)} item{'s' * (len(ratios) != 1)} measured here)"


def _from_progress(running: dict) -> tuple[float, str] | None:
    """A running item's whole duration extrapolated from its own progress bar (elapsed / fraction done), once the
    bar has moved far enough (5 %) to say more than a guess made for another machine or other params."""
    p = running.get("progress") or {}
    fraction = p.get("fraction") or 0.0
    if fraction < 0.05 or not p.get("at") or not running.get("start"):
        return None
    return (p["at"] - running["start"]) / fraction, "its progress bar"


def sources_words(sources: list[str]) -> str:
    """`estimates from this machine's last run`, or the count per source when they differ."""
    counts: dict[str, int] = {}
    for s in sources:
        counts[s] = counts.get(s, 0) + 1
    if len(counts) == 1 and sources[0] == "default guess":
        return "estimates: default guesses per stage family, nothing measured yet"
    if len(counts) == 1:
        return f"estimates from {sources[0]}"
    return "estimates: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _alive(pid: int, started: str) -> str:
    """running / paused / gone (exited, or its pid now another process's) / unknown (no /proc: pid alone)."""
    return stage_state(int(pid), str(started or ""))


def snapshot(root: Path, own: str | None = None) -> dict:
    """Where the latest run stands (the run of stage item `own` when given): done, failed and running items with
    their times and progress, the items left (from `run_plan`) and an estimate of the rest, as plain data."""
    root = Path(root)
    journal = read_journal(root)
    latest = journal.get(own) or max(journal.values(), key=lambda e: e.get("start", 0), default=None)
    run_id, dvc = (latest.get("run"), latest.get("dvc")) if latest else (None, None)
    alive = bool(dvc) and _alive(dvc["pid"], dvc["started"]) != "gone"
    mine = [e for e in journal.values() if (run_id and e.get("run") == run_id) or e is latest]
    starting = None if alive or own else run_plan.starting_dvc(root)
    if starting:  # a new run before its first stage: nothing of it in the journal yet
        dvc, alive, mine = starting, True, []
    now, done, failed, running = time.time(), [], [], []
    for e in sorted(mine, key=lambda e: e.get("start", 0)):
        base = {"item": e["item"], "start": e.get("start"), "pid": e.get("pid")}
        state = _alive(e["pid"], e.get("pid_started")) if e.get("status") == "running" else e.get("status")
        if state == "done":
            done.append(dict(base, seconds=round(e["end"] - e["start"], 1)))
        elif state in ("failed", "gone"):
            failed.append(dict(base, exit_code=e.get("exit_code"), why="exit code %s" % e.get("exit_code")
                               if state == "failed" else "ended without a record (killed?)"))
        else:
            running.append(dict(base, state=state, elapsed=round(now - e["start"], 1), progress=e.get("progress")))
    busy = {r["item"] for r in running}
    plan = run_plan.plan(root, dvc.get("args") if alive else None, busy=busy)
    left_items = plan.to_run(exclude={e["item"] for e in mine} if alive else set())
    est = estimates(root, [*busy, *left_items], journal)
    for r in running:
        r["estimate"], r["estimate_source"] = _from_progress(r) or est[r["item"]]
        r["remaining"] = round(max(0.0, r["estimate"] - r["elapsed"]), 1)
    left = [{"item": i, "maybe": i in plan.maybe, "why": plan.stale.get(i) or f"after {plan.maybe[i]}",
             "estimate": est[i][0], "estimate_source": est[i][1]} for i in left_items]
    return {"root": str(root.absolute()), "command": plan.command, "in_progress": alive, "starting": bool(starting),
            "run": {"dvc_pid": dvc["pid"], "args": dvc["args"]} if dvc else None,
            "run_start": min((e["start"] for e in mine), default=None), "done": done, "failed": failed,
            "running": running, "left": left, "items_in_dvc_yaml": len(plan.all_items),
            "remaining_seconds": round(sum(r["remaining"] for r in running) + sum(x["estimate"] for x in left), 1),
            "maybe_seconds": round(sum(x["estimate"] for x in left if x["maybe"]), 1),
            "own_start": journal[own]["start"] if own in journal else None}


def start_line(root: Path, item: str) -> str:
    """`stage 7 of 42 (train@vae): ~1 h 20 min left for the rest (estimates from this machine's last run)`."""
    snap = snapshot(root, own=item)
    run_items = [*snap["done"], *snap["failed"], *snap["running"]]
    index = 1 + sum(r["start"] < snap["own_start"] for r in run_items if r["item"] != item)
    total = len(run_items) + len(snap["left"])
    sources = [r["estimate_source"] for r in (*snap["running"], *snap["left"])]
    return (f"stage {index} of {total} ({item}): ~{duration(snap['remaining_seconds'])} left for the rest "
            f"({sources_words(sources)})")
