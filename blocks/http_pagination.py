"""Pagination strategies for the REST source: each one job.

A paginator is asked `first()` for the first page's extra query params, then after each
page `next(response, body, count)` for the next request: `("params", {...})` to repeat the
same URL with other params, `("url", "https://...")` to follow a link, or None to stop.
A new style is one class.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from blocks.http_records import json_path

NextPage = tuple[Literal["params", "url"], Any] | None


class NoPagination:
    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, count: int) -> NextPage:
        return None


class OffsetPagination:
    def __init__(self, offset_param: str, limit_param: str, page_size: int) -> None:
        self.offset_param, self.limit_param, self.size = offset_param, limit_param, page_size
        self.offset = 0

    def first(self) -> dict[str, Any]:
        return {self.offset_param: 0, self.limit_param: self.size}

    def next(self, response: httpx.Response, body: Any, count: int) -> NextPage:
        if count < self.size:  # a short page is the last one
            return None
        self.offset += count
        return "params", {self.offset_param: self.offset, self.limit_param: self.size}


class PageNumberPagination:
    def __init__(self, page_param: str, size_param: str | None, page_size: int, first_page: int):
        self.page_param, self.size_param, self.size = page_param, size_param, page_size
        self.page = first_page

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {self.page_param: self.page}
        if self.size_param:
            params[self.size_param] = self.size
        return params

    def first(self) -> dict[str, Any]:
        return self._params()

    def next(self, response: httpx.Response, body: Any, count: int) -> NextPage:
        if count == 0 or (self.size_param and count < self.size):
            return None
        self.page += 1
        return "params", self._params()


class CursorPagination:
    """Cursor read from the body at a JSON path, sent back as a query param."""

    def __init__(self, cursor_path: str, cursor_param: str) -> None:
        self.path, self.param = cursor_path, cursor_param

    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, count: int) -> NextPage:
        cursor = json_path(body, self.path)
        if cursor in (None, ""):
            return None
        return "params", {self.param: cursor}


class LinkHeaderPagination:
    """RFC 8288 `Link: <url>; rel="next"` (GitHub style)."""

    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, count: int) -> NextPage:
        nxt = response.links.get("next", {}).get("url")
        return ("url", str(response.url.join(nxt))) if nxt else None


class NextUrlPagination:
    """Full next-page URL read from the body at a JSON path (`@odata.nextLink`, `next`)."""

    def __init__(self, next_url_path: str) -> None:
        self.path = next_url_path

    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, count: int) -> NextPage:
        nxt = json_path(body, self.path)
        return ("url", str(response.url.join(nxt))) if nxt else None
