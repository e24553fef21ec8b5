#!/usr/bin/env bash
# Builds the two warehouse emulators' own virtual environments (their pins clash with the
# product's): fakesnow (Snowflake HTTP protocol) and bqemulator (BigQuery REST API).
# Idempotent: a venv whose marker file exists is left as is. Usage:
#   bash tests/tools/setup_warehouse_emulators.sh [TOOLS_DIR]   (default /work/tools)
set -euo pipefail
TOOLS="${1:-${INGEST_TOOLS_DIR:-/work/tools}}"
PY="${PYTHON:-python3}"
mkdir -p "$TOOLS"

# fakesnow 0.12.1 imports snowflake.connector.converter, gone in connector 5.x: keep it on 4.x.
if [ ! -f "$TOOLS/fakesnow/.ready" ]; then
    rm -rf "$TOOLS/fakesnow"
    "$PY" -m venv "$TOOLS/fakesnow"
    "$TOOLS/fakesnow/bin/pip" install -q "fakesnow[server]==0.12.1" "snowflake-connector-python<5"
    "$TOOLS/fakesnow/bin/python" -c "import fakesnow.server"
    touch "$TOOLS/fakesnow/.ready"
fi

# bqemulator 1.4.0 with DuckDB 1.5.5; its two DuckDB extensions ship as wheels and are
# installed from those files once, else DuckDB tries to download them at start.
if [ ! -f "$TOOLS/bqemulator/.ready" ]; then
    rm -rf "$TOOLS/bqemulator"
    "$PY" -m venv "$TOOLS/bqemulator"
    "$TOOLS/bqemulator/bin/pip" install -q "bqemulator==1.4.0" "duckdb==1.5.5" \
        "duckdb-extension-spatial==1.5.5" "duckdb-extension-avro==1.5.5" numpy testcontainers
    "$TOOLS/bqemulator/bin/python" - <<'PY'
import glob
import os
import site

import duckdb

con = duckdb.connect()
for base in site.getsitepackages():
    for path in glob.glob(os.path.join(base, "**", "*.duckdb_extension*"), recursive=True):
        print("installing DuckDB extension", path)
        con.execute(f"INSTALL '{path}'")
PY
    "$TOOLS/bqemulator/bin/bqemulator" --help >/dev/null
    touch "$TOOLS/bqemulator/.ready"
fi
echo "warehouse emulators ready in $TOOLS"
