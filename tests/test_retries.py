"""Retry what is transient, never what is not: whole flow runs against the real servers,
counting the attempts the servers saw (sshd's log, MariaDB's access-denied counter, the
HTTP server's hits, Prefect's task run counts)."""

from __future__ import annotations

import re
import socket
import time
import uuid
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from sqlalchemy import create_engine, text

from blocks.core.errors import CredentialsError, HostKeyError, SourceUnavailable
from blocks.http.rest_api import RestApiSource
from blocks.sftp.block import SftpSource
from blocks.sql.block import SqlSource
from flows.rest_api import ingest_rest
from flows.sftp import ingest_sftp
from flows.sql import ingest_sql
from tests import sftp_server
from tests.conftest import MY_HOST, MY_PORT, MY_USER, server_missing, throwaway_database
from tests.http_server import SECRET, ApiServer

pytestmark = pytest.mark.usefixtures("prefect_api")


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_flow(flow, save_block, source, ledger, queue, **params):
    """Run a source flow on saved blocks; return its final state (failed or not)."""
    return flow(
        source_block=save_block(source, "source"),
        ledger_block=save_block(ledger, "ledger"),
        queue_block=save_block(queue, "queue"),
        return_state=True,
        **params,
    )


def error_of(state) -> BaseException:
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, BaseException), exc
    return exc


def task_run_counts(state, prefix: str) -> list[int]:
    """`run_count` (1 + retries taken) of the flow run's tasks whose name starts with prefix."""
    flow_run_id: UUID = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [r.run_count for r in runs if r.name.startswith(prefix)]


# ----------------------------------------------------------------------------- SFTP
@pytest.fixture(scope="module")
def sshd():
    why = sftp_server.why_not_available()
    if why:
        server_missing("OpenSSH sshd", why)
    server = sftp_server.start_server()
    # start_server's readiness probe is a connection too: wait until sshd has logged it
    deadline = time.monotonic() + 5
    while sshd_counts(server)[0] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield server
    sftp_server.stop_server(server)


def sftp_source(sshd, **kw) -> SftpSource:
    fields = dict(
        source_id="partner",
        **sftp_server.login_fields(sshd, sshd.folder(f"in-{uuid.uuid4().hex[:8]}")),
        retries=3,
        retry_delay_seconds=0,
    )
    fields.update(kw)
    return SftpSource(**fields)


def sshd_counts(sshd) -> tuple[int, int]:
    """(TCP connections, refused password logins) sshd has logged so far."""
    log = sshd.log()
    connections = len(re.findall(r"^Connection from 127\.0\.0\.1 port", log, re.M))
    refused = len(re.findall(rf"^Failed password for {sftp_server.USER} ", log, re.M))
    return connections, refused


def test_wrong_sftp_password_costs_one_login_per_run(sshd, save_block, sqlite_ledger, queue):
    secret = "Wrong-Pw-Not-Retried-17"
    source = sftp_source(sshd, password=secret)
    before = sshd_counts(sshd)
    state = run_flow(ingest_sftp, save_block, source, sqlite_ledger, queue)
    after = sshd_counts(sshd)
    exc = error_of(state)
    assert isinstance(exc, CredentialsError) and exc.where == "SftpSource.password", exc
    assert "login refused" in str(exc) and secret not in str(exc)
    # partner servers lock an account after a few bad logins: one per run, not three
    assert after[1] - before[1] == 1, sshd.log()
    assert after[0] - before[0] == 1
    assert task_run_counts(state, "discover") == [1]


def test_sftp_host_key_mismatch_is_not_retried(sshd, save_block, sqlite_ledger, queue):
    wrong_key = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    source = sftp_source(sshd, host_key=wrong_key)
    before = sshd_counts(sshd)
    state = run_flow(ingest_sftp, save_block, source, sqlite_ledger, queue)
    after = sshd_counts(sshd)
    exc = error_of(state)
    assert isinstance(exc, HostKeyError) and exc.where == "SftpSource.host_key", exc
    assert after[0] - before[0] == 1, sshd.log()
    assert after[1] == before[1]  # no password was sent to a server we do not trust


# ----------------------------------------------------------------------------- SQL
@pytest.mark.parametrize("driver", [SyncDriver.POSTGRESQL_PSYCOPG2, SyncDriver.MYSQL_PYMYSQL])
def test_sql_connection_refused_is_retried_and_names_the_connection(
    driver, save_block, sqlite_ledger, queue
):
    port = closed_port()
    database = SqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=driver, host="127.0.0.1", port=port, username="ingest", database="shop"
        )
    )
    source = SqlSource(
        source_id="gone-db",
        database=database,
        table="orders",
        incremental_mode="none",
        retries=2,
        retry_delay_seconds=0,
    )
    state = run_flow(ingest_sql, save_block, source, sqlite_ledger, queue)
    exc = error_of(state)
    assert isinstance(exc, SourceUnavailable), exc
    message = str(exc)
    assert message.startswith("SqlSource.database: cannot connect to "), message
    assert f"127.0.0.1:{port}/shop" in message and "SqlSource.table" not in message
    assert task_run_counts(state, "connect") == [1 + source.retries]


def _access_denied(engine) -> int:
    with engine.connect() as conn:
        row = conn.execute(text("SHOW GLOBAL STATUS LIKE 'Access_denied_errors'")).one()
    return int(row[1])


