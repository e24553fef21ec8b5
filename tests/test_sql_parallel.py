"""PostgreSQL `parallel_streams` (issue 17), against the real server on 127.0.0.1:5432.

- The parallel file is byte for byte the single-stream file (keyset COPY chunks): a table
  with gaps in the key, NULLs and awkward values; an id window on a non-unique
  incremental column; ranges read by asyncpg and by psycopg2; asyncpg sessions write
  timestamps in the lead session's zone even when the database default differs.
- Rows committed while parallel id-mode runs extract are in that run or a later one:
  none lost, none twice.
- A range failing mid-way fails the run: nothing landed, no watermark; the next run
  takes everything once.
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from blocks import IngestionQueue, Ledger, QueueConsumer
from blocks.core.source import Candidate
from blocks.sql import parallel_copy
from blocks.sql.block import SqlSource, Window
from flows.sql import ingest_sql
from tests import sql_servers
from tests.landed_rows import counts, delivered_ids, landed, run_flow
from tests.sql_servers import SourceDb
from tests.test_sql_arrow import fill

pg_source = sql_servers.pg_source  # the module's throwaway PostgreSQL database (fixture)


def block(db: SourceDb, table: str, **fields) -> SqlSource:
    fields.setdefault("primary_key", ["id"])
    fields.setdefault("source_id", f"par-{table}-{fields.get('parallel_streams', 1)}")
    return SqlSource(database=db.connector(), table=table, retries=0, **fields)


def extract(source: SqlSource, tmp_path, window: Window) -> bytes:
    path = tmp_path / f"{source.source_id}-{time.monotonic_ns()}.csv"
    try:
        with open(path, "wb") as out:
            source.fetch(Candidate(name="t", ref=window), out)
    finally:
        source.close()
    return path.read_bytes()


@pytest.fixture
def asyncpg_calls(monkeypatch) -> list[int]:
    """Counts the parallel extractions whose ranges asyncpg read."""
    calls: list[int] = []
    real = parallel_copy._copy_ranges_asyncpg

    def spy(*args, **kwargs):
        calls.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(parallel_copy, "_copy_ranges_asyncpg", spy)
    return calls


def test_parallel_csv_is_the_single_stream_file(pg_source, tmp_path, monkeypatch, asyncpg_calls):
    fill(pg_source, "par_types", 900)  # NULL rows, quotes, newlines, NaN, bytea, ...
    pg_source.run("DELETE FROM par_types WHERE id % 11 IN (2, 5) OR id BETWEEN 300 AND 420")
    full = Window("full")
    one = extract(block(pg_source, "par_types", copy_chunk_rows=97), tmp_path, full)
    assert one.count(b"\n") > 600 and b",,," in one  # NULLs present
    for streams in (2, 3, 16):
        many = extract(block(pg_source, "par_types", parallel_streams=streams), tmp_path, full)
        assert many == one, streams
    assert asyncpg_calls == [2, 3, 16]
    # the psycopg2 ranges (a connector with connect_args, or no asyncpg) give the same bytes
    monkeypatch.setattr(SqlSource, "_asyncpg_params", lambda self, prep: None)
    assert extract(block(pg_source, "par_types", parallel_streams=3), tmp_path, full) == one
    assert asyncpg_calls == [2, 3, 16]


def test_parallel_id_window_on_a_non_unique_column(pg_source, tmp_path, asyncpg_calls):
    """Id mode on `grp` (three rows per value, some NULL) keyed (grp, id): a value's rows
    stay in one range, in id order."""
    pg_source.run(
        "DROP TABLE IF EXISTS par_dup",
        "CREATE TABLE par_dup (id bigint PRIMARY KEY, grp int, note text)",
        "INSERT INTO par_dup SELECT g, CASE WHEN g % 13 = 0 THEN NULL ELSE (1000 - g) / 3 END,"
        " CASE WHEN g % 4 = 0 THEN NULL ELSE 'n ' || g END FROM generate_series(1, 1000) g",
    )
    fields = dict(incremental_mode="id", incremental_column="grp")
    window = Window("incremental", {"through": 20}, 300)
    one = extract(block(pg_source, "par_dup", copy_chunk_rows=50, **fields), tmp_path, window)
    many = extract(block(pg_source, "par_dup", parallel_streams=4, **fields), tmp_path, window)
    assert many == one
    rows = [line.split(",") for line in one.decode().splitlines()[1:]]
    keys = [(int(r[1]), int(r[0])) for r in rows]
    assert keys == sorted(keys) and {k[0] for k in keys} == set(range(21, 301))
    assert asyncpg_calls == [4]


def test_parallel_ranges_use_the_lead_session_zone(pg_source, tmp_path, asyncpg_calls):
    """Every session runs in UTC (the engine's connect hook); asyncpg's sessions do not go
    through that hook, so they must take the lead session's TimeZone, not the database's."""
    pg_source.run(f"ALTER DATABASE \"{pg_source.name}\" SET TIME ZONE 'Asia/Kolkata'")
    try:
        fill(pg_source, "par_zone", 200)
        full = Window("full")
        one = extract(block(pg_source, "par_zone"), tmp_path, full)
        many = extract(block(pg_source, "par_zone", parallel_streams=2), tmp_path, full)
    finally:
        pg_source.run(f'ALTER DATABASE "{pg_source.name}" RESET timezone')
    assert b"+00," in one and b"+05:30" not in one
    assert many == one and asyncpg_calls == [2]


# --------------------------------------------------------------------------- flow level
pytestmark_flow = pytest.mark.usefixtures("prefect_api")


def ids_table(db: SourceDb, name: str, rows: int) -> None:
    db.run(
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} (id bigserial PRIMARY KEY, note text, amount numeric(10,2))",
        f"INSERT INTO {name} (note, amount) SELECT 'seed ' || g, g / 100.0 "
        f"FROM generate_series(1, {rows}) g",
    )


def run(save_block, ledger: Ledger, queue: IngestionQueue, source: SqlSource):
    return run_flow(ingest_sql, save_block, ledger, queue, source)


@pytestmark_flow
@pytest.mark.parametrize("seed", [1, 2])
def test_parallel_runs_lose_no_concurrent_insert(
    save_block, sqlite_ledger, queue, pg_source, asyncpg_calls, seed
):
    """Two writers commit rows (one or a few per transaction, at random moments, some
    transactions held open a while) during three parallel id-mode runs; a last run after
    they stop. Every row is delivered exactly once, in id order per file."""
    table = f"par_live{seed}"
    ids_table(pg_source, table, 30000)
    source = block(
        pg_source, table, source_id=f"live{seed}", incremental_mode="id",
        incremental_column="id", parallel_streams=2, settle_seconds=5,
    )  # fmt: skip
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        rnd = random.Random(seed * 10 + worker)
        try:
            with pg_source.engine.connect() as conn:
                while not stop.is_set():
                    for _ in range(rnd.randint(1, 3)):
                        conn.execute(text(f"INSERT INTO {table} (note) VALUES ('live')"))
                    time.sleep(rnd.choice([0, 0.001, 0.01, 0.05]))  # inside the transaction
                    conn.commit()
                    time.sleep(rnd.choice([0, 0.002, 0.02]))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(2)]
    for w in writers:
        w.start()
    try:
        for _ in range(3):
            counts(run(save_block, sqlite_ledger, queue, source))
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    assert not errors
    counts(run(save_block, sqlite_ledger, queue, source))
    got = delivered_ids(sqlite_ledger, source.source_id)
    with pg_source.engine.connect() as conn:
        want = [r[0] for r in conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))]
    assert len(want) > 30000  # the writers did commit rows during the runs
    assert sorted(got) == want and len(got) == len(set(got))
    for item in landed(sqlite_ledger, source.source_id):  # each file in key order
        ids = delivered_ids_of(item["landed_path"])
        assert ids == sorted(ids)
    assert asyncpg_calls and all(n == 2 for n in asyncpg_calls)


def delivered_ids_of(path: str) -> list[int]:
    with open(path, "rb") as fh:
        return [int(line.split(b",", 1)[0]) for line in fh.read().splitlines()[1:]]


@pytestmark_flow
def test_a_range_failing_mid_way_fails_the_run(
    save_block, sqlite_ledger, queue, pg_source, monkeypatch
):
    """The second range's stream breaks after its first block: the run fails, nothing is
    landed or queued and no watermark is recorded; the next run delivers every row once."""
    ids_table(pg_source, "par_fail", 20000)
    source = block(
        pg_source, "par_fail", source_id="fail", incremental_mode="id",
        incremental_column="id", parallel_streams=2,
    )  # fmt: skip
    real = parallel_copy._read_range
    broken: list[str] = []

    class Breaks:
        def __init__(self, out):
            self.out = out

        def write(self, block: bytes) -> None:
            self.out.write(block)
            broken.append("x")
            raise ConnectionResetError("simulated: stream lost mid-way")

    async def flaky(conn, sql, out, header):
        return await real(conn, sql, out if header else Breaks(out), header)

    monkeypatch.setattr(parallel_copy, "_read_range", flaky)
    state = run(save_block, sqlite_ledger, queue, source)
    assert state.is_failed() and broken
    assert sqlite_ledger.get_state(source.source_id, "watermark") is None
    assert landed(sqlite_ledger, source.source_id) == []
    assert QueueConsumer(sqlite_ledger, "c").pending_count(source.source_id) == 0

    monkeypatch.setattr(parallel_copy, "_read_range", real)
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == list(range(1, 20001))
    assert sqlite_ledger.get_state(source.source_id, "watermark")["through"] == 20000


# ------------------------------------------------------------ range hand-over (no server)
@settings(max_examples=300, deadline=None)
@given(
    ranges=st.lists(
        st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.integers(0, 3)), max_size=12),
        min_size=1,
        max_size=5,
    ),
    drain_chunk=st.integers(1, 64),
)
def test_ranges_reach_the_sink_in_order_whatever_the_interleaving(ranges, drain_chunk):
    """Each range writes its blocks with random yields between them (so ranges end in any
    order, and a range keeps writing while its spill is appended): the sink holds the
    ranges' bytes in range order, each once."""
    sink = io.BytesIO()
    outputs = [parallel_copy._RangeOutput(sink, direct=i == 0) for i in range(len(ranges))]

    async def produce(blocks, out) -> int:
        for block, yields in blocks:
            for _ in range(yields):
                await asyncio.sleep(0)
            out.write(block)
        return len(blocks)

    async def main() -> None:
        tasks = [asyncio.ensure_future(produce(b, o)) for b, o in zip(ranges, outputs, strict=True)]
        await asyncio.gather(*tasks, parallel_copy._in_order(tasks, outputs))

    real = parallel_copy._COPY_BUFFER
    parallel_copy._COPY_BUFFER = drain_chunk  # many drain steps: the spill grows between them
    try:
        asyncio.run(main())
    finally:
        parallel_copy._COPY_BUFFER = real
        for out in outputs:
            out.close()
    assert sink.getvalue() == b"".join(block for blocks in ranges for block, _ in blocks)


def test_a_range_still_reading_is_followed_then_written_straight(pg_source, tmp_path):
    """300,000 rows in 2 and 3 ranges: the later ranges' spills are appended while those
    ranges still read (drained 4 KiB a step, so the ranges outrun the hand-over), and the
    file is still byte for byte the single-stream file."""
    pg_source.run(
        "DROP TABLE IF EXISTS par_big",
        "CREATE TABLE par_big (id bigint PRIMARY KEY, ts timestamptz, note text)",
        "INSERT INTO par_big SELECT g, timestamptz '2026-01-01' + g * interval '1 ms', "
        "repeat('x', g % 7) FROM generate_series(1, 300000) g",
    )
    full = Window("full")
    one = extract(block(pg_source, "par_big"), tmp_path, full)
    followed: list[bool] = []
    real_follow = parallel_copy._RangeOutput.follow

    async def spy(self) -> None:
        await real_follow(self)
        followed.append(self._written > 0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel_copy, "_COPY_BUFFER", 4096)
        patch.setattr(parallel_copy._RangeOutput, "follow", spy)
        for streams in (2, 3):
            many = extract(block(pg_source, "par_big", parallel_streams=streams), tmp_path, full)
            assert many == one, streams
    assert len(followed) == 1 + 2 and any(followed)
