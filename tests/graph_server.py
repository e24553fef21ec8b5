"""A Graph-like API over HTTPS on 127.0.0.1 (stdlib http.server + ssl, self-signed cert).

Serves what msal and the SharePoint source really call: the OpenID configuration and the
v2.0 token endpoint of a tenant, site / drive lookup, folder children paged with
`@odata.nextLink`, and `/content` answered with a 302 to the download URL (as Graph does).
msal refuses http authorities, so HTTPS with a test CA is the honest set-up: msal gets a
`requests.Session` with `verify=<cert>` and `trust_env=False` (no mock anywhere).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

TENANT = "contoso-tenant"
CLIENT_ID = "app-123"
CLIENT_SECRET = "graph-secret-never-logged"


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class GraphState:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.page_size = 2
        self.tokens_issued = 0
        self.hits: Counter[str] = Counter()
        self.fail_plan: dict[str, list[int]] = {}  # item name -> statuses for /content
        self.retry_after = "0"
        self.loop_next_link = False  # a broken server: every page links to the first again
        self.lock = threading.Lock()


def _drive_item(i: int, name: str, data: bytes) -> dict:
    """The driveItem of a file, as a folder listing and a path lookup return it."""
    return {
        "id": f"item-{i}",
        "name": name,
        "size": len(data),
        "eTag": f'"{hashlib.md5(data).hexdigest()}"',
        "lastModifiedDateTime": "2026-01-15T08:00:00Z",
        "file": {"mimeType": "text/csv", "hashes": {}},
    }


def _handler(state: GraphState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        @property
        def base(self) -> str:
            return f"https://{self.headers['Host']}"

        def _send(self, status: int, body: bytes, ctype="application/json", extra=None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj, status=200, extra=None) -> None:
            self._send(status, json.dumps(obj).encode(), extra=extra)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            with state.lock:
                state.hits[f"POST {path}"] += 1  # token requests, counted like GETs
            if path != f"/{TENANT}/oauth2/v2.0/token":
                return self._json({"error": "not_found"}, 404)
            if form.get("client_id") != [CLIENT_ID] or form.get("client_secret") != [CLIENT_SECRET]:
                return self._json(
                    {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
                    401,
                )
            with state.lock:
                state.tokens_issued += 1
                n = state.tokens_issued
            self._json(
                {"token_type": "Bearer", "expires_in": 3600, "access_token": f"graph-tok-{n}"}
            )

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            path, q = unquote(parts.path), parse_qs(parts.query)
            with state.lock:
                state.hits[path] += 1
            if path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
                t = f"{self.base}/{TENANT}"
                return self._json(
                    {
                        "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{t}/oauth2/v2.0/token",
                        "issuer": f"{t}/v2.0",
                    }
                )
            if path.startswith("/download/"):  # pre-authenticated URL: no token needed
                name = path.removeprefix("/download/")
                return self._send(200, state.files[name], "application/octet-stream")
            if not self.headers.get("Authorization", "").startswith("Bearer graph-tok-"):
                return self._json({"error": {"code": "InvalidAuthenticationToken"}}, 401)
            if path == "/v1.0/sites/contoso.sharepoint.com:/sites/finance":
                return self._json({"id": "site-1"})
            if path == "/v1.0/sites/site-1/drives":
                return self._json({"value": [{"id": "drive-1", "name": "Documents"}]})
            if path == "/v1.0/sites/site-1/drive":
                return self._json({"id": "drive-1", "name": "Documents"})
            if path == "/v1.0/drives/drive-1/root:/In/Daily:/children":
                items = [{"id": "folder-x", "name": "sub", "folder": {"childCount": 0}}]
                for i, (name, data) in enumerate(sorted(state.files.items())):
                    items.append(_drive_item(i, name, data))
                start = int(q.get("$skiptoken", ["0"])[0])
                if state.loop_next_link:
                    body = {"value": items[: state.page_size]}
                    body["@odata.nextLink"] = f"{self.base}{parts.path}?$skiptoken=0"
                    return self._json(body)
                body: dict = {"value": items[start : start + state.page_size]}
                if start + state.page_size < len(items):
                    body["@odata.nextLink"] = (
                        f"{self.base}{parts.path}?$skiptoken={start + state.page_size}"
                    )
                return self._json(body)
            named = path.removeprefix("/v1.0/drives/drive-1/root:/In/Daily/").rstrip(":")
            if named != path.rstrip(":") and named in state.files:  # an item by its path
                i = sorted(state.files).index(named)
                return self._json(_drive_item(i, named, state.files[named]))
            if path.startswith("/v1.0/drives/drive-1/items/") and path.endswith("/content"):
                idx = int(path.split("/")[-2].removeprefix("item-"))
                name = sorted(state.files)[idx]
                with state.lock:
                    plan = state.fail_plan.get(name)
                    status = plan.pop(0) if plan else None
                if status:
                    return self._send(
                        status, b'{"error":{"code":"TooManyRequests"}}',
                        extra={"Retry-After": state.retry_after},
                    )  # fmt: skip
                return self._send(302, b"", extra={"Location": f"{self.base}/download/{name}"})
            self._json({"error": {"code": "itemNotFound"}}, 404)

    return Handler


class GraphServer:
    def __init__(self, folder: Path) -> None:
        self.cert, key = make_cert(folder)
        self.state = GraphState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> GraphServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
