#!/usr/bin/env bash
# Execute every chapter with shifted seeds (BNLIB_SEED_OFFSET) on a CPU code path other than the
# book build's (ATEN_CPU_CAPABILITY), and fail when any cell fails. Arguments go to
# scripts/check_claims.py, for example:
#   bash scripts/check-claims.sh --offset 100 --offset 2024 book/cnn.md
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python scripts/check_claims.py "$@"
