#!/usr/bin/env bash
# Creates .venv (when missing) and installs the project into it; sourced by demo.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [[ ! -x "$root/.venv/bin/python" ]]; then
  "$python" -m venv "$root/.venv"
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
fi
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[${EMBEDDER_EXTRAS:-dev,bench}]"
