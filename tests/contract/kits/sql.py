"""Contract kit: SQL: PostgreSQL and MariaDB (the local servers)."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import create_engine, text

from blocks.core.source import SourceBlock
from tests.contract.kits.base import SourceKit, register, uid


class _SqlKit(SourceKit):
    kind = "rows"
    no_unsafe_names = "the block names its files itself (output_name, checked in preflight)"
    fixture: ClassVar[str]

    def start(self) -> None:
        self.db = self.request.getfixturevalue(self.fixture)
        self.table = f"c_{uid()}"
        self.db.run(f"CREATE TABLE {self.table} (id INT PRIMARY KEY, note VARCHAR(60))")
        self.next_id = 1

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SqlSource

        fields = dict(
            source_id=self.source_id,
            database=self.db.connector(),
            table=self.table,
            primary_key=["id"],
            incremental_mode="none",
            retries=0,
            retry_delay_seconds=0,
        )
        return SqlSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        rows = {i: f"n{i}-{uid()}" for i in range(self.next_id, self.next_id + n)}
        self.next_id += n
        for i, note in rows.items():
            self.db.run(f"INSERT INTO {self.table} (id, note) VALUES (:i, :n)", i=i, n=note)
        self.db.engine.dispose()  # the test's own pool is no connection of the source's
        return rows

    def bad_config(self) -> tuple[SourceBlock, str]:
        # timestamp mode without its column
        return self.block(incremental_mode="timestamp"), "SqlSource.incremental_column"

    def _count_sql(self) -> tuple[str, str]:
        raise NotImplementedError

    def open_connections(self) -> int:
        url, sql = self._count_sql()
        admin = create_engine(url)
        try:
            with admin.connect() as conn:
                return int(conn.execute(text(sql), {"db": self.db.name}).scalar_one())
        finally:
            admin.dispose()


@register
class PostgresKit(_SqlKit):
    name = "sql-postgres"
    fixture = "pg_source"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        """The test server trusts 127.0.0.1 (any password of a known role is taken): an
        unknown role with a password is the credential it refuses."""
        from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

        from tests.conftest import PG_HOST, PG_PORT

        secret = f"wrong-pg-pw-{uid()}"
        connector = SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.POSTGRESQL_PSYCOPG2,
                host=PG_HOST,
                port=PG_PORT,
                username=f"nobody_{uid()}",
                password=secret,
                database=self.db.name,
            )
        )
        return self.block(database=connector), secret

    def _count_sql(self) -> tuple[str, str]:
        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        return (
            f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db",
        )


@register
class MariaDbKit(_SqlKit):
    name = "sql-mariadb"
    fixture = "my_source"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-my-pw-{uid()}"  # root has no password: any password is wrong
        return self.block(database=self.db.connector(password=secret)), secret

    def _count_sql(self) -> tuple[str, str]:
        from tests.conftest import MY_HOST, MY_PORT, MY_USER

        return (
            f"mysql+pymysql://{MY_USER}@{MY_HOST}:{MY_PORT}/",
            "SELECT count(*) FROM information_schema.processlist WHERE db = :db",
        )
