"""A small real REST API on 127.0.0.1 (stdlib http.server in a thread) for the tests and
the benchmark: every pagination style, every auth style, 429/503 with Retry-After,
flaky 5xx, CSV/XML/JSONL bodies, an OAuth2 token endpoint.

`/capped/{offset,page,cursor,link,nexturl}` page like real APIs that cap the page size
(`ApiState.cap`), report a total (`report_total`, `total_offset` to lie about it), step
pages by the requested size while capping (`lossy_pages`), or ignore the offset/cursor
(`stuck`). `/needs-q/...` is the same but answers 422 unless every request carries
`q=python`, and its next-page links leave `q` out (as some APIs do)."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SECRET = "s3cr3t-value-never-logged"
N_RECORDS = 25


def record(i: int) -> dict:
    return {
        "id": i,
        "name": f"item-{i}",
        "updated_at": f"2026-01-{1 + i % 28:02d}T00:00:{i % 60:02d}",
    }


class ApiState:
    def __init__(self, n: int = N_RECORDS, page_size: int = 10) -> None:
        self.n, self.page_size = n, page_size
        self.hits: Counter[str] = Counter()
        self.fail_plan: dict[str, list[int]] = {}  # path -> statuses to answer first
        self.retry_after = "0"
        self.token_lifetime = 3600
        self.tokens_issued = 0
        self.revoked: set[str] = set()
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        # /capped and /needs-q behaviour
        self.cap: int | None = None  # largest page the server sends, whatever was asked
        self.report_total = True  # "total" in every page
        self.total_offset = 0  # reported total = n + total_offset (a lying server)
        self.lossy_pages = False  # page mode: start = (page-1) * requested size, not cap
        self.stuck = False  # ignore offset/page/cursor/start: the same page for ever
        self.next_base: str | None = None  # /nexturl links point there (another host)


def _handler(state: ApiState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out as two writes: without this, Nagle + delayed ACK cost
        # ~40 ms a request on keep-alive connections
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json", extra=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj, status: int = 200, extra=None) -> None:
            self._send(status, json.dumps(obj).encode(), extra=extra)

        def _paged(self, prefix: str, kind: str, q: dict, recs: list[dict]) -> None:
            """One page of `recs` in the style `kind`, capped and reported as configured."""
            cap = state.cap or 10**9
            extra: dict = {"total": len(recs) + state.total_offset} if state.report_total else {}

            def arg(name: str, default: str) -> int:
                return 0 if state.stuck else int(q.get(name, [default])[0])

            if kind == "offset":
                off, lim = arg("offset", "0"), int(q["limit"][0])
                return self._json({"data": recs[off : off + min(lim, cap)], **extra})
            if kind == "page":
                page, lim = arg("page", "1"), int(q["per_page"][0])
                size = min(lim, cap)
                start = (page - 1) * (lim if state.lossy_pages else size)
                return self._json({"data": recs[max(start, 0) : max(start, 0) + size], **extra})
            size = min(state.page_size, cap)
            if kind == "cursor":
                start = arg("cursor", "0")
                nxt = str(start + size) if start + size < len(recs) else None
                return self._json({"data": recs[start : start + size], "next": nxt, **extra})
            if kind in ("link", "nexturl"):
                start = arg("start", "0")
                more = start + size < len(recs)
                url = f"{prefix}/{kind}?start={start + size}"  # none of the caller's params
                if kind == "link":
                    link = {"Link": f'<{url}>; rel="next"'} if more else None
                    return self._json({"data": recs[start : start + size], **extra}, extra=link)
                body = {"data": recs[start : start + size], **extra}
                if more:
                    body["next"] = f"http://{self.headers['Host']}{url}"
                return self._json(body)
            if kind == "raw":
                return self._send(200, json.dumps(recs).encode())
            return self._json({"error": "not found"}, 404)

        def _authorized(self, q: dict) -> bool:
            h = self.headers
            path = urlsplit(self.path).path
            kind = path.split("/")[2] if path.startswith("/auth/") else ""
            if kind == "bearer":
                return h.get("Authorization") == f"Bearer {SECRET}"
            if kind == "header":
                return h.get("X-Api-Key") == SECRET
            if kind == "query":
                return q.get("api_key") == [SECRET]
            if kind == "basic":
                good = base64.b64encode(f"alice:{SECRET}".encode()).decode()
                return h.get("Authorization") == f"Basic {good}"
            if kind == "oauth":
                value = h.get("Authorization", "")
                return value.startswith("Bearer tok-") and value[7:] not in state.revoked
            return True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            path = urlsplit(self.path).path
            if path == "/oauth/token":
                form = parse_qs(raw.decode())
                good = base64.b64encode(f"cid:{SECRET}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {good}":
                    return self._json({"error": "invalid_client"}, 401)
                if form.get("grant_type") != ["client_credentials"]:
                    return self._json({"error": "unsupported_grant_type"}, 400)
                with state.lock:
                    state.tokens_issued += 1
                    n = state.tokens_issued
                return self._json({"access_token": f"tok-{n}", "expires_in": state.token_lifetime})
            if path == "/search":
                body = json.loads(raw or b"{}")
                state.requests.append(("POST", self.path, body))
                recs = [r for r in map(record, range(state.n)) if r["id"] < body.get("below", 0)]
                return self._json({"data": recs})
            self._json({"error": "nope"}, 404)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            path, q = parts.path, parse_qs(parts.query)
            with state.lock:
                state.hits[path] += 1
                plan = state.fail_plan.get(path)
                status = plan.pop(0) if plan else None
            state.requests.append(("GET", self.path, dict(self.headers)))
            if status:
                extra = {"Retry-After": state.retry_after} if status in (429, 503) else None
                return self._send(status, b'{"error":"try later"}', extra=extra)
            if not self._authorized(q):
                return self._json({"error": "unauthorized"}, 401)
            recs = [record(i) for i in range(state.n)]
            since = q.get("updated_since", [None])[0]
            if since:
                recs = [r for r in recs if r["updated_at"] > since]
            size = state.page_size
            for prefix in ("/capped", "/needs-q"):
                if path.startswith(prefix + "/"):
                    if prefix == "/needs-q" and q.get("q") != ["python"]:
                        return self._json({"message": "Validation Failed: q missing"}, 422)
                    return self._paged(prefix, path[len(prefix) + 1 :], q, recs)
            if path.startswith("/auth/") or path == "/items":
                return self._json({"data": recs})
            if path == "/offset":
                off, lim = int(q["offset"][0]), int(q["limit"][0])
                return self._json({"data": recs[off : off + lim]})
            if path == "/page":
                page, lim = int(q["page"][0]), int(q["per_page"][0])
                return self._json({"data": recs[(page - 1) * lim : page * lim]})
            if path == "/cursor":
                start = int(q.get("cursor", ["0"])[0])
                nxt = start + size if start + size < len(recs) else None
                return self._json(
                    {"items": recs[start : start + size], "meta": {"next_cursor": nxt}}
                )
            if path in ("/link", "/nexturl"):
                start = int(q.get("start", ["0"])[0])
                more = start + size < len(recs)
                url = f"/{path.strip('/')}?start={start + size}"
                if path == "/link":
                    extra = {"Link": f'<{url}>; rel="next"'} if more else None
                    return self._json(recs[start : start + size], extra=extra)
                body = {"value": recs[start : start + size]}
                if more:
                    base = state.next_base or f"http://{self.headers['Host']}"
                    body["@odata.nextLink"] = f"{base}{url}"
                return self._json(body)
            if path == "/csv":
                lines = ["id,name"] + [f"{r['id']},{r['name']}" for r in recs]
                return self._send(200, ("\n".join(lines) + "\n").encode(), "text/csv")
            if path == "/xml":
                items = "".join(
                    f'<item id="{r["id"]}"><name>{r["name"]}</name></item>' for r in recs
                )
                return self._send(200, f"<items>{items}</items>".encode(), "application/xml")
            if path == "/jsonl":
                body = "".join(json.dumps(r) + "\n" for r in recs)
                return self._send(200, body.encode(), "application/x-ndjson")
            if path == "/ragged":  # later records carry a field the first one lacks
                rows = [{"id": i, "name": f"n{i}"} for i in range(3)]
                rows[2]["late_field"] = "only here"
                return self._json({"data": rows})
            if path == "/raw":
                return self._send(200, b"raw payload \x00\x01 bytes", "application/octet-stream")
            if path == "/bench":
                page, lim = int(q["page"][0]), int(q["per_page"][0])
                if page > state.n:
                    return self._json({"data": []})
                base = (page - 1) * lim
                return self._send(200, _bench_page(base, lim), "application/json")
            self._json({"error": "not found"}, 404)

    return Handler


_BENCH_CACHE: dict[tuple[int, int], bytes] = {}


def _bench_page(base: int, lim: int) -> bytes:
    key = (base, lim)
    if key in _BENCH_CACHE:  # the benchmark measures the client, not this server
        return _BENCH_CACHE[key]
    recs = [
        {"id": base + i, "name": f"item-{base + i}", "value": (base + i) * 0.5, "tag": "x" * 40}
        for i in range(lim)
    ]
    _BENCH_CACHE[key] = json.dumps({"data": recs}).encode()
    return _BENCH_CACHE[key]


class ApiServer:
    def __init__(self, state: ApiState | None = None) -> None:
        self.state = state or ApiState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
