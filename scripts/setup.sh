#!/usr/bin/env bash
# Create .venv and install the pinned requirements, bnlib included (editable). Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt

# torch is pinned to a CPU build; a CUDA build would mean gigabytes of nvidia-* wheels.
if .venv/bin/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
    echo "setup: CUDA packages (nvidia-*) were installed; expected the CPU build of torch==2.13.0." >&2
    exit 1
fi
.venv/bin/python -c "import torch, bnlib; print(f'setup: torch {torch.__version__}, bnlib {bnlib.__version__}')"
