"""Watermarks of the SQL source: where the last delivered window ended, as ledger state.

The state (JSON, ledger key `watermark`) is one of:

- `{"below": T}` (timestamp mode): every row with `column < T` was delivered; the next
  window starts at `column >= T`. T is the previous window's exclusive upper bound, not
  the largest value seen, so rows sharing the last value are never skipped: rows equal to
  T were never in the previous window.
- `{"through": V}` (id mode): every row with `column <= V` was delivered.
- `{"through": V, "pk": [...]}`: every row with `(column, pk...) <= (V, pk...)` was
  delivered (a run that stopped at `max_rows_per_file`); the next window continues
  after that exact row.

Each also keeps `mode`, `column` and `key` (the keyset columns) so a changed block
configuration is detected instead of silently misread, plus `rows`, `more` (the run
stopped at `max_rows_per_file`; the flow extracts again) and `extracted_at`.
Values are stored by `blocks/core/watermark_values.py` (timestamps as ISO 8601 in UTC with an
explicit offset), as the warehouse sources store theirs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from blocks.core.watermark_values import parse_utc, stamp

STATE_KEY = "watermark"


def label(position: dict[str, Any] | None, mode: str) -> str:
    """The file label of a window starting at this position (deterministic)."""
    if not position:
        return "initial"
    if "start" in position:
        value = position["start"]
        return "from-" + (stamp(parse_utc(value)) if mode == "timestamp" else str(value))
    if "below" in position:
        return "from-" + stamp(parse_utc(position["below"]))
    value = position["through"]
    text = stamp(parse_utc(value)) if mode == "timestamp" else str(value)
    if position.get("pk"):
        digest = hashlib.sha256(json.dumps(position["pk"], sort_keys=True).encode()).hexdigest()
        text += "-" + digest[:10]
    return "after-" + text


def _gt(cols: list[Any], vals: list[Any]) -> ColumnElement[bool]:
    if len(cols) == 1:
        return cols[0] > vals[0]
    return or_(cols[0] > vals[0], and_(cols[0] == vals[0], _gt(cols[1:], vals[1:])))


def keyset_after(cols: list[Any], vals: list[Any]) -> ColumnElement[bool]:
    """`(cols) > (vals)` written so that an index on the first column is used by both
    PostgreSQL and MariaDB (row-value comparisons are not range-optimised everywhere)."""
    if len(cols) == 1:
        return cols[0] > vals[0]
    return and_(cols[0] >= vals[0], _gt(cols, vals))


def keyset_upto(cols: list[Any], vals: list[Any]) -> ColumnElement[bool]:
    """`(cols) <= (vals)`."""
    if len(cols) == 1:
        return cols[0] <= vals[0]
    return and_(cols[0] <= vals[0], ~_gt(cols, vals))
