"""PostgreSQL COPY of one window as several key (or page) ranges at once, under ONE snapshot.

Used by `SqlSource` when `parallel_streams` > 1, the output goes through COPY (CSV, or
Parquet via `arrow_copy`), the window has no row limit (`max_rows_per_file` not reached
mid-window) and the split column is an integer: the single primary key in `none` mode, the
incremental column in `id` mode. Timestamp windows (whose key starts with a timestamp)
keep one stream.

Why the union is exactly one read of the window:

1. The lead connection opens a REPEATABLE READ READ ONLY transaction, exports its snapshot
   (`pg_export_snapshot()`) and reads `min`/`max` of the split column inside the window.
2. Every other connection opens REPEATABLE READ and imports that snapshot
   (`SET TRANSACTION SNAPSHOT`) BEFORE the lead runs any COPY, so all of them see the same
   committed rows (PostgreSQL's documented way to share one snapshot between sessions, as
   pg_dump -j does).
3. [min, max] is cut into N disjoint half-open ranges that cover it; each connection COPYs
   `window AND lo <= key < hi` ordered by the window's order. Every row of the window has
   a key in exactly one range, so the union is the window as that one snapshot holds it,
   and concatenating the ranges in order keeps the key order.

Memory stays bounded: the lead's range streams straight into the sink; the other ranges
stream into anonymous temporary files (disk, not RAM) that are appended to the sink in
order (with asyncpg, each as soon as the range before it ends, while it is still read,
and the rest of it then goes straight to the sink: `_RangeOutput`). The snapshot is held
for the whole extraction (like `single_transaction`): the in-flight cap of OTHER timestamp
sources on the same database sees it as an open transaction and holds their bound back
until it ends (a delay, never a loss), and vacuum waits for it. That is why the default
is one stream.

Client CPU: psycopg2's `copy_expert` calls Python once per row (a bytes object and a
`write` per row, the GIL dropped and retaken per row): ~3 CPU-s for 10M rows, close to
the server's ~3.9 CPU-s for the ordered COPY, taken from the same 2 cores, and the
streams' threads contend for the GIL on every row. When the
connection is a plain host/port/user/password URL (no `connect_args`, no URL query) and
asyncpg is importable (it comes with Prefect), the ranges are read by asyncpg instead:
one event loop in one thread, COPY data delivered in blocks of many rows, about half the
client CPU of psycopg2 per row, and less again when small blocks wait for more
(`_read_range`). The asyncpg sessions get the lead session's output
settings (TimeZone, DateStyle, ...), so the bytes are the ones psycopg2's COPY gives.

Physical split (`pages` given: `SqlSource.parallel_split="physical"`, `none` mode on a
table): the ranges are ranges of the table's pages, `ctid >= '(a,0)' AND ctid < '(b,0)'`,
the first range with no lower bound and the last with no upper bound, so every row
version has its TID in exactly one range whatever the table's size became; each is a TID
Range Scan (PostgreSQL 14+) in storage order, with no ORDER BY. The server then skips the
ordered index scans: 10M rows, 2 cores, 4.7 CPU-s against 5.6 for the key ranges (the
rest is the output functions, the same for both). The file holds the rows in storage
order, not key order. Not applicable (the caller falls back to key ranges or one stream,
and says why): PostgreSQL before 14 (each range would scan the whole table), a view,
foreign or partitioned table.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select, text

_COPY_BUFFER = 1 << 20
_SMALL_BLOCK = 64 << 10  # asyncpg COPY blocks smaller than this wait _BLOCK_PAUSE for more
_BLOCK_PAUSE = 0.001
# The lead range's share against each other range's (2 streams: 43%). 10M rows, 2 streams,
# alternated runs: a 40-45% lead took 5.75-6.49 s where 50% took 6.69-7.47 s.
_ASYNCPG_LEAD_WEIGHT = 0.75

# Session settings that change COPY's text output (or how the SQL text is read): the
# asyncpg range sessions take the lead psycopg2 session's values.
_OUTPUT_SETTINGS = (
    "TimeZone",
    "DateStyle",
    "IntervalStyle",
    "extra_float_digits",
    "bytea_output",
    "lc_monetary",
    "search_path",
    "standard_conforming_strings",
)
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]+")


def split_ranges(lo: int, hi: int, n: int, lead_weight: float = 1.0) -> list[tuple[int, int]]:
    """[lo, hi] as at most n disjoint half-open [a, b) ranges covering it, in order; the
    first range's span is `lead_weight` times each other's."""
    span = hi - lo + 1
    n = max(1, min(n, span))
    lead, other = max(1, round(lead_weight * 1000)), 1000  # integer weights: exact bounds
    total = lead + other * (n - 1)
    bounds = [lo] + [lo + span * (lead + other * i) // total for i in range(n)]
    return [(bounds[i], bounds[i + 1]) for i in range(n) if bounds[i] < bounds[i + 1]]


def copy_parallel(
    engine: Any,
    base: Any,
    cols: Sequence[Any],
    where: Sequence[Any],
    order: Sequence[Any],
    split: Any,
    streams: int,
    sink: Any,
    header: bool,
    literal_sql: Callable[[Any, Any], str],
    direct: Mapping[str, Any] | None = None,
    pages: str | None = None,
    notes: list[str] | None = None,
) -> int | None:
    """COPY the window in `streams` ranges of `split` into `sink`; the rows copied, or None
    when no split applies (the caller then copies serially).
    `split`: the integer key column, or None. `pages`: the table's quoted, qualified name to
    split its pages instead (ctid ranges, storage order; `split` is then only the fallback
    when that is not applicable). `direct`: asyncpg connect keywords (host, port, user,
    password, database) to read the ranges with asyncpg (see the module docstring); None:
    psycopg2 connections. `notes`: gets one line for the run log on the split used, after
    a line on why the page split did not apply, if it did not; or on why none applied."""
    notes = notes if notes is not None else []
    lead = engine.raw_connection()
    others: list[Any] = []
    pool: ThreadPoolExecutor | None = None
    try:
        cur = lead.cursor()
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur.execute("SELECT pg_export_snapshot()")
        (snapshot,) = cur.fetchone()
        # asyncpg hands each later range the sink as the one before it ends: a shorter
        # lead range lets the next one's spill be appended while it still reads.
        weight = _ASYNCPG_LEAD_WEIGHT if direct is not None else 1.0
        ranges: list[tuple[int, int]] = []
        page_count = _table_pages(cur, pages, notes) if pages is not None else None
        if page_count is not None:
            order = []  # storage order: a TID Range Scan per range, no sort
            if page_count > 0:  # an empty table: one COPY gives the header (or nothing)
                ranges = split_ranges(0, page_count - 1, streams, weight)
            notes.append(f"{len(ranges) or 1} page (ctid) range(s) of {page_count} pages")

            def range_clauses(rng: tuple[int, int]) -> list[Any]:
                # First range open below, last open above: every TID is in exactly one,
                # even on pages added after the size was read (invisible to the snapshot).
                clauses = []
                if rng[0] > 0:
                    clauses.append(text(f"ctid >= '({int(rng[0])},0)'"))
                if rng[1] <= page_count - 1:
                    clauses.append(text(f"ctid < '({int(rng[1])},0)'"))
                return clauses
        else:
            if split is None:
                notes.append("no integer key to split instead: one COPY stream")
                return None
            bounds = select(func.min(split), func.max(split)).select_from(base).where(*where)
            cur.execute(literal_sql(cur, bounds))
            lo, hi = cur.fetchone()
            if lo is not None:  # else an empty window: one COPY gives the header (or nothing)
                if isinstance(lo, bool) or not isinstance(lo, int) or not isinstance(hi, int):
                    notes.append(f"{split.name!r} is not an integer column: one COPY stream")
                    return None
                ranges = split_ranges(lo, hi, streams, weight)
            notes.append(f"{len(ranges) or 1} key range(s) of {split.name!r}")

            def range_clauses(rng: tuple[int, int]) -> list[Any]:
                return [split >= rng[0], split < rng[1]]

        def select_sql(cursor: Any, rng: tuple[int, int] | None) -> str:
            clauses = list(where)
            if rng is not None:
                clauses += range_clauses(rng)
            stmt = select(*cols).select_from(base).where(*clauses).order_by(*order)
            return literal_sql(cursor, stmt)

        def statement(cursor: Any, rng: tuple[int, int] | None, with_header: bool) -> str:
            options = "FORMAT csv, HEADER true" if with_header else "FORMAT csv"
            return f"COPY ({select_sql(cursor, rng)}) TO STDOUT WITH ({options})"

        if direct is not None and len(ranges) > 1:
            settings = _output_settings(cur)
            if settings is not None:
                selects = [select_sql(cur, r) for r in ranges]
                total = _copy_ranges_asyncpg(direct, settings, snapshot, selects, sink, header)
                sink.flush()
                return total

        for _ in ranges[1:]:
            conn = engine.raw_connection()
            others.append(conn)
            c = conn.cursor()
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            c.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))

        def spool(conn: Any, rng: tuple[int, int]) -> tuple[Any, int]:
            spill = tempfile.TemporaryFile(prefix="ingest-sql-range-")  # noqa: SIM115 (caller closes)
            try:
                c = conn.cursor()
                c.copy_expert(statement(c, rng, False), spill, _COPY_BUFFER)
                return spill, max(c.rowcount, 0)
            except BaseException:
                spill.close()
                raise

        pool = ThreadPoolExecutor(max(1, len(others)), thread_name_prefix="sql-copy-range")
        futures = [pool.submit(spool, c, r) for c, r in zip(others, ranges[1:], strict=True)]
        try:
            cur.copy_expert(
                statement(cur, ranges[0] if ranges else None, header), sink, _COPY_BUFFER
            )
            total = max(cur.rowcount, 0)
            for future in futures:
                spill, rows = future.result()
                with spill:
                    spill.seek(0)
                    shutil.copyfileobj(spill, sink, _COPY_BUFFER)
                total += rows
        except BaseException:
            for conn in others:  # stop the other ranges' COPYs now, not at their end
                try:
                    conn.cancel()
                except Exception:
                    pass
            for future in futures:
                try:
                    future.result()[0].close()
                except BaseException:
                    pass
            raise
        sink.flush()
        return total
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        for conn in [*others, lead]:
            try:
                conn.rollback()
            finally:
                conn.close()


def _table_pages(cur: Any, table: str, notes: list[str]) -> int | None:
    """The table's size in pages, read in the lead's snapshot transaction; None (with the
    reason in `notes`) when a page split does not apply to it."""
    cur.execute("SELECT current_setting('server_version_num')::int")
    (version,) = cur.fetchone()
    if version < 140000:
        notes.append(
            f"PostgreSQL {version} has no TID Range Scan (14+): a page split would scan "
            "the whole table once per range"
        )
        return None
    cur.execute(
        "SELECT relkind, pg_relation_size(oid) / current_setting('block_size')::bigint "
        "FROM pg_class WHERE oid = %s::regclass",
        (table,),
    )
    kind, count = cur.fetchone()
    if kind not in ("r", "m"):  # views and foreign tables have no ctid; partitions differ
        notes.append(f"{table} is not a plain table or materialized view (relkind {kind!r})")
        return None
    return int(count)


def _output_settings(cur: Any) -> dict[str, str] | None:
    """The lead session's output settings for the asyncpg sessions; None when its client
    encoding is not UTF-8 (asyncpg speaks UTF-8 only: the bytes would differ)."""
    cur.execute("SELECT current_setting('client_encoding')")
    (encoding,) = cur.fetchone()
    if str(encoding).upper().replace("-", "") != "UTF8":
        return None
    cur.execute("SELECT " + ", ".join(f"current_setting('{name}')" for name in _OUTPUT_SETTINGS))
    return dict(zip(_OUTPUT_SETTINGS, (str(v) for v in cur.fetchone()), strict=True))


def _copy_ranges_asyncpg(
    params: Mapping[str, Any],
    settings: Mapping[str, str],
    snapshot: str,
    selects: Sequence[str],
    sink: Any,
    header: bool,
) -> int:
    """COPY each SELECT (one key range, in key order) on its own asyncpg session under
    `snapshot`, into `sink` in range order (see `_RangeOutput`). Runs its own event loop in
    a fresh thread (the caller may be inside one). The rows copied."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):  # pasted into SET TRANSACTION SNAPSHOT below
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    outputs = [_RangeOutput(sink, direct=i == 0) for i in range(len(selects))]
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="sql-copy-ranges") as loop_thread:
            return loop_thread.submit(
                asyncio.run, _read_ranges(params, settings, snapshot, selects, outputs, header)
            ).result()
    finally:
        for output in outputs:
            output.close()


