"""PostgreSQL `parallel_split="physical"` (page / ctid ranges), against the real server.

- The file is the table in storage order: byte for byte `COPY (SELECT ... ORDER BY ctid)`
  under the same session settings, and the same rows as a one-stream (key order) file, on
  a table whose storage order no longer follows the key (updates, deletes), with and
  without a primary key, by asyncpg and by psycopg2, on an empty and a one-page table.
- Writers moving value between rows (and inserting and deleting rows) while ranges are
  read: every row is read once, from one snapshot (the total never changes), whatever the
  number of streams (hypothesis).
- Where pages cannot be split (a view), the run says why in its log and takes key
  ranges; configurations that cannot work fail before any I/O, naming the field.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from blocks.core.errors import ConfigError
from blocks.core.source import Candidate, SkipItem
from blocks.sql import parallel_copy
from blocks.sql.block import SqlSource, Window
from flows.sql import ingest_sql
from tests import sql_servers
from tests.landed_rows import counts, landed, run_flow
from tests.sql_servers import SourceDb
from tests.test_sql_arrow import assert_tables_equal, fill
from tests.test_sql_parallel import block, extract

pg_source = sql_servers.pg_source  # the module's throwaway PostgreSQL database (fixture)
FULL = Window("full")


def pages(db: SourceDb, table: str, **fields) -> SqlSource:
    fields.setdefault("source_id", f"pages-{table}-{fields.get('parallel_streams', 2)}")
    fields.setdefault("parallel_streams", 2)
    return block(db, table, parallel_split="physical", **fields)


def storage_order_copy(db: SourceDb, table: str) -> bytes:
    """The table's rows by ctid, as COPY CSV with a header, in a UTC session (as the
    source's sessions are)."""
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        out = io.BytesIO()
        cur.copy_expert(
            f"COPY (SELECT * FROM {table} ORDER BY ctid) TO STDOUT WITH (FORMAT csv, HEADER)",
            out,
        )
        return out.getvalue()
    finally:
        raw.rollback()
        raw.close()


def rows_of(data: bytes) -> list[list[str]]:
    return sorted(csv.reader(io.StringIO(data.decode())))


def shuffle_storage(db: SourceDb, table: str) -> None:
    """Updates and deletes, so that storage order is no longer key order."""
    db.run(
        f"DELETE FROM {table} WHERE id % 11 IN (2, 5) OR id BETWEEN 300 AND 420",
        f"UPDATE {table} SET i4 = i4 WHERE id % 7 = 0 OR id < 40",  # new row versions
    )


def test_page_ranges_give_the_table_in_storage_order(pg_source, tmp_path, monkeypatch):
    fill(pg_source, "pg_types", 900)  # NULL rows, quotes, newlines, NaN, bytea, ...
    shuffle_storage(pg_source, "pg_types")
    want = storage_order_copy(pg_source, "pg_types")
    one = extract(block(pg_source, "pg_types", copy_chunk_rows=97), tmp_path, FULL)
    assert want != one and rows_of(want) == rows_of(one)  # storage order is not key order
    pages_used: list[int] = []
    real = parallel_copy.split_ranges

    def spy(lo, hi, n, weight=1.0):
        got = real(lo, hi, n, weight)
        pages_used.append(len(got))
        return got

    monkeypatch.setattr(parallel_copy, "split_ranges", spy)
    for streams in (2, 3, 16):
        assert (
            extract(pages(pg_source, "pg_types", parallel_streams=streams), tmp_path, FULL) == want
        )
    assert pages_used == [2, 3, 16]  # the table spans more than 16 pages
    # without a primary key, and with psycopg2's ranges
    pg_source.run("DROP TABLE IF EXISTS pg_nopk", "CREATE TABLE pg_nopk AS TABLE pg_types")
    shuffle_storage(pg_source, "pg_nopk")
    want_nopk = storage_order_copy(pg_source, "pg_nopk")
    monkeypatch.setattr(SqlSource, "_asyncpg_params", lambda self, prep: None)
    for table, expected in (("pg_types", want), ("pg_nopk", want_nopk)):
        fields = {} if table == "pg_types" else {"primary_key": []}
        got = extract(pages(pg_source, table, parallel_streams=3, **fields), tmp_path, FULL)
        assert got == expected, table


