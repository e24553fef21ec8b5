"""Contract kit: Snowflake (the fakesnow server of tests/warehouse_servers.py)."""

from __future__ import annotations

from typing import Any

from blocks.core.source import SourceBlock
from tests.contract.kits.base import SourceKit, register, uid


@register
class SnowflakeKit(SourceKit):
    name = "snowflake"
    kind = "rows"
    columns = ("ID", "NOTE")
    no_unsafe_names = "the block names its files itself (file_name, checked in preflight)"

    def start(self) -> None:
        self.server = self.request.getfixturevalue("fakesnow_server")
        self.table = f"C_{uid().upper()}"
        self.server.run(f"CREATE TABLE {self.table} (ID INT, NOTE VARCHAR)")
        self.next_id = 1

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SnowflakeQuerySource

        fields = dict(
            source_id=self.source_id,
            snowflake=self.server.connector(),
            query=f"SELECT ID, NOTE FROM {self.table} ORDER BY ID",
            retries=0,
            retry_delay_seconds=0,
            **self.server.block_kwargs(),
        )
        return SnowflakeQuerySource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        rows = {i: f"n{i}-{uid()}" for i in range(self.next_id, self.next_id + n)}
        self.next_id += n
        self.server.run(
            f"INSERT INTO {self.table} VALUES (%(id)s, %(note)s)",
            rows=[{"id": i, "note": note} for i, note in rows.items()],
        )
        return rows

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(incremental_column="bad col"), "SnowflakeQuerySource.incremental_column"

    def server_port(self) -> int | None:
        return self.server.port

    def good_secret(self) -> str:
        return self.server.password

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"Wr0ng-sf-{uid()}"
        return self.block(snowflake=self.server.connector(secret)), secret
