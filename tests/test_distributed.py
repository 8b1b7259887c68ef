"""synthaug.distributed under a real `torchrun --nproc_per_node 2` on CPU (gloo): two processes training on halves of
the same global batches reach the weights one process reaches on the whole batches (mean-reduced loss, gradient
clipping after the average), log the same losses, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthaug import distributed

HERE = Path(__file__).resolve().parent


def _run(cmd: list[str], tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent / "src"))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun is not installed")
def test_two_processes_train_what_one_process_trains(tmp_path):
    one = _run([sys.executable, str(HERE / "ddp_worker.py"), "out.json"], tmp_path)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    two = _run([torchrun, "--standalone", "--nproc_per_node", "2", str(HERE / "ddp_worker.py"), "out.json"],
               tmp_path)
    assert (one["world"], two["world"], two["ranks"]) == (1, 2, [0, 1])
    np.testing.assert_allclose(two["weight"], one["weight"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["bias"], one["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)


def test_one_process_is_untouched():
    d = distributed.from_env({})
    assert d == distributed.SINGLE and d.is_main and not d.active
    x = np.arange(6)
    assert distributed.shard(d, x) == (x,) and distributed.mean_across(d, {"a": 1.5}) == {"a": 1.5}
    assert distributed.average_gradients(d, []) == [] and distributed.gather_objects(d, "r") == ["r"]


def test_torchrun_environment_and_uneven_batches():
    import torch

    d = distributed.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (d.rank, d.world, d.local_rank, d.is_main, d.active) == (2, 4, 0, False, True)
    (part,) = distributed.shard(d, torch.arange(8))
    assert part.tolist() == [2, 6]
    with pytest.raises(ValueError, match="does not split evenly over 4 processes"):
        distributed.shard(d, torch.arange(6))
