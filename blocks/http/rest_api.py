"""REST API source: pull records page by page into one JSONL/CSV file per run.

Auth and pagination are small strategy classes (`blocks/http/auth.py`,
`blocks/http/pagination.py`); retries and throttling are in `blocks/http/transport.py`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, Literal

import httpx
from pydantic import Field, SecretStr

from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError, IngestError, PermanentError, UnsafeNameError
from blocks.core.naming import safe_relative_name
from blocks.core.source import Candidate, DiscoverContext, SkipItem, SourceBlock, write_stream
from blocks.http.auth import (
    ApiKeyHeaderAuth,
    ApiKeyQueryAuth,
    BasicAuth,
    BearerAuth,
    NoAuth,
    OAuth2ClientCredentials,
)
from blocks.http.pagination import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    NoPagination,
    OffsetPagination,
    PageNumberPagination,
    PaginationError,
)
from blocks.http.records import iter_jsonl, parse_records
from blocks.http.transport import (
    HttpGiveUp,
    RateLimiter,
    RetryPolicy,
    check_verify_tls,
    new_client,
    safe_url,
    send_with_retries,
)

_CHUNK = 1024 * 1024
WATERMARK_KEY = "watermark"


class RestApiSource(SourceBlock):
    """REST API (or plain HTTP pull): one landed file per run.

    mode 'records': requests pages (pagination strategy), extracts the records of each
    page (JSON at `records_path`, JSON lines, CSV, XML) and streams them into one JSONL or
    CSV file, page by page. mode 'raw': stores the single response body as it is.
    With `incremental_param`, the stored watermark is sent as that query param and the
    largest `watermark_field` seen is saved with the ledger row of the run's file.
    An unchanged payload has the same sha256 and is not landed twice.
    """

    _block_type_name = "REST API Source"
    _block_type_slug = "rest-api-source"
    _description = (
        "Ingest records from a REST API (auth, pagination, retries) or a plain HTTP pull."
    )

    base_url: str = Field(..., description="Scheme and host, e.g. https://api.example.com/v1")
    path: str = Field(
        default="",
        description="Path under base_url, e.g. /orders or /search?q=python (its query is kept "
        "and sent with every request, next-page URLs included).",
    )
    method: Literal["GET", "POST"] = Field(default="GET", description="HTTP method.")
    body: dict[str, Any] | None = Field(
        default=None, description='JSON body for POST, e.g. {"status": "open", "limit": 100}.'
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description='Extra request headers, e.g. {"Accept": "application/json"}.',
    )
    query_params: dict[str, str] = Field(
        default_factory=dict,
        description='Query parameters, sent with every request, e.g. {"status": "open"} (a '
        "key may not also be in the query of base_url/path or be one the pagination, "
        "incremental or auth settings send).",
    )
    mode: Literal["records", "raw"] = Field(
        default="records", description="'records': paged records; 'raw': one response as is."
    )
    auth: Literal["none", "bearer", "api_key_header", "api_key_query", "basic", "oauth2"] = Field(
        default="none", description="Authentication style."
    )
    token: SecretStr | None = Field(default=None, description="Bearer token or API key.")
    api_key_name: str = Field(
        default="X-API-Key", description="Header or query param carrying the API key."
    )
    username: str | None = Field(default=None, description="Basic auth user.")
    password: SecretStr | None = Field(default=None, description="Basic auth password.")
    oauth_token_url: str | None = Field(default=None, description="OAuth2 token endpoint.")
    oauth_client_id: str | None = Field(default=None, description="OAuth2 client id.")
    oauth_client_secret: SecretStr | None = Field(default=None, description="OAuth2 secret.")
    oauth_scope: str | None = Field(default=None, description="OAuth2 scope (optional).")
    pagination: Literal["none", "offset", "page", "cursor", "link_header", "next_url"] = Field(
        default="none", description="Pagination style."
    )
    page_size: int = Field(default=100, ge=1, description="Records per page (offset/page).")
    offset_param: str = Field(default="offset", description="Offset query param.")
    limit_param: str = Field(default="limit", description="Limit / page size query param.")
    page_param: str = Field(default="page", description="Page number query param.")
    first_page: int = Field(default=1, ge=0, description="Number of the first page.")
    cursor_path: str = Field(default="next_cursor", description="JSON path of the cursor.")
    cursor_param: str = Field(default="cursor", description="Query param carrying the cursor.")
    next_url_path: str = Field(default="next", description="JSON path of the next-page URL.")
    total_path: str | None = Field(
        default=None,
        description="JSON path of the total record count the response gives (e.g. total, "
        "meta.total_count): paging stops there, and a run whose records do not add up fails.",
    )
    records_path: str | None = Field(
        default=None, description="JSON path of the records list (empty: the body)."
    )
    response_format: Literal["json", "jsonl", "csv", "xml"] = Field(
        default="json", description="Format of each response body."
    )
    xml_record_tag: str | None = Field(
        default=None, description="XML element of one record (default: first child's tag)."
    )
    output_format: Literal["jsonl", "csv"] = Field(default="jsonl", description="Landed file.")
    output_name: str = Field(
        default="records_{date:%Y%m%d}",
        description="Landed file name (date templates; the extension is added).",
    )
    incremental_param: str | None = Field(
        default=None, description="Query param given the stored watermark, e.g. updated_since."
    )
    watermark_field: str | None = Field(
        default=None, description="Record field whose largest value becomes the watermark."
    )
    initial_watermark: str | None = Field(
        default=None, description="Watermark of the first run (empty: param not sent)."
    )
    timeout_seconds: float = Field(default=30, gt=0, description="Per-request timeout.")
    max_pages: int = Field(
        default=10_000, ge=1, description="Fail (land nothing) if more pages than this remain."
    )
    rate_limit_per_second: float | None = Field(
        default=None, gt=0, description="At most this many requests per second."
    )
    http_tries: int = Field(default=5, ge=1, le=50, description="Tries per request.")
    backoff_seconds: float = Field(default=1.0, ge=0, description="Base of exponential backoff.")
    max_retry_after_seconds: float = Field(
        default=300, ge=0, description="Give up if a server asks to wait longer than this."
    )
    verify_tls: bool | str = Field(
        default=True, description="TLS verification: true, false, or a CA bundle path."
    )

    # ------------------------------------------------------------------ config
    def preflight(self) -> None:
        where = "RestApiSource"
        url = httpx.URL(self.base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"{where}.base_url", "must be an http(s) URL with a host")
        need = {
            "bearer": ["token"],
            "api_key_header": ["token", "api_key_name"],
            "api_key_query": ["token", "api_key_name"],
            "basic": ["username", "password"],
            "oauth2": ["oauth_token_url", "oauth_client_id", "oauth_client_secret"],
        }.get(self.auth, [])
        for name in need:
            if not getattr(self, name):
                raise ConfigError(f"{where}.{name}", f"required when auth is '{self.auth}'")
        if self.method == "GET" and self.body is not None:
            raise ConfigError(f"{where}.body", "a body needs method 'POST'")
        if self.incremental_param and not self.watermark_field:
            raise ConfigError(f"{where}.watermark_field", "required with incremental_param")
        if self.mode == "raw" and self.pagination != "none":
            raise ConfigError(f"{where}.pagination", "raw mode stores one response: use 'none'")
        try:
            rendered = render_date_template(self.output_name, self.today())
        except ValueError as exc:
            raise ConfigError(f"{where}.output_name", str(exc)) from None
        try:
            safe_relative_name(rendered)
        except UnsafeNameError as exc:
            raise ConfigError(f"{where}.output_name", str(exc)) from None
        check_verify_tls(self.verify_tls, f"{where}.verify_tls")
        if self.total_path and self.response_format != "json":
            raise ConfigError(f"{where}.total_path", "needs response_format 'json'")
        self._check_query()

    def _query_sources(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(field, its query params) in the order they are sent: base_url's query, path's
        query, query_params."""
        base = httpx.URL(self.base_url)
        path = httpx.URL(self.path) if self.path else None
        return [
            ("base_url", base.params.multi_items()),
            ("path", path.params.multi_items() if path is not None else []),
            ("query_params", list(self.query_params.items())),
        ]

    def _reserved_params(self) -> dict[str, str]:
        """Query params the source sets itself -> the field that names them."""
        reserved: dict[str, str] = {}
        if self.pagination == "offset":
            reserved = {self.offset_param: "offset_param", self.limit_param: "limit_param"}
        elif self.pagination == "page":
            reserved = {self.page_param: "page_param", self.limit_param: "limit_param"}
        elif self.pagination == "cursor":
            reserved = {self.cursor_param: "cursor_param"}
        if self.incremental_param:
            reserved[self.incremental_param] = "incremental_param"
        if self.auth == "api_key_query":
            reserved[self.api_key_name] = "api_key_name"
        return reserved

    def _check_query(self) -> None:
        """A query key given twice would have one value silently win: refuse it."""
        where = "RestApiSource"
        reserved = self._reserved_params()
        given: dict[str, str] = {}
        for field, items in self._query_sources():
            for key in dict.fromkeys(k for k, _ in items):
                if key in given:
                    raise ConfigError(
                        f"{where}.{field}",
                        f"query param {key!r} is also given in {given[key]}: give it once",
                    )
                if key in reserved:
                    raise ConfigError(
                        f"{where}.{field}",
                        f"query param {key!r} is sent by {reserved[key]}: remove it here",
                    )
                given[key] = field

    def _fixed_params(self, watermark: Any = None) -> list[tuple[str, Any]]:
        """Every query param each request carries (the paginator adds its own)."""
        params = [pair for _, items in self._query_sources() for pair in items]
        if self.incremental_param and watermark not in (None, ""):
            params.append((self.incremental_param, watermark))
        return params

    # ------------------------------------------------------------------ strategies
    def _secret(self, value: SecretStr | None) -> str:
        return value.get_secret_value() if value else ""

    def make_auth(self, client: httpx.Client):
        if self.auth == "bearer":
            return BearerAuth(self._secret(self.token))
        if self.auth == "api_key_header":
            return ApiKeyHeaderAuth(self.api_key_name, self._secret(self.token))
        if self.auth == "api_key_query":
            return ApiKeyQueryAuth(self.api_key_name, self._secret(self.token))
        if self.auth == "basic":
            return BasicAuth(self.username or "", self._secret(self.password))
        if self.auth == "oauth2":
            return OAuth2ClientCredentials(
                self.oauth_token_url or "",
                self.oauth_client_id or "",
                self._secret(self.oauth_client_secret),
                self.oauth_scope,
                post=client.post,
            )
        return NoAuth()

    def make_paginator(self):
        total = self.total_path or None
        if self.pagination == "offset":
            return OffsetPagination(self.offset_param, self.limit_param, self.page_size, total)
        if self.pagination == "page":
            return PageNumberPagination(
                self.page_param, self.limit_param, self.page_size, self.first_page, total
            )
        if self.pagination == "cursor":
            return CursorPagination(self.cursor_path, self.cursor_param, total)
        if self.pagination == "link_header":
            return LinkHeaderPagination(total)
        if self.pagination == "next_url":
            return NextUrlPagination(self.next_url_path, total)
        return NoPagination(total)

    def make_client(self) -> httpx.Client:
        return new_client(self.timeout_seconds, self.verify_tls)

    # ------------------------------------------------------------------ pipeline hooks
    def discover(self, ctx: DiscoverContext) -> Iterator[Candidate]:
        ext = "bin" if self.mode == "raw" else self.output_format
        name = f"{render_date_template(self.output_name, ctx.partition_date)}.{ext}"
        watermark = ctx.get_state(WATERMARK_KEY, self.initial_watermark)
        yield Candidate(name=name, ref={"watermark": watermark})

    def content_dedupe(self, candidate: Candidate) -> bool:
        """An incremental records pull (a window past the watermark) is its own delivery,
        even with the bytes of an earlier one; a snapshot (raw, or records without
        `incremental_param`) is dropped when its bytes were landed before, as a SQL
        `none`-mode snapshot is."""
        return self.mode != "records" or not self.incremental_param

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        watermark = (candidate.ref or {}).get("watermark")
        with self.make_client() as client:
            if self.mode == "raw":
                self._pull_raw(client, out)
                return None
            count, newest = self._pull_records(client, out, watermark)
        if self.incremental_param:
            state = {WATERMARK_KEY: newest if newest is not None else watermark}
            if count == 0:
                raise SkipItem("no new records", state=state)
            return state
        return None

    def test_connection(self) -> dict[str, Any]:
        """Preflight, then one real request: the first page, one try, no retries (raw mode:
        the status only, the body is not read). Raises IngestError with the method, the URL
        without its query and the status or network error; never a secret."""
        self.preflight()
        pager = self.make_paginator()
        params = [*self._fixed_params(self.initial_watermark), *pager.first().items()]
        policy = RetryPolicy(tries=1, max_retry_after_seconds=0)
        url = safe_url(self._first_url())
        records: int | None = None
        try:
            with self.make_client() as client:
                build = self._builder(client, self.make_auth(client), self._first_url(), params)
                response = send_with_retries(client, build, policy, stream=True)
                try:
                    status = response.status_code
                    if self.mode == "records":
                        body = response.read()
                        records = len(
                            parse_records(
                                body, self.response_format, self.records_path, self.xml_record_tag
                            )[1]
                        )
                finally:
                    response.close()
        except IngestError as exc:
            raise IngestError(
                f"RestApiSource {self.source_id}: connection test failed: {exc}"
            ) from None
        return {
            "ok": True,
            "source_id": self.source_id,
            "url": url,
            "status": status,
            "records_on_first_page": records,
        }

    # ------------------------------------------------------------------ requests
    def _policy(self) -> RetryPolicy:
        return RetryPolicy(
            tries=self.http_tries,
            backoff_seconds=self.backoff_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
        )

    def _builder(self, client: httpx.Client, auth, url: str, params: list[tuple[str, Any]]):
        """A request factory for `url` plus `params`. Keys already in the URL's own query
        win (a next-page URL the server built); the others are added. Never `params=` to
        httpx: it would replace the URL's query instead of adding to it."""
        headers = dict(self.headers)
        target = httpx.URL(url)
        present = set(target.params.keys())
        added = [(k, v) for k, v in params if k not in present]
        if added:
            target = target.copy_with(params=[*target.params.multi_items(), *added])

        def build() -> httpx.Request:
            request = client.build_request(
                self.method,
                target,
                headers=headers,
                json=self.body if self.method == "POST" else None,
            )
            auth.apply(request)
            return request

        return build

    def _first_url(self) -> str:
        """base_url + path without their queries (`_fixed_params` carries those)."""
        base = str(httpx.URL(self.base_url).copy_with(query=None, fragment=None))
        path = httpx.URL(self.path).path if self.path else ""
        return base.rstrip("/") + ("/" + path.lstrip("/") if path else "")

    def _pull_raw(self, client: httpx.Client, out: BinaryIO) -> None:
        auth = self.make_auth(client)
        build = self._builder(client, auth, self._first_url(), self._fixed_params())
        response = send_with_retries(client, build, self._policy(), stream=True)
        write_stream(response.iter_bytes(_CHUNK), out, response.close)

    def _pull_records(
        self, client: httpx.Client, out: BinaryIO, watermark: Any, auth: Any = None
    ) -> tuple[int, Any]:
        auth = auth or self.make_auth(client)
        pager = self.make_paginator()
        limiter = RateLimiter(self.rate_limit_per_second)
        fixed = self._fixed_params(watermark)
        first_url = url = self._first_url()
        params = [*fixed, *pager.first().items()]
        writer = _RecordWriter(out, self.output_format)
        newest: Any = None
        for page in range(1, self.max_pages + 1):
            build = self._builder(client, auth, url, params)
            try:
                response = send_with_retries(client, build, self._policy(), limiter)
            except HttpGiveUp as exc:
                # a cached OAuth2 token can be revoked before it expires: one fresh token
                if exc.status != 401 or not hasattr(auth, "invalidate"):
                    raise
                auth.invalidate()
                response = send_with_retries(client, build, self._policy(), limiter)
            try:
                body, records = parse_records(
                    response.content, self.response_format, self.records_path, self.xml_record_tag
                )
            except IngestError as exc:
                raise IngestError(f"page {page} of {self._first_url()}: {exc}") from None
            writer.write(records)
            if self.watermark_field:
                for rec in records:
                    value = rec.get(self.watermark_field) if isinstance(rec, dict) else None
                    if value is not None and (newest is None or value > newest):
                        newest = value
            step = pager.next(response, body, records)
            if step is None:
                break
            kind, value = step
            if kind == "params":
                url, params = first_url, [*fixed, *value.items()]
            else:  # a next URL keeps its own query; configured params it lacks are added
                nxt, home = httpx.URL(value), httpx.URL(first_url)
                if (nxt.scheme, nxt.host, nxt.port) != (home.scheme, home.host, home.port):
                    # the auth, headers and query params would go to a host nobody configured
                    raise PaginationError(
                        f"page {page}: the next-page URL goes to {nxt.scheme}://"
                        f"{nxt.netloc.decode()}, not {home.scheme}://{home.netloc.decode()}: "
                        "refused (credentials and params would follow it)",
                        retryable=False,
                    )
                url, params = value, fixed
        else:
            # landing the pages so far would silently drop the rest
            raise PaginationError(
                f"more pages remain after max_pages={self.max_pages} "
                f"({writer.count} records so far): raise max_pages; nothing was landed",
                retryable=False,
            )
        pager.finish()
        return writer.count, newest


