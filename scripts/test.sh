#!/usr/bin/env bash
# Sets up .venv, then lints and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-venv.sh
.venv/bin/ruff check .
# pytest exits 5 when it collects no test: that is a failure here, like any other non-zero exit.
.venv/bin/python -m pytest "$@"
