"""Incremental windows of the warehouse query sources, and their ledger state (`watermark`).

The block's query is wrapped as `SELECT * FROM (<query>) AS ingest_q WHERE <window>`; the
window is on one column of the result, `C` (`incremental_column`), with bound values only.
Which window depends on the column's type (read once with a zero-row probe, then kept in
the state as `kind`):

- Time columns (TIMESTAMP*, DATETIME, DATE): a half-open window `[lower, upper)`, as the
  SQL source does. `upper` is fixed when the run starts: the warehouse clock
  (`CURRENT_TIMESTAMP()`) minus `lag_seconds`, in the column's own type (naive columns
  are wall-clock times in `timestamp_timezone`; a DATE column ends at the start of that
  day), cut down to a whole second: a value any TIMESTAMP precision can store, so a row
  stamped after the bound in the same second is not stored below it (`upper_bound`). The
  state is `{"below": upper}`: every row with `C < upper` was delivered, and the next
  window starts at `C >= upper`. Rows equal to the bound were never in the previous
  window, so rows sharing the boundary value are not lost, and consecutive windows never
  overlap, so no row is delivered twice. A row committed late with an older value is
  still delivered if it is visible before the clock passes its value by `lag_seconds`.
  A row that becomes visible later than that falls below a window already delivered and
  is NOT delivered (raise `lag_seconds` above the longest commit delay). Rows stamped in
  the future wait until the clock reaches them.
- Other columns (numbers, text): no clock can bound them. The window is `C > V` where V is
  the largest value delivered (`{"value": V}`), so V must grow for new rows. With
  `primary_key`, the window is `C >= V` and the rows at V already delivered (their keys are
  kept in the state, `{"value": V, "keys": [...]}`) are dropped while streaming: rows that
  share the last value but arrive later are delivered once. The state then holds the keys
  of the rows at the largest value (one for a unique id). A lag makes no sense here: a
  late row with a smaller number cannot be told from a delivered one without keeping every
  key; use a time column for late commits.

The window is computed once per run (discover); the new state is returned by `fetch` and
the pipeline writes it in the same ledger transaction as the file's row and queue message,
so it advances only with the recorded file (an empty time window advances it alone: there
was nothing to deliver below its bound). A state written before this design
(`{"value": V}` on a time column) means `C <= V` was delivered; the next window is
`V < C < upper`, after which the state has `below`. `initial_watermark` is exclusive too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from blocks.core.errors import ConfigError
from blocks.core.file_formats import Column
from blocks.core.watermark_values import UTC, from_json, kind_of, text_label, to_json

STATE_KEY = "watermark"
TIME_KINDS = ("timestamp", "datetime", "date")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def is_identifier(name: str) -> bool:
    """A plain (unquoted) SQL identifier: safe to splice into the wrapped query."""
    return bool(_IDENTIFIER.match(name))


def column_kind(column: Column) -> str:
    """The watermark kind of a result column, from its Arrow type; ValueError if it cannot
    be an incremental column (boolean, binary, time of day, nested...)."""
    import pyarrow as pa

    typ = column.arrow_type
    if typ is not None and not column.json_text:
        if pa.types.is_timestamp(typ):
            return "timestamp" if typ.tz is not None else "datetime"
        if pa.types.is_date(typ):
            return "date"
        if pa.types.is_integer(typ):
            return "int"
        if pa.types.is_decimal(typ):
            return "decimal"
        if pa.types.is_floating(typ):
            return "float"
        if pa.types.is_string(typ):
            return "str"
    raise ValueError(f"column {column.name!r} of type {typ} cannot be an incremental column")


def parse_initial(text: str) -> Any:
    """The typed value of an operator's `initial_watermark`: an integer, an ISO date, an
    ISO date-time (with an offset: aware; without: a wall-clock date-time), else the text."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return date.fromisoformat(text)
    if re.fullmatch(
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", text
    ):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return text