def test_page_ranges_to_parquet_hold_the_one_stream_rows(pg_source, tmp_path):
    """The COPY -> Arrow path takes the page ranges too: the same rows as one stream's
    Parquet, in storage order."""
    fill(pg_source, "pg_pq", 600)
    shuffle_storage(pg_source, "pg_pq")
    one = pq.read_table(io.BytesIO(extract(
        block(pg_source, "pg_pq", output_format="parquet"), tmp_path, FULL)))  # fmt: skip
    many = pq.read_table(io.BytesIO(extract(
        pages(pg_source, "pg_pq", parallel_streams=3, output_format="parquet"), tmp_path, FULL
    )))  # fmt: skip
    by_id = sorted(many.to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in by_id] == one["id"].to_pylist()
    assert many["id"].to_pylist() != one["id"].to_pylist()  # storage order
    assert_tables_equal(pa.Table.from_pylist(by_id, schema=many.schema), one)


def test_page_ranges_of_an_empty_and_a_one_page_table(pg_source, tmp_path):
    pg_source.run(
        "DROP TABLE IF EXISTS pg_small",
        "CREATE TABLE pg_small (id bigint PRIMARY KEY, note text)",
    )
    empty = pages(pg_source, "pg_small", parallel_streams=4)
    path = tmp_path / "empty.csv"
    with open(path, "wb") as out, pytest.raises(SkipItem, match="no rows"):
        empty.fetch(Candidate(name="t", ref=FULL), out)
    pg_source.run("INSERT INTO pg_small SELECT g, 'n' || g FROM generate_series(1, 5) g")
    got = extract(pages(pg_source, "pg_small", parallel_streams=4), tmp_path, FULL)
    assert (
        got
        == storage_order_copy(pg_source, "pg_small")
        == b"id,note\n" + b"".join(f"{i},n{i}\n".encode() for i in range(1, 6))
    )


def test_a_view_falls_back_to_key_ranges_and_says_why(pg_source, tmp_path, caplog):
    fill(pg_source, "pg_base", 300)
    pg_source.run("CREATE OR REPLACE VIEW pg_view AS SELECT * FROM pg_base")
    one = extract(block(pg_source, "pg_view"), tmp_path, FULL)
    with caplog.at_level(logging.INFO, logger="ingest.sql"):
        got = extract(pages(pg_source, "pg_view"), tmp_path, FULL)
    assert got == one  # key ranges: key order, the one-stream bytes
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "ingest.sql")
    assert "pg_view is not a plain table" in said and "key range(s) of 'id'" in said
    assert any(r.levelno == logging.WARNING for r in caplog.records if r.name == "ingest.sql")
    # no integer key to fall back on: one stream, and the log says so
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ingest.sql"):
        got = extract(pages(pg_source, "pg_view", primary_key=[]), tmp_path, FULL)
    assert rows_of(got) == rows_of(one)
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "ingest.sql")
    assert "not a plain table" in said and "under one snapshot" not in said
    assert "one COPY stream" in said


@pytest.mark.parametrize(
    ("fields", "needs"),
    [
        ({"table": "t", "incremental_mode": "id", "incremental_column": "id"}, "'none'"),
        ({"query": "SELECT 1 AS id", "table": None}, "a `table`"),
    ],
)
def test_physical_split_where_it_cannot_work_names_the_field(pg_source, fields, needs):
    source = SqlSource(
        database=pg_source.connector(), source_id="bad", parallel_streams=2,
        parallel_split="physical", **fields,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="parallel_split") as err:
        source.preflight()
    assert needs in str(err.value)
    # and a whole table with no primary key is accepted for page ranges, not for key ranges
    SqlSource(database=pg_source.connector(), table="t", source_id="ok", parallel_streams=2,
              parallel_split="physical").preflight()  # fmt: skip
    with pytest.raises(ConfigError, match="parallel_streams"):
        SqlSource(database=pg_source.connector(), table="t", source_id="no",
                  parallel_streams=2).preflight()  # fmt: skip


