#!/usr/bin/env bash
# Sets up .venv, then runs the demo job on the embedded defaults (the local stand-in server unless JINA_API_KEY is set).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-venv.sh
exec .venv/bin/embedder demo "$@"
