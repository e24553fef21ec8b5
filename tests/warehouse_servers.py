"""Local warehouse emulators for the Snowflake and BigQuery source tests.

- Snowflake: fakesnow 0.12.1 in server mode, run from its own venv as a subprocess through
  `tests/tools/fakesnow_server.py` (adds the login-response fields connector 5.x needs and
  checks the password). The product talks to it with the real snowflake-connector-python.
- BigQuery: bqemulator 1.4.0 (DuckDB-backed REST API) from its own venv, driven by the real
  google-cloud-bigquery client through the block's `api_endpoint`, with anonymous
  credentials handed out by `GcpCredentials` (fixture `anonymous_google`).
- A fake OAuth token endpoint on 127.0.0.1 that refuses a real service-account key (as
  Google does for a revoked key) for the bad-credentials test: the real google-auth
  refresh path runs and fails before any other call.

Build the venvs with `bash tests/tools/setup_warehouse_emulators.sh` (CI does). Missing
venvs or an emulator that does not start: `server_missing` (skip locally, fail in CI).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import server_missing

# Connector 5.x probes cloud metadata services (AWS IMDS, GCP, Azure) at login for its
# telemetry: keep every test connection on 127.0.0.1.
os.environ["SNOWFLAKE_DISABLE_PLATFORM_DETECTION"] = "true"

TOOLS = Path(os.environ.get("INGEST_TOOLS_DIR", "/work/tools"))
HERE = Path(__file__).parent
SETUP_HINT = "build it with: bash tests/tools/setup_warehouse_emulators.sh"
BQ_PROJECT = "test-project"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- Snowflake
@dataclass
class FakeSnow:
    host: str
    port: int
    password: str
    database: str = "INGEST_DB"
    schema: str = "PUBLIC"

    def connect(self, password: str | None = None) -> Any:
        import snowflake.connector

        return snowflake.connector.connect(
            user="ingest",
            password=password or self.password,
            account="fakesnow",
            host=self.host,
            port=self.port,
            protocol="http",
            database=self.database,
            schema=self.schema,
            login_timeout=20,
        )

    def run(self, *statements: str, rows: list[dict[str, Any]] | None = None) -> None:
        """Run statements; with `rows`, the last statement is run once per row."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            for sql in statements[:-1] if rows is not None else statements:
                cur.execute(sql)
            if rows is not None:
                cur.executemany(statements[-1], rows)
        finally:
            conn.close()

    def connector(self, password: str | None = None):
        from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials

        return SnowflakeConnector(
            credentials=SnowflakeCredentials(
                account="fakesnow", user="ingest", password=password or self.password
            ),
            database=self.database,
            warehouse="INGEST_WH",
            schema=self.schema,
        )

    def block_kwargs(self) -> dict[str, Any]:
        """Connection overrides of the source block for the local server."""
        return {"host": self.host, "port": self.port, "protocol": "http"}


@pytest.fixture(scope="session")
def fakesnow_server() -> Iterator[FakeSnow]:
    python = TOOLS / "fakesnow" / "bin" / "python"
    if not python.exists():
        server_missing("fakesnow", f"no venv at {python.parent.parent}; {SETUP_HINT}")
    port = free_port()
    password = "sf-" + uuid.uuid4().hex
    proc = subprocess.Popen(
        [str(python), str(HERE / "tools" / "fakesnow_server.py"), "--port", str(port)]
        + ["--password", password],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = _wait_line(proc, "READY", timeout=60)
    if not ready:
        _stop(proc)
        server_missing("fakesnow", f"did not start: {ready.text[-500:]}")
    threading.Thread(target=_drain, args=(proc,), daemon=True).start()
    server = FakeSnow("127.0.0.1", port, password)
    try:
        server.run(
            f"CREATE DATABASE IF NOT EXISTS {server.database}",
            f"CREATE SCHEMA IF NOT EXISTS {server.database}.{server.schema}",
        )
        yield server
    finally:
        _stop(proc)


class _Wait:
    def __init__(self, ok: bool, text: str) -> None:
        self.ok, self.text = ok, text

    def __bool__(self) -> bool:
        return self.ok


def _wait_line(proc: subprocess.Popen, marker: str, timeout: float) -> _Wait:
    """Read the child's output until a line starts with `marker` (or it exits)."""
    seen: list[str] = []
    result: list[bool] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(marker):
                result.append(True)
                return
        result.append(False)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return _Wait(bool(result and result[0]), "".join(seen))


def _drain(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    for _ in proc.stdout:
        pass


# ----------------------------------------------------------------------------- BigQuery
@dataclass
class BqEmulator:
    endpoint: str
    project: str = BQ_PROJECT

    def client(self) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def run(self, *statements: str) -> None:
        client = self.client()
        try:
            for sql in statements:
                client.query(sql).result()
        finally:
            client.close()

    def dataset(self) -> str:
        name = "ds_" + uuid.uuid4().hex[:8]
        client = self.client()
        try:
            client.create_dataset(name)
        finally:
            client.close()
        return name


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[BqEmulator]:
    exe = TOOLS / "bqemulator" / "bin" / "bqemulator"
    if not exe.exists():
        server_missing("bqemulator", f"no venv at {exe.parent.parent}; {SETUP_HINT}")
    rest, grpc = free_port(), free_port()
    log = open(os.devnull, "w")  # noqa: SIM115 (kept open for the child's lifetime)
    proc = subprocess.Popen(
        [str(exe), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest)]
        + ["--grpc-host", "127.0.0.1", "--grpc-port", str(grpc), "--project", BQ_PROJECT]
        + ["--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{rest}"
    deadline = time.monotonic() + 60
    up = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            url = f"{endpoint}/bigquery/v2/projects/{BQ_PROJECT}/datasets"
            with urllib.request.urlopen(url, timeout=2):
                up = True
                break
        except Exception:
            time.sleep(0.2)
    if not up:
        _stop(proc)
        log.close()
        server_missing("bqemulator", f"did not answer on {endpoint} (exit code {proc.poll()})")
    try:
        yield BqEmulator(endpoint)
    finally:
        _stop(proc)
        log.close()


def service_account_info(token_uri: str) -> dict[str, str]:
    """A real service-account key made here, whose token endpoint is `token_uri` (local)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": BQ_PROJECT,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": f"ingest@{BQ_PROJECT}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


@pytest.fixture
def anonymous_google(monkeypatch) -> None:
    """GcpCredentials blocks hand out anonymous credentials (the emulator checks none).

    The one mocked seam on the BigQuery side: Google's token service cannot be reached
    here, and a service-account key would, after a (local) token refresh, make google-auth
    look up its regional access boundary at iamcredentials.googleapis.com.
    """
    from google.auth.credentials import AnonymousCredentials
    from prefect_gcp import GcpCredentials

    monkeypatch.setattr(
        GcpCredentials, "get_credentials_from_service_account", lambda self: AnonymousCredentials()
    )


class _RefusingTokenHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(
            {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        ).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_token_server() -> Iterator[str]:
    """URL of a local OAuth token endpoint that refuses every key."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingTokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/token"
    finally:
        server.shutdown()
        server.server_close()


__all__ = [
    "BqEmulator",
    "FakeSnow",
    "bq_emulator",
    "fakesnow_server",
    "refusing_token_server",
    "anonymous_google",
    "service_account_info",
]
