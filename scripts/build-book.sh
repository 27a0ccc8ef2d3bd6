#!/usr/bin/env bash
# Set up, then execute every chapter and build the HTML book into _build/html (warnings are errors).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The chapters read MNIST. Find it first (downloading it when missing, as the chapters would), so
# that a missing data set stops here with its own message, not as failed chapters and missing
# numbers deep in the build's reports.
.venv/bin/python - <<'PYTHON'
import sys

import bnlib

try:
    for split in ("train", "test"):
        bnlib.load_mnist(split)
except bnlib.DataError as error:
    sys.exit(f"build-book: the chapters need MNIST, which is not available.\n{error}")
PYTHON
.venv/bin/jupyter-book build . -W -n --keep-going "$@"
