#!/usr/bin/env bash
# Sets up .venv, then checks the code (ruff, import contracts, types) and runs the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-venv.sh
.venv/bin/ruff check .
.venv/bin/lint-imports          # the layers and the import contracts in pyproject.toml
.venv/bin/mypy                  # types of embedder/ (settings in pyproject.toml)
# pytest exits 5 when it collects no test: that is a failure here, like any other non-zero exit.
.venv/bin/python -m pytest "$@"