# ----------------------------------------------------------- one snapshot under writers
def ledger_table(db: SourceDb, name: str, rows: int) -> int:
    """`rows` accounts of 1,000 each; returns the total, which transfers never change."""
    db.run(
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} (id bigserial PRIMARY KEY, amount bigint NOT NULL, pad text)",
        f"INSERT INTO {name} (amount, pad) SELECT 1000, repeat('p', 40) "
        f"FROM generate_series(1, {rows}) g",
    )
    return rows * 1000


def move_money(db: SourceDb, table: str, accounts: int, seed: int, stop: threading.Event,
               errors: list[BaseException]) -> None:  # fmt: skip
    """Transfers between random accounts (each a new row version, often on another page)
    and zero-amount rows inserted and deleted, until `stop`."""
    rnd = random.Random(seed)
    try:
        with db.engine.connect() as conn:
            while not stop.is_set():
                a, b = rnd.randint(1, accounts), rnd.randint(1, accounts)
                n = rnd.randint(1, 50)
                conn.execute(text(f"UPDATE {table} SET amount = amount - {n} WHERE id = {a}"))
                conn.execute(text(f"UPDATE {table} SET amount = amount + {n} WHERE id = {b}"))
                if rnd.random() < 0.3:
                    conn.execute(text(f"INSERT INTO {table} (amount, pad) VALUES (0, 'new')"))
                if rnd.random() < 0.2:
                    conn.execute(text(f"DELETE FROM {table} WHERE amount = 0 AND pad = 'new' "
                                      f"AND id = (SELECT max(id) FROM {table})"))  # fmt: skip
                conn.commit()
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(streams=st.integers(2, 6), seed=st.integers(0, 10_000), writers=st.integers(1, 2))
def test_page_ranges_read_one_snapshot_while_rows_move(pg_source, tmp_path, streams, seed,
                                                       writers):  # fmt: skip
    accounts = 20_000
    total = ledger_table(pg_source, "pg_money", accounts)
    stop = threading.Event()
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=move_money, daemon=True,
                         args=(pg_source, "pg_money", accounts, seed + w, stop, errors))
        for w in range(writers)
    ]  # fmt: skip
    for t in threads:
        t.start()
    try:
        time.sleep(0.05)  # the writers are moving rows when the ranges start
        data = extract(pages(pg_source, "pg_money", parallel_streams=streams), tmp_path, FULL)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    ids = [int(r["id"]) for r in rows]
    assert len(ids) == len(set(ids))  # no row twice (an old and a new version)
    assert set(range(1, accounts + 1)) <= set(ids)  # no account missed
    assert sum(int(r["amount"]) for r in rows) == total  # one snapshot: no half transfer


# --------------------------------------------------------------------------- flow level
@pytest.mark.usefixtures("prefect_api")
def test_physical_runs_land_an_unchanged_table_once(save_block, sqlite_ledger, queue,
                                                    pg_source):  # fmt: skip
    """Two runs of an unchanged table land one file; after rows move without changing
    (an UPDATE to the same values) the table lands once more, as the field's description
    says: a duplicate file, the same rows."""
    fill(pg_source, "pg_flow", 2000)
    source = pages(pg_source, "pg_flow", source_id="pages-flow")
    first = counts(run_flow(ingest_sql, save_block, sqlite_ledger, queue, source))
    again = counts(run_flow(ingest_sql, save_block, sqlite_ledger, queue, source))
    assert (first["landed"], again["landed"]) == (1, 0)
    pg_source.run("UPDATE pg_flow SET i4 = i4 WHERE id < 10")
    moved = counts(run_flow(ingest_sql, save_block, sqlite_ledger, queue, source))
    files = landed(sqlite_ledger, source.source_id)
    assert moved["landed"] == 1 and len(files) == 2
    a, b = (Path(f["landed_path"]).read_bytes() for f in files)
    assert a != b and rows_of(a) == rows_of(b)