def test_sql_wrong_password_is_not_retried(save_block, sqlite_ledger, queue):
    secret = "Wrong-Sql-Pw-31"
    user = f"ingest_rt_{uuid.uuid4().hex[:8]}"
    with throwaway_database("mariadb", "retries") as name:
        admin = create_engine(
            f"mysql+pymysql://{MY_USER}@{MY_HOST}:{MY_PORT}/", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'Right-Sql-Pw-1'"))
            conn.execute(text(f"GRANT ALL ON `{name}`.* TO '{user}'@'%'"))
        try:
            database = SqlAlchemyConnector(
                connection_info=ConnectionComponents(
                    driver=SyncDriver.MYSQL_PYMYSQL,
                    host=MY_HOST,
                    port=MY_PORT,
                    username=user,
                    password=secret,
                    database=name,
                )
            )
            source = SqlSource(
                source_id="bad-login",
                database=database,
                table="orders",
                incremental_mode="none",
                retries=3,
                retry_delay_seconds=0,
            )
            before = _access_denied(admin)
            state = run_flow(ingest_sql, save_block, source, sqlite_ledger, queue)
            denied = _access_denied(admin) - before
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP USER '{user}'@'%'"))
            admin.dispose()
    exc = error_of(state)
    assert isinstance(exc, CredentialsError) and exc.where == "SqlSource.database", exc
    assert user in str(exc) and secret not in str(exc) and secret not in state.message
    assert denied == 1  # one login attempt, not 1 + retries
    assert task_run_counts(state, "connect") == [1]


# ----------------------------------------------------------------------------- HTTP
@pytest.fixture
def api():
    with ApiServer() as server:
        yield server


def rest_source(api: ApiServer, **kw) -> RestApiSource:
    kw.setdefault("records_path", "data")
    return RestApiSource(
        source_id="rest-retries",
        base_url=api.url,
        backoff_seconds=0.01,
        retries=3,
        retry_delay_seconds=0,
        **kw,
    )


def test_http_401_is_not_retried(api, save_block, sqlite_ledger, queue):
    source = rest_source(api, path="/auth/bearer", auth="bearer", token="not-the-token")
    state = run_flow(ingest_rest, save_block, source, sqlite_ledger, queue)
    assert state.is_failed() and "HTTP 401" in state.message
    assert api.state.hits["/auth/bearer"] == 1  # not 1 + retries
    assert "not-the-token" not in state.message


def test_http_503_is_retried_by_the_pipeline_and_lands(api, save_block, sqlite_ledger, queue):
    """More 503s than the HTTP layer's own tries: the item's retry (later) lands it."""
    api.state.fail_plan["/auth/bearer"] = [503, 503]
    source = rest_source(api, path="/auth/bearer", auth="bearer", token=SECRET, http_tries=2)
    state = run_flow(ingest_rest, save_block, source, sqlite_ledger, queue)
    assert state.is_completed(), state.message
    assert state.result()["landed"] == 1
    assert api.state.hits["/auth/bearer"] == 3


# ----------------------------------------------------------------------------- SharePoint
@pytest.fixture
def graph(tmp_path_factory):
    from tests.graph_server import GraphServer

    with GraphServer(tmp_path_factory.mktemp("cert")) as server:
        server.state.files = {"AXIS_20260115_a.csv": b"a,1\n"}
        yield server


def sharepoint_source(graph, **kw):
    from blocks.sharepoint.block import SharePointSource
    from tests.graph_server import CLIENT_ID, CLIENT_SECRET, TENANT

    kw.setdefault("client_secret", CLIENT_SECRET)
    kw.setdefault("verify_tls", str(graph.cert))
    return SharePointSource(
        source_id="sp-retries",
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        authority_host=graph.url,
        graph_base_url=graph.url + "/v1.0",
        site="contoso.sharepoint.com:/sites/finance",
        drive="Documents",
        folder_path="/In/Daily/",
        file_pattern="AXIS_*.csv",
        backoff_seconds=0.01,
        retries=3,
        retry_delay_seconds=0,
        **kw,
    )


def test_sharepoint_wrong_secret_costs_one_token_request(graph, save_block, sqlite_ledger, queue):
    from flows.sharepoint import ingest_sharepoint
    from tests.graph_server import TENANT

    state = run_flow(
        ingest_sharepoint,
        save_block,
        sharepoint_source(graph, client_secret="wrong-secret-9"),
        sqlite_ledger,
        queue,
    )
    exc = error_of(state)
    assert isinstance(exc, CredentialsError) and exc.where == "SharePointSource.client_secret"
    assert "invalid_client" in str(exc) and "wrong-secret-9" not in str(exc)
    assert graph.state.hits[f"POST /{TENANT}/oauth2/v2.0/token"] == 1  # not 1 + 2 retries
    assert task_run_counts(state, "discover") == [1]


def test_untrusted_tls_certificate_is_not_retried(graph, save_block, sqlite_ledger, queue):
    from flows.sharepoint import ingest_sharepoint

    # system CAs only: the server's self-signed certificate will not verify next time either
    source = sharepoint_source(graph, verify_tls=True)
    state = run_flow(ingest_sharepoint, save_block, source, sqlite_ledger, queue)
    exc = error_of(state)
    assert "certificate verify failed" in str(exc).lower() or "CERTIFICATE_VERIFY_FAILED" in str(
        exc
    )
    assert task_run_counts(state, "discover") == [1]
