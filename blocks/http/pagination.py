"""Pagination strategies for the REST source: each one job.

A paginator is asked `first()` for the first page's extra query params, then after each
page `next(response, body, records)` for the next request: `("params", {...})` to repeat
the same URL with other params, `("url", "https://...")` to follow a link, or None when
the last page has been received. `finish()` is called once after the last page.

What ends a run, per style (the README's REST section says the same):
- offset / page: an empty page, or, with `total_path`, as many records as the response's
  total. A short page is NOT the end: a server may cap the page size below `page_size`.
  The next offset advances by the records actually received.
- cursor / link_header / next_url: a page without a next cursor / link.
- every style: with `total_path`, received != total at the end, an empty page before the
  total, or more records than the total raise `PaginationError`; a cursor or next URL that
  was already followed, or an offset/page page identical to the one before, raises too
  (the server is looping); so does running into `max_pages` (in `RestApiSource`).
A new style is one class.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import httpx

from blocks.core.errors import IngestError
from blocks.http.records import json_path

NextPage = tuple[Literal["params", "url"], Any] | None


class PaginationError(IngestError):
    """The pages a server sent contradict each other or its announced total: the run's
    records would be incomplete or duplicated, so nothing is landed.

    Retryable by default (records that changed while paging may add up next time); raised
    with `retryable=False` where asking again gives the same answer (a looping server, a
    missing total, a foreign next URL, `max_pages`)."""


class _Pager:
    """Counts what was received and checks it against the total the server announces."""

    def __init__(self, total_path: str | None = None) -> None:
        self.total_path = total_path
        self.total: int | None = None
        self.received = 0
        self.pages = 0

    def _observe(self, body: Any, records: list[Any]) -> None:
        self.pages += 1
        self.received += len(records)
        if self.total_path:
            value = json_path(body, self.total_path)
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PaginationError(
                    f"page {self.pages}: total_path {self.total_path!r} is not a record "
                    f"count in the response (got {type(value).__name__})",
                    retryable=False,
                )
            self.total = value
        if self.total is not None and self.received > self.total:
            raise PaginationError(
                f"page {self.pages}: received {self.received} records, more than the "
                f"total of {self.total} the response gives"
            )

    def _total_reached(self) -> bool:
        return self.total is not None and self.received >= self.total

    def _short_of_total(self, why: str) -> None:
        if self.total is not None and self.received < self.total:
            raise PaginationError(
                f"{why} after {self.received} of the {self.total} records the response "
                f"announces (page {self.pages})"
            )

    def finish(self) -> None:
        """Called after the last page: the records received must match the total."""
        self._short_of_total("pagination ended")


class NoPagination(_Pager):
    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, records: list[Any]) -> NextPage:
        self._observe(body, records)
        return None


def _fingerprint(response: httpx.Response) -> str:
    # the raw bytes: hashing them costs far less than re-serialising the records
    return hashlib.sha256(response.content).hexdigest()


class _NumberedPager(_Pager):
    """Shared end rule of offset and page numbers: an empty page or the total."""

    def __init__(self, total_path: str | None, param_hint: str) -> None:
        super().__init__(total_path)
        self._param_hint = param_hint
        self._last_page: str | None = None

    def _more(self, response: httpx.Response, body: Any, records: list[Any]) -> bool:
        self._observe(body, records)
        if not records:
            self._short_of_total("an empty page came")
            return False
        # A server that ignores the offset/page param sends the same page for ever. (Two
        # records at least: one repeated record can be a genuine duplicate row.)
        mark = _fingerprint(response) if len(records) > 1 else None
        if mark is not None and mark == self._last_page:
            raise PaginationError(
                f"page {self.pages} is the same as page {self.pages - 1}: does the server "
                f"honour the query param {self._param_hint!r}?",
                retryable=False,
            )
        self._last_page = mark
        return not self._total_reached()


class OffsetPagination(_NumberedPager):
    def __init__(
        self, offset_param: str, limit_param: str, page_size: int, total_path: str | None = None
    ) -> None:
        super().__init__(total_path, offset_param)
        self.offset_param, self.limit_param, self.size = offset_param, limit_param, page_size
        self.offset = 0

    def first(self) -> dict[str, Any]:
        return {self.offset_param: 0, self.limit_param: self.size}

    def next(self, response: httpx.Response, body: Any, records: list[Any]) -> NextPage:
        if not self._more(response, body, records):
            return None
        # by what arrived, not by page_size: a server may cap the limit
        self.offset += len(records)
        return "params", {self.offset_param: self.offset, self.limit_param: self.size}


class PageNumberPagination(_NumberedPager):
    def __init__(
        self,
        page_param: str,
        size_param: str | None,
        page_size: int,
        first_page: int,
        total_path: str | None = None,
    ) -> None:
        super().__init__(total_path, page_param)
        self.page_param, self.size_param, self.size = page_param, size_param, page_size
        self.page = first_page

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {self.page_param: self.page}
        if self.size_param:
            params[self.size_param] = self.size
        return params

    def first(self) -> dict[str, Any]:
        return self._params()

    def next(self, response: httpx.Response, body: Any, records: list[Any]) -> NextPage:
        if not self._more(response, body, records):
            return None
        self.page += 1
        return "params", self._params()


class CursorPagination(_Pager):
    """Cursor read from the body at a JSON path, sent back as a query param."""

    def __init__(self, cursor_path: str, cursor_param: str, total_path: str | None = None):
        super().__init__(total_path)
        self.path, self.param = cursor_path, cursor_param
        self._seen: set[str] = set()

    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, records: list[Any]) -> NextPage:
        self._observe(body, records)
        cursor = json_path(body, self.path)
        if cursor in (None, "") or self._total_reached():
            return None
        key = json.dumps(cursor, sort_keys=True, default=str)
        if key in self._seen:  # following it again would loop for ever
            raise PaginationError(
                f"page {self.pages}: the server sent a cursor it had already sent",
                retryable=False,
            )
        self._seen.add(key)
        return "params", {self.param: cursor}


class _UrlPager(_Pager):
    def __init__(self, total_path: str | None = None) -> None:
        super().__init__(total_path)
        self._seen: set[str] = set()

    def _follow(self, response: httpx.Response, nxt: Any) -> NextPage:
        if not nxt or self._total_reached():
            return None
        url = str(response.url.join(str(nxt)))
        if url in self._seen or url == str(response.url):
            raise PaginationError(
                f"page {self.pages}: the next-page URL was already followed (server loop)",
                retryable=False,
            )
        self._seen.add(url)
        return "url", url


class LinkHeaderPagination(_UrlPager):
    """RFC 8288 `Link: <url>; rel="next"` (GitHub style)."""

    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, records: list[Any]) -> NextPage:
        self._observe(body, records)
        return self._follow(response, response.links.get("next", {}).get("url"))


class NextUrlPagination(_UrlPager):
    """Full next-page URL read from the body at a JSON path (`@odata.nextLink`, `next`)."""

    def __init__(self, next_url_path: str, total_path: str | None = None) -> None:
        super().__init__(total_path)
        self.path = next_url_path

    def first(self) -> dict[str, Any]:
        return {}

    def next(self, response: httpx.Response, body: Any, records: list[Any]) -> NextPage:
        self._observe(body, records)
        return self._follow(response, json_path(body, self.path))
