"""PostgreSQL's built-in range types read as PostgreSQL writes them.

psycopg2 parses int4range, int8range, numrange, tsrange, tstzrange and daterange into
Range objects whose `str()` prints an unbounded side as `None` and adds a space: `(None,
3]`, `[1, 5)`, `[2026-01-01 00:00:00+00:00, None)`. PostgreSQL cannot read `(None, 3]`
back, and COPY writes the same values as `(,3]`, `[1,5)`, `["2026-01-01 00:00:00+00",)`.
The row path (JSONL, Parquet, CSV without COPY) takes the server's own text for these types
and for their arrays instead (each element that text), the bytes COPY gives them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# type name: (oid, array oid), from pg_type (fixed for built-in types)
RANGE_OIDS = {
    "int4range": (3904, 3905),
    "numrange": (3906, 3907),
    "tsrange": (3908, 3909),
    "tstzrange": (3910, 3911),
    "daterange": (3912, 3913),
    "int8range": (3926, 3927),
}


def _as_text(value: str | None, _cursor: Any) -> str | None:
    return value


@cache
def _range_text_types() -> tuple[Any, Any]:
    """The psycopg2 typecasters (ranges, arrays of ranges), built once per process."""
    from psycopg2 import extensions

    scalar = extensions.new_type(
        tuple(oid for oid, _ in RANGE_OIDS.values()), "INGEST_RANGE_TEXT", _as_text
    )
    array = extensions.new_array_type(
        tuple(array for _, array in RANGE_OIDS.values()), "INGEST_RANGE_TEXT_ARRAY", scalar
    )
    return scalar, array


def register_range_text(dbapi_conn: Any) -> None:
    """Make one psycopg2 connection return the built-in ranges (and arrays of them) as
    the server's text."""
    from psycopg2 import extensions

    for caster in _range_text_types():
        extensions.register_type(caster, dbapi_conn)
