#!/usr/bin/env bash
# Sets everything up (Debian packages, venv, Python packages incl. test-only ones) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PYTHONUNBUFFERED=1
# Static checks first, each failing the run: lint and formatting ([tool.ruff]), then types (mypy --strict over
# engine/ and app/runtime.py, [tool.mypy]); the import layers and cycles are a test (tests/test_imports.py)
.venv/bin/ruff check --no-cache .
.venv/bin/ruff format --check --no-cache .
.venv/bin/mypy --no-incremental
# -p no:cacheprovider: CI clones are read-only-friendly; --durations shows where the minutes go.
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=15 -q "$@"
