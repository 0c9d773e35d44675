#!/usr/bin/env bash
# Create .venv with exactly the versions pinned in poetry.lock (hash-checked), plus the project.
# Uses `poetry export` so it works with any index that serves the simple API.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check 'poetry>=2.0,<3' 'poetry-plugin-export>=1.8'
[ -x .venv/bin/python ] || python3 -m venv .venv
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
python3 -m poetry export --with dev --format requirements.txt --output "$requirements"
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$requirements"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "ready: .venv (run 'make run' or 'make test')"