class _RecordWriter:
    """Writes records as JSONL or CSV (header from the first record) into `out`."""

    def __init__(self, out: BinaryIO, fmt: str) -> None:
        self.out, self.fmt, self.count = out, fmt, 0
        self._fields: list[str] | None = None

    def write(self, records: list[Any]) -> None:
        self.count += len(records)
        if self.fmt == "jsonl":
            self.out.write(b"".join(iter_jsonl(records)))
            return
        buf = io.StringIO()
        if self._fields is None and records:
            self._fields = list(records[0].keys())
            csv.writer(buf).writerow(self._fields)
        if self._fields is not None:
            # extrasaction="raise": a field the first record lacked has no column, and
            # dropping it would narrow the data silently
            w = csv.DictWriter(buf, self._fields, extrasaction="raise")
            first = self.count - len(records) + 1
            for number, rec in enumerate(records, first):
                extra = [k for k in rec if k not in self._fields]
                if extra:
                    raise PermanentError(
                        f"record {number} has "
                        f"field(s) {', '.join(map(repr, extra[:5]))} that the first record "
                        "lacked: CSV columns come from the first record, so they would be "
                        "dropped; use output_format='jsonl'. Nothing was landed"
                    )
                w.writerow(
                    {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in rec.items()}
                )
        self.out.write(buf.getvalue().encode())
