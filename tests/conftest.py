"""Shared fixtures: a Prefect test API, ledgers on SQLite and on the real PostgreSQL.

Set INGEST_REQUIRE_SERVERS=1 (CI does) to turn a missing server into a test failure
instead of a skip.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest

# Before prefect is imported anywhere: a private Prefect home, no analytics.
_PREFECT_HOME = tempfile.mkdtemp(prefix="prefect-home-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from blocks import IngestionQueue, Ledger  # noqa: E402
from blocks.core import ledger_schema as schema  # noqa: E402

REQUIRE_SERVERS = os.environ.get("INGEST_REQUIRE_SERVERS") == "1"
PG_HOST = os.environ.get("INGEST_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("INGEST_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("INGEST_TEST_PG_USER", "postgres")
MY_HOST = os.environ.get("INGEST_TEST_MYSQL_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("INGEST_TEST_MYSQL_PORT", "3306"))
MY_USER = os.environ.get("INGEST_TEST_MYSQL_USER", "root")


def server_missing(what: str, why: str) -> None:
    """Skip locally, fail in CI (INGEST_REQUIRE_SERVERS=1)."""
    message = f"{what} is not reachable: {why}"
    if REQUIRE_SERVERS:
        pytest.fail(message + " (INGEST_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=300):
        yield


@contextmanager
def throwaway_database(kind: Literal["postgres", "mariadb"], prefix: str) -> Iterator[str]:
    """Create a database with a unique name on the real PostgreSQL or MariaDB server
    (127.0.0.1), yield its name, drop it at the end. A server that is down:
    `server_missing` (skip locally, fail with INGEST_REQUIRE_SERVERS=1)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    if kind == "postgres":
        where = f"PostgreSQL at {PG_HOST}:{PG_PORT}"
        admin_url = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        where = f"MariaDB at {MY_HOST}:{MY_PORT}"
        admin_url = f"mysql+pymysql://{MY_USER}@{MY_HOST}:{MY_PORT}/"
        create, drop = f"CREATE DATABASE `{name}`", f"DROP DATABASE IF EXISTS `{name}`"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(create))
    except Exception as exc:
        server_missing(where, str(exc).splitlines()[0])
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(drop))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway database on the real PostgreSQL server, dropped at the end."""
    with throwaway_database("postgres", "ingest_test") as name:
        yield name


def pg_connector(database: str) -> SqlAlchemyConnector:
    return SqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=SyncDriver.POSTGRESQL_PSYCOPG2,
            host=PG_HOST,
            port=PG_PORT,
            username=PG_USER,
            database=database,
        )
    )


def sqlite_connector(path: Path) -> SqlAlchemyConnector:
    return SqlAlchemyConnector(
        connection_info=ConnectionComponents(driver=SyncDriver.SQLITE_PYSQLITE, database=str(path))
    )


def _empty_tables(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            if table.name != "ingest_meta":
                conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh ledger on SQLite and on the real PostgreSQL server."""
    if request.param == "sqlite":
        ledger = Ledger(database=sqlite_connector(tmp_path / "ledger.db"))
    else:
        ledger = Ledger(database=pg_connector(request.getfixturevalue("pg_database")))
        _empty_tables(ledger)
    yield ledger
    ledger.dispose()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(database=sqlite_connector(tmp_path / "ledger.db"))
    yield ledger
    ledger.dispose()


@pytest.fixture
def queue(tmp_path: Path) -> IngestionQueue:
    return IngestionQueue(landing_dir=str(tmp_path / "landing"), fsync=False)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def save_block(prefect_api):
    """Save a block under a unique name on the test API and return the name."""

    def _save(block, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        block.save(name, overwrite=True)
        return name

    return _save
