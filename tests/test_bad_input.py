"""Bad configuration and parameters fail in one line naming the field, before any I/O.

Covers: relative/empty queue directories, unusable SQLite ledger paths and unreachable
ledgers (also through `ingest-ops ledger|health`), an S3 endpoint that is not a URL, a
SqlSource `output_name` that is a path, a BigQuery endpoint that refuses connections
(bounded, not a 10-minute retry), and a far-future run `date`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from pydantic import ValidationError
from typer.testing import CliRunner

from blocks import IngestionQueue, Ledger, LocalFolderSource
from blocks.core.errors import ConfigError
from blocks.core.timezones import check_run_date
from tests.conftest import sqlite_connector
from tests.warehouse_servers import anonymous_google  # noqa: F401 (fixture)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_line(text: str) -> str:
    assert "\n" not in text.strip(), text
    return text.strip()


# ----------------------------------------------------------------------------- queue dirs
@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"landing_dir": ""}, "IngestionQueue.landing_dir"),
        ({"landing_dir": "landing"}, "IngestionQueue.landing_dir"),
        ({"landing_dir": "./x/../landing"}, "IngestionQueue.landing_dir"),
        ({"landing_dir": "/abs", "staging_dir": "staging"}, "IngestionQueue.staging_dir"),
        ({"landing_dir": "/abs", "quarantine_dir": "q"}, "IngestionQueue.quarantine_dir"),
    ],
)
def test_queue_refuses_empty_or_relative_directories(fields, where):
    with pytest.raises(ValidationError, match=where):
        IngestionQueue(**fields)


def test_queue_accepts_absolute_and_home_paths_and_empty_staging(tmp_path):
    queue = IngestionQueue(landing_dir=str(tmp_path / "l"), staging_dir="", quarantine_dir=None)
    assert queue.staging_root == tmp_path / "l.staging"
    assert IngestionQueue(landing_dir="~/landing").landing_root.is_absolute()


def test_relative_landing_dir_from_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("INGEST_LANDING_DIR", "landing")
    with pytest.raises(ValidationError, match="IngestionQueue.landing_dir"):
        IngestionQueue()


def test_saved_queue_with_a_relative_dir_fails_the_run_in_one_line(
    save_block, sqlite_ledger, inbox, tmp_path, monkeypatch
):
    from flows.local_folder import ingest_local_folder

    (inbox / "a.csv").write_text("1\n")
    monkeypatch.chdir(tmp_path)
    bad = IngestionQueue.model_construct(landing_dir="", fsync=False)  # as an old save left it
    state = ingest_local_folder(
        source_block=save_block(LocalFolderSource(source_id="rel", directory=str(inbox))),
        ledger_block=save_block(sqlite_ledger),
        queue_block=save_block(bad),
        return_state=True,
    )
    assert state.is_failed()
    message = one_line(state.message)
    assert "queue_block" in message and "IngestionQueue.landing_dir" in message
    assert not (tmp_path / "rel").exists() and sqlite_ledger.count_items("rel") == 0


# ----------------------------------------------------------------------------- ledger
def _sqlite_ledger(path: Path | str) -> Ledger:
    return Ledger(database=sqlite_connector(path))


def _ledger_error(ledger: Ledger) -> str:
    with pytest.raises(ConfigError) as info:
        ledger.check()
    ledger.dispose()
    assert info.value.where == "Ledger.database"
    return one_line(str(info.value))


def test_unusable_sqlite_ledger_paths_name_the_field(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "Not a directory" in _ledger_error(_sqlite_ledger(tmp_path / "afile" / "d" / "l.db"))
    assert "is a directory" in _ledger_error(_sqlite_ledger(tmp_path))
    assert "/proc/no-such" in _ledger_error(_sqlite_ledger("/proc/no-such/ledger.db"))
    for relative in ("ledger.db", "~/ledger.db"):  # a worker's temporary cwd; '~' not expanded
        assert "is relative" in _ledger_error(_sqlite_ledger(relative))


def test_sqlite_ledger_in_a_folder_without_write_permission(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)]).returncode:
        pytest.skip("running as root and cannot make a folder immutable (chattr +i)")
    try:
        assert "not writable" in _ledger_error(_sqlite_ledger(folder / "ledger.db"))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _unreachable_pg_ledger() -> Ledger:
    return Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.POSTGRESQL_PSYCOPG2,
                host="127.0.0.1",
                port=closed_port(),
                username="ingest",
                password="pg-Secret-123",
                database="ledger",
            )
        )
    )


def test_cli_ledger_and_health_with_an_unusable_ledger_print_one_line(
    save_block, tmp_path, monkeypatch
):
    from ops.cli import app

    runner = CliRunner()
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("INGEST_LEDGER_PATH", str(tmp_path / "afile" / "ledger.db"))
    unreachable = save_block(_unreachable_pg_ledger())
    for command in ("ledger", "health"):
        result = runner.invoke(app, [command])
        assert result.exit_code == 1, result.output
        assert one_line(result.stderr).startswith("error: Ledger.database: cannot create")
        result = runner.invoke(app, [command, "--ledger-block", unreachable])
        assert result.exit_code == 1, result.output
        line = one_line(result.stderr)
        assert line.startswith("error: Ledger.database:") and "pg-Secret-123" not in line


# ----------------------------------------------------------------------------- S3 endpoint
@pytest.mark.parametrize("url", ["not a url", "minio:9000", "127.0.0.1:9000", "ftp://h/x"])
def test_s3_endpoint_that_is_not_a_url_fails_in_preflight(url):
    from prefect_aws import AwsClientParameters, AwsCredentials

    from blocks.object_store.s3 import S3Source

    source = S3Source(source_id="s3", bucket="b", endpoint_url=url)
    with pytest.raises(ConfigError) as info:
        source.preflight()
    assert info.value.where == "S3Source.endpoint_url"
    creds = AwsCredentials(
        aws_secret_access_key="aws-Secret-9", aws_client_parameters=AwsClientParameters()
    )
    creds.aws_client_parameters.endpoint_url = url  # AwsClientParameters accepts it as is
    source = S3Source(source_id="s3", bucket="b", aws_credentials=creds)
    with pytest.raises(ConfigError) as info:
        source.test_connection()
    assert info.value.where == "S3Source.aws_credentials.aws_client_parameters.endpoint_url"
    assert "aws-Secret-9" not in str(info.value)


# ----------------------------------------------------------------------------- SQL output_name
@pytest.mark.parametrize("name", ["../escape", "a/b", "/etc/x", "..", "~/x", "a\\b"])
def test_sql_output_name_that_is_a_path_is_refused(name):
    from blocks.sql.block import SqlSource

    with pytest.raises(ValidationError, match="SqlSource.output_name"):
        SqlSource(source_id="s", table="t", output_name=name, database=sqlite_connector("/x.db"))


# ----------------------------------------------------------------------------- BigQuery
@pytest.mark.usefixtures("anonymous_google")
def test_bigquery_test_connection_to_a_closed_port_is_bounded():
    from prefect_gcp import GcpCredentials
    from prefect_gcp.bigquery import BigQueryWarehouse

    from blocks.warehouse.bigquery import BigQueryQuerySource

    source = BigQueryQuerySource(
        source_id="bq",
        bigquery=BigQueryWarehouse(gcp_credentials=GcpCredentials(project="p")),
        api_endpoint=f"http://127.0.0.1:{closed_port()}",
        query="SELECT 1 AS x",
        api_timeout_seconds=3,
    )
    outcome: dict = {}

    def probe() -> None:
        started = time.monotonic()
        try:
            source.test_connection()
        except Exception as exc:  # noqa: BLE001 (recorded for the assertions)
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=probe, daemon=True)  # old code: retried for > 700 s
    thread.start()
    thread.join(60)
    assert "seconds" in outcome, "test_connection still retrying after 60 s"
    assert outcome["seconds"] < 30
    message = one_line(str(outcome["error"]))
    assert "api_timeout_seconds" in message and "127.0.0.1" in message


# ----------------------------------------------------------------------------- run date
def test_check_run_date_bound_is_tomorrow_in_the_zone():
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"):
        tomorrow = dt.datetime.now(ZoneInfo(zone)).date() + dt.timedelta(days=1)
        check_run_date(tomorrow, zone)
        with pytest.raises(ConfigError) as info:
            check_run_date(tomorrow + dt.timedelta(days=1), zone)
        assert info.value.where == "date"
    check_run_date(None)
    with pytest.raises(ConfigError, match="^date: "):
        check_run_date(dt.date.today() + dt.timedelta(days=4))


def test_far_future_date_fails_the_flows_before_any_io(prefect_api):
    from flows.local_folder import ingest_local_folder
    from flows.sql import ingest_sql

    future = dt.date.today() + dt.timedelta(days=30)
    for flow in (ingest_local_folder, ingest_sql):
        # the block names do not exist: failing on `date` shows nothing was loaded first
        state = flow(source_block="no-such-block", date=future, return_state=True)
        assert state.is_failed()
        message = one_line(state.message)
        assert f"date: {future} is later than tomorrow" in message
        assert "source_block" not in message


def test_date_bound_uses_the_source_time_zone(save_block, sqlite_ledger, queue, inbox):
    from flows.local_folder import ingest_local_folder

    (inbox / "a.csv").write_text("1\n")
    kiritimati_tomorrow = dt.datetime.now(ZoneInfo("Pacific/Kiritimati")).date() + dt.timedelta(1)
    ledger, queue_name = save_block(sqlite_ledger), save_block(queue)
    results = {}
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14, UTC-11
        source = LocalFolderSource(source_id="tz", directory=str(inbox), timezone=zone)
        results[zone] = ingest_local_folder(
            source_block=save_block(source),
            ledger_block=ledger,
            queue_block=queue_name,
            date=kiritimati_tomorrow,
            return_state=True,
        )
    assert results["Pacific/Kiritimati"].is_completed()
    refused = results["Pacific/Pago_Pago"]  # Kiritimati's tomorrow is 2 days ahead there
    assert refused.is_failed() and "date: " in refused.message
    assert "Pacific/Pago_Pago" in refused.message
    assert sqlite_ledger.count_items("tz") == 1  # only the accepted run landed


def test_cli_run_refuses_a_far_future_date_before_starting_anything():
    from ops.cli import app

    future = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    result = CliRunner().invoke(app, ["run", "no/such-deployment", "--date", future])
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith(f"error: date: {future} is later than tomorrow")