def as_time(value: Any, kind: str, zone: ZoneInfo) -> Any:
    """A date or date-time in a time column's kind; naive date-times are wall-clock times
    in `zone`. ValueError if it is neither."""
    if isinstance(value, datetime):
        instant = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    elif isinstance(value, date):
        instant = datetime(value.year, value.month, value.day, tzinfo=zone)
    else:
        raise ValueError(f"{value!r} is not an ISO date or date-time")
    if kind == "timestamp":
        return instant.astimezone(UTC)
    local = instant.astimezone(zone).replace(tzinfo=None)
    return local if kind == "datetime" else local.date()


def initial_value(text: str, kind: str, zone: ZoneInfo) -> Any:
    """The operator's `initial_watermark` as a value of the column's kind (ValueError if
    it does not fit)."""
    if kind in TIME_KINDS:
        return as_time(parse_initial(text), kind, zone)
    return from_json(text.strip(), kind)


def upper_bound(now: datetime, lag_seconds: float, kind: str, zone: ZoneInfo) -> Any:
    """The exclusive upper bound of a time window: the clock minus the lag, in `kind`,
    cut down to a whole second (a DATE column: the start of that day).

    A column of coarser precision than the clock (Snowflake `TIMESTAMP_*(0..5)`, a
    whole-second `DATETIME`) stores a row stamped after a microsecond bound, in the same
    second, as a value below it (truncated, or rounded: up to half a unit after the moment
    it names), and the next window (`>=` the bound) would miss it. A whole-second bound is
    a value every such column can hold, so every row stamped at or after it stores a value
    >= it. It costs at most a second of delay; the precision is not probed each run."""
    if now.tzinfo is None:  # a warehouse clock without offset is UTC
        now = now.replace(tzinfo=UTC)
    bound = as_time(now - timedelta(seconds=lag_seconds), kind, zone)
    if isinstance(bound, datetime):
        bound = bound.replace(microsecond=0)
    return bound


def sorted_keys(keys: Any) -> list[list[Any]]:
    """Keys (tuples of JSON values) as a deterministic list of lists."""
    return sorted((list(k) for k in keys), key=json.dumps)


@dataclass(frozen=True)
class Position:
    """Where a window starts: `C >= value` (inclusive) or `C > value`; `keys` are the
    primary keys (JSON form) of rows at `value` already delivered (inclusive only)."""

    column: str
    kind: str
    value: Any = None  # None: from the first row
    inclusive: bool = False
    keys: tuple[tuple[Any, ...], ...] = ()

    def label(self) -> str:
        """The deterministic file label of a window starting here."""
        if self.value is None:
            return "initial"
        text = text_label(self.value)
        if self.kind in TIME_KINDS and self.inclusive:
            return "from-" + text
        if self.keys:
            digest = hashlib.sha256(json.dumps(sorted_keys(self.keys)).encode()).hexdigest()
            text += "-" + digest[:10]
        return "after-" + text

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Position:
        """The start of the next window from the ledger state (KeyError/ValueError if
        the state is unreadable)."""
        kind = state["kind"]
        if "below" in state:
            return cls(state["column"], kind, from_json(state["below"], kind), inclusive=True)
        keys = tuple(tuple(k) for k in state.get("keys") or ())
        value = from_json(state["value"], kind)
        return cls(state["column"], kind, value, inclusive=bool(keys), keys=keys)


@dataclass(frozen=True)
class Window:
    """What one run extracts: from `lower`, up to `upper` (exclusive; time kinds only)."""

    lower: Position
    upper: Any = None
    key_columns: tuple[str, ...] = ()

    @property
    def is_time(self) -> bool:
        return self.lower.kind in TIME_KINDS

    def describe(self) -> str:
        """The window as a condition, for messages: `C >= 20260102T... < 2026...`."""
        lower, text = self.lower, self.lower.column
        if lower.value is not None:
            text += f" {'>=' if lower.inclusive else '>'} {text_label(lower.value)}"
        if self.upper is not None:
            text += f" < {text_label(self.upper)}"
        return text


