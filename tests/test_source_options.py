"""Every source flow takes the same parameters (`source_flow`); source-specific run options
reach the source only through the generic `options` parameter."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import pytest
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

from blocks import LocalFolderSource
from blocks.sql.block import SqlSource
from flows.local_folder import ingest_local_folder
from flows.sftp import ingest_sftp
from flows.sql import ingest_sql
from tests.landed_rows import counts, landed, read_rows, run_flow
from tests.sql_servers import pg_source  # noqa: F401

pytestmark = pytest.mark.usefixtures("prefect_api")
UTC = UTC
PAST = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def unreachable_sql(source_id: str = "nowhere") -> SqlSource:
    """A SQL source whose database port is closed: any I/O would fail as a connection error."""
    connector = SqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=SyncDriver.POSTGRESQL_PSYCOPG2,
            host="127.0.0.1",
            port=1,
            username="postgres",
            database="postgres",
        )
    )
    return SqlSource(
        source_id=source_id,
        database=connector,
        table="t",
        incremental_mode="timestamp",
        incremental_column="updated_at",
        primary_key=["id"],
        retries=0,
    )


def test_sql_flow_has_the_same_parameters_as_every_source_flow():
    sql = inspect.signature(ingest_sql.fn).parameters
    assert list(sql) == list(inspect.signature(ingest_sftp.fn).parameters)
    assert "jitter_seconds" in sql and "trigger" in sql and "options" in sql


def test_ingest_sql_accepts_a_webhook_call(save_block, sqlite_ledger, queue, pg_source):  # noqa: F811
    """What a webhook endpoint passes (`trigger`) and `jitter_seconds` are parameters of
    ingest-sql like of every source flow: the run extracts the table."""
    pg_source.run(
        'DROP TABLE IF EXISTS "hook"',
        'CREATE TABLE "hook" (id serial PRIMARY KEY, updated_at timestamptz NOT NULL, note text)',
        "INSERT INTO \"hook\" (updated_at, note) VALUES ('2026-01-01T12:00:00Z', 'a')",
    )
    source = SqlSource(
        source_id="pg-hook",
        database=pg_source.connector(),
        table="hook",
        incremental_mode="timestamp",
        incremental_column="updated_at",
        primary_key=["id"],
        retries=0,
    )
    state = run_flow(
        ingest_sql,
        save_block,
        sqlite_ledger,
        queue,
        source,
        jitter_seconds=0.01,
        trigger={"event": "orders.updated", "id": 7},
    )
    assert state.is_completed(), state.message
    result = counts(state)
    assert result["landed"] == 1 and result["runs"] == 1


def test_backfill_options_as_iso_strings(save_block, sqlite_ledger, queue, pg_source):  # noqa: F811
    """Options given as JSON (a deployment or webhook): ISO strings are parsed."""
    pg_source.run(
        'DROP TABLE IF EXISTS "bfiso"',
        'CREATE TABLE "bfiso" (id serial PRIMARY KEY, updated_at timestamptz NOT NULL, note text)',
    )
    for i in range(4):
        pg_source.run(
            "INSERT INTO \"bfiso\" (updated_at, note) VALUES (:t, 'x')", t=PAST + timedelta(days=i)
        )
    source = SqlSource(
        source_id="pg-bfiso",
        database=pg_source.connector(),
        table="bfiso",
        incremental_mode="timestamp",
        incremental_column="updated_at",
        primary_key=["id"],
        retries=0,
    )
    options = {"backfill_start": "2026-01-02T12:00:00+00:00", "backfill_end": "2026-01-04T00:00"}
    state = run_flow(ingest_sql, save_block, sqlite_ledger, queue, source, options=options)
    assert state.is_completed(), state.message
    rows = read_rows(landed(sqlite_ledger, "pg-bfiso")[-1]["landed_path"])
    assert [int(r["id"]) for r in rows] == [2, 3]


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"nope": 1}, "options.nope: unknown option; known options: backfill_start"),
        ({"max_files": 0}, "options.max_files: must be an integer of at least 1"),
        ({"max_files": "2"}, "options.max_files"),
        ({"backfill_start": "yesterday", "backfill_end": "2026-01-02"}, "options.backfill_start"),
        ({"backfill_start": "2026-01-02"}, "options.backfill_end"),
    ],
)
def test_bad_sql_option_fails_naming_it_before_any_io(
    save_block, sqlite_ledger, queue, options, where
):
    """The database port is closed: failing on the option shows nothing was connected."""
    state = run_flow(
        ingest_sql, save_block, sqlite_ledger, queue, unreachable_sql(), options=options
    )
    assert state.is_failed()
    message = state.message.strip()
    assert "\n" not in message and where in message, message
    assert "connect" not in message.lower()


def test_non_sql_source_refuses_sql_options(save_block, sqlite_ledger, queue, inbox):
    (inbox / "a.csv").write_text("1\n")
    source = LocalFolderSource(source_id="opts", directory=str(inbox))
    state = run_flow(
        ingest_local_folder, save_block, sqlite_ledger, queue, source, options={"max_files": 2}
    )
    assert state.is_failed()
    assert "options.max_files: unknown option; known options: none" in state.message
    assert landed(sqlite_ledger, "opts") == []


def test_max_files_option_bounds_the_passes(
    save_block,
    sqlite_ledger,
    queue,
    pg_source,  # noqa: F811
):
    """`options.max_files` reaches the SQL source: a split increment stops after N files
    and the next run goes on from the watermark."""
    pg_source.run(
        'DROP TABLE IF EXISTS "mf"',
        'CREATE TABLE "mf" (id serial PRIMARY KEY, updated_at timestamptz NOT NULL, note text)',
    )
    for i in range(3):
        pg_source.run(
            "INSERT INTO \"mf\" (updated_at, note) VALUES (:t, 'x')", t=PAST + timedelta(hours=i)
        )
    source = SqlSource(
        source_id="pg-mf",
        database=pg_source.connector(),
        table="mf",
        incremental_mode="timestamp",
        incremental_column="updated_at",
        primary_key=["id"],
        max_rows_per_file=1,
        retries=0,
    )
    first = counts(
        run_flow(ingest_sql, save_block, sqlite_ledger, queue, source, options={"max_files": 2})
    )
    assert first["runs"] == 2 and first["landed"] == 2
    second = counts(run_flow(ingest_sql, save_block, sqlite_ledger, queue, source))
    assert second["landed"] == 1
