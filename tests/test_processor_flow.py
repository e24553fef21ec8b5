"""The `process-item` flow on Prefect's test API: a local landed file and a landed S3
object (an Ingestion Queue landing into a bucket on the moto server) are each processed
through a private local copy; a changed sha256, an object outside the queue's bucket, a
missing queue block, and a failing command fail the run naming the cause.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from blocks import IngestionQueue, Ledger, LocalFolderSource
from flows.local_folder import ingest_local_folder
from flows.processor import process_item
from tests.landed_rows import landed, run_flow
from tests.objstore_servers import aws_credentials

pytest_plugins = ["tests.objstore_servers"]
pytestmark = pytest.mark.prefect_server

# Writes "<size> <sha256 placeholder> <uri>" next to the output folder given.
ECHO = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
    "pathlib.Path(sys.argv[2]).write_text(f'{p.stat().st_size} {sys.argv[3]} {sys.argv[4]}')"
)


def command(out: Path) -> list[str]:
    return [sys.executable, "-c", ECHO, "{path}", str(out), "{sha256}", "{uri}"]


def test_local_and_s3_landed_items(
    prefect_api, save_block, tmp_path: Path, moto_endpoint, s3_bucket
):
    from prefect_aws.s3 import S3Bucket

    _client, bucket_name = s3_bucket
    bucket = S3Bucket(
        bucket_name=bucket_name, credentials=aws_credentials(moto_endpoint), bucket_folder="land"
    )
    queue = IngestionQueue(
        landing_dir=str(tmp_path / "landing"),
        landing_bucket=f"s3-bucket/{save_block(bucket, 'land')}",
        fsync=False,
    )
    queue_name = save_block(queue, "queue")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("a,b\n1,2\n")
    ledger = Ledger(database=_sqlite(tmp_path))
    source = LocalFolderSource(source_id="proc", directory=str(inbox), retries=0)
    assert run_flow(ingest_local_folder, save_block, ledger, queue, source).is_completed()
    (row,) = landed(ledger, "proc")
    uri = row["landed_path"]
    assert uri.startswith(f"s3://{bucket_name}/"), uri

    out = tmp_path / "out.txt"
    result = process_item(
        landed_path=uri, command=command(out), sha256=row["sha256"], queue_block=queue_name
    )
    assert result["landed_path"] == uri and result["exit_code"] == 0
    assert out.read_text() == f"8 {row['sha256']} {uri}"
    # The private copy is gone.
    assert not list(Path(_tmpdir()).glob("ingest-process-*/a.csv"))

    for params, cause in (
        ({"sha256": "0" * 64, "queue_block": queue_name}, "no longer holds sha256"),
        ({}, "queue_block: name the Ingestion Queue block"),
        ({"queue_block": queue_name, "landed_path": "s3://other-bucket/land/a.csv"},
         "IngestionQueue.landing_bucket"),
    ):  # fmt: skip
        state = process_item(
            **{"landed_path": uri, "command": command(out), **params}, return_state=True
        )
        assert state.is_failed() and cause in state.message, (params, state.message)

    local = tmp_path / "local" / "b.bin"
    local.parent.mkdir()
    local.write_bytes(b"\x00\x01")
    result = process_item(
        landed_path=local.as_uri(), command=command(out), landing_root=str(local.parent)
    )
    assert out.read_text() == f"2  {local.as_uri()}" and result["landed_path"] == str(local)
    state = process_item(
        landed_path=str(local),
        command=[sys.executable, "-c", "import sys; print('bad input'); sys.exit(4)"],
        return_state=True,
    )
    assert state.is_failed() and "exited 4: bad input" in state.message
    ledger.dispose()


def _sqlite(tmp_path: Path):
    from tests.conftest import sqlite_connector

    return sqlite_connector(tmp_path / "ledger.db")


def _tmpdir() -> str:
    import tempfile

    return tempfile.gettempdir()
