# ruff: noqa: F811  (pytest fixtures imported from tests/sql_servers.py)
"""The SQL source end to end on the real PostgreSQL and MariaDB servers (ingest-sql flow).

Only one seam is faked: `Ledger.record_landed` raising once, to simulate a crash between
the extraction and the ledger record.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

from blocks import IngestionQueue, Ledger, QueueConsumer
from blocks.core.errors import ConfigError, LedgerError, PermanentError
from blocks.core.source import Candidate
from blocks.sql.block import SqlSource, Window
from flows.sql import ingest_sql
from tests.conftest import PG_HOST, PG_PORT, PG_USER, throwaway_database
from tests.landed_rows import counts, delivered_ids, landed, read_rows, run_flow
from tests.sql_servers import SourceDb, my_source, pg_source  # noqa: F401

pytestmark = pytest.mark.usefixtures("prefect_api")
UTC = UTC
PAST = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# ----------------------------------------------------------------------------- helpers
def run(save_block, ledger: Ledger, queue: IngestionQueue, source: SqlSource, **params):
    return run_flow(ingest_sql, save_block, ledger, queue, source, **params)


def watermark(ledger: Ledger, source_id: str) -> dict | None:
    return ledger.get_state(source_id, "watermark")


def orders_table(db: SourceDb, name: str) -> None:
    if db.kind == "postgres":
        db.run(
            f'DROP TABLE IF EXISTS "{name}"',
            f'CREATE TABLE "{name}" (id serial PRIMARY KEY, updated_at timestamptz NOT NULL '
            "DEFAULT now(), amount numeric(10,2), note text, flag boolean)",
            f'CREATE INDEX ON "{name}" (updated_at, id)',
        )
    else:
        db.run(
            f"DROP TABLE IF EXISTS `{name}`",
            f"CREATE TABLE `{name}` (id int AUTO_INCREMENT PRIMARY KEY, updated_at "
            "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), amount decimal(10,2), "
            "note varchar(100), flag boolean, KEY (updated_at, id))",
        )


def insert(db: SourceDb, table: str, note: str, at: datetime | None = None, amount="1.50"):
    q = '"' if db.kind == "postgres" else "`"
    if at is None:
        db.run(
            f"INSERT INTO {q}{table}{q} (amount, note, flag) VALUES (:a, :n, true)",
            a=amount,
            n=note,
        )
    else:
        value = at if db.kind == "postgres" else at.astimezone(UTC).replace(tzinfo=None)
        db.run(
            f"INSERT INTO {q}{table}{q} (updated_at, amount, note, flag) "
            "VALUES (:t, :a, :n, false)",
            t=value,
            a=amount,
            n=note,
        )


def source_for(db: SourceDb, table: str, **fields) -> SqlSource:
    fields.setdefault("source_id", f"{db.kind}-{table}")
    fields.setdefault("incremental_mode", "timestamp")
    fields.setdefault("incremental_column", "updated_at")
    fields.setdefault("primary_key", ["id"])
    fields.setdefault("retries", 0)
    return SqlSource(database=db.connector(), table=table, **fields)


# ----------------------------------------------------------------------------- PostgreSQL
def test_pg_full_incremental_updates_and_empty_increments(
    save_block, ledger, queue, pg_source
) -> None:
    """COPY fast path: first run takes everything, then only new and updated rows; an
    empty increment lands nothing but moves the watermark. Ledger on SQLite and PostgreSQL."""
    orders_table(pg_source, "orders")
    for i in range(5):
        insert(pg_source, "orders", f"old{i}", PAST + timedelta(minutes=i))
    source = source_for(pg_source, "orders", copy_chunk_rows=2)  # several COPY chunks

    first = counts(run(save_block, ledger, queue, source))
    assert (first["landed"], first["failed"]) == (1, 0)
    assert delivered_ids(ledger, source.source_id) == [1, 2, 3, 4, 5]
    (item,) = landed(ledger, source.source_id)
    assert item["name"] == "orders/initial.csv"
    rows = read_rows(item["landed_path"])
    assert rows[0]["amount"] == "1.50" and rows[0]["note"] == "old0"
    first_mark = watermark(ledger, source.source_id)
    assert first_mark["mode"] == "timestamp" and first_mark["rows"] == 5
    assert first["rows"] == 5  # the flow's result, the run history and the summary count rows
    history = ledger.recent_runs(source.source_id, 1)[0]
    assert (history["rows"], history["trigger"]) == (5, "local")

    empty = counts(run(save_block, ledger, queue, source))
    assert (empty["landed"], empty["skipped"]) == (0, 1)
    assert watermark(ledger, source.source_id)["below"] > first_mark["below"]

    insert(pg_source, "orders", "new")
    pg_source.run("UPDATE orders SET note = 'changed', updated_at = now() WHERE id = 2")
    third = counts(run(save_block, ledger, queue, source))
    assert third["landed"] == 1
    assert delivered_ids(ledger, source.source_id) == [1, 2, 3, 4, 5, 6, 2]
    last = read_rows(landed(ledger, source.source_id)[-1]["landed_path"])
    assert [r["note"] for r in last] == ["new", "changed"]  # in (updated_at, id) order
    assert QueueConsumer(ledger, "c").pending_count(source.source_id) == 2


@pytest.mark.parametrize("use_copy", [True, False], ids=["copy", "python"])
def test_pg_rows_sharing_a_timestamp_split_across_files(
    save_block, sqlite_ledger, queue, pg_source, use_copy
):
    """Seven rows share one timestamp; files of 3 rows end in the middle of that value and
    the next file resumes after the exact (timestamp, id): none lost, none twice. A row
    inserted later exactly at the stored bound (>=, not >) is delivered too."""
    orders_table(pg_source, "ties")
    for i in range(7):
        insert(pg_source, "ties", f"tie{i}", PAST)
    insert(pg_source, "ties", "after", PAST + timedelta(seconds=1))
    source = source_for(
        pg_source, "ties", max_rows_per_file=3, copy_chunk_rows=2, chunk_size=2, use_copy=use_copy
    )

    result = counts(run(save_block, sqlite_ledger, queue, source))
    assert result["landed"] == 3 and result["runs"] == 3
    assert delivered_ids(sqlite_ledger, source.source_id) == list(range(1, 9))
    mark = watermark(sqlite_ledger, source.source_id)
    assert mark["more"] is False and "below" in mark

    bound = datetime.fromisoformat(mark["below"])
    insert(pg_source, "ties", "on-the-bound", bound)  # committed before the next run
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == list(range(1, 10))


def test_pg_late_commit_held_by_inflight_cap(save_block, sqlite_ledger, queue, pg_source) -> None:
    """A transaction stamps a row with now() and commits AFTER a later row was committed
    and a run happened: the run's upper bound stayed below that open transaction, so the
    late row is delivered by the next run, and nothing twice."""
    orders_table(pg_source, "late")
    insert(pg_source, "late", "before", PAST)
    source = source_for(pg_source, "late")
    with pg_source.engine.connect() as slow:
        slow.execute(text("INSERT INTO late (amount, note) VALUES (1, 'slow')"))  # open txn
        insert(pg_source, "late", "fast")  # committed, stamped after the slow one
        counts(run(save_block, sqlite_ledger, queue, source))
        assert delivered_ids(sqlite_ledger, source.source_id) == [1]  # held below 'slow'
        slow.commit()
    counts(run(save_block, sqlite_ledger, queue, source))
    assert sorted(delivered_ids(sqlite_ledger, source.source_id)) == [1, 2, 3]


def test_pg_late_row_inside_lag_window(save_block, sqlite_ledger, queue, pg_source) -> None:
    """Without the in-flight cap, a row committed late with a timestamp older than 'now'
    but inside lag_seconds is still caught by the next run."""
    orders_table(pg_source, "lag")
    now = datetime.now(UTC)
    insert(pg_source, "lag", "hour-ago", now - timedelta(hours=1))
    insert(pg_source, "lag", "two-min-ago", now - timedelta(minutes=2))  # inside the lag
    source = source_for(pg_source, "lag", inflight_cap=False, lag_seconds=600)
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == [1]
    insert(pg_source, "lag", "late-5-min", now - timedelta(minutes=5))  # committed late
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == [1]  # both still inside the lag
    mark = watermark(sqlite_ledger, source.source_id)
    assert datetime.fromisoformat(mark["below"]) < now - timedelta(minutes=9)
    # Time passes: pretend the lag is over by shrinking it; the late row is not lost.
    source.lag_seconds = 1
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == [1, 3, 2]


def test_pg_crash_between_extract_and_record(save_block, ledger, queue, pg_source, monkeypatch):
    """The ledger write fails after the file was extracted and placed: the watermark is
    not advanced and no message is queued; the next run re-extracts the same window and
    records it exactly once."""
    orders_table(pg_source, "crash")
    for i in range(3):
        insert(pg_source, "crash", f"r{i}", PAST + timedelta(seconds=i))
    source = source_for(pg_source, "crash")
    real = Ledger.record_landed
    calls = {"n": 0}

    def crash_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise LedgerError("ledger database error: simulated crash")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "record_landed", crash_once)
    state = run(save_block, ledger, queue, source)
    assert state.is_failed()
    assert watermark(ledger, source.source_id) is None
    assert QueueConsumer(ledger, "c").pending_count(source.source_id) == 0

    again = counts(run(save_block, ledger, queue, source))
    assert again["landed"] == 1
    assert delivered_ids(ledger, source.source_id) == [1, 2, 3]
    assert QueueConsumer(ledger, "c").pending_count(source.source_id) == 1
    assert watermark(ledger, source.source_id)["rows"] == 3
    counts(run(save_block, ledger, queue, source))
    assert delivered_ids(ledger, source.source_id) == [1, 2, 3]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_pg_python_path_formats(save_block, sqlite_ledger, queue, pg_source, fmt) -> None:
    orders_table(pg_source, f"fmt_{fmt}")
    insert(pg_source, f"fmt_{fmt}", "a", PAST, amount="12.34")
    pg_source.run(
        f"INSERT INTO fmt_{fmt} (updated_at, amount, note) VALUES (:t, NULL, NULL)", t=PAST
    )
    source = source_for(pg_source, f"fmt_{fmt}", output_format=fmt, chunk_size=1)
    counts(run(save_block, sqlite_ledger, queue, source))
    (item,) = landed(sqlite_ledger, source.source_id)
    assert item["name"].endswith(f".{fmt}")
    rows = read_rows(item["landed_path"])
    assert [r["id"] for r in rows] == [1, 2]
    if fmt == "jsonl":
        assert rows[0]["amount"] == "12.34" and rows[0]["updated_at"].startswith("2026-01-01T12")
        assert rows[1]["amount"] is None and rows[1]["flag"] is None
    else:
        table = pq.read_table(item["landed_path"])
        assert str(table.schema.field("amount").type) == "decimal128(10, 2)"
        assert str(table.schema.field("updated_at").type) == "timestamp[us, tz=UTC]"
        assert rows[0]["amount"] == Decimal("12.34") and rows[1]["amount"] is None
        assert rows[0]["updated_at"] == PAST


def test_pg_id_mode_waits_for_open_transactions(save_block, sqlite_ledger, queue, pg_source):
    """Id mode: an id taken by a transaction still open when a higher id is committed is
    not skipped: the run leaves the increment until that transaction ends."""
    orders_table(pg_source, "ids")
    insert(pg_source, "ids", "one", PAST)
    source = source_for(
        pg_source, "ids", incremental_mode="id", incremental_column="id", settle_seconds=0.5
    )
    counts(run(save_block, sqlite_ledger, queue, source))
    with pg_source.engine.connect() as slow:
        slow.execute(text("INSERT INTO ids (amount, note) VALUES (1, 'slow')"))  # id 2, open
        insert(pg_source, "ids", "fast")  # id 3, committed
        result = counts(run(save_block, sqlite_ledger, queue, source))
        assert result["landed"] == 0
        slow.commit()
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == [1, 2, 3]
    assert watermark(sqlite_ledger, source.source_id)["through"] == 3


def test_pg_naive_timestamps_use_the_configured_zone(save_block, sqlite_ledger, queue, pg_source):
    """A `timestamp without time zone` column holding Paris wall-clock times: a row stamped
    30 minutes ago in Paris is in the past (taken), although read as UTC it would lie in
    the future (left)."""
    pg_source.run(
        "CREATE TABLE naive (id int PRIMARY KEY, updated_at timestamp NOT NULL)",
        "INSERT INTO naive VALUES (1, (now() AT TIME ZONE 'Europe/Paris') - interval '30 min')",
    )
    paris = source_for(
        pg_source, "naive", source_id="naive-paris", timestamp_timezone="Europe/Paris"
    )
    as_utc = source_for(pg_source, "naive", source_id="naive-utc")
    counts(run(save_block, sqlite_ledger, queue, paris))
    counts(run(save_block, sqlite_ledger, queue, as_utc))
    assert delivered_ids(sqlite_ledger, "naive-paris") == [1]
    assert delivered_ids(sqlite_ledger, "naive-utc") == []


def test_pg_query_with_bound_parameter_and_full_mode(save_block, sqlite_ledger, queue, pg_source):
    """A query with a `:name` placeholder: the value is bound (an injection attempt is
    just a string); full mode re-extracts, identical content is not landed twice."""
    orders_table(pg_source, "q")
    insert(pg_source, "q", "x'; DROP TABLE q; --", PAST)
    insert(pg_source, "q", "other", PAST)
    source = SqlSource(
        source_id="pg-query",
        database=pg_source.connector(),
        query="SELECT id, note FROM q WHERE note = :wanted OR id = :also;",
        query_parameters={"wanted": "x'; DROP TABLE q; --", "also": 99},
        primary_key=["id"],
        output_name="q-export",
        retries=0,
    )
    first = counts(run(save_block, sqlite_ledger, queue, source))
    assert first["landed"] == 1
    (item,) = landed(sqlite_ledger, "pg-query")
    assert item["name"].startswith("q-export/full-")
    assert read_rows(item["landed_path"]) == [{"id": "1", "note": "x'; DROP TABLE q; --"}]
    again = counts(run(save_block, sqlite_ledger, queue, source))
    assert (again["landed"], again["skipped"]) == (0, 1)
    with pg_source.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM q")).scalar() == 2


def test_pg_backfill_reextracts_a_range_without_moving_the_watermark(
    save_block, sqlite_ledger, queue, pg_source
):
    orders_table(pg_source, "bf")
    for i in range(6):
        insert(pg_source, "bf", f"d{i}", PAST + timedelta(days=i))
    source = source_for(pg_source, "bf")
    counts(run(save_block, sqlite_ledger, queue, source))
    mark = watermark(sqlite_ledger, source.source_id)
    result = counts(
        run(
            save_block,
            sqlite_ledger,
            queue,
            source,
            options={
                "backfill_start": PAST + timedelta(days=1),
                "backfill_end": (PAST + timedelta(days=3)).isoformat(),
            },
        )
    )
    assert result["landed"] == 1
    back = landed(sqlite_ledger, source.source_id)[-1]
    assert back["name"].startswith("bf/backfill-20260102T120000")
    assert [int(r["id"]) for r in read_rows(back["landed_path"])] == [2, 3]
    assert watermark(sqlite_ledger, source.source_id) == mark


def test_pg_weird_identifiers_are_quoted_and_unsafe_names_refused(
    save_block, sqlite_ledger, queue, pg_source
):
    pg_source.run(
        'CREATE TABLE "Odd ""Name""; x" ("Mixed Case" int PRIMARY KEY, "select" text)',
        'INSERT INTO "Odd ""Name""; x" VALUES (1, \'a\')',
        'CREATE TABLE "../evil" (id int PRIMARY KEY)',
        'INSERT INTO "../evil" VALUES (1)',
    )
    odd = SqlSource(
        source_id="odd",
        database=pg_source.connector(),
        table='Odd "Name"; x',
        retries=0,
        primary_key=["Mixed Case"],
        output_name="odd",
    )
    counts(run(save_block, sqlite_ledger, queue, odd))
    assert read_rows(landed(sqlite_ledger, "odd")[0]["landed_path"]) == [
        {"Mixed Case": "1", "select": "a"}
    ]
    evil = SqlSource(source_id="evil", database=pg_source.connector(), table="../evil", retries=0)
    state = run(save_block, sqlite_ledger, queue, evil)
    assert state.is_failed()
    failed = [r for r in sqlite_ledger.recent_items("evil") if r["status"] == "failed"]
    assert failed and "../evil" in failed[0]["error"]
    assert not list(queue.landing_root.parent.rglob("evil*"))


def test_bad_names_give_clear_errors(pg_source) -> None:
    orders_table(pg_source, "named")
    cases = [
        (dict(table="nope"), "SqlSource.table", "'nope' not found"),
        (dict(table="named", columns=["id", "nope"]), "SqlSource.columns", "['nope']"),
        (dict(table="named", primary_key=["ID"]), "SqlSource.primary_key", "'updated_at'"),
        (
            dict(table="named", incremental_mode="timestamp", incremental_column="note"),
            "SqlSource.incremental_column",
            "not a timestamp column",
        ),
        (dict(query="SELECT nope FROM named"), "SqlSource.query", "nope"),
        (
            dict(query="SELECT * FROM named WHERE id = :x"),
            "SqlSource.query_parameters",
            "'x'",
        ),
        (dict(table="named", query="SELECT 1"), "SqlSource.table", "exactly one"),
    ]
    for fields, where, words in cases:
        source = SqlSource(source_id="bad", database=pg_source.connector(), **fields)
        with pytest.raises(ConfigError) as info:
            source.test_connection()
        assert str(info.value).startswith(where), str(info.value)
        assert words in str(info.value), str(info.value)
        source.close()


def test_flow_fails_fast_on_bad_column_and_hides_the_password(
    save_block, sqlite_ledger, queue, pg_source
) -> None:
    orders_table(pg_source, "named2")
    bad = SqlSource(
        source_id="bad-col", database=pg_source.connector(), table="named2", columns=["zzz"]
    )
    state = run(save_block, sqlite_ledger, queue, bad)
    assert state.is_failed() and "SqlSource.columns" in state.message
    secret = "hunter2-very-secret"
    nowhere = SourceDb("postgres", "no_such_db", pg_source.engine)
    wrong = SqlSource(
        source_id="bad-db", database=nowhere.connector(password=secret), table="named2"
    )
    with pytest.raises(ConfigError) as info:
        wrong.test_connection()
    # a missing database is the connection's fault, not the table's
    assert str(info.value).startswith("SqlSource.database") and "no_such_db" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(wrong)


# ----------------------------------------------------------------------------- MariaDB
def test_mariadb_incremental_formats_and_late_commit(
    save_block, sqlite_ledger, queue, my_source
) -> None:
    """DATETIME(6) column on MariaDB through pymysql: first run, a late commit held back by
    the INNODB_TRX cap, updates, an empty increment; CSV."""
    orders_table(my_source, "orders")
    for i in range(4):
        insert(my_source, "orders", f"old{i}", PAST + timedelta(minutes=i))
    source = source_for(my_source, "orders", chunk_size=3)
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == [1, 2, 3, 4]
    rows = read_rows(landed(sqlite_ledger, source.source_id)[0]["landed_path"])
    assert rows[0]["amount"] == "1.50" and rows[0]["updated_at"] == "2026-01-01 12:00:00"

    with my_source.engine.connect() as slow:
        slow.execute(text("INSERT INTO orders (amount, note) VALUES (1, 'slow')"))  # open
        insert(my_source, "orders", "fast")
        counts(run(save_block, sqlite_ledger, queue, source))
        slow.commit()
    my_source.run("UPDATE orders SET note = 'changed', updated_at = NOW(6) WHERE id = 1")
    counts(run(save_block, sqlite_ledger, queue, source))
    assert sorted(delivered_ids(sqlite_ledger, source.source_id)) == [1, 1, 2, 3, 4, 5, 6]
    empty = counts(run(save_block, sqlite_ledger, queue, source))
    assert empty["landed"] == 0


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_mariadb_id_mode_formats_and_bound_query(
    save_block, sqlite_ledger, queue, my_source, fmt
) -> None:
    orders_table(my_source, f"ids_{fmt}")
    for i in range(5):
        insert(my_source, f"ids_{fmt}", "keep" if i % 2 == 0 else "drop", PAST)
    source = SqlSource(
        source_id=f"my-ids-{fmt}",
        database=my_source.connector(),
        query=f"SELECT id, note, amount, updated_at FROM ids_{fmt} WHERE note = :n",
        query_parameters={"n": "keep"},
        incremental_mode="id",
        incremental_column="id",
        primary_key=["id"],
        output_format=fmt,
        chunk_size=2,
        retries=0,
    )
    counts(run(save_block, sqlite_ledger, queue, source))
    insert(my_source, f"ids_{fmt}", "keep", PAST)
    counts(run(save_block, sqlite_ledger, queue, source))
    assert delivered_ids(sqlite_ledger, source.source_id) == [1, 3, 5, 6]
    rows = read_rows(landed(sqlite_ledger, source.source_id)[0]["landed_path"])
    if fmt == "parquet":
        assert rows[0]["updated_at"] == PAST.replace(tzinfo=None)
    else:
        assert rows[0]["updated_at"] == "2026-01-01T12:00:00"


def test_overlapping_runs_of_one_source_do_not_both_extract(
    save_block, sqlite_ledger, queue, pg_source
) -> None:
    """While another run holds the source's lock, a run does nothing (status 'locked');
    the lock is a session advisory lock that leaves no open transaction behind."""
    orders_table(pg_source, "locked")
    insert(pg_source, "locked", "a", PAST)
    source = source_for(pg_source, "locked")
    holder = source.model_copy()
    with holder.run_lock() as mine:
        assert mine
        busy = counts(run(save_block, sqlite_ledger, queue, source))
        assert busy["status"] == "locked" and busy["landed"] == 0
    holder.close()
    done = counts(run(save_block, sqlite_ledger, queue, source))
    assert done["landed"] == 1 and done["status"] == "completed"
    assert delivered_ids(sqlite_ledger, source.source_id) == [1]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_pg_single_transaction_full_copy(save_block, sqlite_ledger, queue, pg_source, fmt):
    """single_transaction: one REPEATABLE READ snapshot (one COPY on the fast path)."""
    orders_table(pg_source, f"one_{fmt}")
    for i in range(5):
        insert(pg_source, f"one_{fmt}", f"r{i}", PAST)
    source = source_for(
        pg_source,
        f"one_{fmt}",
        incremental_mode="none",
        incremental_column=None,
        single_transaction=True,
        chunk_size=2,
        output_format=fmt,
    )
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 1
    assert sorted(delivered_ids(sqlite_ledger, source.source_id)) == [1, 2, 3, 4, 5]


# ------------------------------------------------- MariaDB CSV: server-rendered lines
# The fast path (blocks/sql/mysql_csv.py) must write the same bytes as the row path.
AWKWARD_COLUMNS = (
    "id int PRIMARY KEY, t varchar(200) CHARACTER SET utf8mb4, tx text CHARACTER SET "
    "utf8mb4, lat varchar(50) CHARACTER SET latin1, ci varchar(50) CHARACTER SET utf8mb4 "
    "COLLATE utf8mb4_unicode_ci, b varbinary(50), bl blob, d decimal(20,6), d2 decimal(10,2), "
    "z int(6) zerofill, i bigint, u bigint unsigned, ti tinyint, bo boolean, dt6 datetime(6), "
    "dt3 datetime(3), dt0 datetime, ts timestamp(6) NULL DEFAULT NULL, da date, tm time(6), "
    "tm0 time, y year, j json, e enum('a','b,c'), st set('x','y')"
)
AWKWARD_ROWS = [
    # NULL everywhere but the key
    {"id": 1},
    # empty strings and zero values
    dict(
        id=2,
        t="",
        tx="",
        lat="",
        ci="",
        b=b"",
        bl=b"",
        d="0",
        d2="0",
        z=0,
        i=0,
        u=0,
        ti=0,
        bo=0,
        dt6="2026-01-01 00:00:00",
        dt3="2026-01-01 00:00:00",
        dt0="2026-01-01",
        ts="2026-01-01 00:00:00",
        da="2026-01-01",
        tm="00:00:00",
        tm0="00:00:00",
        y=2026,
        j="{}",
        e="a",
        st="",
    ),  # fmt: skip
    # quoting: comma, quote, newline, CR, backslash, tab, NUL, leading/trailing spaces
    dict(
        id=3,
        t='a,b "c" \\d',
        tx="line1\nline2\r\nline3\rx",
        lat='é,"',
        ci="，fullwidth",
        b=b'\x00\xff\n,"',
        bl=bytes(range(256)),
        d="-12345678901234.123456",
        d2="-0.01",
        z=42,
        i=-9223372036854775808,
        u=18446744073709551615,
        ti=-128,
        bo=1,
        dt6="1000-01-01 00:00:00.000001",
        dt3="2026-06-30 23:59:59.5",
        dt0="9999-12-31 23:59:59",
        ts="2038-01-19 03:14:07.999999",
        da="1000-01-01",
        tm="-838:59:59",
        tm0="838:59:59",
        y=1901,
        j='{"a": [1, "x,y"], "b": "\\"q\\""}',
        e="b,c",
        st="x,y",
    ),  # fmt: skip
    # unicode incl. 4-byte emoji, spaces, a lone quote, tab; DECIMAL / time edges
    dict(
        id=4,
        t=' 😀 "',
        tx="\t",
        lat="ÿ",
        ci="Ünïcödé 𝔘 ✓",
        b=b"\x80",
        bl=b"\\",
        d="0.000001",
        d2="99999999.99",
        z=123456,
        i=9223372036854775807,
        u=0,
        ti=127,
        bo=0,
        dt6="2026-01-01 12:00:00.500000",
        dt3="2026-01-01 12:00:00.001",
        dt0="1000-01-01",
        ts="1970-01-01 00:00:01",
        da="9999-12-31",
        tm="-00:00:00.5",
        tm0="-24:00:00",
        y=2155,
        j='"😀"',
        e="a",
        st="y",
    ),  # fmt: skip
    dict(
        id=5,
        t="\x00nul",
        tx='"',
        lat=",",
        ci='"',
        d="1.5",
        tm="25:00:00.000001",
        tm0="-01:02:03",
        dt6="2026-03-04 05:06:07.123456",
        y=0,
    ),  # fmt: skip
    # zero and invalid-in-date values: both drivers read the server's text (mysqlclient's
    # own converter said None: an empty field, only when mysqlclient was installed)
    dict(
        id=6,
        dt6="0000-00-00 00:00:00",
        dt0="2026-00-10 00:00:00",
        da="0000-00-00",
        dt3="0000-01-01 00:00:00",
        ts="0000-00-00 00:00:00",
    ),  # fmt: skip
]


def _awkward_table(db: SourceDb, name: str, rows: list[dict]) -> None:
    db.run(f"DROP TABLE IF EXISTS `{name}`", f"CREATE TABLE `{name}` ({AWKWARD_COLUMNS})")
    with db.engine.begin() as conn:
        conn.execute(text("SET SESSION sql_mode = ''"))  # zero dates, as legacy data has
        for row in rows:
            cols = ", ".join(f"`{c}`" for c in row)
            marks = ", ".join(f":{c}" for c in row)
            conn.execute(text(f"INSERT INTO `{name}` ({cols}) VALUES ({marks})"), row)


def _fetch(source: SqlSource, row_path: bool = False) -> tuple[bytes, str]:
    """One full extraction's bytes (SqlSource.fetch), and the line path's verdict."""
    import io

    from blocks.core.source import Candidate, SkipItem
    from blocks.sql import mysql_csv
    from blocks.sql.block import Window

    prep = source._prepare()
    if row_path:
        prep.lines = mysql_csv.LinePlan(None, "row path asked by the test")
    source._extraction_path(prep)  # plans the line path
    out = io.BytesIO()
    try:
        source.fetch(Candidate(name="t.csv", ref=Window("full")), out)
    except SkipItem:
        pass
    return out.getvalue(), prep.lines.reason or "lines"


def _both_paths(db: SourceDb, **fields) -> tuple[bytes, bytes, str]:
    fields.setdefault("retries", 0)
    new, old = (SqlSource(source_id="awk", database=db.connector(), **fields) for _ in "ab")
    try:
        got, verdict = _fetch(new)
        want, _ = _fetch(old, row_path=True)
    finally:
        new.close()
        old.close()
    return got, want, verdict


@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_mariadb_csv_lines_equal_the_row_path(my_source, driver) -> None:
    """Awkward values (NULL vs '', quotes, commas, newlines, CR, backslashes, NUL, 4-byte
    emoji, latin1 and _ci text, binary bytes, DECIMAL, BIGINT extremes, DATETIME(0/3/6),
    TIMESTAMP, DATE, TIME incl. negative and > 24 h, YEAR, JSON, ENUM, SET, ZEROFILL, zero
    dates): the server-rendered lines are byte-identical to the row path's CSV, with keyset
    chunks, one streaming cursor (no key) and a query."""
    _awkward_table(my_source, "awk", AWKWARD_ROWS)
    cases = [
        (dict(table="awk", primary_key=["id"], chunk_size=2), "lines"),
        # no key: one streaming cursor of the driver's values (TIME, SET, JSON included)
        (dict(table="awk"), "lines"),
        (dict(table="awk", columns=["id", "tm", "st", "j", "b"], chunk_size=2), "lines"),
        (
            dict(
                query="SELECT id, t, dt6, tm, st, b FROM awk WHERE id > :n",
                query_parameters={"n": 1},
                primary_key=["id"],
                chunk_size=4,
            ),
            "lines",
        ),
    ]
    for fields, expected in cases:
        got, want, verdict = _both_paths(my_source, mysql_driver=driver, **fields)
        assert verdict == expected, fields
        assert got.count(b"\n") >= 5 and b"\\x00ff0a2c22" in got  # the data is there
        assert got == want, (fields, got, want)


def test_mariadb_drivers_write_the_same_bytes_zero_dates_kept(my_source) -> None:
    """mysqlclient and pymysql land the same bytes, on the line path and the row path,
    CSV and JSONL: zero and invalid dates (`0000-00-00`, `2026-00-10 00:00:00`) are the
    server's text with both. Before, mysqlclient (picked by `auto` whenever installed)
    read them as None and landed an empty field / null where pymysql kept the value."""
    _awkward_table(my_source, "zd", AWKWARD_ROWS)
    outputs = {}
    for driver in ("mysqlclient", "pymysql"):
        for fmt in ("csv", "jsonl"):
            for row_path in (False, True) if fmt == "csv" else (True,):
                source = SqlSource(
                    source_id="zd", database=my_source.connector(), retries=0, table="zd",
                    primary_key=["id"], chunk_size=2, mysql_driver=driver, output_format=fmt,
                )  # fmt: skip
                try:
                    outputs[driver, fmt, row_path] = _fetch(source, row_path=row_path)[0]
                finally:
                    source.close()
    for fmt, row_path in (("csv", False), ("csv", True), ("jsonl", True)):
        got = outputs["mysqlclient", fmt, row_path]
        assert got == outputs["pymysql", fmt, row_path], (fmt, row_path)
        for text_ in (b"0000-00-00 00:00:00", b"2026-00-10 00:00:00", b"0000-00-00"):
            assert text_ in got, (fmt, row_path, text_)
    assert outputs["mysqlclient", "csv", False] == outputs["mysqlclient", "csv", True]
    # Parquet has no zero date: the run fails naming the column and the value, with
    # either driver (mysqlclient used to write null there)
    for driver in ("mysqlclient", "pymysql"):
        source = SqlSource(
            source_id="zd", database=my_source.connector(), retries=0, table="zd",
            primary_key=["id"], columns=["id", "da"], mysql_driver=driver,
            output_format="parquet",
        )  # fmt: skip
        try:
            with pytest.raises(PermanentError, match=r"column 'da': '0000-00-00' cannot be"):
                _fetch(source, row_path=True)
        finally:
            source.close()


def test_mariadb_csv_lines_single_column_and_fallback_types(my_source) -> None:
    """A one-column table writes an empty value as "" (as the csv module does); tables
    with a DOUBLE, FLOAT, BIT or DECIMAL of more than 6 decimals stay on the row path
    (their server text differs from Python's) and the log says which column."""
    my_source.run(
        "DROP TABLE IF EXISTS one",
        "CREATE TABLE one (v varchar(10))",
        "INSERT INTO one VALUES (NULL), (''), ('a'), ('\"'), (' ')",
    )
    got, want, verdict = _both_paths(my_source, table="one")
    assert verdict == "lines" and got == want == b'v\n""\n""\na\n""""\n \n'
    for kind, value in (
        ("double", "1"),
        ("float", "1.5"),
        ("bit(8)", "b'101'"),
        ("decimal(20,8)", "0.00000001"),
    ):
        my_source.run(
            "DROP TABLE IF EXISTS fb",
            f"CREATE TABLE fb (id int PRIMARY KEY, x {kind})",
            f"INSERT INTO fb VALUES (1, {value}), (2, NULL)",
        )
        got, want, verdict = _both_paths(my_source, table="fb", primary_key=["id"])
        assert "'x'" in verdict and got == want, (kind, verdict)


def test_mariadb_csv_lines_property_random_rows(my_source) -> None:
    """Property: for random rows (text with CSV specials and any non-surrogate character,
    binary bytes, DECIMAL, BIGINT, DATETIME(6)/(3), DATE, TIME), the line path writes the
    same bytes as the row path (mysqlclient, keyset chunks of 3)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    my_source.run(
        "DROP TABLE IF EXISTS prop",
        "CREATE TABLE prop (id int PRIMARY KEY, t varchar(40) CHARACTER SET utf8mb4, "
        "tx text CHARACTER SET utf8mb4, b varbinary(20), d decimal(18,6), i bigint, "
        "dt datetime(6), dt3 datetime(3), da date, tm time(6))",
    )
    fields = dict(table="prop", primary_key=["id"], chunk_size=3, mysql_driver="mysqlclient")
    new, old = (SqlSource(source_id="prop", database=my_source.connector(), **fields) for _ in "ab")
    specials = st.text(alphabet=st.sampled_from(',"\n\r\\ \t\0aé😀'), max_size=12)
    anything = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
    text_ = st.none() | specials | anything
    moment = st.datetimes(datetime(1000, 1, 1), datetime(9999, 12, 31, 23, 59, 59))
    span = st.timedeltas(-timedelta(hours=838, minutes=59, seconds=59), timedelta(hours=838))

    def time_text(value: timedelta) -> str:
        sign, value = ("-", -value) if value < timedelta(0) else ("", value)
        secs = int(value.total_seconds())
        return (
            f"{sign}{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}.{value.microseconds:06d}"
        )

    row = st.fixed_dictionaries(
        {
            "t": text_,
            "tx": text_,
            "b": st.none() | st.binary(max_size=20),
            "d": st.none() | st.decimals(-(10**11), 10**11, places=6, allow_nan=False),
            "i": st.none() | st.integers(-(2**63), 2**63 - 1),
            "dt": st.none() | moment,
            "dt3": st.none()
            | moment.map(lambda v: v.replace(microsecond=v.microsecond // 1000 * 1000)),
            "da": st.none() | moment.map(lambda v: v.date()),
            "tm": st.none() | span.map(time_text),
        }
    )

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(rows=st.lists(row, min_size=1, max_size=7))
    def check(rows: list[dict]) -> None:
        with my_source.engine.begin() as conn:
            conn.execute(text("DELETE FROM prop"))
            for i, values in enumerate(rows, 1):
                conn.execute(
                    text("INSERT INTO prop VALUES (:id, :t, :tx, :b, :d, :i, :dt, :dt3, :da, :tm)"),
                    {"id": i, **values},
                )
        got, verdict = _fetch(new)
        want, _ = _fetch(old, row_path=True)
        assert verdict == "lines"
        assert got == want

    try:
        check()
    finally:
        new.close()
        old.close()


def test_mariadb_csv_lines_split_files_resume_on_exact_keys(
    save_block, sqlite_ledger, queue, my_source
) -> None:
    """Line path + `max_rows_per_file`: seven rows share one DATETIME(6) value; files of 3
    rows end inside it and the next file resumes after the exact (timestamp, id) read from
    the raw key columns: none lost, none twice, and the CSV rows are the row path's."""
    orders_table(my_source, "ties")
    for i in range(7):
        insert(my_source, "ties", f'tie,{i}"', PAST)
    insert(my_source, "ties", "after", PAST + timedelta(seconds=1))
    source = source_for(my_source, "ties", max_rows_per_file=3, chunk_size=2)
    result = counts(run(save_block, sqlite_ledger, queue, source))
    assert result["landed"] == 3 and result["runs"] == 3
    assert delivered_ids(sqlite_ledger, source.source_id) == list(range(1, 9))
    files = [read_rows(item["landed_path"]) for item in landed(sqlite_ledger, source.source_id)]
    assert [len(f) for f in files] == [3, 3, 2]
    assert files[0][1] == {
        "id": "2",
        "updated_at": "2026-01-01 12:00:00",
        "amount": "1.50",
        "note": 'tie,1"',
        "flag": "0",
    }


@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_mariadb_no_key_table_lands_the_keyed_bytes(my_source, driver) -> None:
    """A table without `primary_key` (one streaming cursor) holding TIME (negative, > 24 h,
    fractional), SET (several members) and JSON lands the same bytes as the same rows
    read with a key, on the line path and on the row path, and so does a `query` without
    a key. Before, the no-key cursor read SQLAlchemy rows of the reflected table: TIME
    wrapped into 0-24 h (`-838:59:59` as `01:00:01`) and SET printed as a Python set."""
    columns = (
        "id int{pk}, tm time(6), tm0 time, st set('x','y','z'), j json, "
        "t varchar(20) CHARACTER SET utf8mb4"
    )
    rows = [
        dict(id=1),
        dict(id=2, tm="-838:59:59", tm0="838:59:59", st="z,x", j='{"b": 1,  "a": [2, 1]}'),
        dict(id=3, tm="25:00:00.000001", tm0="-24:00:00", st="x,y,z", j='{"z":0,"a":"q,r"}'),
        dict(id=4, tm="-00:00:00.5", tm0="-01:02:03", st="", j="[3,1, 2]", t='a,"b"'),
        dict(id=5, tm="12:34:56.789", tm0="00:00:00", st="y", j='"😀"', t=""),
    ]
    for name, pk in (("nk_keyed", " PRIMARY KEY"), ("nk_plain", "")):
        my_source.run(
            f"DROP TABLE IF EXISTS `{name}`", f"CREATE TABLE `{name}` ({columns.format(pk=pk)})"
        )
        with my_source.engine.begin() as conn:
            for row in rows:  # in id order: the keyless table streams in insertion order
                cols = ", ".join(f"`{c}`" for c in row)
                marks = ", ".join(f":{c}" for c in row)
                conn.execute(text(f"INSERT INTO `{name}` ({cols}) VALUES ({marks})"), row)

    def extract(row_path: bool, **fields) -> tuple[bytes, str]:
        source = SqlSource(source_id="nk", database=my_source.connector(), retries=0, **fields)
        try:
            return _fetch(source, row_path=row_path)
        finally:
            source.close()

    keyed = dict(table="nk_keyed", primary_key=["id"], chunk_size=2, mysql_driver=driver)
    want, verdict = extract(False, **keyed)
    assert verdict == "lines"
    assert extract(True, **keyed)[0] == want  # the keyed row path agrees
    assert b"-35 days, 1:00:01" in want and b"34 days, 22:59:59" in want  # +-838:59:59
    assert b'"x,z"' in want and b'"x,y,z"' in want  # SET as the server's text
    assert b'"{""b"": 1,  ""a"": [2, 1]}"' in want  # JSON as stored, not re-printed
    plain = dict(table="nk_plain", chunk_size=2, mysql_driver=driver)
    query = dict(query="SELECT * FROM nk_plain", chunk_size=2, mysql_driver=driver)
    for fields in (plain, query):
        for row_path in (False, True):
            got, verdict = extract(row_path, **fields)
            assert got == want, (fields, row_path, got, want)
            if not row_path:
                assert verdict == "lines", fields


# ------------------------------------------- PostgreSQL: no key reads the keyed bytes
PG_NO_KEY_COLUMNS = (
    "id int{pk}, n numeric, n2 numeric(30,20), f8 float8, f4 real, tz timestamptz, "
    "ts timestamp(6), d date, t time, ttz timetz, iv interval, j json, jb jsonb, ai int[], "
    "at text[], an numeric[], aj jsonb[], ae pg_nk_mood[], au uuid[], ats timestamptz[], "
    "by bytea, u uuid, ip inet, ci cidr, m money, e pg_nk_mood, tx text, b bool, "
    "bits bit varying, r int4range, tr tstzrange, dr daterange, c char(3), iva interval[]"
)
# SQL literals, one row each, in id order with `tz` increasing (the keyless incremental
# window is ordered by `tz`, the keyed one by `id`); `tz` without an offset is read in the
# database's default zone (Asia/Kathmandu, +05:45), which the source's sessions override.
PG_NO_KEY_ROWS = [
    "1, 12345678901234567890.123456789012345678901234567890, 1.5, 'NaN', 'NaN', "
    "'-infinity', 'infinity', 'infinity', '24:00:00', '23:59:59.999999-14:59', "
    "'-1 year -2 mons +3 days -04:05:06.000007', "
    """'{"b": 1,  "a": [2, 1], "a": 3}', '{"b": 1,  "a": [2, 1], "a": 3}', """
    """'{1,NULL,3}', '{"a,b","",NULL,"q\\""}', '{1.50,NaN}', ARRAY['{"z":1,"a":2}'::jsonb], """
    "'{happy,sad,\"a,b\"}', ARRAY['00000000-0000-0000-0000-000000000001'::uuid], "
    "ARRAY['2026-01-01 00:00:00.5+05'::timestamptz], '\\x00ff', "
    "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '192.168.0.1/24', '10.0.0.0/8', '-1234.56', "
    "'sad', E'a\\x01b\\tc\\r\\nd\\x7f \"q\" \\\\N', true, B'101', '[1,5)', "
    "'[2026-01-01 00:00+02,2026-01-02)', '[2026-01-01,2026-02-01)', 'ab', "
    "ARRAY['1 mon'::interval, '-1 day 00:00:00.000001']",
    "2, 'NaN', 0.00000000000000000001, 'Infinity', '-Infinity', '0001-01-01 00:00:00+00', "
    "'-infinity', '-infinity', '00:00:00.000001', '00:00:00+00', "
    "'1 mon 2 days 00:00:00.000001', '[]', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
    "'', '00000000-0000-0000-0000-000000000000', '::1', '::/0', '0', 'happy', '', false, "
    "B'', 'empty', 'empty', '(,)', '', '{}'",
    "3, -0.000, -1e-20, '-0', '-0', '2026-03-29 01:30:00.123456', '1999-12-31 23:59:59.999999', "
    "'2026-02-28', '12:34:56.5', '12:00:00+05:30', '-00:00:00.000001', '\"\\u00e9\"', "
    "'\"\\u00e9\"', '{{1,2},{3,4}}', '{{a,b},{c,d}}', '{-0}', NULL, '{NULL}', NULL, NULL, "
    "'\\x', NULL, '2001:db8::1', '2001:db8::/32', '1000000', NULL, 'NULL', NULL, NULL, "
    "'(,3]', '(,2026-01-01)', '[2026-01-01,)', NULL, NULL",
    "4, 1e-300, 9999999999.99999999999999999999, 1e-300, 1e-38, "
    "'2026-10-25 01:30:00 Europe/Berlin', '2026-10-25 02:30:00', '9999-12-31', "
    "'23:59:59.999999', '23:59:59+14:59', '1000 years 11 mons 29 days', "
    """'{"a": 1e400, "b": 0.1000}', '{"a": 1e400, "b": 0.1000}', """
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "5, 1.7976931348623157e308, NULL, 5e-324, 1.17549435e-38, "
    "'9999-12-31 23:59:59.999999+00', '9999-12-31 23:59:59.999999', '0001-01-01', NULL, NULL, "
    "'-1000 years -11 mons -29 days -23:59:59.999999', 'null', 'null', "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "6" + ", NULL" * 33,
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_pg_no_key_table_lands_the_keyed_bytes(fmt) -> None:
    """PostgreSQL without COPY (CSV with use_copy=False, JSONL, Parquet): a table without
    `primary_key` (one streaming cursor) lands the same bytes as the same rows read in
    keyset chunks with a key, and so does a keyless `query`, for a full snapshot and a
    timestamp window. Awkward values: numeric with 50 digits and NaN, float8/real NaN,
    +-Infinity, -0.0, 1e-300, denormals, timestamptz/timestamp with microseconds and
    +-infinity (written in a non-UTC database zone), date infinity, time 24:00, timetz,
    intervals (negative, months+days+micros), json vs jsonb (spacing, key order, duplicate
    keys), arrays (of ints, text, numeric, jsonb, enum, uuid, timestamptz, interval), bytea,
    uuid, inet/cidr, money, enum, control characters, bool, bit, ranges. Before, the keyless
    cursor read SQLAlchemy rows of the reflected table: an enum array was parsed into a list
    (JSON `["happy", "sad"]`, keyed `{happy,sad}`) and a range re-built as SQLAlchemy's
    Range (`[1,5)`, keyed then psycopg2's `[1, 5)`; both now PostgreSQL's `[1,5)`,
    `blocks/sql/pg_ranges.py`)."""
    with throwaway_database("postgres", "pgnokey") as name:
        engine = create_engine(f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
        db = SourceDb("postgres", name, engine)
        try:
            db.run(
                f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Kathmandu'",
                "CREATE TYPE pg_nk_mood AS ENUM ('happy', 'sad', 'a,b')",
            )
            engine.dispose()  # new sessions take the database's zone
            with engine.begin() as conn:
                assert conn.exec_driver_sql("SHOW timezone").scalar() == "Asia/Kathmandu"
                for table, pk in (("nk_keyed", " PRIMARY KEY"), ("nk_plain", "")):
                    conn.exec_driver_sql(
                        f"CREATE TABLE {table} ({PG_NO_KEY_COLUMNS.format(pk=pk)})"
                    )
                    for row in PG_NO_KEY_ROWS:  # in id order: the keyless table reads so
                        conn.exec_driver_sql(f"INSERT INTO {table} VALUES ({row})")

            def extract(window: Window, **fields) -> bytes:
                source = SqlSource(
                    source_id="nk",
                    database=db.connector(),
                    retries=0,
                    output_format=fmt,
                    use_copy=False,
                    chunk_size=2,  # several keyset chunks / cursor partitions
                    **fields,
                )
                out = io.BytesIO()
                try:
                    assert source._extraction_path(source._prepare()) == "rows"
                    source.fetch(Candidate(name=f"t.{fmt}", ref=window), out)
                finally:
                    source.close()
                return out.getvalue()

            full = Window("full")
            want = extract(full, table="nk_keyed", primary_key=["id"])
            for fields in (dict(table="nk_plain"), dict(query="SELECT * FROM nk_plain")):
                assert extract(full, **fields) == want, fields
            if fmt == "csv":  # the driver's values, as the keyed chunks read them
                assert b'"{happy,sad,""a,b""}"' in want and b'"[1,5)"' in want  # COPY's text
                assert b"2026-03-28 19:45:00.123456+00:00" in want  # in UTC, not +05:45
                assert b"12345678901234567890.123456789012345678901234567890" in want
            elif fmt == "parquet":
                table = pq.read_table(io.BytesIO(want))
                assert table.num_rows == len(PG_NO_KEY_ROWS)
                assert table["ae"][0].as_py() == '{happy,sad,"a,b"}'
            # a timestamp window: keyless ordered by `tz`, keyed by `id`, same rows here
            upper = datetime(2027, 1, 1, tzinfo=UTC)
            window = Window("incremental", lower=None, upper=upper)
            inc = dict(incremental_mode="timestamp", incremental_column="tz")
            got_keyed = extract(window, table="nk_keyed", primary_key=["id"], **inc)
            assert got_keyed and got_keyed != want  # ids 5 (9999) and 6 (NULL) left out
            assert extract(window, table="nk_plain", **inc) == got_keyed
        finally:
            engine.dispose()


# ------------------------------------------- PostgreSQL ranges: the row path writes COPY's text
PG_RANGE_COLUMNS = (
    "id int PRIMARY KEY, r int4range, r8 int8range, nr numrange, tr tsrange, tzr tstzrange, "
    "dr daterange, ra int4range[]"
)
PG_RANGE_ROWS = [
    "1, '[1,5)', '[-9223372036854775808,0)', '(1.5,2.25]', "
    "'[2026-01-01 00:00,2026-01-02 00:00:00.5)', '[2026-01-01 00:00+02,)', "
    "'[2026-01-01,2026-02-01)', ARRAY['[1,5)'::int4range, 'empty', '(,3]']",
    "2, 'empty', '(,)', '(,)', '(,\"2026-01-01 10:00:00.5\")', '(,)', '[,2026-01-01)', '{}'",
    "3, '(,3]', '[5,)', 'empty', 'empty', '[-infinity,infinity]', '[-infinity,)', NULL",
    "4" + ", NULL" * 7,
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_pg_ranges_are_written_as_copy_writes_them(fmt) -> None:
    """The built-in range types (and arrays of them) land as PostgreSQL's own text on the
    row path (CSV without COPY, JSONL, Parquet), as COPY lands them: `(,3]`, `[1,5)`,
    `empty`. Before, psycopg2's Range objects were printed: `(None, 4)`, `[1, 5)`, and a
    timestamp bound in Python's form (`[2026-01-01 00:00:00+00:00, None)`), which
    PostgreSQL cannot read back."""
    import csv
    import json

    with throwaway_database("postgres", "pgranges") as name:
        engine = create_engine(f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
        db = SourceDb("postgres", name, engine)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"CREATE TABLE rg ({PG_RANGE_COLUMNS})")
                for row in PG_RANGE_ROWS:
                    conn.exec_driver_sql(f"INSERT INTO rg VALUES ({row})")

            def extract(output_format: str, use_copy: bool) -> bytes:
                source = SqlSource(
                    source_id="rg", database=db.connector(), retries=0, table="rg",
                    primary_key=["id"], output_format=output_format, use_copy=use_copy,
                    chunk_size=2,
                )  # fmt: skip
                out = io.BytesIO()
                try:
                    path = source._extraction_path(source._prepare())
                    assert path == ("copy" if use_copy else "rows"), path
                    source.fetch(Candidate(name=f"rg.{output_format}", ref=Window("full")), out)
                finally:
                    source.close()
                return out.getvalue()

            copied = list(csv.reader(io.StringIO(extract("csv", True).decode())))
            header, copy_rows = copied[0], copied[1:]
            scalars = header[1:-1]  # r .. dr; `ra` is an array (JSON on the row path)
            want = [dict(zip(header, row, strict=True)) for row in copy_rows]
            assert want[0]["r"] == "[1,5)" and want[2]["r"] == "(,4)" and want[1]["r8"] == "(,)"
            assert want[0]["tzr"] == '["2025-12-31 22:00:00+00",)'  # the session's UTC
            if fmt == "csv":
                got = list(csv.reader(io.StringIO(extract("csv", False).decode())))
                assert got[0] == header
                rows = [dict(zip(header, row, strict=True)) for row in got[1:]]
                assert [{c: r[c] for c in scalars} for r in rows] == [
                    {c: r[c] for c in scalars} for r in want
                ]
                arrays = [r["ra"] for r in rows]
            elif fmt == "jsonl":
                lines = extract("jsonl", False).decode().splitlines()
                rows = [json.loads(line) for line in lines]
                for got_row, want_row in zip(rows, want, strict=True):
                    for c in scalars:
                        assert got_row[c] == (want_row[c] or None), (c, got_row[c], want_row[c])
                arrays = [json.dumps(r["ra"]) if r["ra"] is not None else "" for r in rows]
            else:
                table = pq.read_table(io.BytesIO(extract("parquet", False)))
                for c in scalars:
                    assert table[c].to_pylist() == [w[c] or None for w in want], c
                arrays = [v or "" for v in table["ra"].to_pylist()]  # JSON text already
            assert json.loads(arrays[0]) == ["[1,5)", "empty", "(,4)"]
            assert json.loads(arrays[1]) == [] and arrays[3] == ""
        finally:
            engine.dispose()
