# ruff: noqa: F811  (pytest fixtures imported from tests/warehouse_servers.py)
"""Snowflake and BigQuery query sources end to end (ingest-snowflake, ingest-bigquery).

Real clients against local emulators (see tests/warehouse_servers.py): the real
snowflake-connector-python against fakesnow's HTTP server, the real google-cloud-bigquery
client against bqemulator. Faked seams, and why:
- fakesnow's login answer gets the fields connector 5.x requires, and a password check
  (fakesnow accepts any password) - tests/tools/fakesnow_server.py;
- `GcpCredentials` handing out anonymous credentials for the emulator (Google's token
  service cannot be reached here), and a local OAuth token endpoint that refuses a real
  key for the bad-credentials test;
- `Ledger.record_landed` raising once, to show the watermark moves only with the record.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect_gcp import GcpCredentials
from prefect_gcp.bigquery import BigQueryWarehouse

from blocks import IngestionQueue, Ledger
from blocks.core.errors import ConfigError, LedgerError
from blocks.core.source import DiscoverContext
from blocks.core.watermark_values import from_json, kind_of, text_label, to_json
from blocks.warehouse.bigquery import BigQueryQuerySource
from blocks.warehouse.query import WarehouseQueryError
from blocks.warehouse.snowflake import SnowflakeQuerySource
from blocks.warehouse.watermark import (
    Position,
    Progress,
    Window,
    initial_value,
    parse_initial,
    upper_bound,
)
from flows.bigquery import ingest_bigquery
from flows.snowflake import ingest_snowflake
from tests.landed_rows import counts, delivered_ids, landed, read_rows, run_flow
from tests.warehouse_servers import (  # noqa: F401
    BqEmulator,
    FakeSnow,
    anonymous_google,
    bq_emulator,
    fakesnow_server,
    refusing_token_server,
    service_account_info,
)

pytestmark = pytest.mark.usefixtures("prefect_api")
DAY = date(2026, 3, 14)
UTC = UTC


# ----------------------------------------------------------------------------- helpers
def run(flow, save_block, ledger: Ledger, queue: IngestionQueue, source, **params):
    return run_flow(flow, save_block, ledger, queue, source, date=DAY, **params)


def queued(ledger: Ledger) -> int:
    from sqlalchemy import func, select

    from blocks.core import ledger_schema as schema

    with ledger.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.queue)).scalar_one()


def sid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- Snowflake
def sf_table(server: FakeSnow, rows: int, start: int = 1, table: str | None = None) -> str:
    """A table ORDERS_x with `rows` rows (ids start..), 3 regions, decimals, timestamps."""
    table = table or "ORDERS_" + uuid.uuid4().hex[:8].upper()
    server.run(
        f"CREATE TABLE IF NOT EXISTS {table} (ID INT, REGION VARCHAR, AMOUNT NUMBER(10,2), "
        "LOADED_AT TIMESTAMP_NTZ, NOTE VARCHAR)"
    )
    sf_insert(server, table, range(start, start + rows))
    return table


def sf_insert(server: FakeSnow, table: str, ids) -> None:
    server.run(
        f"INSERT INTO {table} VALUES (%(id)s, %(region)s, %(amount)s, %(ts)s, %(note)s)",
        rows=[
            {
                "id": i,
                "region": ["EU", "US", "APAC"][i % 3],
                "amount": f"{i}.25",
                "ts": f"2026-01-{1 + i % 28:02d} 08:{i % 60:02d}:00",
                "note": f'n{i}, "quoted"' if i % 5 == 0 else None,
            }
            for i in ids
        ],
    )


def sf_now(server: FakeSnow) -> datetime:
    """The server's clock as a naive UTC wall-clock time (as TIMESTAMP_NTZ values are)."""
    conn = server.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_TIMESTAMP()")
        return cur.fetchone()[0].astimezone(UTC).replace(tzinfo=None)
    finally:
        conn.close()


def sf_source(server: FakeSnow, password: str | None = None, **fields) -> SnowflakeQuerySource:
    fields.setdefault("source_id", sid("sf"))
    fields.setdefault("retries", 0)
    return SnowflakeQuerySource(
        snowflake=server.connector(password), **server.block_kwargs(), **fields
    )


