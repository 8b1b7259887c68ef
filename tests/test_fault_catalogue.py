"""The fault catalogue: every bad input or fault a user can meet, and what they get.

CATALOGUE (tests/fault_cases.py) is the one list (README's "Bad inputs and faults" table is made from it). Each case runs the
real command line (`python -m synthaug ...`, see FORK_DRIVER) in its own workspace and must give
- the exit code listed (2: bad input, 1: a runtime fault),
- exactly one line on stderr starting `error:`, the last one, naming the culprit (the fragment listed), no
  traceback,
- no partial output: the workspace is byte-for-byte what it was before (no new file, no temp file, old
  outputs intact). The MLflow store lives outside the workspace and may record the FAILED run.

Faults that need more than one command run as their own tests, listed in SPECIAL (same file):
kill -9 of a real training stage and resume, determinism, a real kernel write failure (RLIMIT_FSIZE),
the static safety checks and secrets in logs. `covered` names the lower-level unit tests of the same fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fault_cases import CATALOGUE, P
from fault_workspaces import imagefolder, prepared_template
from forkrun import FORK_DRIVER
from conftest import REPO, SMOKE, set_key


SPECIAL = {  # faults that take more than one command: tests of this file
    "kill-9-resume": "test_kill_9_during_training_then_rerun_resumes_and_matches_uninterrupted_run",
    "determinism": "test_same_params_and_seed_give_byte_identical_metrics",
    "file-size-limit": "test_real_write_failure_leaves_old_outputs_intact",
    "safe-loads": "test_every_load_is_safe",
    "localhost-only": "test_servers_bind_localhost_by_default",
    "no-secrets-logged": "test_no_secret_reaches_mlflow_or_the_console",
}


# ---------------------------------------------------------------- running commands


def base_env(root: Path, store: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DVC_ROOT=str(root), SYNTHAUG_THREADS="1", COLUMNS="200", NO_COLOR="1",
               PYTHONPATH=str(REPO / "src"))
    if store is not None:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    return env


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` (hidden ones included) -> sha256 of its bytes ("dir" for folders)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_store(path: Path) -> Path:
    """An initialised MLflow sqlite store with the experiments created (its first use costs ~8 s)."""
    code = textwrap.dedent(f"""
        from mlflow.tracking import MlflowClient
        c = MlflowClient(tracking_uri="sqlite:///{path}")
        for name in ("digits", "fashion_mnist", "imagefolder"):
            c.create_experiment("synthaug-" + name, artifact_location="{(path.parent / 'artifacts').as_uri()}",
                                tags={{"mlflow.experimentKind": "custom_model_development"}})
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    return path


@pytest.fixture(scope="module")
def store_template(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "mlflow.db")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return prepared_template(tmp_path_factory.mktemp("template"))


USES = {"test_pickled_code_in_a_checkpoint_never_runs": "checkpoint-pickled-code",  # tests reading a case's run
        "test_no_password_in_the_unreachable_server_message": "mlflow-unreachable"}


def selected_cases(items) -> set[str]:
    """The ids of the cases the selected tests need (`-k some-case` runs that case's command only)."""
    params = (getattr(i, "callspec", None) and i.callspec.params for i in items)
    return {p["case"].id for p in params if p and "case" in p} | {USES[i.name] for i in items if i.name in USES}


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, template, store_template):
    """Run the selected catalogue cases; id -> (returncode, stderr, snapshot before, snapshot after, workspace)."""
    smoke = yaml.safe_load(SMOKE.read_text())
    logs = tmp_path_factory.mktemp("logs")
    store = Path(shutil.copy(store_template, logs / "mlflow.db"))  # the template stays pristine for other tests
    cases, before, wanted = {}, {}, selected_cases(request.session.items)
    for c in CATALOGUE:
        if c.id not in wanted:
            continue
        ws = tmp_path_factory.mktemp(c.id)
        if c.workspace == P:
            shutil.copytree(template, ws, dirs_exist_ok=True)
        changes = dict(c.changes)
        d = yaml.safe_load(yaml.safe_dump(smoke))
        for k, v in changes.items():
            set_key(d, k, v)
        (ws / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
        if c.mutate is not None:
            more = c.mutate(ws)
            if isinstance(more, dict):
                for k, v in more.items():
                    set_key(d, k, v)
                (ws / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
        args = list(c.args)
        if "--params" not in args:
            args += ["--params", "params.yaml"]
        env = {**base_env(ws, store), **c.env}
        cases[c.id] = {"cwd": str(ws), "env": env, "args": args, "inject": c.inject,
                       "stdout": str(logs / f"{c.id}.out"), "stderr": str(logs / f"{c.id}.err")}
        before[c.id] = snapshot(ws)
    (logs / "cases.json").write_text(json.dumps(cases))
    (logs / "driver.py").write_text(FORK_DRIVER)
    proc = subprocess.run([sys.executable, str(logs / "driver.py"), str(logs / "cases.json")], cwd=logs,
                          env=base_env(logs), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    return {cid: (codes[cid], Path(c["stderr"]).read_text(), before[cid], snapshot(Path(c["cwd"])), Path(c["cwd"]))
            for cid, c in cases.items()}


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_catalogue_is_complete():
    ids = [c.id for c in CATALOGUE]
    assert len(ids) == len(set(ids)) and len(ids) + len(SPECIAL) >= 20
    for test in SPECIAL.values():
        assert test in globals(), test


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.pending)]
                                               if c.pending else []) for c in CATALOGUE])
