#!/usr/bin/env bash
# Set up, then run every test, in this order: bnlib's unit tests; the warning-free book build and
# the checks of its pages (static HTML, then headless Chromium); each chapter under nbval, whose
# outputs must equal the build's. Extra arguments go to pytest; the unit tests alone:
#   bash scripts/test.sh tests -m "not book"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
