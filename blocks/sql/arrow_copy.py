"""PostgreSQL -> Parquet, column-wise: COPY's CSV stream parsed by pyarrow's CSV reader.

The row path (`RowWriter`) builds a Python object per cell and converts each one; this path
never does. `COPY (SELECT ...) TO STDOUT (FORMAT csv)` is written into a pipe; a thread
parses the pipe with `pyarrow.csv.open_csv` straight into the Parquet column types and
writes row groups, so memory is bounded by one row group whatever the table size.

Only columns whose PostgreSQL text form converts exactly are taken (`supported`); anything
else (json, arrays, intervals, time, ...) keeps the row path, whose text forms differ. How
each type is read (the same values the row path writes):

- integers, float4/float8 (`NaN`, `Infinity`), boolean (`t`/`f`), date, numeric(p, s) as
  decimal128(p, s): parsed by the CSV reader into the target type.
- numeric without a scale, text, varchar, char, name, uuid: strings. NULL is an empty
  unquoted field, an empty string is `""`: the reader keeps them apart
  (`quoted_strings_can_be_null=False`).
- timestamp: parsed as `timestamp[us]`. timestamptz: selected as `col AT TIME ZONE 'UTC'`
  (the session is in UTC anyway; this drops the `+00` suffix) and typed UTC.
- bytea: PostgreSQL writes `\\x<hex>`; decoded with numpy over the whole column buffer.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO

from sqlalchemy import func

from blocks.core.file_formats import RawSink

# PostgreSQL type OIDs whose COPY text converts exactly (see the module docstring).
_STRING_OIDS = {25, 1043, 1042, 19, 2950, 18}  # text, varchar, bpchar, name, uuid, "char"
_NATIVE_OIDS = {16, 20, 21, 23, 26, 700, 701, 1082, 1114, 1184, 17, 1700}
ROW_GROUP_ROWS = 262_144
_BLOCK_SIZE = 4 << 20  # bytes of CSV per parsed batch
_PIPE_BUFFER = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def supported(descriptions: Sequence[Sequence[Any]]) -> bool:
    """Whether every output column has an exact column-wise conversion."""
    return all(d[1] in _STRING_OIDS or d[1] in _NATIVE_OIDS for d in descriptions)


def select_columns(cols: Sequence[Any], descriptions: Sequence[Sequence[Any]]) -> list[Any]:
    """The COPY's SELECT list: timestamptz columns as UTC wall-clock times (no offset)."""
    return [
        func.timezone("UTC", c).label(c.key) if d[1] == 1184 else c
        for c, d in zip(cols, descriptions, strict=True)
    ]


_HEX_PAIRS: Any = None


def _hex_pairs() -> Any:
    """Lookup table: two ASCII hex digits read as one little-endian uint16 -> their byte
    (256: not hex). Built once (65,536 entries)."""
    global _HEX_PAIRS
    if _HEX_PAIRS is None:
        import pyarrow as pa

        digit = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
        table = [256] * 65536
        for hi, hv in digit.items():
            for lo, lv in digit.items():
                table[hi | lo << 8] = hv << 4 | lv
        _HEX_PAIRS = pa.array(table, pa.int16())
    return _HEX_PAIRS


