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
