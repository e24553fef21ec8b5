"""A ledger made by older code (schema v1) is brought up to date in place, on SQLite and
on the real PostgreSQL, keeping every row; two workers migrating at once both succeed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, insert, inspect, select

from blocks.core import ledger_schema as schema
from blocks.core.errors import LedgerError
from blocks.core.ledger import Ledger
from tests.conftest import pg_connector, sqlite_connector, throwaway_database

ADDED = {(table, column) for cols in schema.ADDED_COLUMNS.values() for table, column in cols}


def _v1_metadata() -> MetaData:
    """The tables as schema v1 defined them: today's, minus the columns added since."""
    old = MetaData()
    for table in schema.metadata.sorted_tables:
        columns = [c._copy() for c in table.columns if (table.name, c.name) not in ADDED]
        Table(table.name, old, *columns)
    return old


@pytest.fixture(params=["sqlite", "postgres"])
def v1_connector(request, tmp_path: Path) -> Iterator:
    if request.param == "sqlite":
        yield sqlite_connector(tmp_path / "old.db")
    else:
        with throwaway_database("postgres", "ingest_migrate") as name:
            yield pg_connector(name)


def _make_v1(connector) -> None:
    engine = connector.get_engine()
    old = _v1_metadata()
    old.create_all(engine)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(old.tables["ingest_meta"]).values(key="schema_version", value="1"))
        conn.execute(
            insert(old.tables["ingest_items"]).values(
                source="s",
                name="a.csv",
                sha256="a" * 64,
                size=3,
                status="landed",
                landed_path="/l/a.csv",
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            insert(old.tables["ingest_runs"]).values(
                source="s",
                status="completed",
                listed=1,
                skipped=0,
                landed=1,
                failed=0,
                bytes=3,
                started_at=now,
            )
        )
    engine.dispose()


def test_v1_ledger_is_migrated_in_place_keeping_rows(v1_connector) -> None:
    _make_v1(v1_connector)
    ledger = Ledger(database=v1_connector)
    try:
        with ledger.engine.connect() as conn:
            version = conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).scalar()
            assert version == str(schema.SCHEMA_VERSION)
        assert ledger.known_items("s", ["a.csv"])["a.csv"][0].sha256 == "a" * 64
        with ledger.engine.connect() as conn:
            indexes = {i["name"] for i in inspect(conn).get_indexes("ingest_queue")}
        assert "ix_ingest_queue_unpublished" in indexes
        old_run = ledger.recent_runs("s")[0]
        assert old_run["landed"] == 1 and old_run["rows"] is None and old_run["trigger"] is None
        # The new columns are usable at once.
        run_id = ledger.start_run("s", None, None)
        ledger.finish_run(run_id, "completed", {"landed": 0, "rows": 42})
        assert ledger.recent_runs("s")[0]["rows"] == 42
    finally:
        ledger.dispose()
    # Opening it again is a no-op.
    again = Ledger(database=v1_connector)
    try:
        assert len(again.recent_runs("s")) == 2
    finally:
        again.dispose()


def test_two_workers_migrating_at_once_both_succeed(v1_connector) -> None:
    _make_v1(v1_connector)
    errors: list[BaseException] = []

    def open_ledger() -> None:
        ledger = Ledger(database=v1_connector)
        try:
            ledger.check()
            ledger.recent_runs("s")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            ledger.dispose()

    threads = [threading.Thread(target=open_ledger) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []


def test_a_ledger_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    connector = sqlite_connector(tmp_path / "new.db")
    Ledger(database=connector).check()
    engine = connector.get_engine()
    with engine.begin() as conn:
        conn.execute(schema.meta.update().values(value=str(schema.SCHEMA_VERSION + 1)))
    engine.dispose()
    with pytest.raises(LedgerError, match="newer than this code"):
        Ledger(database=sqlite_connector(tmp_path / "new.db")).check()
