"""One HTTP request with the retry rules every HTTP source shares.

- 429 and 503: wait `Retry-After` (seconds or HTTP date), capped, else the backoff.
- other 5xx and connection/timeout errors: exponential backoff with full jitter.
- any other status >= 400: fail at once (a 401 will not get better by retrying).
- after `tries` attempts: `HttpGiveUp` naming the URL (without its query, which may hold
  an API key) and the last status or error.
A `RateLimiter` spaces requests to at most N per second.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from blocks.core.errors import ConfigError, IngestError, is_retryable, status_retryable

RETRY_AFTER_STATUSES = frozenset({429, 503})


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


class HttpGiveUp(IngestError):
    """The server kept failing (or refused) after the configured tries.

    Retryable (by the pipeline, later) when it kept failing for a reason that may pass
    (connection errors, 5xx, 429); not when it refused (401, 403, 404, other 4xx)."""

    def __init__(
        self, message: str, status: int | None = None, retryable: bool | None = None
    ) -> None:
        if retryable is None:
            retryable = status is None or status_retryable(status)
        super().__init__(message, retryable=retryable)
        self.status = status


def safe_url(url: httpx.URL | str) -> str:
    """The URL without query string or credentials: safe to log and raise."""
    u = httpx.URL(str(url))
    return str(u.copy_with(query=None, fragment=None, username=None, password=None))


def check_verify_tls(value: bool | str, field: str) -> None:
    """A `verify_tls` that names a CA bundle must be a readable CA file or directory
    (checked without any network I/O); else ConfigError naming `field`."""
    if isinstance(value, bool):
        return
    hint = "use true, false or the path of a CA bundle"
    if not value or not os.path.exists(value):
        raise ConfigError(field, f"CA bundle {value!r} does not exist ({hint})")
    try:
        if os.path.isdir(value):
            ssl.create_default_context(capath=value)
        else:
            ssl.create_default_context(cafile=value)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(field, f"CA bundle {value!r} cannot be loaded: {exc}") from None


def new_client(timeout: float, verify: bool | str) -> httpx.Client:
    """The httpx client every HTTP source uses.

    trust_env=False: the machine's proxy/CA env must not silently change where we connect
    or whom we trust; `verify` (the block's `verify_tls`) says it explicitly. Redirects are
    followed (e.g. Graph answers /content with a 302 to a pre-authenticated URL; httpx
    drops the Authorization header when a redirect leaves the origin).
    """
    return httpx.Client(timeout=timeout, verify=verify, trust_env=False, follow_redirects=True)


class _RedactQueryFilter(logging.Filter):
    """httpx logs every request URL at INFO, query included: an API key sent as a query
    param would reach the logs. Strip queries from URL arguments of httpx's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(safe_url(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


_REDACT = _RedactQueryFilter()
if not any(isinstance(f, _RedactQueryFilter) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_REDACT)


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date. None if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class RateLimiter:
    """At most `per_second` request starts per second (thread-safe; 0/None = unlimited)."""

    def __init__(
        self,
        per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            (self._sleep or _sleep)(start - now)


@dataclass
class RetryPolicy:
    tries: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    max_retry_after_seconds: float = 300.0

    def backoff(self, attempt: int) -> float:
        # full jitter: spreads many clients that failed together
        return random.uniform(0, min(self.max_backoff_seconds, self.backoff_seconds * 2**attempt))


def send_with_retries(
    client: httpx.Client,
    build: Callable[[], httpx.Request],
    policy: RetryPolicy,
    limiter: RateLimiter | None = None,
    *,
    stream: bool = False,
    sleep: Callable[[float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> httpx.Response:
    """Send the request `build()` makes (rebuilt per try, so auth can refresh) until it
    succeeds; return the response (open when `stream=True`: the caller closes it)."""
    last = ""
    for attempt in range(policy.tries):
        if limiter:
            limiter.wait()
        request = build()
        try:
            response = client.send(request, stream=stream)
        except httpx.TransportError as exc:  # connect, read, timeout, protocol
            # the error's own text (e.g. "Connection refused", "certificate verify failed")
            # comes from the socket/TLS layer and carries no URL, so no query-string secret
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            last = f"{type(exc).__name__}" + (f" ({detail})" if detail else "")
            if not is_retryable(exc):  # e.g. a certificate that will not verify next time
                raise HttpGiveUp(
                    f"{request.method} {safe_url(request.url)}: {last} (not retried)",
                    retryable=False,
                ) from None
            wait = policy.backoff(attempt)
        else:
            status = response.status_code
            if status < 400:
                return response
            response.close()
            if status in RETRY_AFTER_STATUSES:
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                if hinted is not None and hinted > policy.max_retry_after_seconds:
                    # not retried in this run either: the pipeline's backoff is shorter than
                    # what the server asked for; the next scheduled run tries again
                    raise HttpGiveUp(
                        f"{request.method} {safe_url(request.url)}: HTTP {status} asks to retry "
                        f"after {hinted:.0f}s, more than max_retry_after_seconds="
                        f"{policy.max_retry_after_seconds:g}",
                        status=status,
                        retryable=False,
                    )
                wait = hinted if hinted is not None else policy.backoff(attempt)
            elif status >= 500:
                wait = policy.backoff(attempt)
            else:
                raise HttpGiveUp(
                    f"{request.method} {safe_url(request.url)}: HTTP {status} "
                    f"{response.reason_phrase} (not retried)",
                    status=status,
                )
            last = f"HTTP {status}"
        if attempt + 1 < policy.tries:
            if log:
                log(f"{safe_url(request.url)}: {last}, retry {attempt + 1} in {wait:.2f}s")
            (sleep or _sleep)(wait)
    raise HttpGiveUp(
        f"{request.method} {safe_url(request.url)}: gave up after {policy.tries} tries, "
        f"last: {last}"
    )
