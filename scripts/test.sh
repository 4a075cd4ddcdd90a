#!/usr/bin/env bash
# The test command: install, make sure Redis and Postgres run, lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
