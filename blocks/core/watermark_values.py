"""Watermark values as the ledger keeps them: one (de)serialisation for every row source.

The SQL source and the warehouse query sources store their watermarks as JSON in the
ledger's `ingest_state`. Both use this module so a value is written and read back the same
way everywhere:

- `to_json(value)`: aware datetimes as ISO 8601 in UTC with an explicit offset; naive
  datetimes, dates and times as ISO 8601; int, float, bool, text and None as they are;
  anything else (Decimal, UUID, ...) as its exact text.
- `from_json(value, kind)`: the typed value back, from the `kind` stored next to it
  (`kind_of`): int, decimal, float, str, date, datetime (naive) or timestamp (aware, UTC).
- `stamp` / `text_label`: deterministic, file-name-friendly renderings for file names.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

UTC = UTC
WATERMARK_KINDS = ("int", "decimal", "float", "str", "date", "datetime", "timestamp")


def value_kind(value: Any) -> str | None:
    """The kind of a Python value: bool, int, float, decimal, timestamp (aware datetime),
    datetime (naive), date, time, bytes or str; None for anything else."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, datetime):
        return "timestamp" if value.tzinfo is not None else "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, str):
        return "str"
    return None


def kind_of(value: Any) -> str:
    """The watermark kind of a value; TypeError for values that cannot be a watermark."""
    kind = value_kind(value)
    if kind == "bool":
        raise TypeError("a boolean column cannot be a watermark")
    if kind not in WATERMARK_KINDS:
        raise TypeError(f"values of type {type(value).__name__} cannot be a watermark")
    return kind


def to_json(value: Any) -> Any:
    """A value as stored in the ledger state (exact, JSON-able)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo is not None else value).isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


def parse_utc(text: str) -> datetime:
    """An ISO 8601 text as an aware UTC datetime (no offset means UTC)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def from_json(value: Any, kind: str) -> Any:
    """The typed value of a stored `to_json` value of this `kind`."""
    if kind == "int":
        return int(value)
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "float":
        return float(value)
    if kind == "str":
        return str(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "datetime":
        return datetime.fromisoformat(value).replace(tzinfo=None)
    if kind == "timestamp":
        return parse_utc(value)
    raise ValueError(f"unknown watermark kind {kind!r}")


def stamp(value: datetime) -> str:
    """A file-name-friendly UTC timestamp."""
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def text_label(value: Any) -> str:
    """A file-name-friendly, deterministic rendering of any watermark value."""
    kind = value_kind(value)
    if kind == "timestamp":
        return stamp(value)
    if kind == "datetime":
        return value.strftime("%Y%m%dT%H%M%S.%f")
    if kind == "date":
        return value.strftime("%Y%m%d")
    text = str(value)
    safe = re.sub(r"[^A-Za-z0-9.+-]", "_", text)[:40]
    if safe != text:  # lossy: keep names of different values apart
        safe += "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return safe
