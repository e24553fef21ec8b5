"""Throwaway source databases on the real PostgreSQL and MariaDB servers (127.0.0.1).

Each fixture creates its own database and drops it at the end. A server that is down
skips (locally) or fails (INGEST_REQUIRE_SERVERS=1): `tests.conftest.throwaway_database`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from sqlalchemy import Engine, create_engine, text

from tests.conftest import (
    MY_HOST,
    MY_PORT,
    MY_USER,
    PG_HOST,
    PG_PORT,
    PG_USER,
    throwaway_database,
)


@dataclass
class SourceDb:
    """One throwaway database: a SQLAlchemy engine for the test and a connector factory."""

    kind: str
    name: str
    engine: Engine

    def connector(self, password: str | None = None) -> SqlAlchemyConnector:
        if self.kind == "postgres":
            driver, host, port, user = SyncDriver.POSTGRESQL_PSYCOPG2, PG_HOST, PG_PORT, PG_USER
        else:
            driver, host, port, user = SyncDriver.MYSQL_PYMYSQL, MY_HOST, MY_PORT, MY_USER
        return SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=driver,
                host=host,
                port=port,
                username=user,
                password=password,
                database=self.name,
            )
        )

    def run(self, *statements: str, **params) -> None:
        with self.engine.begin() as conn:
            for sql in statements:
                conn.execute(text(sql), params)


@pytest.fixture(scope="module")
def pg_source() -> Iterator[SourceDb]:
    with throwaway_database("postgres", "sqlsrc") as name:
        engine = create_engine(f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
        yield SourceDb("postgres", name, engine)
        engine.dispose()


@pytest.fixture(scope="module")
def my_source() -> Iterator[SourceDb]:
    with throwaway_database("mariadb", "sqlsrc") as name:
        engine = create_engine(f"mysql+pymysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{name}")
        yield SourceDb("mariadb", name, engine)
        engine.dispose()