class Progress:
    """Follows the rows of one window while they stream: drops rows at the lower bound
    already delivered (by key), and keeps the largest value with the keys of its rows."""

    def __init__(self, window: Window, column: int, keys: Sequence[int]) -> None:
        self.window = window
        self.column = column
        self.keys = list(keys)
        self.top: Any = None
        self.top_keys: set[tuple[Any, ...]] = set()
        self.dropped = 0
        lower = window.lower
        self._seen = set(lower.keys) if lower.inclusive and lower.keys else set()

    def _key(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(to_json(row[i]) for i in self.keys)

    def take(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows of a chunk to write."""
        if self.window.is_time:
            return rows
        col, lower = self.column, self.window.lower
        kept = []
        for row in rows:
            value = row[col]
            if self._seen and value == lower.value and self._key(row) in self._seen:
                self.dropped += 1
                continue
            kept.append(row)
            if self.top is None or value > self.top:
                self.top, self.top_keys = value, set()
            if self.keys and value == self.top:
                self.top_keys.add(self._key(row))
        return kept

    def state(self, rows: int) -> dict[str, Any]:
        """The ledger state once the window's rows are recorded (`rows` written)."""
        window = self.window
        state: dict[str, Any] = {"column": window.lower.column}
        if window.is_time:
            state.update(kind=window.lower.kind, below=to_json(window.upper))
        else:
            keys = self.top_keys
            if self.top == window.lower.value:  # more rows at the same value: keep the old
                keys = keys | set(window.lower.keys)
            state.update(kind=kind_of(self.top), value=to_json(self.top))
            if self.keys:
                state.update(key_columns=list(window.key_columns), keys=sorted_keys(keys))
        state.update(rows=rows, extracted_at=datetime.now(UTC).isoformat())
        return state


def empty_state(window: Window | None) -> dict[str, Any]:
    """The state updates of a window without rows: a time window's bound still moves
    (nothing was below it to deliver), a value watermark stays."""
    if window is None or not window.is_time:
        return {}
    return {STATE_KEY: Progress(window, 0, ()).state(0)}


def stored_position(
    state: dict[str, Any], label: str, column: str | None, key_columns: Sequence[str]
) -> Position:
    """The start of the next window from the ledger state of a block (`label`) with this
    incremental column and primary key; ConfigError if the state does not fit them."""
    where = f"{label}.incremental_column"
    try:
        position = Position.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            where, f"the ledger's watermark state is unreadable ({exc}): {state!r}"
        ) from exc
    if position.column.lower() != (column or "").lower():
        raise ConfigError(
            where,
            f"the ledger's watermark is for column {position.column!r}, not {column!r}; "
            "reset the source's 'watermark' state or use a new source_id",
        )
    stored = [k.lower() for k in state.get("key_columns") or []]
    if position.keys and stored != [k.lower() for k in key_columns]:
        raise ConfigError(
            f"{label}.primary_key",
            f"the ledger's watermark keeps rows by key {state.get('key_columns')}, this "
            f"block says {list(key_columns)}; reset the source's 'watermark' state or use a "
            "new source_id",
        )
    return position


def check_settings(kind: str, label: str, key_columns: Sequence[str], lag_seconds: float) -> None:
    """ConfigError if `primary_key` or `lag_seconds` do not apply to a column of `kind`."""
    if kind in TIME_KINDS and key_columns:
        raise ConfigError(
            f"{label}.primary_key",
            "not used with a time column: its window ends at a fixed bound, so rows "
            "sharing a value are never split (leave it empty)",
        )
    if kind not in TIME_KINDS and lag_seconds:
        raise ConfigError(
            f"{label}.lag_seconds",
            f"only applies to time columns (TIMESTAMP, DATETIME, DATE), not to {kind} values",
        )
