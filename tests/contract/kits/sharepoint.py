"""Contract kit: SharePoint (the Graph-like HTTPS server of tests/graph_server.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from blocks.core.source import SourceBlock
from tests.contract.kits.base import KEY_UNSAFE, SourceKit, file_items, register, uid


@register
class SharePointKit(SourceKit):
    name = "sharepoint"

    def start(self) -> None:
        self.graph = self.request.getfixturevalue("contract_graph")
        self.graph.state.files = {}
        self.graph.state.hits.clear()

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SharePointSource
        from tests.graph_server import CLIENT_ID, CLIENT_SECRET, TENANT

        fields = dict(
            source_id=self.source_id,
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            authority_host=self.graph.url,
            graph_base_url=self.graph.url + "/v1.0",
            site="contoso.sharepoint.com:/sites/finance",
            drive="Documents",
            folder_path="/In/Daily/",
            file_pattern="*.csv",
            verify_tls=str(self.graph.cert),
            backoff_seconds=0.01,
            retries=0,
            retry_delay_seconds=0,
        )
        return SharePointSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = file_items(n, uid())
        self.graph.state.files.update(items)
        return items

    def put_unsafe(self) -> list[str]:
        for name in KEY_UNSAFE:
            self.graph.state.files[name] = b"evil\n"
        return list(KEY_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(file_pattern="A_{date:%Y"), "SharePointSource.file_pattern"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-graph-secret-{uid()}"
        return self.block(client_secret=secret), secret

    def requests_seen(self) -> int:
        return sum(self.graph.state.hits.values())

    def server_port(self) -> int | None:
        return urlsplit(self.graph.url).port

    def good_secret(self) -> str:
        from tests.graph_server import CLIENT_SECRET

        return CLIENT_SECRET
