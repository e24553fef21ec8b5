#!/usr/bin/env bash
# Sets up what the tests need without root: .venv with the project and its test extras
# (skipped when a stamp of constraints.txt + pyproject.toml matches, so a second call costs
# well under a second), and the warehouse emulators' own venvs in $INGEST_TOOLS_DIR
# (default .ci-tools; idempotent). Called by ./run-tests.sh and by .ci/run before lint.
# The database servers (PostgreSQL, MariaDB) need root: .ci/run starts them; locally the
# tests that need a missing server are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.ingest-test-deps
extras="all,test"
# mysqlclient (sql-fast) builds against libmariadb: .ci/run installs libmariadb-dev and
# pkg-config; without them the SQL source uses pymysql and the mysqlclient tests skip.
if pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null; then
  extras="all,sql-fast,test"
fi
want="$extras $(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing the project and its test dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$extras]"
  .venv/bin/python -m pip check
  echo "$want" >"$stamp"
fi
bash tests/tools/setup_warehouse_emulators.sh "${INGEST_TOOLS_DIR:-$PWD/.ci-tools}" >/dev/null
