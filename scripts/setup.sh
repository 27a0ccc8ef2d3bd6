#!/usr/bin/env bash
# Create .venv and install the pinned requirements, bnlib included (editable). Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt

# Kernels talk to the book build, nbval and Jupyter over local TCP; the kernel application logs a
# warning about it at every start. Its own log shows errors only; what a cell prints, warnings
# included, is unaffected.
mkdir -p .venv/etc/ipython
echo '{"IPKernelApp": {"log_level": "ERROR"}}' > .venv/etc/ipython/ipython_kernel_config.json
# Check that the setting took: a kernel of .venv starts without the warning.
.venv/bin/python - <<'PYTHON'
import sys
import tempfile

from jupyter_client.manager import KernelManager

with tempfile.TemporaryFile("w+") as stderr:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(stderr=stderr)
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
    stderr.seek(0)
    if "running over TCP" in stderr.read():
        sys.exit("setup: kernels still log the TCP warning; .venv/etc/ipython/"
                 "ipython_kernel_config.json was not read")
PYTHON

# Any build of torch==2.13.0 works (a CUDA build uses the GPU when there is one). Only CI insists
# on the CPU build: a CUDA one would mean gigabytes of nvidia-* wheels on every run.
if [ "${CI:-}" = "true" ] && .venv/bin/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
    echo "setup: CUDA packages (nvidia-*) were installed; CI expects the CPU build of torch." >&2
    exit 1
fi
.venv/bin/python - <<'PYTHON'
import torch

import bnlib

build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
print(f"setup: torch {torch.__version__} ({build} build), bnlib {bnlib.__version__}")
PYTHON
