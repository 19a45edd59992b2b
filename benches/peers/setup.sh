#!/usr/bin/env bash
# Creates (or updates) the virtual environment of the peer engines:
#
#   benches/peers/setup.sh VENV_DIR
#
# Creates VENV_DIR with `python3 -m venv` when missing (Python 3.11; PYTHON=... to choose the
# interpreter), then installs requirements.txt with pip. Idempotent: pip is skipped while
# VENV_DIR/.installed holds the SHA-256 of the requirements.txt that was last installed.
# Afterwards run the peers with VENV_DIR/bin/python benches/peers/peers.py ...
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
venv="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/requirements.txt"
hash="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$hash" ]; then
    exit 0
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$hash" > "$venv/.installed"
echo "peers: installed $requirements into $venv" >&2
