#!/usr/bin/env bash
# The README's main job: install, make sure Redis and Postgres run, then run the demo
# (its own database, Redis databases, S3 server and worker; see bench/demo/).
# Usage: scripts/demo.sh [PHOTO_FOLDER] [--bucket NAME] [--fresh] [--timeout SECONDS]
set -euo pipefail
# A relative PHOTO_FOLDER is meant from where the command was typed, not the repo root.
export CHANGEWATCH_DEMO_CWD="$PWD"
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
exec .venv/bin/python -m bench.demo "$@"
