"""Row writers of the row sources (SQL tables, warehouse queries): CSV, JSON Lines, Parquet.

A writer receives the rows in chunks (lists of tuples, in column order) and writes each
chunk at once into the pipeline's binary `out` writer, so memory is bounded by one chunk
whatever the table or result size. Values are rendered explicitly (no locale, no repr):

- CSV (RFC 4180, header line, `\\n` line ends, UTF-8): NULL is an empty field, text as is,
  Decimal exact, dates/times ISO 8601, nested values (dicts, lists) as JSON. How booleans,
  bytes and the date-time separator look is the source's `TextStyle`: `POSTGRES` writes
  them as PostgreSQL's COPY does (`t`/`f`, `\\x<hex>`, `YYYY-MM-DD HH:MM:SS`) so the SQL
  source's Python path and its COPY fast path agree; `PLAIN` (warehouses) writes
  `true`/`false`, bare hex and ISO 8601 with `T`.
- JSONL: one object per row; ISO 8601 times; Decimal as a string (exact); bytes as in
  CSV; JSON columns (and columns flagged `Column.json_text`, e.g. Snowflake VARIANT) as
  nested JSON.
- Parquet (pyarrow, zstd): one row group per chunk; the schema comes from the source's
  column types (`Column.arrow_type`), so a column that is NULL in the first chunk keeps its
  type. Anything without an exact Arrow mapping is written as text.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import chain
from typing import Any, BinaryIO, Literal

from blocks.core.errors import PermanentError

OutputFormat = Literal["csv", "jsonl", "parquet"]
EXTENSIONS: dict[str, str] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}


@dataclass(frozen=True)
class Column:
    """One output column: its name, its Arrow type (Parquet; None: text) and whether its
    values are JSON text handed back as strings (written nested in JSONL)."""

    name: str
    arrow_type: Any = None
    json_text: bool = False


@dataclass(frozen=True)
class TextStyle:
    """How values without one obvious text form are written."""

    true: str = "true"
    false: str = "false"
    bytes_prefix: str = ""
    datetime_sep: str = "T"
    json_ascii: bool = False  # escape non-ASCII in nested JSON inside CSV fields


PLAIN = TextStyle()
POSTGRES = TextStyle(true="t", false="f", bytes_prefix="\\x", datetime_sep=" ", json_ascii=True)


def csv_text(value: Any, style: TextStyle = PLAIN) -> Any:
    """The CSV field of one value (None stays None: an empty field)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return style.true if value else style.false
    if isinstance(value, (bytes, bytearray, memoryview)):
        return style.bytes_prefix + bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat(style.datetime_sep)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(
            value, sort_keys=True, default=json_default(style), ensure_ascii=style.json_ascii
        )
    return str(value)


def json_default(style: TextStyle = PLAIN):
    """The `default=` of `json.dumps` for values JSON has no type for."""

    def default(value: Any) -> Any:
        if isinstance(value, (datetime, date, time)):
            return value.isoformat()
        if isinstance(value, (Decimal, uuid.UUID, timedelta)):
            return str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return style.bytes_prefix + bytes(value).hex()
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        return str(value)

    return default


