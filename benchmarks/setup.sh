#!/usr/bin/env bash
# Sets up what the benchmarks need on top of the test setup: scripts/setup.sh --test (espeak-ng + MBROLA voices,
# the venv), Debian's tuxpaint-stamps-default (real French and Spanish recordings for benchmarks/corpus.py) and
# the bench extra. Idempotent. Usage: benchmarks/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
if ! dpkg -s tuxpaint-stamps-default >/dev/null 2>&1; then
  # in Debian main; scripts/setup.sh has already added contrib/non-free for the MBROLA voices
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends tuxpaint-stamps-default >/dev/null
fi
VENV="${DRAGOMAN_VENV:-.venv}"
"$VENV/bin/python" -m pip -q --disable-pip-version-check install -e ".[test,bench]"
# the peers themselves, without their declared dependencies (why: benchmarks/requirements-peers.txt)
"$VENV/bin/python" -m pip -q --disable-pip-version-check install --no-deps -r benchmarks/requirements-peers.txt
echo "bench setup done: $VENV"
