#!/usr/bin/env bash
# One command on a fresh machine: install the project into .venv and run the local folder
# flow end to end on embedded defaults (Prefect's embedded SQLite API, SQLite ledger in
# $INGEST_HOME/ledger.db, landing area in $INGEST_HOME/landing, demo input in demo/inbox).
#   ./quickstart.sh          the demo: two runs, then exit
#   ./quickstart.sh --serve  a local Prefect server and UI serving the demo deployment on its
#                            schedule, until Ctrl-C (port $INGEST_DEMO_PORT, default 4200)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Skip pip when constraints.txt and pyproject.toml have not changed since the last install
# (./run-tests.sh installs a superset, under its own stamp).
stamp=.venv/.ingest-quickstart-deps
want="$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e .
  echo "$want" >"$stamp"
fi
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# Prefect waits 20 s for its temporary (embedded) server; on a loaded 2-core machine it took
# longer and the demo failed with "Timed out while attempting to connect".
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}"
exec .venv/bin/python -m ops.demo "$@"
