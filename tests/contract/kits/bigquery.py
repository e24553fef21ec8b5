"""Contract kit: BigQuery (the BigQuery emulator of tests/warehouse_servers.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from blocks.core.source import SourceBlock
from tests.contract.kits.base import SourceKit, register, uid


@register
class BigQueryKit(SourceKit):
    name = "bigquery"
    kind = "rows"
    no_unsafe_names = "the block names its files itself (file_name, checked in preflight)"

    def start(self) -> None:
        from google.auth.credentials import AnonymousCredentials
        from prefect_gcp import GcpCredentials

        self.emu = self.request.getfixturevalue("bq_emulator")
        # as the `anonymous_google` fixture (the emulator checks no credentials), but a
        # block with a real service-account key still goes to its (local) token endpoint
        real = GcpCredentials.get_credentials_from_service_account

        def credentials(creds: GcpCredentials) -> Any:
            return real(creds) if creds.service_account_info else AnonymousCredentials()

        self.request.getfixturevalue("monkeypatch").setattr(
            GcpCredentials, "get_credentials_from_service_account", credentials
        )
        self.table = f"{self.emu.dataset()}.items"
        self.emu.run(f"CREATE TABLE {self.table} (id INT64, note STRING)")
        self.next_id = 1

    def block(self, **overrides: Any) -> SourceBlock:
        from prefect_gcp import GcpCredentials
        from prefect_gcp.bigquery import BigQueryWarehouse

        from blocks import BigQueryQuerySource

        fields = dict(
            source_id=self.source_id,
            bigquery=BigQueryWarehouse(gcp_credentials=GcpCredentials(project=self.emu.project)),
            api_endpoint=self.emu.endpoint,
            query=f"SELECT id, note FROM {self.table} ORDER BY id",
            retries=0,
            retry_delay_seconds=0,
        )
        return BigQueryQuerySource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        rows = {i: f"n{i}-{uid()}" for i in range(self.next_id, self.next_id + n)}
        self.next_id += n
        values = ", ".join(f"({i}, '{note}')" for i, note in rows.items())
        self.emu.run(f"INSERT INTO {self.table} (id, note) VALUES {values}")
        return rows

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(incremental_column="bad col"), "BigQueryQuerySource.incremental_column"

    def server_port(self) -> int | None:
        return urlsplit(self.emu.endpoint).port

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        """A real service-account key whose (local) token endpoint refuses it, as Google
        does for a revoked key; the secret is a line of the private key."""
        from prefect_gcp import GcpCredentials
        from prefect_gcp.bigquery import BigQueryWarehouse

        from tests.warehouse_servers import service_account_info

        token_uri = self.request.getfixturevalue("refusing_token_server")
        info = service_account_info(token_uri)
        creds = GcpCredentials(service_account_info=info, project=self.emu.project)
        secret = info["private_key"].splitlines()[1]
        return self.block(bigquery=BigQueryWarehouse(gcp_credentials=creds)), secret
