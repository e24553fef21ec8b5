"""Output writers of the warehouse query sources: CSV, JSON Lines and Parquet.

A writer receives the result in chunks (lists of row tuples, in column order) and writes
each chunk at once into the pipeline's binary `out` writer, so memory is bounded by one
chunk whatever the result size. Values are rendered explicitly, never with `repr`:

- CSV (RFC 4180, header line, `\\n` line ends, UTF-8): NULL is an empty field; booleans
  `true`/`false`; dates/times ISO 8601; Decimal exact; bytes as hex; nested values
  (BigQuery RECORD/REPEATED) as JSON.
- JSONL: one object per row; ISO 8601 times; Decimal as a string (exact); bytes as hex;
  nested values and semi-structured columns (Snowflake VARIANT/OBJECT/ARRAY, BigQuery
  JSON) as nested JSON.
- Parquet (pyarrow, zstd): one row group per chunk; the schema comes from the warehouse's
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
from typing import Any, BinaryIO, Literal

OutputFormat = Literal["csv", "jsonl", "parquet"]
EXTENSIONS: dict[str, str] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}


@dataclass(frozen=True)
class Column:
    """One result column: its name, its Arrow type (Parquet) and whether its values are
    JSON text the warehouse hands back as strings (written nested in JSONL)."""

    name: str
    arrow_type: Any = None
    json_text: bool = False


def csv_text(value: Any) -> Any:
    """The CSV field of one value (None stays None: an empty field)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=json_default, ensure_ascii=False)
    return str(value)


def json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID, timedelta)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


class RowWriter:
    """Writes chunks of rows (tuples in `columns` order) into a binary writer."""

    def __init__(self, out: BinaryIO, columns: Sequence[Column]) -> None:
        self.out = out
        self.columns = list(columns)
        self.rows = 0

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file (the footer for Parquet)."""


class CsvWriter(RowWriter):
    def __init__(self, out: BinaryIO, columns: Sequence[Column]) -> None:
        super().__init__(out, columns)
        self._header = True

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if self._header:
            writer.writerow([c.name for c in self.columns])
            self._header = False
        writer.writerows([csv_text(v) for v in row] for row in rows)
        self.out.write(buf.getvalue().encode("utf-8"))
        self.rows += len(rows)

    def close(self) -> None:
        if self._header:  # no chunk at all: still a valid CSV with its header
            self.write([])


class JsonlWriter(RowWriter):
    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        names = [c.name for c in self.columns]
        parse = [i for i, c in enumerate(self.columns) if c.json_text]
        dumps = json.JSONEncoder(default=json_default, ensure_ascii=False, sort_keys=False).encode
        lines = []
        for row in rows:
            if parse:
                row = list(row)
                for i in parse:
                    if isinstance(row[i], str):
                        row[i] = json.loads(row[i])
            lines.append(dumps(dict(zip(names, row, strict=True))))
        if lines:
            self.out.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.rows += len(rows)


class _RawSink(io.RawIOBase):
    """Write-only file object over the pipeline's writer (pyarrow needs `tell()`)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        size = memoryview(data).nbytes
        self._out.write(bytes(data))
        self._pos += size
        return size

    def tell(self) -> int:
        return self._pos


class ParquetWriter(RowWriter):
    def __init__(self, out: BinaryIO, columns: Sequence[Column]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(out, columns)
        self._pa = pa
        self._schema = pa.schema(
            [pa.field(c.name, c.arrow_type or pa.string()) for c in self.columns]
        )
        self._writer = pq.ParquetWriter(_RawSink(out), self._schema, compression="zstd")

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        pa = self._pa
        arrays = []
        for i, fld in enumerate(self._schema):
            values = [_arrow_value(row[i], fld.type, pa) for row in rows]
            arrays.append(pa.array(values, type=fld.type))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self.rows += len(rows)

    def close(self) -> None:
        self._writer.close()


def _arrow_value(value: Any, typ: Any, pa: Any) -> Any:
    if value is None:
        return None
    if pa.types.is_string(typ) and not isinstance(value, str):
        return csv_text(value)
    if pa.types.is_binary(typ) and isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if pa.types.is_decimal(typ) and not isinstance(value, Decimal):
        return Decimal(value)
    if (
        pa.types.is_timestamp(typ)
        and isinstance(value, datetime)
        and typ.tz is None
        and value.tzinfo is not None
    ):
        return value.replace(tzinfo=None)
    return value


def make_writer(fmt: OutputFormat, out: BinaryIO, columns: Sequence[Column]) -> RowWriter:
    if fmt == "csv":
        return CsvWriter(out, columns)
    if fmt == "jsonl":
        return JsonlWriter(out, columns)
    if fmt == "parquet":
        return ParquetWriter(out, columns)
    raise ValueError(f"unknown output format {fmt!r}")
