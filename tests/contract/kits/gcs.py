"""Contract kit: GCS (storage emulator)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from blocks.core.source import SourceBlock
from tests.contract.kits.base import SourceKit, file_items, register, uid


@register
class GcsKit(SourceKit):
    name = "gcs"

    def start(self) -> None:
        from tests.objstore_servers import gcp_credentials

        self.request.getfixturevalue("gcp_env")
        self.client = gcp_credentials().get_cloud_storage_client()
        self.bucket = f"c-{uid()}"
        self.client.create_bucket(self.bucket)

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import GcsSource
        from tests.objstore_servers import gcp_credentials

        fields = dict(
            source_id=self.source_id,
            gcp_credentials=gcp_credentials(),
            bucket=self.bucket,
            retries=0,
            retry_delay_seconds=0,
        )
        return GcsSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = file_items(n, uid())
        for name, data in items.items():
            self.client.bucket(self.bucket).blob(name).upload_from_string(data)
        return items

    def put_unsafe(self) -> list[str]:
        # the emulator stores objects as files and refuses '..' keys; these it stores
        names = ["a//b.csv", "/abs.csv"]
        for name in names:
            self.client.bucket(self.bucket).blob(name).upload_from_string(b"evil\n")
        return names

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(prefix="in/{date:%Y"), "GcsSource.prefix"

    def server_port(self) -> int | None:
        return urlsplit(self.request.getfixturevalue("gcs_emulator")).port

    def good_secret(self) -> str:
        from tests.objstore_servers import ACCESS_TOKEN

        return ACCESS_TOKEN

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        """The emulator accepts any token: a local endpoint that refuses every request as
        GCS refuses a credential without access stands in (tests/objstore_servers.py);
        the secret is the access token the client sends."""
        from tests.objstore_servers import ACCESS_TOKEN

        endpoint = self.request.getfixturevalue("gcs_rejecting_endpoint")
        self.request.getfixturevalue("monkeypatch").setenv("STORAGE_EMULATOR_HOST", endpoint)
        return self.block(), ACCESS_TOKEN
