#!/usr/bin/env bash
# The CUDA path exercised (issue 16): run on a machine with an NVIDIA GPU, after ./scripts/setup.sh, from the
# repo root. Prints what it measured; writes nothing into the repo (a scratch clone under $TMPDIR).
#   scripts/gpu_check.sh [--quick]      --quick: skip the end-to-end smoke run (about a minute less)
#
# 1. what the machine is: GPU, driver, torch's CUDA build, bf16 support;
# 2. the smoke profile (configs/smoke.yaml) end to end with `dvc repro` in a scratch clone, `device: cuda`,
#    `precision: auto` (bf16 autocast where the GPU supports it): every stage item's wall time, then which
#    device and precision each stage's MLflow run recorded;
# 3. every training loop's step at the laptop default's sizes (params.yaml) on the GPU: ms/step, images/s, model
#    FLOP/s and its share of the GPU's measured matmul peak (benchmarks/loop_flops.py --device cuda);
# 4. the classifier bank (issue 34): the laptop default's 21 classify_real runs one after another against one bank
#    of 21 and banks of 7 on the GPU: images/s, model FLOP/s, share of the peak, eager and under torch.compile
#    with CUDA graphs, compilation timed apart (benchmarks/classifier_bank.py --compile reduce-overhead);
# 5. data-parallel training: the torchrun tests (2 CPU processes, gloo), then, with 2 or more GPUs, `train vae`,
#    `train diffusion` and `classify real` of the smoke profile with `processes` = the GPU count (NCCL), timed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
quick=0
[ "${1:-}" = "--quick" ] && quick=1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || { echo "nvidia-smi failed: no NVIDIA GPU here"; exit 1; }
python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit(f"torch {torch.__version__} sees no CUDA device (CPU-only build, or no driver): nothing to check")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.device_count()} GPU(s): "
      f"{torch.cuda.get_device_name(0)}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PY

work=$(mktemp -d "${TMPDIR:-/tmp}/synthaug-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ "$quick" = 0 ]; then
  echo "== the smoke profile end to end on CUDA (dvc repro in a scratch clone)"
  sed -e 's/^device: .*/device: cuda/' -e 's/^precision: .*/precision: auto/' configs/smoke.yaml > "$work/smoke-cuda.yaml"
  python benchmarks/laptop_study.py --params "$work/smoke-cuda.yaml" --budget-min 10 --keep "$work/clone"
  python - "$work/clone" <<'PY'
import sys
from collections import Counter
from pathlib import Path
from mlflow.tracking import MlflowClient

clone = Path(sys.argv[1])
client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)]
seen = Counter((r.data.params.get("device", "-"), r.data.params.get("precision", "-")) for r in runs)
print("MLflow runs by (device, precision):", dict(seen))
if not any(d.startswith("cuda") for d, _ in seen):
    raise SystemExit("no stage ran on CUDA")
PY
fi

echo "== every training loop on the GPU at the laptop default's sizes (params.yaml)"
python benchmarks/loop_flops.py --device cuda --params params.yaml --steps 20

echo "== the classifier bank on the GPU: 21 classify_real runs one after another vs banks, eager and under"
echo "   torch.compile with CUDA graphs (mode reduce-overhead) (params.yaml)"
python benchmarks/classifier_bank.py --device cuda --params params.yaml --sizes 1 7 21 --steps 50 \
  --compile reduce-overhead

echo "== data-parallel training under torchrun on the CPU (2 processes, gloo): tests/test_distributed.py"
python -m pytest -q -p no:cacheprovider tests/test_distributed.py

gpus=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -ge 2 ]; then
  echo "== the same stages on $gpus GPUs (processes: $gpus, NCCL) against one GPU, smoke profile"
  for n in 1 "$gpus"; do
    ws="$work/ddp-$n"; mkdir -p "$ws"
    sed -e 's/^device: .*/device: cuda/' -e "s/^processes: .*/processes: $n/" configs/smoke.yaml > "$ws/params.yaml"
    (cd "$ws" && export DVC_ROOT="$ws" && python -m synthaug prepare >/dev/null 2>&1
     for cmd in "train vae" "train diffusion" "classify real --seed 0"; do
       start=$(date +%s.%N)
       python -m synthaug $cmd > "$ws/log" 2>&1 || { tail -20 "$ws/log"; exit 1; }
       echo "processes $n: $cmd $(python -c "print(f'{$(date +%s.%N) - $start:.1f} s')"); $(grep -h '^train_\|test accuracy' "$ws/log" | tail -1)"
     done)
  done
else
  echo "== one GPU: the NCCL path needs two (the torchrun tests above ran on the CPU)"
fi