def _hex_to_binary(arr: Any) -> Any:
    """`\\x0aff`-style strings -> binary values, vectorised with Arrow compute kernels
    (no loop per cell, no numpy): each pair of hex digits is read as one uint16 and looked
    up in `_hex_pairs()`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stripped = pc.utf8_slice_codeunits(arr.cast(pa.string()), 2)
    n = len(stripped)
    if n == 0:
        return pa.array([], pa.binary())
    validity, offsets_buf, data_buf = stripped.buffers()
    offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, offsets_buf], offset=stripped.offset)
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    size = last - first
    if size % 2:
        raise ValueError("bytea column: COPY text is not \\x<hex>")
    if size:
        # A copy: the pairs must start on an even, aligned address.
        pairs_buf = pa.py_buffer(data_buf.slice(first, size).to_pybytes())
        pairs = pa.Array.from_buffers(pa.uint16(), size // 2, [None, pairs_buf])
        decoded = pc.take(_hex_pairs(), pairs)
        if pc.max(decoded).as_py() > 255:
            raise ValueError("bytea column: COPY text is not \\x<hex>")
        data = decoded.cast(pa.uint8()).buffers()[1]
    else:
        data = pa.py_buffer(b"")
    new_offsets = pc.divide(pc.subtract(offsets, pa.scalar(first, pa.int32())), 2)
    if validity is not None and stripped.offset:
        validity = pc.is_valid(stripped).buffers()[1]  # re-based to offset 0
    return pa.Array.from_buffers(
        pa.binary(),
        n,
        [validity, new_offsets.cast(pa.int32()).buffers()[1], data],
        null_count=stripped.null_count,
    )


class ParquetCopySink:
    """A binary file object COPY writes CSV into; the rows come out as Parquet in `out`.

    The parser runs in its own thread, reading a pipe, started on the first write (a COPY
    that returns no rows gives a Parquet file with the schema and no row group). `close()`
    waits for it, finishes the file and raises the parser's error, if any."""

    def __init__(
        self,
        out: BinaryIO,
        names: Sequence[str],
        schema: Any,
        descriptions: Sequence[Sequence[Any]],
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._names = list(names)
        self._schema = schema
        self._bytea = [i for i, d in enumerate(descriptions) if d[1] == 17]
        self._row_group_rows = row_group_rows
        self._writer = pq.ParquetWriter(RawSink(out), schema, compression="zstd")
        self._pipe: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.rows = 0

    # --- the COPY side
    def write(self, data: bytes) -> int:
        if self._pipe is None:
            self._start()
        try:
            return self._pipe.write(data)
        except BrokenPipeError:  # the parser stopped: its error is the one to report
            self._thread.join()  # type: ignore[union-attr]
            raise self._error or BrokenPipeError("parquet conversion stopped") from None

    def flush(self) -> None:
        if self._pipe is not None:
            self._pipe.flush()

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:  # a 1 MiB pipe (Linux; default 64 KiB): fewer thread switches per MiB
            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _PIPE_BUFFER)
        except OSError:
            pass
        self._pipe = os.fdopen(write_fd, "wb", buffering=_PIPE_BUFFER)
        # Buffered: read(n) waits for n bytes (or EOF), so the CSV reader gets whole
        # blocks; a raw pipe read returns what is there (<= 64 KiB), and each short read
        # became its own small batch (~5x slower end to end, measured).
        reader = os.fdopen(read_fd, "rb", buffering=_BLOCK_SIZE)
        self._thread = threading.Thread(
            target=self._parse, args=(reader,), name="sql-parquet", daemon=True
        )
        self._thread.start()

    # --- the parser side
    def _parse(self, reader: Any) -> None:
        import pyarrow.csv as pcsv

        pa = self._pa
        read_types = {}
        for f in self._schema:
            typ = f.type
            if pa.types.is_timestamp(typ):
                typ = pa.timestamp("us")
            elif pa.types.is_binary(typ):
                typ = pa.string()
            read_types[f.name] = typ
        try:
            batches = pcsv.open_csv(
                pa.PythonFile(reader, mode="r"),
                read_options=pcsv.ReadOptions(
                    column_names=self._names, block_size=_BLOCK_SIZE, use_threads=True
                ),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    column_types=read_types,
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=["t"],
                    false_values=["f"],
                ),
            )
            pending: list[Any] = []
            size = 0
            for batch in batches:
                pending.append(self._convert(batch))
                size += batch.num_rows
                if size >= self._row_group_rows:
                    self._flush_group(pending)
                    pending, size = [], 0
            if pending:
                self._flush_group(pending)
        except BaseException as exc:  # reported by write()/close() in the COPY thread
            self._error = exc
        finally:
            reader.close()  # a COPY still writing gets BrokenPipeError, not a hang

    def _convert(self, batch: Any) -> Any:
        pa = self._pa
        arrays = list(batch.columns)
        for i in self._bytea:
            arrays[i] = _hex_to_binary(arrays[i])
        for i, f in enumerate(self._schema):
            if arrays[i].type != f.type:
                arrays[i] = arrays[i].cast(f.type)  # naive -> UTC timestamps
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)

    def _flush_group(self, batches: list[Any]) -> None:
        table = self._pa.Table.from_batches(batches, schema=self._schema)
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.rows += len(table)

    def close(self) -> None:
        """End of the COPY stream: wait for the parser, finish the Parquet file."""
        try:
            if self._pipe is not None:
                try:
                    self._pipe.close()
                except BrokenPipeError:
                    pass
                self._thread.join()  # type: ignore[union-attr]
            if self._error is not None:
                raise self._error
        finally:
            self._writer.close()
