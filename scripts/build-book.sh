#!/usr/bin/env bash
# Set up, then execute every chapter and build the HTML book into _build/html (warnings are errors).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/jupyter-book build . -W -n --keep-going "$@"
