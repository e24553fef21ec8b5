"""MySQL/MariaDB CSV fast path: the server renders each row's CSV line, Python joins them.

The row path (`SqlSource._read`) converts every cell into a Python value (int, Decimal,
datetime, bytes...) and the `csv` module prints it again: most of the extraction time.
Here the SELECT carries one expression per row, `CONCAT(field1, ',', ..., '\\n')`, next
to the keyset columns, so Python only joins one string per row and encodes the chunk
(`str.join` over `itemgetter(0)`: no Python loop per cell or per row). The line is
byte-identical to what the row path writes for the same data (the tests compare both
paths on awkward values):

- NULL and '' are both an empty field (the `csv` module writes them alike); a one-column
  row that is empty is written `""` (as `csv` does).
- text (any character set, converted to utf8mb4): quoted with `"` doubled when it holds one
  of the characters the `csv` module quotes (found by asking the module, once).
- integers, DECIMAL with at most 6 decimals, DATE: the server's text (= `str()` of the
  driver's value). ZEROFILL numbers and YEAR as `x + 0` (the driver's int drops the zeros).
- DATETIME/TIMESTAMP: `YYYY-MM-DD HH:MM:SS` and `.ffffff` (6 digits) only when the
  microseconds are not 0, as `str(datetime)`; zero or invalid dates are the server's text
  (both drivers hand that back: `mysql_driver._conversions`).
- TIME: as `str(timedelta)` (`-1 day, 23:59:59`, hours not padded).
- binary strings (BINARY, VARBINARY, BLOB): `\\x` + lowercase hex.

Columns whose server text cannot be made to match are left to the row path, for the whole
table (`plan` says why): FLOAT/DOUBLE (Python prints `repr(float)`: `1.0`, `1e+16`),
DECIMAL with more than 6 decimals (`str(Decimal)` switches to `1E-8`), BIT, GEOMETRY and
any type code not listed above.
"""

from __future__ import annotations

import csv
import gc
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import Any, BinaryIO

