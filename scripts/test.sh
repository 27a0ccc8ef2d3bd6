#!/usr/bin/env bash
# Set up, then run every test: bnlib's unit tests, each chapter under nbval, the warning-free book
# build and the headless-browser checks of the rendered pages. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
