#!/usr/bin/env bash
# THE test command: sets itself up (tests/tools/setup_test_env.sh: .venv with the test
# extras, the warehouse emulators; fast when already done), then runs the suite.
# Arguments go to pytest: ./run-tests.sh tests/test_ledger.py -x
set -euo pipefail
cd "$(dirname "$0")"
export INGEST_TOOLS_DIR="${INGEST_TOOLS_DIR:-$PWD/.ci-tools}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
bash tests/tools/setup_test_env.sh
exec .venv/bin/python -m pytest -q "$@"
