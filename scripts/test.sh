#!/usr/bin/env bash
# Sets everything up (Debian packages, venv, Python packages incl. test-only ones) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PYTHONUNBUFFERED=1
# Types first: mypy --strict over engine/ and app/runtime.py ([tool.mypy] in pyproject.toml); any error fails the run
.venv/bin/mypy
# -p no:cacheprovider: CI clones are read-only-friendly; --durations shows where the minutes go.
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -q "$@"
