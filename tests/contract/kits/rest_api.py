"""Contract kit: REST API (tests/http_server.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from blocks.core.source import SourceBlock
from tests.contract.kits.base import SourceKit, register, uid


@register
class RestKit(SourceKit):
    name = "rest"
    kind = "rows"
    columns = ("id", "name")
    no_unsafe_names = "the block names its one file per run itself (output_name)"

    def start(self) -> None:
        from tests.http_server import ApiServer, ApiState

        self.api = ApiServer(ApiState(n=0)).__enter__()

    def stop(self) -> None:
        self.api.__exit__(None, None, None)

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import RestApiSource
        from tests.http_server import SECRET

        fields = dict(
            source_id=self.source_id,
            base_url=self.api.url,
            path="/auth/bearer",
            auth="bearer",
            token=SECRET,
            records_path="data",
            backoff_seconds=0.01,
            retries=0,
            retry_delay_seconds=0,
        )
        return RestApiSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        from tests.http_server import record

        first = self.api.state.n
        self.api.state.n += n
        return {i: record(i)["name"] for i in range(first, first + n)}

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(output_name="x_{date:%Y"), "RestApiSource.output_name"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-token-{uid()}"
        return self.block(token=secret), secret

    def requests_seen(self) -> int:
        return sum(self.api.state.hits.values())

    def server_port(self) -> int | None:
        return urlsplit(self.api.url).port

    def good_secret(self) -> str:
        from tests.http_server import SECRET

        return SECRET