from sqlalchemy import (
    CHAR,
    Connection,
    LargeBinary,
    and_,
    case,
    cast,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import mysql

# MySQL FIELD_TYPE codes (MySQLdb.constants.FIELD_TYPE; pymysql uses the same numbers).
_INTEGERS = {1, 2, 3, 8, 9}  # TINY, SHORT, LONG, LONGLONG, INT24
_DECIMALS = {0, 246}  # DECIMAL, NEWDECIMAL
_DATES = {10, 14}  # DATE, NEWDATE
_DATETIMES = {7, 12}  # TIMESTAMP, DATETIME
_TIME, _YEAR, _NULL = 11, 13, 6
_STRINGS = {15, 245, 247, 248, 249, 250, 251, 252, 253, 254}  # VARCHAR, JSON, ENUM, SET, BLOBs
_NAMES = {4: "FLOAT", 5: "DOUBLE", 16: "BIT", 255: "GEOMETRY"}
_NOT_NULL, _ZEROFILL = 1, 64  # field flags

_MAX_DIGITS = 6  # str(Decimal) of the server text is plain up to 6 decimals


def _lit(text: str) -> Any:
    """A constant SQL string literal (no `%`/backslash: immune to paramstyle and sql_mode)."""
    assert "%" not in text and "\\" not in text
    return literal_column("'" + text.replace("'", "''") + "'")


@cache
def csv_quoted_characters() -> tuple[str, ...]:
    """The characters that make the `csv` module (as the row path configures it) quote a
    field: asked from the module itself, so the fast path follows its version."""
    quoted = []
    for ch in (",", '"', "\n", "\r", "\t", "\0", " "):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([f"a{ch}b", "x"])
        if buf.getvalue().startswith('"'):
            quoted.append(ch)
    return tuple(quoted)


@dataclass(frozen=True)
class LinePlan:
    """The per-row CSV line expression of a table or query (None: use the row path)."""

    line: Any  # SQLAlchemy expression: the line's bytes, '\n' included
    reason: str | None = None


def _quoted(text: Any) -> Any:
    """`text` as the csv module writes it: in quotes, `"` doubled, when it must be."""
    raw = cast(text, LargeBinary)  # byte search: no collation may equate ',' with '，'
    needs = or_(*[func.instr(raw, _lit(ch)) > 0 for ch in csv_quoted_characters()])
    return case(
        (needs, func.concat(_lit('"'), func.replace(text, _lit('"'), _lit('""')), _lit('"'))),
        else_=text,
    )


def _valid_date(col: Any) -> Any:
    """Dates Python can hold (not zero, year 0 or invalid dates such as 2026-02-30)."""
    return and_(func.year(col) > 0, func.dayofweek(col).is_not(None))


def _datetime_text(col: Any, scale: int) -> Any:
    """`str(datetime)`: 6 fractional digits, only when the microseconds are not 0. (The
    column's own text inside CONCAT is the cheapest form; CAST AS CHAR costs ~2x.)"""
    if scale <= 0:
        text = col
    else:
        six = col if scale == 6 else cast(col, mysql.DATETIME(fsp=6))
        text = case(
            (func.microsecond(col) == 0, func.left(col, literal_column("19"))),
            else_=func.concat(six),
        )
    return case((_valid_date(col), text), else_=col)  # invalid: the server's text


def _time_text(col: Any) -> Any:
    """`str(timedelta)` of the driver's TIME value: `[D day[s], ]H:MM:SS[.ffffff]`, with
    the days floored (negative times read `-1 day, 23:59:59`)."""
    micros = func.round(func.time_to_sec(col) * literal_column("1000000"))
    day = literal_column("86400000000")
    days = func.floor(micros / day)
    rest = micros - days * day  # 0 <= rest < one day
    secs = func.floor(rest / literal_column("1000000"))
    frac = rest - secs * literal_column("1000000")

    def pad(value: Any, width: int) -> Any:
        return func.lpad(cast(value, CHAR), literal_column(str(width)), _lit("0"))

    text = func.concat(
        case(
            (days == 0, _lit("")),
            else_=func.concat(
                cast(days, CHAR),
                _lit(" day"),
                case((func.abs(days) == 1, _lit("")), else_=_lit("s")),
                _lit(", "),
            ),
        ),
        cast(func.floor(secs / literal_column("3600")), CHAR),
        _lit(":"),
        pad(func.mod(func.floor(secs / literal_column("60")), literal_column("60")), 2),
        _lit(":"),
        pad(func.mod(secs, literal_column("60")), 2),
        case((frac == 0, _lit("")), else_=func.concat(_lit("."), pad(frac, 6))),
    )
    return case((col.is_(None), None), else_=text)


def _field(col: Any, code: int, scale: Any, flags: int, charset: str) -> Any:
    """The CSV field text of one column (NULL stays NULL), or a str: why not possible.
    Dates Python cannot hold are the server's text, as both drivers read them."""
    if code in _INTEGERS or code in _DECIMALS:
        if code in _DECIMALS and not (isinstance(scale, int) and 0 <= scale <= _MAX_DIGITS):
            return f"DECIMAL with {scale} decimals"
        return col + literal_column("0") if flags & _ZEROFILL else col
    if code == _YEAR:
        return col + literal_column("0")
    if code in _DATES:
        return col  # a valid date's text is str(date); an invalid one stays the text
    if code in _DATETIMES:
        return _datetime_text(col, scale if isinstance(scale, int) else 6)
    if code == _TIME:
        return _quoted(_time_text(col))
    if code == _NULL:
        return col
    if code in _STRINGS:
        if charset == "binary":
            return func.concat(literal_column("X'5C78'"), func.lower(func.hex(col)))
        if charset != "utf8mb4":
            col = cast(col, mysql.CHAR(charset="utf8mb4"))
        return _quoted(col)
    return _NAMES.get(code, f"type code {code}")


def plan(
    conn: Connection,
    base: Any,
    names: Sequence[str],
    descriptions: Sequence[Sequence[Any]],
    driver: str,
) -> LinePlan:
    """Probe the columns' flags and character sets (two statements returning no data rows)
    and build the line expression, or say which column keeps the table on the row path.

    With or without a key, the row path reads the driver's own values (never SQLAlchemy's
    column types), so one plan fits both. `driver`: the SQLAlchemy driver name (mysqldb
    or pymysql; any other keeps the row path)."""
    if driver not in ("mysqldb", "pymysql"):
        return LinePlan(None, f"driver {driver!r}")
    cols = [base.c[n] for n in names]
    probe = conn.execute(select(*cols).select_from(base).where(false()))
    flags = _field_flags(probe.cursor)
    probe.close()
    if flags is None:
        return LinePlan(None, "the driver does not report field flags")
    # CHARSET() of each column, read through an outer join so that one row comes back
    # even from an empty table ('binary' for BINARY/VARBINARY/BLOB and numbers).
    inner = select(*[c.label(f"c{i}") for i, c in enumerate(cols)])
    inner = inner.select_from(base).where(false()).subquery("i")
    one = select(literal_column("1").label("one")).subquery("o")
    charsets = conn.execute(
        select(*[func.charset(inner.c[f"c{i}"]) for i in range(len(cols))]).select_from(
            one.outerjoin(inner, true())
        )
    ).one()
    fields = []
    for name, col, desc, flag, charset in zip(
        names, cols, descriptions, flags, charsets, strict=True
    ):
        scale = desc[5] if len(desc) > 5 else None
        got = _field(col, desc[1], scale, flag, charset)
        if isinstance(got, str):
            return LinePlan(None, f"column {name!r} is {got}")
        fields.append(got if flag & _NOT_NULL and got is col else func.coalesce(got, _lit("")))
    if len(fields) == 1:  # csv writes an empty one-field row as ""
        fields = [case((func.length(fields[0]) == 0, _lit('""')), else_=fields[0])]
    parts: list[Any] = []
    for f in fields:
        parts += [f, _lit(",")]
    # utf8mb4 text: the drivers decode it (in C for mysqlclient) and LineWriter encodes
    # the joined chunk once; a CAST AS BINARY costs the server +50% on a 6-column table.
    parts[-1] = _lit("\n")
    return LinePlan(func.concat(*parts).label("__line"))


def _field_flags(cursor: Any) -> list[int] | None:
    """Per-column field flags: mysqlclient's `description_flags`, pymysql's fields."""
    flags = getattr(cursor, "description_flags", None)
    if flags is None:
        fields = getattr(getattr(cursor, "_result", None), "fields", None)
        flags = [f.flags for f in fields] if fields is not None else None
    return list(flags) if flags is not None else None


@contextmanager
def gc_paused(active: bool = True) -> Iterator[None]:
    """Pause the cyclic garbage collector while the driver builds one chunk's rows.

    Those are tuples of strings (no reference cycles), but every 700 new tuples start a
    collection, and the older generations' ones traverse every object the process holds
    (Prefect, SQLAlchemy): in a fresh process that was ~30% of the line path's time.
    Restored right after the chunk, so other threads' garbage waits milliseconds."""
    if not active or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class LineWriter:
    """Writes the header as the row path does, then the server's lines as they are."""

    def __init__(self, out: BinaryIO, header_writer: Any):
        self._out = out
        header_writer.write([])  # the CsvWriter's own header line
        self.rows = 0

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """`rows`: tuples whose first item is the line (str, or bytes for a binary one)."""
        if not rows:
            return
        lines = map(itemgetter(0), rows)  # C-level: no Python loop per row
        if isinstance(rows[0][0], str):
            self._out.write("".join(lines).encode("utf-8"))
        else:
            self._out.write(b"".join(lines))
        self.rows += len(rows)

    def close(self) -> None:
        """Nothing buffered."""
