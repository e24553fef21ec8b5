"""The one retry classification (`blocks.core.errors.is_retryable`) over real exceptions.

Database errors come from the real PostgreSQL and MariaDB servers; the others are the
libraries' own exception objects, built as the libraries build them.
"""

from __future__ import annotations

import pickle
import socket
import ssl
import uuid

import botocore.exceptions as boto
import httpx
import paramiko
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as gauth
from snowflake.connector import errors as snow
from sqlalchemy import create_engine, text

from blocks.core.errors import (
    ChecksumMismatch,
    ConfigError,
    CredentialsError,
    HostKeyError,
    IngestError,
    LedgerError,
    PermanentError,
    SourceUnavailable,
    TransientError,
    UnsafeNameError,
    boundary_error,
    classify,
    is_retryable,
)
from blocks.http.transport import HttpGiveUp
from tests.conftest import MY_HOST, MY_PORT, MY_USER, PG_HOST, PG_PORT, PG_USER, server_missing


def closed_port() -> int:
    """A local port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/x")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


def client_error(code: str, status: int) -> boto.ClientError:
    return boto.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:
        return exc


def _host_key_error() -> paramiko.BadHostKeyException:
    got, expected = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    return paramiko.BadHostKeyException("127.0.0.1", got, expected)


NEVER = {
    # ours
    "config": ConfigError("X.field", "bad"),
    "credentials": CredentialsError("X.password", "refused"),
    "host key": HostKeyError("X.host_key", "mismatch"),
    "ledger": LedgerError("down"),
    "checksum": ChecksumMismatch("bad sum"),
    "unsafe name": UnsafeNameError("../x"),
    "permanent": PermanentError("404"),
    "ingest error marked final": IngestError("x", retryable=False),
    "HttpGiveUp 401": HttpGiveUp("401", status=401),
    "HttpGiveUp 404": HttpGiveUp("404", status=404),
    # SSH
    "paramiko auth": paramiko.AuthenticationException("Authentication failed."),
    "paramiko bad host key": _host_key_error(),
    # HTTP
    "httpx 400": http_error(400),
    "httpx 401": http_error(401),
    "httpx 403": http_error(403),
    "httpx 404": http_error(404),
    "httpx unsupported protocol": httpx.UnsupportedProtocol("ftp://"),
    "httpx TLS verify": chained(
        httpx.ConnectError("certificate verify failed"),
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
    ),
    # AWS
    "s3 access denied": client_error("AccessDenied", 403),
    "s3 bad key id": client_error("InvalidAccessKeyId", 403),
    "s3 no such key": client_error("NoSuchKey", 404),
    "s3 no such bucket": client_error("NoSuchBucket", 404),
    "aws no credentials": boto.NoCredentialsError(),
    # Google
    "google 401": gexc.Unauthorized("no"),
    "google 403": gexc.Forbidden("no"),
    "google 404": gexc.NotFound("no"),
    "google 400": gexc.BadRequest("no"),
    "google refresh": gauth.RefreshError("invalid_grant"),
    "google default credentials": gauth.DefaultCredentialsError("none"),
    # Snowflake
    "snowflake wrong password": snow.DatabaseError(msg="Incorrect username", errno=390100),
    "snowflake bad sql": snow.ProgrammingError(msg="syntax error", errno=1003),
    # a wrapper that says nothing itself: what it wraps decides
    "wrapper of a refused login": chained(
        RuntimeError("wrapped"), paramiko.AuthenticationException("no")
    ),
}

RETRIED = {
    # ours
    "source unavailable": SourceUnavailable("down"),
    "transient": TransientError("busy"),
    "unclassified ingest error": IngestError("x"),
    "HttpGiveUp after 5xx": HttpGiveUp("gave up, last HTTP 503"),
    "HttpGiveUp 429": HttpGiveUp("429", status=429),
    "HttpGiveUp 503": HttpGiveUp("503", status=503),
    # network, stdlib
    "connection refused": ConnectionRefusedError(111, "Connection refused"),
    "connection reset": ConnectionResetError(104, "reset"),
    "timeout": TimeoutError("timed out"),
    "eof": EOFError(),
    "os error": OSError(113, "No route to host"),
    "permission denied (e.g. a file still being written)": PermissionError(13, "denied"),
    # SSH
    "paramiko ssh": paramiko.SSHException("Error reading SSH protocol banner"),
    # HTTP
    "httpx 408": http_error(408),
    "httpx 425": http_error(425),
    "httpx 429": http_error(429),
    "httpx 500": http_error(500),
    "httpx 502": http_error(502),
    "httpx 503": http_error(503),
    "httpx connect": httpx.ConnectError("refused"),
    "httpx read timeout": httpx.ReadTimeout("slow"),
    # AWS
    "s3 slow down": client_error("SlowDown", 503),
    "s3 internal": client_error("InternalError", 500),
    "s3 throttled": client_error("Throttling", 400),
    "aws endpoint down": boto.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    "aws read timeout": boto.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    # Google
    "google 429": gexc.TooManyRequests("slow"),
    "google 500": gexc.InternalServerError("oops"),
    "google 503": gexc.ServiceUnavailable("later"),
    "google refresh retryable": gauth.RefreshError("later", retryable=True),
    "google transport": gauth.TransportError("reset"),
    # Snowflake
    "snowflake cannot connect": snow.OperationalError(msg="Could not connect", errno=250001),
    # anything else
    "unknown": RuntimeError("who knows"),
}


@pytest.mark.parametrize("name", sorted(NEVER))
def test_never_retried(name: str) -> None:
    exc = NEVER[name]
    assert not is_retryable(exc), (name, classify(exc))


@pytest.mark.parametrize("name", sorted(RETRIED))
def test_retried(name: str) -> None:
    exc = RETRIED[name]
    assert is_retryable(exc), (name, classify(exc))


def test_kinds_name_what_is_wrong() -> None:
    assert classify(paramiko.AuthenticationException()) is CredentialsError
    assert classify(_host_key_error()) is HostKeyError
    assert classify(http_error(401)) is CredentialsError
    assert classify(http_error(503)) is SourceUnavailable
    assert classify(http_error(429)) is TransientError
    assert classify(client_error("AccessDenied", 403)) is CredentialsError
    # a credentials error names the field, like every ConfigError
    err = boundary_error(paramiko.AuthenticationException(), "SftpSource.password", "refused")
    assert isinstance(err, CredentialsError) and err.where == "SftpSource.password"
    assert str(err) == "SftpSource.password: refused"
    err = boundary_error(ConnectionRefusedError(), "SqlSource.database", "db:5432: refused")
    assert isinstance(err, SourceUnavailable) and str(err).startswith("SqlSource.database:")


def test_retryable_survives_pickling() -> None:
    """Prefect may persist a failed task's exception: the verdict must come back with it."""
    for exc in (IngestError("x", retryable=False), CredentialsError("A.b", "no")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert back.retryable is False
    assert pickle.loads(pickle.dumps(CredentialsError("A.b", "no"))).where == "A.b"


# ----------------------------------------------------------------------------- real databases
def _error(url: str, sql: str = "SELECT 1") -> Exception:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    except Exception as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{sql} on {url} did not fail")


def _server_up(url: str, what: str) -> None:
    try:
        create_engine(url).connect().close()
    except Exception as exc:
        server_missing(what, str(exc).splitlines()[0])


def test_postgres_errors_from_the_real_server() -> None:
    base = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}"
    _server_up(f"{base}/postgres", "PostgreSQL")
    refused = _error(f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{closed_port()}/postgres")
    assert is_retryable(refused) and classify(refused) is SourceUnavailable
    no_db = _error(f"{base}/no_such_db_{uuid.uuid4().hex[:8]}")
    assert classify(no_db) is ConfigError
    bad_sql = _error(f"{base}/postgres", "SELEC 1")
    assert not is_retryable(bad_sql)
    no_table = _error(f"{base}/postgres", "SELECT * FROM no_such_table_x")
    assert not is_retryable(no_table)
    cancelled = _error(f"{base}/postgres", "SET statement_timeout = 10; SELECT pg_sleep(1)")
    assert is_retryable(cancelled)  # 57014: a statement timeout may pass


def test_mariadb_errors_from_the_real_server() -> None:
    base = f"mysql+pymysql://{MY_USER}@{MY_HOST}:{MY_PORT}"
    _server_up(f"{base}/", "MariaDB")
    refused = _error(f"mysql+pymysql://{MY_USER}@127.0.0.1:{closed_port()}/")
    assert classify(refused) is SourceUnavailable
    user = f"ingest_cls_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{base}/", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'Right-pw-1'"))
    try:
        wrong = _error(f"mysql+pymysql://{user}:Wrong-pw-2@{MY_HOST}:{MY_PORT}/")
        assert classify(wrong) is CredentialsError  # 1045
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER '{user}'@'%'"))
        admin.dispose()
    no_db = _error(f"{base}/no_such_db_{uuid.uuid4().hex[:8]}")
    assert classify(no_db) is ConfigError  # 1049
    assert not is_retryable(_error(f"{base}/", "SELEC 1"))  # 1064
