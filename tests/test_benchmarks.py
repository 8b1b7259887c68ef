"""Every benchmark in benchmarks/ runs at a tiny size and prints the table it promises (issue 33: a script that stays
runs in a test). Figures are checked to be finite and positive, never for their size: timings are the machine's.
benchmarks/classifier_bank.py runs in tests/test_bank.py, scripts/readme_screenshots.py in tests/test_browser.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SMOKE
from test_pipeline import run, stages_run

BENCH = REPO / "benchmarks"


def bench_env() -> dict:
    """A benchmark's environment: this repo's code, one torch thread, the venv's `dvc` first on PATH, no store of
    the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PYTHONPATH=str(REPO / "src"), SYNTHAUG_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def bench(script: str, *args: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd, env=bench_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def positive(text: str) -> float:
    value = float(text.rstrip("%x"))
    assert math.isfinite(value) and value > 0, text
    return value


def test_thread_oversubscription_prints_ms_per_step_at_one_thread(tmp_path):
    """One resnet20 step after one warm-up, on the one thread SYNTHAUG_THREADS gives it."""
    out = bench("thread_oversubscription.py", "--warmup", "1", "--steps", "1", cwd=tmp_path)
    m = re.fullmatch(r"threads=1 precision=(\S+): (\d+) ms/step", out.strip())
    assert m and m.group(1) in ("fp32", "bf16-autocast"), out
    assert int(m.group(2)) > 0


def test_loop_flops_prints_a_row_per_training_loop(write_params, tmp_path):
    """Every loop at configs/smoke.yaml's sizes (as Fashion-MNIST: the one dataset whose shape the script knows
    without prepared data), one timed step each."""
    params = write_params({"dataset.name": "fashion_mnist"})
    out = bench("loop_flops.py", "--params", str(params), "--steps", "1", cwd=tmp_path)
    lines = out.splitlines()
    head = re.match(r"precision (\S+), 1 threads, matmul peak ([0-9.]+) GFLOP/s \(cpu, best of 5 square matmuls\); "
                    r"params .*; 1 timed steps per loop", lines[0])
    assert head, lines[0]
    positive(head.group(2))
    assert lines[1].split() == ["loop", "batch", "ms/step", "images/s", "GFLOP/step", "GFLOP/s", "%", "peak"]
    rows = [ln.split() for ln in lines[2:]]
    assert [r[0] for r in rows] == ["vae", "gan", "lsgan", "wgan_gp", "diffusion", "inversion", "classifier"]
    batches = {r[0]: r[1] for r in rows}
    assert batches["vae"] == "64" and batches["gan"] == "1x32" and batches["wgan_gp"] == "2x32"  # smoke's sizes
    for r in rows:
        assert len(r) == 7 and r[6].endswith("%"), r
        for figure in r[2:]:
            positive(figure)


def test_fid_vs_cli_agrees_with_pytorch_fid_on_both_pairs(tmp_path):
    """65 digits images per set at dims 64 (the least the covariance allows): the CLI's FID and ours are printed for
    the low and the high pair, and they agree."""
    from synthaug.data.real import load_dataset, write_prepared

    write_prepared(load_dataset("digits", None, 32), tmp_path / "real")
    out = bench("fid_vs_cli.py", "--n", "65", "--dims", "64", "--batch-size", "65", "--real", str(tmp_path / "real"),
                cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("65 images per set, dims 64, batch 65, 1 torch threads, SYNTHAUG_THREADS=1"), out
    assert lines[1].split()[:3] == ["pair", "CLI", "FID"] and len(lines) == 4, out
    rows = {ln[:30].strip(): ln[30:].split() for ln in lines[2:]}
    assert list(rows) == ["low (train vs test)", "high (test vs degraded test)"]
    for name, (cli_fid, our_fid, diff, *times) in rows.items():
        assert positive(our_fid) == pytest.approx(positive(cli_fid), rel=1e-3, abs=1e-4), name
        assert abs(float(diff)) < 0.1 and len(times) == 5, name
        for t in times:
            positive(t)
    assert float(rows["high (test vs degraded test)"][1]) > 10 * float(rows["low (train vs test)"][1])


def _stray_processes(folder: Path) -> list[int]:
    """Processes still working in `folder` (a stage DVC left behind)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).resolve() == folder.resolve():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def test_laptop_study_stopped_then_resumed_adds_up_both_sittings(tmp_path):
    """README's `--keep DIR` then `--resume DIR`, on configs/smoke.yaml limited to `fid_ref` (prepare, then fid_ref):
    stopped by SIGTERM once fid_ref is at work, the record holds both stage items and an unfinished sitting, and no
    stage runs on; the resume runs fid_ref alone and prints the table of both sittings."""
    keep = tmp_path / "clone"
    record = keep / "laptop_study_times.json"
    proc = subprocess.Popen([sys.executable, str(BENCH / "laptop_study.py"), "--params", str(SMOKE), "--budget-min",
                             "1", "--keep", str(keep), "--", "fid_ref"], cwd=tmp_path,
                            env={**bench_env(), "PYTHONUNBUFFERED": "1"},  # each line as it comes
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            # fid_ref's runtime line, logged before it loads Inception and computes the features: it is at work
            # (not the "stage i of N" line: that one comes from a background thread, late on a loaded machine)
            if "(Inception)" in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = "".join(seen) + rest
    assert proc.returncode == 1 and stages_run(first) == {"prepare", "fid_ref"}, first[-3000:] + err[-2000:]
    assert err.strip().endswith(f"stopped; the times so far are in {record} (go on with --resume {keep})"), err
    assert not _stray_processes(keep)  # the stage was stopped with DVC, not left running
    stopped = json.loads(record.read_text())
    assert stopped["params"] == str(SMOKE) and list(stopped["stages"]) == ["prepare", "fid_ref"]
    assert all(s > 0 for s in stopped["stages"].values())
    assert [s["finished"] for s in stopped["sittings"]] == [False] and stopped["sittings"][0]["seconds"] > 0
    assert not (keep / "data" / "fid_ref.npz").exists()

    refused = subprocess.run([sys.executable, str(BENCH / "laptop_study.py"), "--keep", str(keep)], cwd=tmp_path,
                             env=bench_env(), capture_output=True, text=True)
    assert refused.returncode == 1 and f"holds a run already (--resume {keep}" in refused.stderr

    out = run([sys.executable, str(BENCH / "laptop_study.py"), "--resume", str(keep), "--", "fid_ref"], tmp_path,
              bench_env())
    assert stages_run(out) == {"fid_ref"} and (keep / "data" / "fid_ref.npz").is_file()
    resumed = json.loads(record.read_text())
    assert [s["finished"] for s in resumed["sittings"]] == [False, True]
    assert resumed["stages"]["prepare"] == stopped["stages"]["prepare"]
    assert resumed["stages"]["fid_ref"] > stopped["stages"]["fid_ref"]  # both sittings' parts
    table = out[out.index("`dvc repro` from a scratch clone"):].splitlines()
    assert table[0].startswith("`dvc repro` from a scratch clone: smoke.yaml, 1 threads per stage, torch ")
    assert table[0].endswith(", 2 sitting(s)"), table[0]
    assert table[1].split() == ["stage", "item", "wall", "s"]
    items = {r.split()[0]: positive(r.split()[1]) for r in table[2:4]}
    assert items == pytest.approx({k: round(v, 1) for k, v in resumed["stages"].items()}, abs=0.051)
    assert table[4] == "" and table[5].split() == ["stage", "family", "wall", "s", "share"]
    families = [r.split() for r in table[6:8]]
    assert sorted(f[0] for f in families) == ["fid_ref", "prepare"]
    assert all(positive(f[1]) and 0 < positive(f[2]) <= 100 for f in families)
    total = sum(s["seconds"] for s in resumed["sittings"])
    assert table[8].startswith("total (incl. DVC before the first stage)")
    assert f"{total:9.1f}  = {total / 60:.1f} min" in table[8] and table[8].endswith("-minute budget")