class _RangeOutput:
    """Where one range's COPY blocks go: straight into the sink once every earlier range
    is in it, into a temporary file (disk, not RAM) until then.

    When the range before it ends, `follow` appends what this range spilled so far to the
    sink, a block at a time, while this range keeps reading (the spill grows behind the
    read position), and switches it to the sink once caught up. So the spill is hashed and
    written during the parallel phase, not in a serial tail after the last range, and the
    rest of the range never touches the spill. Only the event loop's thread uses it."""

    def __init__(self, sink: Any, direct: bool) -> None:
        self._sink = sink
        self._direct = direct
        self._spill: Any = None
        self._written = 0  # bytes in the spill
        self._drained = 0  # of which already appended to the sink

    def write(self, block: bytes) -> None:
        if self._direct:
            self._sink.write(block)
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="ingest-sql-range-", buffering=0)  # noqa: SIM115 (close())
        self._spill.write(block)
        self._written += len(block)

    async def follow(self) -> None:
        """Append the spill to the sink until caught up, then write straight to it."""
        while self._drained < self._written:
            chunk = os.pread(self._spill.fileno(), _COPY_BUFFER, self._drained)
            self._sink.write(chunk)
            self._drained += len(chunk)
            await asyncio.sleep(0)  # let this range (and the others) keep reading
        self._direct = True  # no await since the check: no block can slip in between

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