def test_fault(results, case):
    code, stderr, before, after, ws = results[case.id]
    lines = error_lines(stderr)
    tail = stderr[-2500:]
    assert "Traceback" not in stderr, tail
    assert code == case.code, tail
    assert len(lines) == 1, tail  # exactly one error line ...
    assert stderr.strip().splitlines()[-1] == lines[0], tail  # ... and it is the last word
    assert case.expect in lines[0], lines[0]
    assert after == before, f"workspace changed: {set(after.items()) ^ set(before.items())}"


def test_pickled_code_in_a_checkpoint_never_runs(results):
    ws = results["checkpoint-pickled-code"][4]
    assert not (ws.parent / (ws.name + "-PWNED")).exists()


def test_no_password_in_the_unreachable_server_message(results):
    assert "s3cret" not in results["mlflow-unreachable"][1]


# ---------------------------------------------------------------- kill -9, resume, determinism (real processes)
SECRET = "s3cret-do-not-log-7f3a"
TRAIN_CHANGES = {"precision": "fp32", "vae.epochs": 6, "vae.checkpoint_every": 5, "vae.log_every": 5}


def _train_workspace(root: Path, template: Path, store_template: Path) -> tuple[Path, dict[str, str]]:
    ws = root / "ws"
    shutil.copytree(template, ws)
    shutil.rmtree(ws / "models")
    d = yaml.safe_load(SMOKE.read_text())
    for k, v in TRAIN_CHANGES.items():
        set_key(d, k, v)
    (ws / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    shutil.copy(store_template, root / "mlflow.db")
    env = base_env(ws, root / "mlflow.db")
    env.update(MLFLOW_TRACKING_PASSWORD=SECRET, MLFLOW_TRACKING_TOKEN=SECRET, AWS_SECRET_ACCESS_KEY=SECRET)
    return ws, env


SMOKE_GENERATOR_IMAGES = 721  # digits' 1,438 training images, generator_fraction 0.5 of each class


def _start_train(ws: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "synthaug", "train", "vae", "--params", "params.yaml"], cwd=ws,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory, template, store_template):
    """Three real `python -m synthaug train vae` workspaces: `a` and `b` run uninterrupted; `k` is killed with
    SIGKILL as soon as its first checkpoint exists, then run again to the end."""
    from synthaug.core.storage import load_checkpoint

    runs = {name: _train_workspace(tmp_path_factory.mktemp(f"train-{name}"), template, store_template)
            for name in "abk"}
    out = {}
    a = _start_train(*runs["a"])
    k = _start_train(*runs["k"])
    ckpt = runs["k"][0] / "models" / "study0" / "vae" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and k.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    k.send_signal(signal.SIGKILL)
    k.communicate()
    assert k.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = load_checkpoint(ckpt)["step"]
    out["killed"] = (killed_at, (runs["k"][0] / "metrics").exists())
    out["a"] = (*a.communicate(), a.returncode)
    b = _start_train(*runs["b"])
    k2 = _start_train(*runs["k"])
    out["b"] = (*b.communicate(), b.returncode)
    out["k"] = (*k2.communicate(), k2.returncode)
    for name in "abk":
        assert out[name][2] == 0, out[name][1][-3000:]
    return {name: ws for name, (ws, _) in runs.items()}, out


