"""Auth strategies for the REST source: each one job, applied to every request.

`auth.apply(request)` adds credentials to one outgoing `httpx.Request`. A new style is one
class with `apply` (and `invalidate` when it caches something a 401 should drop).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

import httpx

from blocks.core.errors import IngestError, status_retryable


class NoAuth:
    def apply(self, request: httpx.Request) -> None:
        return None


class BearerAuth:
    def __init__(self, token: str) -> None:
        self._token = token

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Bearer {self._token}"


class ApiKeyHeaderAuth:
    def __init__(self, header: str, key: str) -> None:
        self._header, self._key = header, key

    def apply(self, request: httpx.Request) -> None:
        request.headers[self._header] = self._key


class ApiKeyQueryAuth:
    def __init__(self, param: str, key: str) -> None:
        self._param, self._key = param, key

    def apply(self, request: httpx.Request) -> None:
        request.url = request.url.copy_merge_params({self._param: self._key})


class BasicAuth:
    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        self._value = "Basic " + base64.b64encode(raw).decode("ascii")

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = self._value


class OAuth2ClientCredentials:
    """Client-credentials grant: one token cached until shortly before it expires."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None,
        post: Callable[..., httpx.Response],
        refresh_margin_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url, self._id, self._secret, self._scope = token_url, client_id, client_secret, scope
        self._post, self._margin, self._clock = post, refresh_margin_seconds, clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.fetches = 0  # how many tokens were requested (observable in tests)

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires - self._margin:
                self._token, lifetime = self._fetch()
                self._expires = self._clock() + lifetime
            return self._token

    def _fetch(self) -> tuple[str, float]:
        data = {"grant_type": "client_credentials"}
        if self._scope:
            data["scope"] = self._scope
        response = self._post(self._url, data=data, auth=(self._id, self._secret))
        self.fetches += 1
        if response.status_code != 200:
            # the body may echo the request; keep only the OAuth error code
            try:
                code = response.json().get("error", "")
            except ValueError:
                code = ""
            raise IngestError(
                f"OAuth2 token request to {httpx.URL(self._url).copy_with(query=None)} failed: "
                f"HTTP {response.status_code} {code}".rstrip(),
                # 400/401 (invalid_client, invalid_grant): wrong credentials, never retried
                retryable=status_retryable(response.status_code),
            )
        body = response.json()
        if "access_token" not in body:
            raise IngestError("OAuth2 token response has no access_token")
        return body["access_token"], float(body.get("expires_in", 3600))

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Bearer {self.token()}"
