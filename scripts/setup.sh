#!/usr/bin/env bash
# Sets up everything Dragoman needs on a fresh Debian 12 machine with Python 3.11:
# Debian packages (espeak-ng + mbrola voices, Chromium, PulseAudio, PortAudio), a venv, and the Python packages.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--test]  (--test adds the test-only packages)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
VENV="${DRAGOMAN_VENV:-.venv}"
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

APT_PKGS=(espeak-ng mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-de6 mbrola-de7 mbrola-fr1 mbrola-fr4 mbrola-es1 mbrola-es2
          sox libsox-fmt-all libportaudio2 libsndfile1)
[[ $WITH_TEST -eq 1 ]] && APT_PKGS+=(chromium fonts-dejavu-core pulseaudio pulseaudio-utils zbar-tools)

missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  # mbrola voices live in contrib/non-free, which fresh apt sources leave out: add a deb822 copy of the main entry.
  src=/etc/apt/sources.list.d/dragoman-contrib.sources
  if [[ ! -f $src ]]; then
    base=/etc/apt/sources.list.d/debian.sources
    if [[ -f $base ]]; then
      # first stanza of the Debian main entry, with the components swapped
      awk 'BEGIN{RS="";ORS="\n\n"} NR==1' "$base" | sed 's/^Components:.*/Components: contrib non-free/' \
        | $SUDO tee "$src" >/dev/null
    else
      echo "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" | $SUDO tee "$src" >/dev/null
    fi
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  PY=$(command -v python3.11 || command -v python3)
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian's own Python ships venv/ensurepip separately
    rm -rf "$VENV"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    "$PY" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
# torch first: 2.13.0 is a CPU wheel on this machine's disk; a bare requirement would pull a CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" install "torch==2.13.0"
# --test adds the ray extra too: tests/integration/test_ray_serve.py runs `dragoman serve --replicas 2` on a local Ray cluster
if [[ $WITH_TEST -eq 1 ]]; then "${PIP[@]}" install -e ".[test,ray]"; else "${PIP[@]}" install -e .; fi
echo "setup done: $VENV"
