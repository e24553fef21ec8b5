#!/usr/bin/env bash
# One command on a fresh machine: install the project into .venv and run the local folder
# flow end to end on embedded defaults (Prefect's embedded SQLite API, SQLite ledger in
# .ingest/ledger.db, landing area in .ingest/landing, demo input in demo/inbox).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e .
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
exec .venv/bin/python -m ops.demo "$@"