async def _read_ranges(
    params: Mapping[str, Any],
    settings: Mapping[str, str],
    snapshot: str,
    selects: Sequence[str],
    outputs: Sequence[_RangeOutput],
    header: bool,
) -> int:
    import asyncpg

    conns: list[Any] = []
    try:
        for _ in selects:
            conn = await asyncpg.connect(**params, server_settings=dict(settings))
            conns.append(conn)
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        tasks = [
            asyncio.ensure_future(_read_range(conn, sql, out, header and i == 0))
            for i, (conn, sql, out) in enumerate(zip(conns, selects, outputs, strict=True))
        ]
        in_order = asyncio.ensure_future(_in_order(tasks, outputs))
        try:
            counts = await asyncio.gather(*tasks, in_order)
        except BaseException:
            for task in [*tasks, in_order]:  # one failed: stop the others now, not at their end
                task.cancel()
            await asyncio.gather(*tasks, in_order, return_exceptions=True)
            raise
        for conn in conns:  # read-only transactions: nothing to commit
            await conn.close(timeout=10)
        return sum(counts[: len(tasks)])
    finally:
        for conn in conns:
            if not conn.is_closed():
                conn.terminate()  # an error above: drop the link without waiting


async def _in_order(tasks: Sequence[asyncio.Future], outputs: Sequence[_RangeOutput]) -> int:
    """Hand the sink to each range in turn as the range before it ends."""
    for before, output in zip(tasks[:-1], outputs[1:], strict=True):
        await before
        await output.follow()
    return 0


async def _read_range(conn: Any, sql: str, out: _RangeOutput, header: bool) -> int:
    async def write(block: bytes) -> None:
        out.write(block)  # blocks of whole rows
        if len(block) < _SMALL_BLOCK:
            # The server sends COPY data 8 KiB at a time; waking up for each block cost
            # the client more CPU than the rows did (10M rows: ~66,000 wakeups). asyncpg
            # stops reading while this runs, so the socket buffer fills meanwhile: the
            # next block is bigger. A block this small means the data arrives slower than
            # 64 KiB per pause, so the pause never holds the stream back.
            await asyncio.sleep(_BLOCK_PAUSE)

    status = await conn.copy_from_query(sql, output=write, format="csv", header=header)
    return int(status.split()[-1])