def test_snowflake_full_export_with_bound_parameters_and_content_dedupe(
    save_block, sqlite_ledger, queue, fakesnow_server
) -> None:
    table = sf_table(fakesnow_server, 12)
    source = sf_source(
        fakesnow_server,
        query=f"SELECT ID, REGION, AMOUNT, NOTE FROM {table} "
        "WHERE REGION = %(region)s AND ID <= %(max_id)s ORDER BY ID",
        parameters={"region": "EU", "max_id": 9},
        file_name="orders_{date:%Y%m%d}",
    )
    first = counts(run(ingest_snowflake, save_block, sqlite_ledger, queue, source))
    assert first["landed"] == 1
    (row,) = landed(sqlite_ledger, source.source_id)
    assert row["name"] == "orders_20260314.csv"
    text = Path(row["landed_path"]).read_text()
    assert text == (
        "ID,REGION,AMOUNT,NOTE\n3,EU,3.25,\n6,EU,6.25,\n9,EU,9.25,\n"
    )  # bound values filtered the rows; NULL is an empty field
    assert queued(sqlite_ledger) == 1
    # Same day, same content: dropped by the content hash, nothing new queued.
    again = counts(run(ingest_snowflake, save_block, sqlite_ledger, queue, source))
    assert again["landed"] == 0 and again["skipped"] == 1
    assert queued(sqlite_ledger) == 1 and len(landed(sqlite_ledger, source.source_id)) == 1


def test_snowflake_incremental_runs_empty_increment_and_csv_quoting(
    save_block, ledger, queue, fakesnow_server
) -> None:
    table = sf_table(fakesnow_server, 10)
    source = sf_source(
        fakesnow_server,
        query=f"SELECT ID, NOTE, LOADED_AT FROM {table}",
        incremental_column="ID",
        chunk_size=3,
    )
    assert counts(run(ingest_snowflake, save_block, ledger, queue, source))["landed"] == 1
    mark = ledger.get_state(source.source_id, "watermark")
    assert (mark["column"], mark["kind"], mark["value"], mark["rows"]) == ("ID", "int", 10, 10)

    sf_insert(fakesnow_server, table, range(11, 16))
    assert counts(run(ingest_snowflake, save_block, ledger, queue, source))["landed"] == 1
    assert ledger.get_state(source.source_id, "watermark")["value"] == 15

    # Nothing new: SkipItem, no file, no message, the watermark stays.
    empty = counts(run(ingest_snowflake, save_block, ledger, queue, source))
    assert empty["landed"] == 0 and empty["skipped"] == 1
    assert ledger.get_state(source.source_id, "watermark")["value"] == 15

    rows = landed(ledger, source.source_id)
    assert [r["name"] for r in rows] == [
        "export_20260314_initial.csv",
        "export_20260314_after-10.csv",
    ]
    first, second = (read_rows(r["landed_path"]) for r in rows)
    assert [int(r["ID"]) for r in first] == list(range(1, 11))
    assert [int(r["ID"]) for r in second] == list(range(11, 16))
    assert first[4]["NOTE"] == 'n5, "quoted"'  # RFC 4180 quoting survives a round trip
    assert first[0]["LOADED_AT"] == "2026-01-02T08:01:00"
    assert queued(ledger) == 2


