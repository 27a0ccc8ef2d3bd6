#!/usr/bin/env bash
# Set up, then run every test, in this order: ruff (lint and import order); bnlib's unit tests; the warning-free book build and
# the checks of its pages (static HTML, then headless Chromium); each chapter under nbval, whose
# outputs must equal the build's; then, with no arguments, the claims check: every chapter again
# on shifted seeds and another CPU code path (scripts/check-claims.sh). Extra arguments go to
# pytest, and skip the claims check; the unit tests alone:
#   bash scripts/test.sh tests -m "not book"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ]; then
    # One offset the chapters were not written on; BNLIB_CLAIMS_OFFSETS="7 2024" runs others.
    offsets=()
    for offset in ${BNLIB_CLAIMS_OFFSETS:-100}; do offsets+=(--offset "$offset"); done
    .venv/bin/python scripts/check_claims.py "${offsets[@]}"
fi
