"""What a row source's runs delivered: flow counts, landed ledger rows, the files' rows.

Shared by the SQL and warehouse source tests.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from blocks import Ledger


def counts(state: Any) -> dict:
    """The summary counts of a completed flow run (fails the test otherwise)."""
    assert state.is_completed(), state.message
    return state.result()


def keep_result(state: Any, ledger: Ledger, source_id: str) -> Any:
    """`state` with its counts, read back from the ledger if Prefect dropped them.

    When a busy test server answers a set-state call slowly, the engine can hand back the
    server's copy of the final state, which carries no result (seen in CI:
    `MissingResult` from a Completed state). The run's counts are in the ledger too.
    """
    if state.is_completed() and state.data is None:
        run_id = str(state.state_details.flow_run_id)
        for row in ledger.recent_runs(source_id, 100):
            if row["flow_run_id"] == run_id:
                state.data = {
                    "source": row["source"],
                    "partition_date": row["partition_date"],
                    "status": row["status"],
                    **{k: row[k] for k in ("listed", "skipped", "landed", "failed", "bytes")},
                    "seconds": float(row["seconds"] or 0),
                }
    return state


def run_flow(flow: Any, save_block: Any, ledger: Ledger, queue: Any, source: Any, **params):
    """Save the three blocks, run a source flow on them, return its final state (with
    its counts, see `keep_result`)."""
    state = flow(
        source_block=save_block(source, "source"),
        ledger_block=save_block(ledger, "ledger"),
        queue_block=save_block(queue, "queue"),
        return_state=True,
        **params,
    )
    return keep_result(state, ledger, source.source_id)


def landed(ledger: Ledger, source_id: str) -> list[dict]:
    """Landed ledger rows, oldest first."""
    rows = [r for r in ledger.recent_items(source_id, 1000) if r["status"] == "landed"]
    return sorted(rows, key=lambda r: r["id"])


def read_rows(path: str) -> list[dict]:
    """The rows of one landed CSV, JSONL or Parquet file."""
    if path.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(Path(path).read_text())))
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in Path(path).read_text().splitlines()]
    return pq.read_table(path).to_pylist()


def delivered_ids(ledger: Ledger, source_id: str, key: str = "id") -> list[int]:
    """Every id in every recorded file, in delivery order (duplicates kept)."""
    out: list[int] = []
    for row in landed(ledger, source_id):
        out += [int(r[key]) for r in read_rows(row["landed_path"])]
    return out