def test_snowflake_multi_chunk_parquet_keeps_types(
    save_block, sqlite_ledger, queue, fakesnow_server
) -> None:
    table = sf_table(fakesnow_server, 50)
    source = sf_source(
        fakesnow_server,
        query=f"SELECT ID, REGION, AMOUNT, LOADED_AT FROM {table}",
        output_format="parquet",
        incremental_column="LOADED_AT",
        initial_watermark="2026-01-03 00:00:00",
        chunk_size=7,
    )
    assert counts(run(ingest_snowflake, save_block, sqlite_ledger, queue, source))["landed"] == 1
    (row,) = landed(sqlite_ledger, source.source_id)
    assert row["name"] == "export_20260314_after-20260103T000000.000000.parquet"
    pf = pq.ParquetFile(row["landed_path"])
    expected = [i for i in range(1, 51) if 1 + i % 28 >= 3]  # loaded on Jan 3 or later
    assert pf.metadata.num_rows == len(expected)
    assert pf.num_row_groups == -(-len(expected) // 7)  # one row group per fetched chunk
    assert pf.schema_arrow.field("ID").type == pa.int64()
    assert pf.schema_arrow.field("AMOUNT").type == pa.decimal128(10, 2)
    assert pf.schema_arrow.field("LOADED_AT").type == pa.timestamp("us")
    table_rows = pf.read().to_pylist()
    assert sorted(r["ID"] for r in table_rows) == expected
    assert table_rows[0]["AMOUNT"] == Decimal(f"{table_rows[0]['ID']}.25")
    times = [r["LOADED_AT"] for r in table_rows]
    assert times == sorted(times)  # ordered by the incremental column
    mark = sqlite_ledger.get_state(source.source_id, "watermark")
    # A time column: the next window starts at this run's bound (the warehouse clock, a
    # naive UTC wall-clock time for TIMESTAMP_NTZ), not at the largest value exported.
    assert mark["kind"] == "datetime" and "value" not in mark
    assert max(times) < datetime.fromisoformat(mark["below"]) <= sf_now(fakesnow_server)


def test_snowflake_watermark_moves_only_with_the_ledger_record(
    save_block, sqlite_ledger, queue, fakesnow_server, monkeypatch
) -> None:
    table = sf_table(fakesnow_server, 5)
    source = sf_source(fakesnow_server, query=f"SELECT ID FROM {table}", incremental_column="ID")
    assert counts(run(ingest_snowflake, save_block, sqlite_ledger, queue, source))["landed"] == 1
    sf_insert(fakesnow_server, table, range(6, 9))

    def broken(*args, **kwargs):
        raise LedgerError("injected: ledger database went away")

    monkeypatch.setattr(Ledger, "record_landed", broken)
    state = run(ingest_snowflake, save_block, sqlite_ledger, queue, source)
    assert state.is_failed()
    assert sqlite_ledger.get_state(source.source_id, "watermark")["value"] == 5
    monkeypatch.undo()

    assert counts(run(ingest_snowflake, save_block, sqlite_ledger, queue, source))["landed"] == 1
    rows = landed(sqlite_ledger, source.source_id)
    assert [int(r["ID"]) for r in read_rows(rows[-1]["landed_path"])] == [6, 7, 8]
    assert sqlite_ledger.get_state(source.source_id, "watermark")["value"] == 8


def test_snowflake_jsonl_and_bad_sql_missing_table_fail_clearly(
    save_block, sqlite_ledger, queue, fakesnow_server
) -> None:
    table = sf_table(fakesnow_server, 4)
    good = sf_source(
        fakesnow_server,
        query=f"SELECT ID, AMOUNT, LOADED_AT, NOTE FROM {table} ORDER BY ID",
        output_format="jsonl",
    )
    assert counts(run(ingest_snowflake, save_block, sqlite_ledger, queue, good))["landed"] == 1
    (row,) = landed(sqlite_ledger, good.source_id)
    first = read_rows(row["landed_path"])[0]
    assert first == {"ID": 1, "AMOUNT": "1.25", "LOADED_AT": "2026-01-02T08:01:00", "NOTE": None}

    for query, needle in [
        (f"SELEC ID FROM {table}", "SnowflakeQuerySource.query: Snowflake rejected the query"),
        ("SELECT ID FROM NO_SUCH_TABLE", "NO_SUCH_TABLE"),
    ]:
        bad = sf_source(fakesnow_server, query=query, retries=3)
        state = run(ingest_snowflake, save_block, sqlite_ledger, queue, bad)
        assert state.is_failed()
        assert needle in state.message
        failures = [
            r for r in sqlite_ledger.recent_items(bad.source_id, 10) if r["status"] == "failed"
        ]
        assert len(failures) == 1 and "ConfigError" in failures[0]["error"]
        with pytest.raises(ConfigError) as info:
            bad.test_connection()
        assert info.value.where == "SnowflakeQuerySource.query" and needle in str(info.value)


def test_snowflake_test_connection_and_bad_credentials_hide_the_password(
    save_block, sqlite_ledger, queue, fakesnow_server
) -> None:
    table = sf_table(fakesnow_server, 3)
    ok = sf_source(
        fakesnow_server,
        query=f"SELECT ID, REGION FROM {table} WHERE ID > %(low)s",
        parameters={"low": 0},
        incremental_column="ID",
    )
    assert ok.test_connection() == {
        "ok": True,
        "source_id": ok.source_id,
        "columns": ["ID", "REGION"],
    }

    wrong = "Wr0ng-" + uuid.uuid4().hex
    bad = sf_source(fakesnow_server, password=wrong, query=f"SELECT ID FROM {table}")
    with pytest.raises(ConfigError) as info:
        bad.test_connection()
    assert info.value.where == "SnowflakeQuerySource.snowflake.credentials"
    assert "Incorrect username or password" in str(info.value)
    assert wrong not in str(info.value)

    state = run(ingest_snowflake, save_block, sqlite_ledger, queue, bad)
    assert state.is_failed()
    assert "refused the login" in state.message and wrong not in state.message
    (failure,) = sqlite_ledger.recent_items(bad.source_id, 10)
    assert wrong not in json.dumps(failure, default=str)

    missing_col = sf_source(
        fakesnow_server, query=f"SELECT ID FROM {table}", incremental_column="UPDATED_AT"
    )
    with pytest.raises(ConfigError) as info:
        missing_col.test_connection()
    assert info.value.where == "SnowflakeQuerySource.query"  # the wrapped query cannot compile

    for fields, where in [
        ({"primary_key": ["NOPE"]}, ".primary_key"),  # not a column of the result
        ({"lag_seconds": 60}, ".lag_seconds"),  # ID is a number: no clock bounds it
        ({"initial_watermark": "abc"}, ".initial_watermark"),  # not an integer
    ]:
        misfit = sf_source(
            fakesnow_server, query=f"SELECT ID FROM {table}", incremental_column="ID", **fields
        )
        with pytest.raises(ConfigError) as info:
            misfit.test_connection()
        assert info.value.where == "SnowflakeQuerySource" + where, info.value


def offline_source(**fields) -> SnowflakeQuerySource:
    """A source block for checks that do no I/O (no server needed)."""
    return sf_source(FakeSnow("127.0.0.1", 9, "unused"), **fields)


def test_preflight_names_the_field() -> None:
    cases = [
        ({"query": "  ;  "}, "SnowflakeQuerySource.query"),
        ({"query": "SELECT 1", "incremental_column": "id; DROP TABLE x"}, ".incremental_column"),
        ({"query": "SELECT 1", "initial_watermark": "5"}, ".initial_watermark"),
        ({"query": "SELECT 1", "parameters": {"ingest_watermark": 1}}, ".parameters"),
        ({"query": "SELECT 1", "parameters": {"a b": 1}}, ".parameters"),
        ({"query": "SELECT 1", "parameters": {"ingest_upper": 1}}, ".parameters"),
        ({"query": "SELECT 1", "lag_seconds": 60}, ".lag_seconds"),
        ({"query": "SELECT 1", "primary_key": ["ID"]}, ".primary_key"),
        ({"query": "SELECT 1", "incremental_column": "B", "primary_key": ["a b"]}, ".primary_key"),
        (
            {"query": "SELECT 1", "incremental_column": "B", "primary_key": ["x", "X"]},
            ".primary_key",
        ),
        ({"query": "SELECT 1", "file_name": "../escape_{date:%Y}"}, ".file_name"),
        ({"query": "SELECT 1", "file_name": "x_{date:%Y"}, ".file_name"),
    ]
    for fields, where in cases:
        with pytest.raises(ConfigError) as info:
            offline_source(**fields).preflight()
        assert info.value.where.endswith(where), (fields, info.value)


def test_unreachable_snowflake_is_a_retryable_error_naming_the_account() -> None:
    source = offline_source(query="SELECT 1", login_timeout_seconds=2)
    with pytest.raises(WarehouseQueryError) as info:
        source.test_connection()
    assert "cannot connect to Snowflake as user 'ingest' on account 'fakesnow'" in str(info.value)
    assert "unused" not in str(info.value)  # the password


def test_watermark_values_round_trip_and_labels() -> None:
    assert parse_initial("42") == 42
    assert parse_initial("2026-01-02") == date(2026, 1, 2)
    assert parse_initial("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_initial("abc") == "abc"
    for value in [7, Decimal("1.50"), "k", 1.5, date(2026, 1, 2), datetime(2026, 1, 2, 3)]:
        assert from_json(to_json(value), kind_of(value)) == value
    paris = datetime(2026, 1, 2, 4, tzinfo=ZoneInfo("Europe/Paris"))
    assert to_json(paris) == "2026-01-02T03:00:00+00:00"  # stored in UTC
    assert from_json(to_json(paris), "timestamp") == paris
    with pytest.raises(TypeError):
        kind_of(True)
    # a text watermark never makes an unsafe file name, and distinct values stay distinct
    assert Position("c", "str", "a/../b").label() != Position("c", "str", "a/.._b").label()
    assert "/" not in Position("c", "str", "a/../b").label()


def test_window_positions_read_from_the_state() -> None:
    below = {"column": "TS", "kind": "timestamp", "below": "2026-01-02T03:00:00+00:00"}
    start = Position.from_state(below)
    assert (start.inclusive, start.label()) == (True, "from-20260102T030000.000000Z")
    # a state written before the lag window: every row <= value was delivered
    legacy = Position.from_state({"column": "TS", "kind": "datetime", "value": "2026-01-02T03:00"})
    assert (legacy.value, legacy.inclusive) == (datetime(2026, 1, 2, 3), False)
    assert legacy.label() == "after-20260102T030000.000000"
    keyed = {"column": "B", "kind": "int", "value": 2, "key_columns": ["ID"], "keys": [[4], [3]]}
    at = Position.from_state(keyed)
    assert (at.value, at.inclusive, set(at.keys)) == (2, True, {(3,), (4,)})
    reordered = Position.from_state({**keyed, "keys": [[3], [4]]})
    assert at.label() == reordered.label() != Position("B", "int", 2).label() == "after-2"


def test_time_window_bounds_follow_the_column_type() -> None:
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    paris = ZoneInfo("Europe/Paris")
    assert upper_bound(now, 60, "timestamp", paris) == datetime(2026, 7, 1, 11, 59, tzinfo=UTC)
    assert upper_bound(now, 60, "datetime", paris) == datetime(2026, 7, 1, 13, 59)  # wall clock
    assert upper_bound(now, 13 * 3600, "date", paris) == date(2026, 7, 1)  # 01:00 in Paris
    assert upper_bound(now, 13 * 3600, "date", UTC) == date(2026, 6, 30)
    assert upper_bound(now.replace(tzinfo=None), 0, "timestamp", paris) == now  # naive is UTC
    assert initial_value("2026-01-03 00:00", "timestamp", paris) == datetime(
        2026, 1, 2, 23, 0, tzinfo=UTC
    )
    assert initial_value("2026-01-03", "datetime", UTC) == datetime(2026, 1, 3)
    assert initial_value("5", "int", UTC) == 5
    assert initial_value("2026-01-03", "str", UTC) == "2026-01-03"
    for text, kind in [("abc", "int"), ("5", "timestamp")]:
        with pytest.raises(ValueError):
            initial_value(text, kind, UTC)


def test_progress_drops_rows_already_delivered_at_the_boundary() -> None:
    lower = Position("B", "int", 2, inclusive=True, keys=((3,),))
    window = Window(lower, key_columns=("ID",))
    progress = Progress(window, column=1, keys=[0])
    assert progress.take([(3, 2), (5, 2), (6, 3)]) == [(5, 2), (6, 3)]
    assert progress.take([(7, 3)]) == [(7, 3)]
    state = progress.state(3)
    assert (progress.dropped, state["value"], state["keys"]) == (1, 3, [[6], [7]])
    # new rows only at the boundary value: the keys already delivered are kept
    same = Progress(window, column=1, keys=[0])
    assert same.take([(3, 2), (5, 2)]) == [(5, 2)]
    assert same.state(1)["keys"] == [[3], [5]]


def test_changed_incremental_column_is_refused(sqlite_ledger) -> None:
    source = offline_source(query="SELECT 1 AS B", incremental_column="B")
    state = {"column": "A", "kind": "int", "value": 3}
    sqlite_ledger.set_state(source.source_id, "watermark", state)
    ctx = DiscoverContext(DAY, ledger=sqlite_ledger, source_id=source.source_id)
    with pytest.raises(ConfigError) as info:
        list(source.discover(ctx))
    assert "'A', not 'B'" in str(info.value)


def test_settings_that_do_not_fit_the_column_are_refused_before_any_query(sqlite_ledger) -> None:
    """The stored kind decides; the offline server would fail any query that was tried."""
    ts = {"column": "C", "kind": "timestamp", "below": "2026-01-02T03:00:00+00:00"}
    keyed = {"column": "C", "kind": "int", "value": 2, "key_columns": ["ID"], "keys": [[1]]}
    cases = [
        ({"lag_seconds": 60}, {"column": "C", "kind": "int", "value": 3}, ".lag_seconds"),
        ({"primary_key": ["ID"]}, ts, ".primary_key"),
        ({"primary_key": ["OTHER"]}, keyed, ".primary_key"),
        ({}, keyed, ".primary_key"),  # dropping the key would re-deliver the boundary rows
    ]
    for fields, state, where in cases:
        source = offline_source(query="SELECT 1 AS C", incremental_column="C", **fields)
        sqlite_ledger.set_state(source.source_id, "watermark", state)
        ctx = DiscoverContext(DAY, ledger=sqlite_ledger, source_id=source.source_id)
        with pytest.raises(ConfigError) as info:
            list(source.discover(ctx))
        assert info.value.where.endswith(where), (fields, info.value)


# ----------------------------------------------------------------------------- BigQuery
def bq_table(emu: BqEmulator, rows: int, start: int = 1) -> str:
    dataset = emu.dataset()
    table = f"{dataset}.orders"
    emu.run(
        f"CREATE TABLE {table} (id INT64, region STRING, amount NUMERIC, "
        "loaded_at TIMESTAMP, day DATE, ok BOOL)"
    )
    bq_insert(emu, table, range(start, start + rows))
    return table


def bq_insert(emu: BqEmulator, table: str, ids, loaded_at: str | None = None) -> None:
    """Rows `ids`; `loaded_at` (SQL) defaults to a February 2026 time derived from the id."""

    def row(i: int) -> str:
        stamp = loaded_at or f"TIMESTAMP '2026-02-{1 + i % 28:02d} 09:{i % 60:02d}:00+00'"
        return (
            f"({i}, '{['EU', 'US', 'APAC'][i % 3]}', NUMERIC '{i}.5', {stamp}, "
            f"DATE '2026-02-{1 + i % 28:02d}', {str(i % 2 == 0).lower()})"
        )

    values = ", ".join(row(i) for i in ids)
    emu.run(f"INSERT INTO {table} (id, region, amount, loaded_at, day, ok) VALUES {values}")


def bq_now(emu: BqEmulator) -> datetime:
    """The emulator's clock (what the source's time window is bounded by)."""
    client = emu.client()
    try:
        (row,) = client.query("SELECT CURRENT_TIMESTAMP() AS now").result()
        return row[0]
    finally:
        client.close()


def bq_source(emu: BqEmulator, token_uri: str | None = None, **fields) -> BigQueryQuerySource:
    fields.setdefault("source_id", sid("bq"))
    if token_uri:  # a real key whose (local) token endpoint refuses it
        creds = GcpCredentials(
            service_account_info=service_account_info(token_uri), project=emu.project
        )
    else:  # anonymous credentials through the `anonymous_google` fixture
        creds = GcpCredentials(project=emu.project)
    return BigQueryQuerySource(
        bigquery=BigQueryWarehouse(gcp_credentials=creds),
        api_endpoint=emu.endpoint,
        **{"retries": 0, **fields},
    )


@pytest.mark.usefixtures("anonymous_google")
def test_bigquery_full_export_with_parameters_and_content_dedupe(
    save_block, sqlite_ledger, queue, bq_emulator
) -> None:
    table = bq_table(bq_emulator, 12)
    source = bq_source(
        bq_emulator,
        query=f"SELECT id, region, amount, ok FROM {table} "
        "WHERE region = @region AND id IN UNNEST(@ids) ORDER BY id",
        parameters={"region": "EU", "ids": [3, 6, 7, 9]},
    )
    assert counts(run(ingest_bigquery, save_block, sqlite_ledger, queue, source))["landed"] == 1
    (row,) = landed(sqlite_ledger, source.source_id)
    assert row["name"] == "export_20260314.csv"
    data = read_rows(row["landed_path"])
    assert [(r["id"], r["region"], Decimal(r["amount"]), r["ok"]) for r in data] == [
        ("3", "EU", Decimal("3.5"), "false"),
        ("6", "EU", Decimal("6.5"), "true"),
        ("9", "EU", Decimal("9.5"), "false"),
    ]  # the bound values (a text and an array) filtered the rows
    again = counts(run(ingest_bigquery, save_block, sqlite_ledger, queue, source))
    assert again["landed"] == 0 and again["skipped"] == 1
    assert queued(sqlite_ledger) == 1


@pytest.mark.usefixtures("anonymous_google")
def test_bigquery_incremental_timestamp_jsonl_and_empty_increment(
    save_block, ledger, queue, bq_emulator
) -> None:
    table = bq_table(bq_emulator, 10)
    source = bq_source(
        bq_emulator,
        query=f"SELECT id, loaded_at, day FROM {table} WHERE region != @skip",
        parameters={"skip": "none"},
        incremental_column="loaded_at",
        output_format="jsonl",
        file_name="orders",
    )
    assert counts(run(ingest_bigquery, save_block, ledger, queue, source))["landed"] == 1
    mark = ledger.get_state(source.source_id, "watermark")
    first_bound = datetime.fromisoformat(mark["below"])
    assert mark["kind"] == "timestamp" and first_bound <= bq_now(bq_emulator)

    # later timestamps: stamped by the warehouse clock after the first run's bound
    bq_insert(bq_emulator, table, range(20, 23), loaded_at="CURRENT_TIMESTAMP()")
    assert counts(run(ingest_bigquery, save_block, ledger, queue, source))["landed"] == 1
    empty = counts(run(ingest_bigquery, save_block, ledger, queue, source))
    assert empty["landed"] == 0 and empty["skipped"] == 1

    rows = landed(ledger, source.source_id)
    assert [r["name"] for r in rows] == [
        "orders_initial.jsonl",
        f"orders_from-{first_bound.strftime('%Y%m%dT%H%M%S.%f')}Z.jsonl",
    ]
    second = read_rows(rows[1]["landed_path"])
    assert [r["id"] for r in second] == [20, 21, 22]
    assert sorted(second[0]) == ["day", "id", "loaded_at"]
    assert datetime.fromisoformat(second[0]["loaded_at"]) >= first_bound
    last = datetime.fromisoformat(ledger.get_state(source.source_id, "watermark")["below"])
    assert last > max(datetime.fromisoformat(r["loaded_at"]) for r in second)


@pytest.mark.usefixtures("anonymous_google")
def test_bigquery_multi_page_parquet(save_block, sqlite_ledger, queue, bq_emulator) -> None:
    table = bq_table(bq_emulator, 40)
    source = bq_source(
        bq_emulator,
        query=f"SELECT id, amount, loaded_at, day, ok FROM {table}",
        incremental_column="id",
        initial_watermark="5",
        output_format="parquet",
        chunk_size=6,
    )
    assert counts(run(ingest_bigquery, save_block, sqlite_ledger, queue, source))["landed"] == 1
    (row,) = landed(sqlite_ledger, source.source_id)
    pf = pq.ParquetFile(row["landed_path"])
    assert pf.metadata.num_rows == 35
    assert pf.num_row_groups == 6  # 35 rows in pages of 6: one row group per page
    schema = pf.schema_arrow
    assert schema.field("amount").type == pa.decimal128(38, 9)
    assert schema.field("loaded_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("day").type == pa.date32()
    data = pf.read().to_pylist()
    assert [r["id"] for r in data] == list(range(6, 41))
    assert data[0]["amount"] == Decimal("6.5") and data[0]["ok"] is True
    assert sqlite_ledger.get_state(source.source_id, "watermark")["value"] == 40


@pytest.mark.usefixtures("anonymous_google")
def test_bigquery_bad_sql_missing_table_and_test_connection(
    save_block, sqlite_ledger, queue, bq_emulator
) -> None:
    table = bq_table(bq_emulator, 2)
    ok = bq_source(
        bq_emulator, query=f"SELECT id, region FROM {table} WHERE id > @low", parameters={"low": 0}
    )
    assert ok.test_connection()["columns"] == ["id", "region"]

    for query, needle in [
        (f"SELEC id FROM {table}", "Syntax error"),
        (f"SELECT id FROM {table.split('.')[0]}.no_such_table", "no_such_table was not found"),
    ]:
        bad = bq_source(bq_emulator, query=query, retries=3)
        with pytest.raises(ConfigError) as info:
            bad.test_connection()
        assert info.value.where == "BigQueryQuerySource.query" and needle in str(info.value)
        state = run(ingest_bigquery, save_block, sqlite_ledger, queue, bad)
        assert state.is_failed() and needle in state.message


def test_bigquery_refused_credentials_name_the_block_and_hide_the_key(
    save_block, sqlite_ledger, queue, bq_emulator, refusing_token_server
) -> None:
    source = bq_source(bq_emulator, token_uri=refusing_token_server, query="SELECT 1 AS x")
    key = source.bigquery.gcp_credentials.service_account_info.get_secret_value()["private_key"]
    with pytest.raises(ConfigError) as info:
        source.test_connection()
    assert info.value.where == "BigQueryQuerySource.bigquery.gcp_credentials"
    assert "invalid_grant" in str(info.value)
    state = run(ingest_bigquery, save_block, sqlite_ledger, queue, source)
    assert state.is_failed() and "refused the credentials" in state.message
    secret_line = key.splitlines()[1]
    assert secret_line not in state.message and secret_line not in str(info.value)


# ----------------------------------------------------------------------------- both warehouses
LAG = 4.0


@dataclass
class Events:
    """A table EVENTS (ID, BATCH, LOADED_AT) in one emulator, its clock, and a source over it.

    LOADED_AT is a Snowflake TIMESTAMP_NTZ (naive UTC wall-clock values) or a BigQuery
    TIMESTAMP (aware values), so both kinds of time window run."""

    flow: Any
    table: str
    add: Callable[[int, int, datetime], None]
    now: Callable[[], datetime]
    source: Callable[..., Any]


def _snowflake_events(server: FakeSnow) -> Events:
    table = "EVENTS_" + uuid.uuid4().hex[:8].upper()
    server.run(f"CREATE TABLE {table} (ID INT, BATCH INT, LOADED_AT TIMESTAMP_NTZ)")

    def add(i: int, batch: int, at: datetime) -> None:
        server.run(
            f"INSERT INTO {table} VALUES (%(i)s, %(b)s, %(at)s)",
            rows=[{"i": i, "b": batch, "at": at}],
        )

    return Events(ingest_snowflake, table, add, lambda: sf_now(server), partial(sf_source, server))


def _bigquery_events(emu: BqEmulator) -> Events:
    from google.cloud import bigquery

    table = f"{emu.dataset()}.EVENTS"
    emu.run(f"CREATE TABLE {table} (ID INT64, BATCH INT64, LOADED_AT TIMESTAMP)")

    def add(i: int, batch: int, at: datetime) -> None:
        params = [
            bigquery.ScalarQueryParameter("i", "INT64", i),
            bigquery.ScalarQueryParameter("b", "INT64", batch),
            bigquery.ScalarQueryParameter("at", "TIMESTAMP", at),
        ]
        client = emu.client()
        try:
            sql = f"INSERT INTO {table} (ID, BATCH, LOADED_AT) VALUES (@i, @b, @at)"
            client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params)).result()
        finally:
            client.close()

    return Events(ingest_bigquery, table, add, lambda: bq_now(emu), partial(bq_source, emu))


@pytest.fixture(params=["snowflake", "bigquery"])
def events(request) -> Events:
    if request.param == "snowflake":
        return _snowflake_events(request.getfixturevalue("fakesnow_server"))
    request.getfixturevalue("anonymous_google")
    return _bigquery_events(request.getfixturevalue("bq_emulator"))


def wait_for_clock(events: Events, target: datetime, timeout: float = 30) -> None:
    """Sleep until the warehouse clock passes `target`."""
    deadline = time.monotonic() + timeout
    while events.now() <= target:
        assert time.monotonic() < deadline, f"the warehouse clock did not reach {target}"
        time.sleep(0.25)


def test_time_window_takes_boundary_and_late_rows_once(save_block, ledger, queue, events) -> None:
    """Rows with the watermark's own value and rows committed late inside the lag window
    are delivered by the next run exactly once; a row committed after its value fell
    below a delivered window is not (documented); a future row waits for the clock."""
    now = events.now()
    for i in (1, 2, 3):
        events.add(i, 0, now - timedelta(minutes=10 - i))
    source = events.source(
        query=f"SELECT ID, LOADED_AT FROM {events.table}",
        incremental_column="LOADED_AT",
        lag_seconds=LAG,
    )
    sid_ = source.source_id
    assert counts(run(events.flow, save_block, ledger, queue, source))["landed"] == 1
    bound = datetime.fromisoformat(ledger.get_state(sid_, "watermark")["below"])
    assert now - timedelta(seconds=LAG) <= bound <= events.now() - timedelta(seconds=LAG)

    # Committed after run 1, whose clock read bound + LAG:
    events.add(4, 0, bound)  # the same value as the watermark
    events.add(5, 0, bound + timedelta(seconds=1))  # older than run 1, inside the lag
    events.add(6, 0, bound - timedelta(microseconds=1))  # below the delivered window: lost
    events.add(7, 0, now + timedelta(days=1))  # stamped in the future: waits
    wait_for_clock(events, bound + timedelta(seconds=LAG + 1.5))
    assert counts(run(events.flow, save_block, ledger, queue, source))["landed"] == 1
    again = counts(run(events.flow, save_block, ledger, queue, source))
    assert again["landed"] == 0

    assert delivered_ids(ledger, sid_, "ID") == [1, 2, 3, 4, 5]  # each once, 6 and 7 never
    names = [r["name"] for r in landed(ledger, sid_)]
    assert names == ["export_20260314_initial.csv", f"export_20260314_from-{text_label(bound)}.csv"]
    last = datetime.fromisoformat(ledger.get_state(sid_, "watermark")["below"])
    assert bound + timedelta(seconds=1) < last < now + timedelta(days=1)


def test_repeated_value_rows_arriving_later_are_taken_once_by_key(
    save_block, ledger, queue, events
) -> None:
    """A number column shared by many rows (a batch id) with `primary_key`: rows that
    arrive later with the watermark's value are delivered by the next run, once."""
    now = events.now()
    for i, batch in [(1, 1), (2, 1), (3, 2), (4, 2)]:
        events.add(i, batch, now)
    source = events.source(
        query=f"SELECT ID, BATCH FROM {events.table}",
        incremental_column="BATCH",
        primary_key=["ID"],
        chunk_size=2,
    )
    sid_ = source.source_id

    def step() -> int:
        return counts(run(events.flow, save_block, ledger, queue, source))["landed"]

    assert step() == 1
    mark = ledger.get_state(sid_, "watermark")
    assert (mark["value"], mark["key_columns"], mark["keys"]) == (2, ["ID"], [[3], [4]])

    events.add(5, 2, now)  # the same value as the watermark, after the run
    events.add(6, 3, now)
    assert step() == 1
    events.add(7, 3, now)
    assert step() == 1
    assert step() == 0  # nothing new: nothing delivered twice

    assert delivered_ids(ledger, sid_, "ID") == [1, 2, 3, 4, 5, 6, 7]
    mark = ledger.get_state(sid_, "watermark")
    assert (mark["value"], mark["keys"]) == (3, [[6], [7]])
