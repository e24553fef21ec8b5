"""Row writers of the SQL source: CSV, JSON Lines and Parquet, one chunk at a time.

Each writer receives rows in chunks (lists of tuples) and writes them at once to the
pipeline's binary `out` writer, so memory is bounded by one chunk whatever the table size.
Values are rendered explicitly (no locale, no repr):

- CSV (RFC 4180, header line, `\\n` line ends): NULL is an empty field, text as is,
  datetimes `YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]`, bytes `\\x<hex>` (PostgreSQL's form),
  booleans `t`/`f` (as PostgreSQL's COPY writes them).
- JSONL: one object per row; datetimes ISO 8601, Decimal as a string (exact), bytes
  `\\x<hex>`, JSON columns as nested JSON.
- Parquet (pyarrow): one row group per chunk; the schema comes from the database's column
  types (see `arrow_type`), so a column that is NULL in the first chunk keeps its type.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, BinaryIO, Literal

OutputFormat = Literal["csv", "jsonl", "parquet"]
EXTENSIONS: dict[str, str] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}


def _text(value: Any) -> Any:
    """A CSV field for one value (None stays None: an empty field)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID, timedelta)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, set):
        return sorted(value)
    return str(value)


class RowWriter:
    """Writes chunks of rows (tuples in `names` order) into a binary writer."""

    def __init__(self, out: BinaryIO, names: Sequence[str]) -> None:
        self.out = out
        self.names = list(names)
        self.rows = 0

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file (footer for Parquet)."""


class CsvWriter(RowWriter):
    def __init__(self, out: BinaryIO, names: Sequence[str], header: bool = True) -> None:
        super().__init__(out, names)
        self._header = header

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if self._header:
            writer.writerow(self.names)
            self._header = False
        writer.writerows([_text(v) for v in row] for row in rows)
        self.out.write(buf.getvalue().encode("utf-8"))
        self.rows += len(rows)


class JsonlWriter(RowWriter):
    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        names = self.names
        dumps = json.JSONEncoder(default=_json_default, ensure_ascii=False).encode
        text = "".join(dumps(dict(zip(names, row, strict=True))) + "\n" for row in rows)
        self.out.write(text.encode("utf-8"))
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


class ThreadedSink(io.RawIOBase):
    """Hands blocks to one background thread that writes them into `out`.

    The pipeline's writer hashes (sha256) and writes each block; both release the GIL, so
    doing it on a second thread overlaps it with receiving the next COPY data instead of
    stalling the database connection. At most `depth` blocks wait (bounded memory); order
    is kept; `flush()` waits until everything is written and re-raises a writer error.
    """

    def __init__(self, out: BinaryIO, depth: int = 8) -> None:
        import queue
        import threading

        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sql-copy-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            try:
                if block is None:
                    return
                if self._error is None:
                    self._out.write(block)
            except BaseException as exc:  # re-raised in the reading thread
                self._error = exc
            finally:
                self._queue.task_done()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._raise()
        block = bytes(data)  # the caller's buffer is only borrowed
        self._queue.put(block)
        return len(block)

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def close(self) -> None:
        if not self.closed and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        super().close()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class ParquetWriter(RowWriter):
    def __init__(self, out: BinaryIO, names: Sequence[str], types: Sequence[Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(out, names)
        self._pa = pa
        self._schema = pa.schema([pa.field(n, t) for n, t in zip(names, types, strict=True)])
        self._sink = RawSink(out)
        self._writer = pq.ParquetWriter(self._sink, self._schema, compression="zstd")

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
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
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True, default=str)
        return _text(value)
    if pa.types.is_binary(typ) and isinstance(value, memoryview):
        return bytes(value)
    if pa.types.is_timestamp(typ) and typ.tz is None and isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return value


# PostgreSQL type OIDs and MySQL FIELD_TYPE codes -> Arrow types. Anything else is written
# as text, which is exact (numeric without a declared scale, uuid, json, intervals...).
_PG_OIDS = {
    16: "bool",
    20: "int64",
    21: "int16",
    23: "int32",
    26: "int64",
    700: "float32",
    701: "float64",
    17: "binary",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
}
_MYSQL_CODES = {
    1: "int64",  # TINY (sign unknown from the code alone: widest safe type)
    2: "int64",
    3: "int64",
    8: "int64",
    9: "int64",
    4: "float32",
    5: "float64",
    10: "date",
    12: "timestamp",
    7: "timestamptz",  # TIMESTAMP: stored in UTC, read with session time zone +00:00
}


def arrow_type(dialect: str, description: Sequence[Any]) -> Any:
    """The Arrow type of one DB-API cursor description entry."""
    import pyarrow as pa

    code = description[1]
    if dialect == "postgresql":
        kind = _PG_OIDS.get(code)
        if code == 1700:  # numeric(p, s): exact decimal when the scale is declared
            precision, scale = description[4], description[5]
            if precision and scale is not None and 0 < precision <= 38:
                return pa.decimal128(precision, scale)
    else:
        kind = _MYSQL_CODES.get(code)
        # DECIMAL, TEXT and BLOB codes do not say precision or charset reliably through
        # pymysql: they are written as text (exact; blobs as \x<hex>).
    return {
        "bool": pa.bool_(),
        "int16": pa.int16(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "binary": pa.binary(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
    }.get(kind, pa.string())
