"""Event-driven runs through the real source flows: a `trigger` that names items makes the
run take exactly those, no listing.

S3: a real S3 event notification (URL-encoded keys) against moto; GCS: a Pub/Sub push body
(base64 JSON_API_V1 data) against the GCS emulator; a local folder with `{"items",
"date"}`. Items from another bucket, outside the prefix/pattern, or missing fail with
their reason while the others land (the run ends Failed, nothing lost); the ledger still
dedupes; a SQL source, a bad shape or a date conflict fail naming `trigger` before any
I/O. The listing is replaced by a function that fails the test, to prove none is made.
"""

from __future__ import annotations

import base64
import json
from datetime import date
from pathlib import Path

import pytest

from blocks import LocalFolderSource
from blocks.core.errors import ConfigError
from blocks.object_store.gcs import GcsSource
from blocks.object_store.s3 import S3Source
from flows.gcs import ingest_gcs
from flows.local_folder import ingest_local_folder
from flows.s3 import ingest_s3
from flows.sql import ingest_sql
from tests.landed_rows import landed, run_flow
from tests.objstore_servers import aws_credentials, gcp_credentials
from tests.test_source_options import unreachable_sql

pytest_plugins = ["tests.objstore_servers"]
pytestmark = pytest.mark.usefixtures("prefect_api")


def s3_record(bucket: str, key: str, event: str = "ObjectCreated:Put") -> dict:
    """One record of an S3 event notification, its key URL-encoded as S3 sends it."""
    from urllib.parse import quote_plus

    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-03-10T08:00:00.000Z",
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "ingest",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe="/"), "size": 1, "sequencer": "00"},
        },
    }


def no_listing(self, prefix):  # replaces list_objects: an event run must not list
    raise AssertionError(f"listed {prefix!r} although the event named the items")


def failures(ledger, source_id: str) -> dict[str, str]:
    return {
        r["name"]: r["error"] for r in ledger.recent_items(source_id) if r["status"] == "failed"
    }


def test_s3_event_takes_exactly_the_named_objects(
    save_block, sqlite_ledger, queue, s3_bucket, moto_endpoint, monkeypatch
) -> None:
    client, bucket = s3_bucket
    for key in ("in/a b.csv", "in/c+d (1).csv", "in/untouched.csv", "out/x.csv", "in/y.txt"):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    src = S3Source(
        source_id="s3evt",
        aws_credentials=aws_credentials(moto_endpoint),
        bucket=bucket,
        prefix="in/",
        pattern="*.csv",
        retries=0,
    )
    event = {
        "Records": [
            s3_record(bucket, "in/a b.csv"),
            s3_record(bucket, "in/c+d (1).csv"),
            s3_record("another-bucket", "in/a b.csv"),
            s3_record(bucket, "out/x.csv"),
            s3_record(bucket, "in/y.txt"),
            s3_record(bucket, "in/missing.csv"),
            s3_record(bucket, "in/untouched.csv", "ObjectRemoved:Delete"),
        ]
    }
    monkeypatch.setattr(S3Source, "list_objects", no_listing)

    state = run_flow(ingest_s3, save_block, sqlite_ledger, queue, src, trigger=event)
    assert state.is_failed()  # items failed: the run says so, the others are landed
    assert "4 of 6 item(s) failed" in state.message
    assert sorted(r["name"] for r in landed(sqlite_ledger, "s3evt")) == [
        "in/a b.csv",
        "in/c+d (1).csv",
    ]
    for row in landed(sqlite_ledger, "s3evt"):
        assert Path(row["landed_path"]).read_bytes() == row["name"].encode()
    failed = failures(sqlite_ledger, "s3evt")
    # the same key from another bucket is refused although the name was taken from ours
    assert "another-bucket" in failed["in/a b.csv"]
    assert "prefix 'in/'" in failed["out/x.csv"]
    assert "pattern '*.csv'" in failed["in/y.txt"]
    assert "no such object" in failed["in/missing.csv"]
    assert "in/untouched.csv" not in failed

    # the same event again: the ledger dedupes (fingerprint from HEAD = the listing's)
    ok = {"Records": event["Records"][:2]}
    again = run_flow(ingest_s3, save_block, sqlite_ledger, queue, src, trigger=ok)
    assert again.is_completed(), again.message
    assert (again.result()["landed"], again.result()["skipped"]) == (0, 2)


def test_s3_listing_after_an_event_run_takes_only_the_rest(
    save_block, sqlite_ledger, queue, s3_bucket, moto_endpoint
) -> None:
    client, bucket = s3_bucket
    for key in ("in/1.csv", "in/2.csv"):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    src = S3Source(source_id="s3mix", aws_credentials=aws_credentials(moto_endpoint), bucket=bucket)
    first = run_flow(
        ingest_s3,
        save_block,
        sqlite_ledger,
        queue,
        src,
        trigger={"items": [f"s3://{bucket}/in/1.csv"]},
    )
    assert (first.result()["listed"], first.result()["landed"]) == (1, 1)
    listing = run_flow(ingest_s3, save_block, sqlite_ledger, queue, src)
    assert (listing.result()["listed"], listing.result()["landed"]) == (2, 1)
    assert listing.result()["landed_names"] == ["in/2.csv"]


