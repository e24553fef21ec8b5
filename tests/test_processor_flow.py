"""The `process-item` and `process-items` flows on Prefect's test API: a local landed file
and a landed S3 object (an Ingestion Queue landing into a bucket on the moto server) are
each processed through a private local copy; a changed sha256, an object outside the
queue's bucket, a missing queue block, and a failing command fail the run naming the cause.
`process-items` runs each item of a batch as its own task run: the good items are
processed, the run fails at the end naming each failed item and its reason, and a
malformed `items` fails before any item runs, naming the field.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from blocks import IngestionQueue, Ledger, LocalFolderSource
from blocks.core.errors import ConfigError
from flows.local_folder import ingest_local_folder
from flows.processor import PROCESSED_EVENT, process_item, process_items
from tests.landed_rows import landed, run_flow
from tests.objstore_servers import aws_credentials
from tests.prefect_events import source_events

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

    # The same object as an item of a batch: read through the queue block loaded once.
    state = process_items(
        items=[{"landed_path": uri, "sha256": row["sha256"], "name": "a.csv", "size": 8}],
        command=command(out),
        queue_block=queue_name,
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert out.read_text() == f"8 {row['sha256']} {uri}"
    assert state.result()["processed"][0]["landed_path"] == uri
    state = process_items(items=[{"landed_path": uri}], command=command(out), return_state=True)
    assert state.is_failed() and "queue_block: name the Ingestion Queue block" in state.message

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


# Appends "<size> <path>" to <out>/<name>.out; exits 3 for content starting "fail".
PROCESSOR = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); data = p.read_bytes(); "
    "data.startswith(b'fail') and sys.exit(print('cannot read', p.name) or 3); "
    "out = pathlib.Path(sys.argv[2]) / (sys.argv[3] + '.out'); "
    "out.open('a').write(f'{len(data)} {p}\\n')"
)


def batch_item(path: Path, source: str = "batch-src", **extra) -> dict:
    data = path.read_bytes()
    return {
        "landed_path": str(path),
        "sha256": hashlib.sha256(data).hexdigest(),
        "source": source,
        "name": path.name,
        "size": len(data),  # payload keys the flow does not use are ignored
        **extra,
    }


def test_process_items_runs_each_item_and_fails_at_the_end_naming_each_failure(
    prefect_api, tmp_path: Path
):
    landing, out = tmp_path / "landing" / "batch-src", tmp_path / "out"
    landing.mkdir(parents=True)
    out.mkdir()
    files = {"a.csv": "a\n", "b&b's <1>.csv": "bb\n", "bad.bin": "fail\n", "c.csv": "ccc\n"}
    for name, body in files.items():
        (landing / name).write_text(body)
    outside = tmp_path / "secret.txt"
    outside.write_text("no\n")
    changed = batch_item(landing / "c.csv", sha256="0" * 64)
    items = [
        batch_item(landing / "a.csv"),
        batch_item(outside),
        batch_item(landing / "b&b's <1>.csv"),
        batch_item(landing / "bad.bin"),
        changed,
    ]
    argv = [sys.executable, "-c", PROCESSOR, "{path}", str(out), "{name}"]
    state = process_items(
        items=items, command=argv, landing_root=str(tmp_path / "landing"), return_state=True
    )
    assert state.is_failed()
    message = state.message
    assert "3 of 5 items failed" in message, message
    assert f"secret.txt ({outside}): landed_path:" in message and "not under landing_root" in (
        message
    )
    assert f"bad.bin ({landing / 'bad.bin'}): " in message and "exited 3: cannot read" in message
    assert f"c.csv ({landing / 'c.csv'}): landed_path:" in message
    assert "no longer holds sha256" in message
    # The good items were processed once each, with their own paths.
    for name in ("a.csv", "b&b's <1>.csv"):
        lines = (out / f"{name}.out").read_text().splitlines()
        assert lines == [f"{len(files[name])} {landing / name}"], lines
    assert sorted(p.name for p in out.iterdir()) == ["a.csv.out", "b&b's <1>.csv.out"]
    # One task run per item, named after it, each with its own final state.
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    by_name = {r.name: r.state_name for r in runs}
    assert by_name == {
        "process a.csv": "Completed",
        "process secret.txt": "Failed",
        "process b&b's <1>.csv": "Completed",
        "process bad.bin": "Failed",
        "process c.csv": "Failed",
    }, by_name
    processed = source_events(PROCESSED_EVENT, "batch-src")
    while len(processed) < 2:  # events arrive asynchronously
        processed = source_events(PROCESSED_EVENT, "batch-src")
    assert sorted(e["payload"]["name"] for e in processed) == ["a.csv", "b&b's <1>.csv"]

    # All good, two at a time: Completed, each item's result.
    (out / "a.csv.out").unlink()
    state = process_items(
        items=[batch_item(landing / "a.csv"), batch_item(landing / "c.csv")] * 2,
        command=argv,
        landing_root=str(landing),
        max_parallel=2,
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert result["count"] == 4 and [r["exit_code"] for r in result["processed"]] == [0] * 4
    assert len((out / "a.csv.out").read_text().splitlines()) == 2  # listed twice: run twice


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"items": "[]"}, "items"),
        ({"items": {"landed_path": "/l/a"}}, "items"),
        ({"items": [{"landed_path": "/l/a"}, "b"]}, "items[1]"),
        ({"items": [{"landed_path": "/l/a"}, {"name": "b.csv"}]}, "items[1].landed_path"),
        ({"items": [{"landed_path": "  "}]}, "items[0].landed_path"),
        ({"items": [{"landed_path": "/l/a", "sha256": 5}]}, "items[0].sha256"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"max_parallel": 17}, "max_parallel"),
        ({"command": "proc {path}"}, "command"),
        ({"landing_root": ["/l"]}, "landing_root"),
    ],
)
def test_process_items_refuses_bad_input_naming_the_field(
    prefect_api, tmp_path: Path, params: dict, where: str
):
    (tmp_path / "a").write_text("a\n")
    marker = tmp_path / "ran"
    params = {
        "items": [{"landed_path": str(tmp_path / "a")}],
        "command": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        **params,
    }
    state = process_items(**params, return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError) as info:
        state.result()
    assert info.value.where == where, str(info.value)
    assert str(info.value).startswith(f"{where}: "), str(info.value)
    assert not marker.exists()


def test_process_items_with_no_items_completes(prefect_api):
    result = process_items(items=[], command=["true"])
    assert result == {"count": 0, "processed": []}


def _sqlite(tmp_path: Path):
    from tests.conftest import sqlite_connector

    return sqlite_connector(tmp_path / "ledger.db")


def _tmpdir() -> str:
    import tempfile

    return tempfile.gettempdir()
