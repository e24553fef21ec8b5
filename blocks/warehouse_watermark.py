"""Watermarks of the warehouse query sources, kept as ledger state (key `watermark`).

The state is `{"column": C, "kind": K, "value": V, "rows": N, "extracted_at": ISO}`:
every row with `C <= V` was delivered in a recorded file; the next run selects
`C > V`. `kind` says how to rebuild the typed value from its JSON form (so a timestamp
is bound as a timestamp, not as text): int, decimal, float, str, date, datetime (no time
zone) or timestamp (with time zone, stored in UTC); `blocks/watermark_values.py` does the
(de)serialisation, as for the SQL source.

The new watermark is the largest value of C in the exported rows. The pipeline writes it
in the same transaction as the ledger row of the file, so it advances only once the file
is recorded. As with any high-water mark, C must grow for new rows (a load timestamp or a
sequence): a row inserted later with a value at or below the mark is not picked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from blocks.watermark_values import from_json, kind_of, text_label, to_json

STATE_KEY = "watermark"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def is_identifier(name: str) -> bool:
    """A plain (unquoted) SQL identifier: safe to splice into the wrapped query."""
    return bool(_IDENTIFIER.match(name))


def parse_initial(text: str) -> Any:
    """The typed value of an operator's `initial_watermark`: an integer, an ISO date, an
    ISO date-time (with an offset: a timestamp; without: a wall-clock date-time), else
    the text itself."""
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


@dataclass(frozen=True)
class Watermark:
    """Where the last recorded export ended."""

    column: str
    value: Any

    @property
    def kind(self) -> str:
        return kind_of(self.value)

    def to_state(self, rows: int) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "value": to_json(self.value),
            "rows": rows,
            "extracted_at": datetime.now(timezone.utc).isoformat(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Watermark:
        return cls(column=state["column"], value=from_json(state["value"], state["kind"]))

    def label(self) -> str:
        """A file-name-friendly, deterministic rendering of the value."""
        return text_label(self.value)


def larger(current: Any, value: Any) -> Any:
    """The larger of two watermark candidates (None is 'nothing yet')."""
    if value is None:
        return current
    if current is None:
        return value
    return value if value > current else current
