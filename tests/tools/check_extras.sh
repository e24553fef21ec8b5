#!/usr/bin/env bash
# Each optional extra alone in a fresh venv: install the project with just that extra, then
# import its flow and resolve its block type by slug, as a worker does. Catches a flow that
# needs another extra's packages (e.g. the S3 flow importing the Google clients).
# Usage: tests/tools/check_extras.sh [extra ...]   (default: every extra)
set -euo pipefail
cd "$(dirname "$0")/../.."
# extra -> "module:flow:slug ..." from blocks/registry.py (stdlib only: read before any
# project dependency is installed), so a new source's registry line is checked here too.
registry() {
  python3 - "$@" <<'PY'
import runpy
import sys

grouped = runpy.run_path("blocks/registry.py")["flows_by_extra"]()
# Extras that add speed-ups to another extra's sources (checked with those flows).
grouped["sql-fast"] = grouped["sql"]
if len(sys.argv) == 1:
    print(" ".join(grouped))
else:
    print(" ".join(f"{s.flow}:{s.slug}" for s in grouped.get(sys.argv[1], [])))
PY
}
extras=("$@")
[ "${#extras[@]}" -gt 0 ] || read -r -a extras <<<"$(registry)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One extra: a fresh venv, the install, then each of its flows imported. Output goes to
# "$work/$extra.log" so that extras checked side by side print whole, one after another.
check_extra() {
  local extra=$1 start=$SECONDS specs spec module flow slug
  python3 -m venv "$work/$extra"
  # --no-compile: the import below compiles only what a worker would load, not every
  # module of every dependency.
  "$work/$extra/bin/python" -m pip install -q --no-compile -c constraints.txt ".[$extra]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  specs="$(registry "$extra")"
  [ -n "$specs" ] || { echo "extra [$extra]: no source in blocks/registry.py" >&2; return 1; }
  for spec in $specs; do
    IFS=: read -r module flow slug <<<"$spec"
    (cd "$work" && PREFECT_HOME="$work/home-$extra" "$work/$extra/bin/python" - "$module" "$flow" "$slug" <<'PY'
import importlib
import sys

from prefect.blocks.core import Block

from blocks.core import block_lookup

block_lookup.install()  # as a flow run's loader does (pipeline/block_loading.py)
module, flow_name, slug = sys.argv[1:]
flow = getattr(importlib.import_module(module), flow_name)
block_cls = Block.get_block_class_from_key(slug)
print(f"  {module}:{flow_name} -> flow {flow.name!r}, block {block_cls.__name__}")
PY
    ) || return 1
  done
  echo "extra [$extra] alone: ok ($((SECONDS - start)) s)"
  rm -rf "${work:?}/$extra"
}

# As many extras at once as there are cores: each install is one CPU-bound pip process.
# Success is read from the ok line in each log, not from exit statuses bash may already have
# reaped.
parallel="$(nproc)"
for extra in "${extras[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  check_extra "$extra" >"$work/$extra.log" 2>&1 &
done
wait
failed=0
for extra in "${extras[@]}"; do
  cat "$work/$extra.log"
  grep -q "^extra \[$extra\] alone: ok" "$work/$extra.log" || {
    echo "extra [$extra] alone: FAILED (its output is above)" >&2
    failed=1
  }
done
exit "$failed"
