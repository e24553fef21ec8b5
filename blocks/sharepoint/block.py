"""SharePoint / OneDrive (Microsoft Graph) drive folder source.

Token: msal client credentials (the msal app and its token cache live as long as the
block object, so one run asks for one token). Listing: the folder's children, following
`@odata.nextLink`. Download: the item's `/content` endpoint, streamed. Throttling (429/503
with Retry-After), 5xx and connection errors are retried by `blocks/http/transport.py`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field, PrivateAttr, SecretStr

from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError, CredentialsError, IngestError, PermanentError
from blocks.core.source import (
    Candidate,
    DiscoverContext,
    NamedItem,
    NotTaken,
    write_stream,
)
from blocks.core.unpack import FileSourceBlock
from blocks.http.transport import (
    HttpGiveUp,
    RetryPolicy,
    check_verify_tls,
    new_client,
    send_with_retries,
)

_CHUNK = 1024 * 1024


class SharePointSource(FileSourceBlock):
    """Files in a SharePoint document library (or OneDrive) folder via Microsoft Graph.

    Lists the folder once per run (paged), keeps names matching `file_pattern` (date
    templates such as `AXIS_{date:%Y%m%d}*.csv` use the run's day), dedupes against the
    ledger by exact file name (within `dedupe_window_days` when set) and downloads only new
    files through the content endpoint, streaming.
    """

    _block_type_name = "SharePoint Source"
    _block_type_slug = "sharepoint-source"
    _description = "Ingest files from a SharePoint / OneDrive folder through Microsoft Graph."

    tenant_id: str = Field(..., description="Entra ID (Azure AD) tenant id or domain.")
    client_id: str = Field(..., description="App registration (client) id.")
    client_secret: SecretStr = Field(..., description="App registration client secret.")
    authority_host: str = Field(
        default="https://login.microsoftonline.com",
        description="Identity authority host (national clouds: login.microsoftonline.us, ...).",
    )
    graph_base_url: str = Field(
        default="https://graph.microsoft.com/v1.0", description="Microsoft Graph base URL."
    )
    site: str = Field(
        ...,
        description="Site as 'hostname:/sites/path' (e.g. contoso.sharepoint.com:/sites/fin) "
        "or a Graph site id.",
    )
    drive: str | None = Field(
        default=None, description="Document library name or drive id (empty: the default)."
    )
    folder_path: str = Field(default="", description="Folder inside the drive, e.g. 'In/Daily'.")
    file_pattern: str = Field(
        default="*", description="Glob on file names, with date templates ({date:%Y%m%d})."
    )
    verify_tls: bool | str = Field(
        default=True, description="TLS verification: true, false, or a CA bundle path."
    )
    timeout_seconds: float = Field(default=60, gt=0, description="Per-request timeout.")
    http_tries: int = Field(default=6, ge=1, le=50, description="Tries per request.")
    backoff_seconds: float = Field(default=1.0, ge=0, description="Base of exponential backoff.")

    _msal_app: Any = PrivateAttr(default=None)
    _token_session: Any = PrivateAttr(default=None)  # msal's HTTP session (keep-alive)
    _drive_id: str | None = PrivateAttr(default=None)

    def preflight(self) -> None:
        for name in ("authority_host", "graph_base_url"):
            url = httpx.URL(getattr(self, name))
            if url.scheme != "https" or not url.host:
                raise ConfigError(f"SharePointSource.{name}", "must be an https URL with a host")
        if not self.client_secret.get_secret_value():
            raise ConfigError("SharePointSource.client_secret", "must not be empty")
        try:
            render_date_template(self.file_pattern, self.today())
        except ValueError as exc:
            raise ConfigError("SharePointSource.file_pattern", str(exc)) from None
        check_verify_tls(self.verify_tls, "SharePointSource.verify_tls")

    # ------------------------------------------------------------------ identity
    def _requests_session(self):
        import requests

        session = requests.Session()
        # explicit trust: REQUESTS_CA_BUNDLE/proxies from the environment must not decide
        session.trust_env = False
        session.verify = self.verify_tls
        return session

    def token(self) -> str:
        """An app-only Graph token (msal caches it and refreshes it when it expires)."""
        import msal

        if self._msal_app is None:
            self._token_session = self._requests_session()
            self._msal_app = msal.ConfidentialClientApplication(
                self.client_id,
                authority=f"{self.authority_host.rstrip('/')}/{self.tenant_id}",
                client_credential=self.client_secret.get_secret_value(),
                http_client=self._token_session,
                instance_discovery=False,
            )
        graph = httpx.URL(self.graph_base_url)
        scope = f"{graph.scheme}://{graph.netloc.decode()}/.default"
        result = self._msal_app.acquire_token_for_client(scopes=[scope])
        if "access_token" not in result:
            # error + error_description only: never the request, which holds the secret
            first_line = (result.get("error_description") or "").split("\n")[0]
            error = result.get("error")
            message = f"token request for client {self.client_id} failed: {error}: {first_line}"
            if error in ("invalid_client", "unauthorized_client"):  # wrong secret or id
                raise CredentialsError("SharePointSource.client_secret", message)
            # only the identity platform's own "try again" answers are worth a retry
            transient = error in ("temporarily_unavailable", "server_error")
            raise IngestError(f"SharePointSource: {message}", retryable=transient)
        return result["access_token"]

    def close(self) -> None:
        """Release the token endpoint's kept-alive connection (msal's requests session);
        the next call starts a new msal app (and token). Was: one connection left open per
        run and per test_connection."""
        session, self._token_session, self._msal_app = self._token_session, None, None
        if session is not None:
            session.close()

    # ------------------------------------------------------------------ Graph calls
    def _client(self) -> httpx.Client:
        return new_client(self.timeout_seconds, self.verify_tls)

    def _send(self, client: httpx.Client, url: str, stream: bool = False) -> httpx.Response:
        def build() -> httpx.Request:
            return client.build_request(
                "GET", url, headers={"Authorization": f"Bearer {self.token()}"}
            )

        policy = RetryPolicy(tries=self.http_tries, backoff_seconds=self.backoff_seconds)
        return send_with_retries(client, build, policy, stream=stream)

    def _graph(self, path: str) -> str:
        return self.graph_base_url.rstrip("/") + path

    def _site_path(self) -> str:
        if ":" in self.site:  # hostname:/sites/path
            host, _, rel = self.site.partition(":")
            return f"/sites/{host}:/{quote(rel.strip('/'))}"
        return f"/sites/{quote(self.site)}"

    def drive_id(self, client: httpx.Client) -> str:
        if self._drive_id:
            return self._drive_id
        site_id = self._send(client, self._graph(self._site_path())).json()["id"]
        if not self.drive:
            drive = self._send(client, self._graph(f"/sites/{site_id}/drive")).json()
        else:
            drives = self._send(client, self._graph(f"/sites/{site_id}/drives")).json()["value"]
            match = [d for d in drives if self.drive in (d.get("id"), d.get("name"))]
            if not match:
                names = ", ".join(sorted(d.get("name", "?") for d in drives))
                raise ConfigError("SharePointSource.drive", f"{self.drive!r} not found ({names})")
            drive = match[0]
        self._drive_id = drive["id"]
        return self._drive_id

    def discover(self, ctx: DiscoverContext) -> Iterator[Candidate]:
        pattern = render_date_template(self.file_pattern, ctx.partition_date)
        with self._client() as client:
            drive = self.drive_id(client)
            folder = self.folder_path.strip("/")
            where = f"/root:/{quote(folder)}:/children" if folder else "/root/children"
            url: str | None = self._graph(f"/drives/{drive}{where}")
            seen: set[str] = set()
            while url:
                if url in seen:  # a looping listing would never end (or end short)
                    raise PermanentError(
                        f"SharePoint listing of {folder or '/'!r}: @odata.nextLink repeats "
                        f"after {len(seen)} page(s); nothing was landed"
                    )
                seen.add(url)
                page = self._send(client, url).json()
                for item in page.get("value", []):
                    if "file" not in item or not fnmatch.fnmatchcase(item["name"], pattern):
                        continue
                    yield _candidate(item, drive)
                url = page.get("@odata.nextLink")

    takes_named_items: ClassVar[bool] = True

    def candidates_for(
        self, items: Sequence[NamedItem], ctx: DiscoverContext
    ) -> Iterator[Candidate | NotTaken]:
        """Get each named file of `folder_path` by path (one Graph call each, no listing)
        when the listing would offer it: a file (not a folder) matching the run day's
        pattern."""
        pattern = render_date_template(self.file_pattern, ctx.partition_date)
        folder = self.folder_path.strip("/")
        with self._client() as client:
            drive = self.drive_id(client)
            for named in items:
                name = named.name
                why = None
                if named.bucket is not None:
                    why = f"names bucket {named.bucket!r}"
                elif "/" in name:
                    why = f"not a file name in folder_path {folder!r} (no sub-folders)"
                elif not fnmatch.fnmatchcase(name, pattern):
                    why = f"does not match the file pattern {pattern!r}"
                if why is not None:
                    yield NotTaken(name, f"{named.where}: {why}")
                    continue
                path = quote(f"{folder}/{name}" if folder else name)
                try:
                    item = self._send(client, self._graph(f"/drives/{drive}/root:/{path}")).json()
                except HttpGiveUp as exc:
                    if exc.status != 404:
                        raise
                    item = None
                if item is None or "file" not in item:
                    yield NotTaken(name, f"{named.where}: no such file in {folder or '/'!r}")
                else:
                    yield _candidate(item, drive)

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        ref = candidate.ref
        with self._client() as client:
            url = self._graph(f"/drives/{ref['drive']}/items/{ref['id']}/content")
            response = self._send(client, url, stream=True)
            write_stream(response.iter_bytes(_CHUNK), out, response.close)
        return None


def _candidate(item: Mapping[str, Any], drive: str) -> Candidate:
    """A Graph driveItem of a file as a candidate (from a listing page or a path lookup)."""
    hashes = item["file"].get("hashes") or {}
    modified = item.get("lastModifiedDateTime")
    return Candidate(
        name=item["name"],  # unchanged: the pipeline checks it is safe
        size=item.get("size"),
        mtime=datetime.fromisoformat(modified.replace("Z", "+00:00")) if modified else None,
        version=item.get("eTag") or item.get("cTag"),
        expected_sha256=(hashes.get("sha256Hash") or "").lower() or None,
        ref={"drive": drive, "id": item["id"]},
    )
