#!/usr/bin/env bash
# Each optional extra alone in a fresh venv: install the project with just that extra, then
# import its flow and resolve its block type by slug, as a worker does. Catches a flow that
# needs another extra's packages (e.g. the S3 flow importing the Google clients).
# Usage: tests/tools/check_extras.sh [extra ...]   (default: every extra)
set -euo pipefail
cd "$(dirname "$0")/../.."
declare -A FLOWS=(
  [sftp]="flows.sftp:ingest_sftp:sftp-source"
  [aws]="flows.s3:ingest_s3:s3-source"
  [gcp]="flows.gcs:ingest_gcs:gcs-source flows.bigquery:ingest_bigquery:bigquery-query-source"
  [snowflake]="flows.snowflake:ingest_snowflake:snowflake-query-source"
  [sql]="flows.sql:ingest_sql:sql-source"
  [http]="flows.rest_api:ingest_rest:rest-api-source flows.sharepoint:ingest_sharepoint:sharepoint-source"
)
extras=("$@")
[ "${#extras[@]}" -gt 0 ] || extras=(sftp aws gcp snowflake sql http)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for extra in "${extras[@]}"; do
  start=$SECONDS
  python3 -m venv "$work/$extra"
  "$work/$extra/bin/python" -m pip install -q -c constraints.txt ".[$extra]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  for spec in ${FLOWS[$extra]}; do
    IFS=: read -r module flow slug <<<"$spec"
    (cd "$work" && PREFECT_HOME="$work/home" "$work/$extra/bin/python" - "$module" "$flow" "$slug" <<'PY'
import importlib
import sys

from prefect.blocks.core import Block

import blocks  # noqa: F401  (installs the lazy block lookup)

module, flow_name, slug = sys.argv[1:]
flow = getattr(importlib.import_module(module), flow_name)
block_cls = Block.get_block_class_from_key(slug)
print(f"  {module}:{flow_name} -> flow {flow.name!r}, block {block_cls.__name__}")
PY
    )
  done
  echo "extra [$extra] alone: ok ($((SECONDS - start)) s)"
  rm -rf "${work:?}/$extra"
done
