#!/usr/bin/env bash
# Sets everything up and starts the main job: the web app with the embedded default model.
# Extra arguments go to `dragoman serve` (e.g. --host 0.0.0.0 --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/dragoman serve "$@"