def test_gcs_pubsub_notification_takes_the_named_object(
    save_block, sqlite_ledger, queue, gcs_bucket, monkeypatch
) -> None:
    client, bucket = gcs_bucket
    for key in ("in/day 1.csv", "in/other.csv"):
        client.bucket(bucket).blob(key).upload_from_string(key.encode())
    blob = client.bucket(bucket).get_blob("in/day 1.csv")
    resource = {
        "kind": "storage#object",
        "name": blob.name,
        "bucket": bucket,
        "generation": str(blob.generation),
        "size": str(blob.size),
        "md5Hash": blob.md5_hash,
    }
    push = {
        "message": {
            "attributes": {
                "bucketId": bucket,
                "objectId": blob.name,
                "objectGeneration": str(blob.generation),
                "eventType": "OBJECT_FINALIZE",
                "payloadFormat": "JSON_API_V1",
            },
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "messageId": "1",
            "publishTime": "2026-03-10T08:00:00Z",
        },
        "subscription": "projects/test-project/subscriptions/ingest",
    }
    src = GcsSource(source_id="gcsevt", gcp_credentials=gcp_credentials(), bucket=bucket)
    monkeypatch.setattr(GcsSource, "list_objects", no_listing)
    state = run_flow(ingest_gcs, save_block, sqlite_ledger, queue, src, trigger=push)
    assert state.is_completed(), state.message
    assert state.result()["landed_names"] == ["in/day 1.csv"]
    # a delete notification names nothing: the run takes nothing and lists nothing
    push["message"]["attributes"]["eventType"] = "OBJECT_DELETE"
    gone = run_flow(ingest_gcs, save_block, sqlite_ledger, queue, src, trigger=push)
    assert gone.is_completed() and gone.result()["listed"] == 0


def test_local_folder_items_and_date(save_block, sqlite_ledger, queue, tmp_path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    for name in ("BANK_20260309.csv", "BANK_20260310.csv", "sub/BANK_20260309.csv"):
        (inbox / name).write_text(name)
    src = LocalFolderSource(
        source_id="evtfolder", directory=str(inbox), pattern="BANK_{date:%Y%m%d}.csv"
    )
    trigger = {
        "items": ["BANK_20260309.csv", "BANK_20260310.csv", "sub/BANK_20260309.csv"],
        "date": "2026-03-09",
    }
    state = run_flow(
        ingest_local_folder, save_block, sqlite_ledger, queue, src,
        trigger=trigger, fail_on_item_error=False,
    )  # fmt: skip
    result = state.result()
    assert (result["partition_date"], result["landed"], result["failed"]) == ("2026-03-09", 1, 2)
    [row] = landed(sqlite_ledger, "evtfolder")
    assert row["landed_path"].endswith("evtfolder/2026/03/09/BANK_20260309.csv")
    failed = failures(sqlite_ledger, "evtfolder")
    assert "pattern 'BANK_20260309.csv'" in failed["BANK_20260310.csv"]
    assert "not recursive" in failed["sub/BANK_20260309.csv"]


@pytest.mark.parametrize(
    ("trigger", "where"),
    [
        ({"Records": [{"eventSource": "aws:sqs"}]}, "trigger.Records[0].eventSource"),
        ({"message": {"attributes": {}}}, "trigger.message"),
        ({"items": "a.csv"}, "trigger.items"),
        ({"items": ["a.csv"], "date": "2026-13-01"}, "trigger.date"),
    ],
)
def test_bad_trigger_fails_before_any_block_is_loaded(save_block, trigger, where) -> None:
    state = ingest_local_folder(source_block="no-such-block", trigger=trigger, return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ConfigError) and exc.where == where, exc


def test_trigger_date_conflicting_with_the_date_parameter(save_block) -> None:
    state = ingest_local_folder(
        source_block="no-such-block",
        date=date(2026, 3, 1),
        trigger={"date": "2026-03-02"},
        return_state=True,
    )
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ConfigError) and exc.where == "trigger.date", exc


def test_unknown_source_block_with_an_event(save_block) -> None:
    state = ingest_local_folder(
        source_block="no-such-block", trigger={"items": ["a.csv"]}, return_state=True
    )
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ConfigError) and exc.where == "source_block", exc


def test_sql_source_refuses_named_items_before_any_io(save_block, sqlite_ledger, queue) -> None:
    state = run_flow(
        ingest_sql, save_block, sqlite_ledger, queue, unreachable_sql("sqlevt"),
        trigger={"items": ["orders.csv"]},
    )  # fmt: skip
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ConfigError) and exc.where == "trigger", exc
    assert "SqlSource cannot take named items" in str(exc)
    assert sqlite_ledger.recent_runs("sqlevt", limit=5) == []  # no run started
