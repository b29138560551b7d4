#!/usr/bin/env bash
# Sets everything up (Debian packages, venv, Python packages incl. test-only ones) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PYTHONUNBUFFERED=1
# -p no:cacheprovider: CI clones are read-only-friendly; --durations shows where the minutes go.
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -q "$@"