@pytest.mark.slow  # the three share one fixture: four real training processes, ~60 s
def test_kill_9_during_training_then_rerun_resumes_and_matches_uninterrupted_run(train_runs):
    ws, out = train_runs
    killed_at, had_metrics = out["killed"]
    total = 6 * (SMOKE_GENERATOR_IMAGES // 64)
    assert 0 < killed_at < total and not had_metrics  # killed mid-run, after a checkpoint, before any metrics
    assert f"resuming train vae from step {killed_at} of {total}" in out["k"][1]
    # final metrics; the whole loss history
    for rel in ("metrics/train/study0/vae.json", "plots/train/study0/vae.json"):
        assert (ws["k"] / rel).read_bytes() == (ws["a"] / rel).read_bytes(), rel
    assert json.loads((ws["k"] / "metrics/train/study0/vae.json").read_text())["steps"] == total
    assert not list(ws["k"].rglob("*.tmp")) and not list(ws["k"].rglob(".*.old"))  # no debris of the kill


@pytest.mark.slow  # the three share one fixture: four real training processes, ~60 s
def test_same_params_and_seed_give_byte_identical_metrics(train_runs):
    ws, _ = train_runs
    a, b = ws["a"], ws["b"]
    for rel in ("metrics/train/study0/vae.json", "plots/train/study0/vae.json"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    m = json.loads((a / "metrics/train/study0/vae.json").read_text())
    assert np.isfinite(m["final_loss"]) and m["steps"] == 6 * (SMOKE_GENERATOR_IMAGES // 64)


@pytest.mark.slow  # the three share one fixture: four real training processes, ~60 s
def test_no_secret_reaches_mlflow_or_the_console(train_runs):
    """Runs `a` and `b` had MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN and AWS_SECRET_ACCESS_KEY set."""
    from mlflow.tracking import MlflowClient

    ws, out = train_runs
    for name in "ab":
        stdout, stderr, _ = out[name]
        assert SECRET not in stdout and SECRET not in stderr
        db = ws[name].parent / "mlflow.db"
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert [r.info.run_name for r in runs] == ["train_vae@0"] and runs[0].data.params  # params were logged
        for r in runs:
            assert SECRET not in json.dumps([r.data.params, r.data.tags])
        assert SECRET.encode() not in db.read_bytes()
        for f in ws[name].parent.rglob("*"):
            if f.is_file():
                assert SECRET.encode() not in f.read_bytes(), f


# ---------------------------------------------------------------- a real write failure (kernel file-size limit)
def test_real_write_failure_leaves_old_outputs_intact(tmp_path, template, store_template):
    """`prepare` under RLIMIT_FSIZE (2 MB): the kernel refuses the write of the 2.4 MB train.npz mid-file, as a
    full disk would. One line naming the file, exit 1, the old data/real untouched, no temp file left."""
    import resource

    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    root = imagefolder(ws, n=30, size=128, noise=True)  # incompressible: 48 train images x 48 kB
    d = yaml.safe_load(SMOKE.read_text())
    set_key(d, "dataset.name", "imagefolder")
    set_key(d, "dataset.root", str(root))
    set_key(d, "dataset.image_size", 128)
    (ws / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    shutil.copy(store_template, tmp_path / "mlflow.db")
    before = snapshot(ws)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    proc = subprocess.run([sys.executable, "-m", "synthaug", "prepare", "--params", "params.yaml"], cwd=ws,
                          env=base_env(ws, tmp_path / "mlflow.db"), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    lines = error_lines(proc.stderr)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines == [proc.stderr.strip().splitlines()[-1]]
    assert "data/real/train.npz: cannot write (File too large)" in lines[0], lines[0]
    assert snapshot(ws) == before


# ---------------------------------------------------------------- static safety checks
SRC = REPO / "src" / "synthaug"


def _calls(name: str):
    """(file, line, keywords) of every call `<module>.load(...)` with module in `name` (e.g. {"torch"})."""
    import ast

    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in name):
                kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
                yield f"{path.relative_to(REPO)}:{node.lineno}", kw


def test_every_load_is_safe():
    torch_loads, np_loads = list(_calls({"torch"})), list(_calls({"np", "numpy"}))
    assert torch_loads and np_loads  # the checks below see the real calls
    for where, kw in torch_loads:
        assert kw.get("weights_only") is True, f"{where}: torch.load without weights_only=True"
    for where, kw in np_loads:
        assert kw.get("allow_pickle") is False, f"{where}: np.load without allow_pickle=False"
    # pickle itself only behind the numpy-only unpickler used for CIFAR-10's official batches
    for path in SRC.rglob("*.py"):
        for m in re.finditer(r"^.*\bpickle\.(loads?|Unpickler)\b.*$", path.read_text(), re.M):
            assert "class _NumpyOnlyUnpickler(pickle.Unpickler)" in m.group(0), f"{path}: {m.group(0)}"


def test_servers_bind_localhost_by_default():
    files = [*SRC.rglob("*.py"), *(REPO / "scripts").glob("*"), REPO / ".ci" / "run", REPO / "README.md",
             REPO / "dvc.yaml"]
    hosts = []
    for f in filter(Path.is_file, files):
        text = f.read_text(errors="replace")
        assert "0.0.0.0" not in text, f
        hosts += re.findall(r"--host[ =](\S+)", text)
    assert hosts and set(hosts) <= {"127.0.0.1", "localhost"}, hosts  # README's `mlflow ui` command


def test_tracking_uri_credentials_are_redacted():
    from synthaug.core.tracking import redact

    assert redact("https://alice:p%40ss@mlflow.example.com:5000/x") == "https://***@mlflow.example.com:5000/x"
    assert redact("http://token@host") == "http://***@host"
    assert redact("sqlite:////work/mlflow.db") == "sqlite:////work/mlflow.db"
