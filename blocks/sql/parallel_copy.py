"""PostgreSQL COPY of one window as several key ranges at once, under ONE snapshot.

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
order. The snapshot is held for the whole extraction (like `single_transaction`): the
in-flight cap of OTHER timestamp sources on the same database sees it as an open
transaction and holds their bound back until it ends (a delay, never a loss), and vacuum
waits for it. That is why the default is one stream.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

_COPY_BUFFER = 1 << 20


def split_ranges(lo: int, hi: int, n: int) -> list[tuple[int, int]]:
    """[lo, hi] as at most n disjoint half-open [a, b) ranges covering it, in order."""
    span = hi - lo + 1
    n = max(1, min(n, span))
    bounds = [lo + span * i // n for i in range(n + 1)]
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
) -> int | None:
    """COPY the window in `streams` ranges of `split` into `sink`; the rows copied, or None
    when the split column's values are not integers (the caller then copies serially)."""
    lead = engine.raw_connection()
    others: list[Any] = []
    pool: ThreadPoolExecutor | None = None
    try:
        cur = lead.cursor()
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur.execute("SELECT pg_export_snapshot()")
        (snapshot,) = cur.fetchone()
        bounds = select(func.min(split), func.max(split)).select_from(base).where(*where)
        cur.execute(literal_sql(cur, bounds))
        lo, hi = cur.fetchone()
        if lo is None:  # an empty window: one COPY gives the header (or nothing)
            ranges: list[tuple[int, int]] = []
        elif isinstance(lo, bool) or not isinstance(lo, int) or not isinstance(hi, int):
            return None
        else:
            ranges = split_ranges(lo, hi, streams)
        for _ in ranges[1:]:
            conn = engine.raw_connection()
            others.append(conn)
            c = conn.cursor()
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            c.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))

        def statement(cursor: Any, rng: tuple[int, int] | None, with_header: bool) -> str:
            clauses = list(where)
            if rng is not None:
                clauses += [split >= rng[0], split < rng[1]]
            stmt = select(*cols).select_from(base).where(*clauses).order_by(*order)
            options = "FORMAT csv, HEADER true" if with_header else "FORMAT csv"
            return f"COPY ({literal_sql(cursor, stmt)}) TO STDOUT WITH ({options})"

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