class RowWriter:
    """Writes chunks of rows (tuples in `columns` order) into a binary writer."""

    def __init__(self, out: BinaryIO, columns: Sequence[Column], style: TextStyle = PLAIN):
        self.out = out
        self.columns = list(columns)
        self.style = style
        self.rows = 0

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file (the footer for Parquet)."""


# Types whose str() is exactly their csv_text (float: repr == str; bool is its own type).
_AS_IS = frozenset({str, int, float, Decimal, type(None)})
_AS_IS_DT = _AS_IS | {datetime, date, time}  # str() is isoformat(" ")


class CsvWriter(RowWriter):
    def __init__(self, out: BinaryIO, columns: Sequence[Column], style: TextStyle = PLAIN):
        super().__init__(out, columns, style)
        self._header = True

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if self._header:
            writer.writerow([c.name for c in self.columns])
            self._header = False
        style = self.style
        if rows:
            # Column-wise: a column whose values all print as csv_text would print them
            # (str() of these types) goes to the C csv writer as is; only the others are
            # converted cell by cell (bool, bytes, nested values, `T` date-times).
            as_is = _AS_IS_DT if style.datetime_sep == " " else _AS_IS
            if as_is.issuperset(map(type, chain.from_iterable(rows))):
                writer.writerows(rows)  # the usual case: nothing to convert, no transpose
                self.out.write(buf.getvalue().encode("utf-8"))
                self.rows += len(rows)
                return
            columns = list(zip(*rows, strict=True))
            todo = [i for i, col in enumerate(columns) if not as_is.issuperset(map(type, col))]
            if todo:
                for i in todo:
                    columns[i] = [csv_text(v, style) for v in columns[i]]
                rows = list(zip(*columns, strict=True))
        writer.writerows(rows)
        self.out.write(buf.getvalue().encode("utf-8"))
        self.rows += len(rows)

    def close(self) -> None:
        if self._header:  # no chunk at all: still a valid CSV with its header
            self.write([])


class JsonlWriter(RowWriter):
    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        names = [c.name for c in self.columns]
        parse = [i for i, c in enumerate(self.columns) if c.json_text]
        dumps = json.JSONEncoder(default=json_default(self.style), ensure_ascii=False).encode
        lines = []
        for row in rows:
            if parse:
                row = list(row)
                for i in parse:
                    if isinstance(row[i], str):
                        row[i] = json.loads(row[i])
            lines.append(dumps(dict(zip(names, row, strict=True))) + "\n")
        self.out.write("".join(lines).encode("utf-8"))
        self.rows += len(rows)


class RawSink(io.RawIOBase):
    """A write-only file object over the pipeline's writer (pyarrow needs tell())."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        size = memoryview(data).nbytes
        self._out.write(data)  # synchronously: a borrowed buffer is fine
        self._pos += size
        return size

    def tell(self) -> int:
        return self._pos


class ParquetWriter(RowWriter):
    def __init__(self, out: BinaryIO, columns: Sequence[Column], style: TextStyle = PLAIN):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(out, columns, style)
        self._pa = pa
        self._schema = pa.schema(
            [pa.field(c.name, c.arrow_type or pa.string()) for c in self.columns]
        )
        self._writer = pq.ParquetWriter(RawSink(out), self._schema, compression="zstd")

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        pa = self._pa
        arrays = []
        for i, fld in enumerate(self._schema):
            values = [self._arrow_value(row[i], fld.type) for row in rows]
            try:
                arrays.append(pa.array(values, type=fld.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise self._unwritable(fld, values, exc) from exc
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self.rows += len(rows)

    def close(self) -> None:
        self._writer.close()

    def _unwritable(self, fld: Any, values: list[Any], exc: Exception) -> PermanentError:
        """The error naming the column and the first value its Parquet type cannot hold
        (a MySQL zero date `0000-00-00` in a DATE column, say): the run fails, nothing
        is written as null in its place."""
        for value in values:
            try:
                self._pa.array([value], type=fld.type)
            except (self._pa.ArrowInvalid, self._pa.ArrowTypeError):
                shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
                break
        else:
            shown = "a value"
        return PermanentError(
            f"column {fld.name!r}: {shown} cannot be written as Parquet {fld.type} ({exc}); "
            "output_format csv or jsonl lands such values as the database's text, or "
            "cast the column in a query"
        )

    def _arrow_value(self, value: Any, typ: Any) -> Any:
        if value is None:
            return None
        types = self._pa.types
        if types.is_string(typ) and not isinstance(value, str):
            return csv_text(value, self.style)
        if types.is_binary(typ) and isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if types.is_decimal(typ) and not isinstance(value, Decimal):
            return Decimal(value)
        if types.is_timestamp(typ) and typ.tz is None and isinstance(value, datetime):
            return value.replace(tzinfo=None)
        return value


def make_writer(
    fmt: OutputFormat, out: BinaryIO, columns: Sequence[Column], style: TextStyle = PLAIN
) -> RowWriter:
    """The writer of one output format."""
    if fmt == "csv":
        return CsvWriter(out, columns, style)
    if fmt == "jsonl":
        return JsonlWriter(out, columns, style)
    if fmt == "parquet":
        return ParquetWriter(out, columns, style)
    raise ValueError(f"unknown output format {fmt!r}")
