"""The trigger parser (`pipeline/event_payloads.py`) on real event JSON: the AWS documented
S3 event notification (version 2.1 sample), S3 through EventBridge, a GCS Pub/Sub push
body (JSON_API_V1 payload), a plain item list, a logical day; bad shapes fail naming the
field. No server: pure parsing."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
from urllib.parse import quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.errors import ConfigError
from blocks.core.source import NamedItem
from pipeline.event_payloads import EventSelection, merge_date, parse_trigger

EXAMPLES = int(os.environ.get("INGEST_PROPERTY_EXAMPLES", "20"))

# The sample of https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
# (one ObjectCreated:Put record), with a key holding spaces and a '+' as S3 encodes them.
S3_EVENT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-west-2",
            "eventTime": "1970-01-01T00:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "testConfigRule",
                "bucket": {
                    "name": "amzn-s3-demo-bucket",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::amzn-s3-demo-bucket",
                },
                "object": {
                    "key": "in/2026/HappyFace+%281%29+a%2Bb.jpg",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}

# A GCS object resource as the JSON_API_V1 payload of a Pub/Sub notification carries it.
GCS_OBJECT = {
    "kind": "storage#object",
    "id": "my-bucket/in/day 1.csv/1700000000000000",
    "selfLink": "https://www.googleapis.com/storage/v1/b/my-bucket/o/in%2Fday%201.csv",
    "name": "in/day 1.csv",
    "bucket": "my-bucket",
    "generation": "1700000000000000",
    "metageneration": "1",
    "contentType": "text/csv",
    "timeCreated": "2026-03-10T08:00:00.000Z",
    "updated": "2026-03-10T08:00:00.000Z",
    "size": "42",
    "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
    "crc32c": "AAAAAA==",
    "etag": "CICAgICAgICAgAE=",
}


def pubsub_push(resource: dict, **attributes: str) -> dict:
    """A Pub/Sub push request body for a GCS notification (payload format JSON_API_V1)."""
    attrs = {
        "bucketId": resource["bucket"],
        "objectId": resource["name"],
        "objectGeneration": resource["generation"],
        "eventType": "OBJECT_FINALIZE",
        "eventTime": "2026-03-10T08:00:00.123456Z",
        "payloadFormat": "JSON_API_V1",
        "notificationConfig": "projects/_/buckets/my-bucket/notificationConfigs/1",
        **attributes,
    }
    return {
        "message": {
            "attributes": attrs,
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "messageId": "2070443601311540",
            "message_id": "2070443601311540",
            "publishTime": "2026-03-10T08:00:00.321Z",
            "publish_time": "2026-03-10T08:00:00.321Z",
        },
        "subscription": "projects/myproject/subscriptions/mysubscription",
    }


def test_s3_notification_keys_are_url_decoded() -> None:
    sel = parse_trigger(S3_EVENT)
    assert sel.shape == "S3 event" and sel.date is None
    assert sel.items == (
        NamedItem(
            "in/2026/HappyFace (1) a+b.jpg",
            "amzn-s3-demo-bucket",
            "trigger.Records[0].s3.object.key",
        ),
    )


def test_s3_removal_records_name_nothing_and_several_records_keep_their_order() -> None:
    event = copy.deepcopy(S3_EVENT)
    removed = copy.deepcopy(event["Records"][0])
    removed["eventName"] = "ObjectRemoved:Delete"
    removed["s3"]["object"]["key"] = "gone.csv"
    second = copy.deepcopy(event["Records"][0])
    second["eventName"] = "ObjectCreated:CompleteMultipartUpload"
    second["s3"]["object"]["key"] = "big%2Ffile.parquet"
    event["Records"] += [removed, second]
    sel = parse_trigger(event)
    assert [i.name for i in sel.items] == ["in/2026/HappyFace (1) a+b.jpg", "big/file.parquet"]
    assert sel.ignored == ("ObjectRemoved:Delete 'gone.csv'",)
    assert "ignored" in sel.describe()


def test_s3_test_event_names_nothing() -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-03-10T08:00:00.000Z",
        "Bucket": "amzn-s3-demo-bucket",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert parse_trigger(test_event).items == ()


def test_s3_through_eventbridge() -> None:
    event = {
        "version": "0",
        "id": "2d4eba74-fd51-3966-4bfa-b013c9da8ff1",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-03-10T08:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:s3:::amzn-s3-demo-bucket"],
        "detail": {
            "version": "0",
            "bucket": {"name": "amzn-s3-demo-bucket"},
            "object": {"key": "in/a b.csv", "size": 5, "etag": "b1946ac9", "sequencer": "00"},
            "request-id": "57H08PA84AB1JZW0",
            "reason": "PutObject",
        },
    }
    assert parse_trigger(event).items == (
        NamedItem("in/a b.csv", "amzn-s3-demo-bucket", "trigger.detail.object.key"),
    )
    event["detail-type"] = "Object Deleted"
    assert parse_trigger(event).items == ()


def test_gcs_pubsub_push_uses_the_attributes() -> None:
    sel = parse_trigger(pubsub_push(GCS_OBJECT))
    assert sel.shape == "GCS notification"
    assert sel.items == (
        NamedItem("in/day 1.csv", "my-bucket", "trigger.message.attributes.objectId"),
    )


def test_gcs_pubsub_push_without_attributes_reads_the_data() -> None:
    body = pubsub_push(GCS_OBJECT)
    body["message"]["attributes"] = {"eventType": "OBJECT_FINALIZE"}
    assert parse_trigger(body).items == (
        NamedItem("in/day 1.csv", "my-bucket", "trigger.message.data.name"),
    )


def test_gcs_delete_and_metadata_events_name_nothing() -> None:
    for event in ("OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_ARCHIVE"):
        sel = parse_trigger(pubsub_push(GCS_OBJECT, eventType=event))
        assert sel.items == () and sel.ignored == (f"{event} 'in/day 1.csv'",)


def test_gcs_object_resource_itself() -> None:
    assert parse_trigger(GCS_OBJECT).items == (
        NamedItem("in/day 1.csv", "my-bucket", "trigger.name"),
    )


def test_plain_item_list_with_urls_and_a_date() -> None:
    sel = parse_trigger(
        {"items": ["a.csv", "s3://b1/in/x.csv", "gs://b2/y z.csv"], "date": "2026-03-09"}
    )
    assert sel.items == (
        NamedItem("a.csv", None, "trigger.items[0]"),
        NamedItem("in/x.csv", "b1", "trigger.items[1]"),
        NamedItem("y z.csv", "b2", "trigger.items[2]"),
    )
    assert sel.date == dt.date(2026, 3, 9)
    for key in ("names", "keys", "paths"):
        assert parse_trigger({key: ["a.csv"]}).items == (
            NamedItem("a.csv", None, f"trigger.{key}[0]"),
        )


def test_date_alone_and_plain_notices() -> None:
    assert parse_trigger({"date": "2026-03-09"}) == EventSelection(
        date=dt.date(2026, 3, 9), shape="date"
    )
    # no recognised key: a plain notice, the run lists the source as before
    assert parse_trigger({"event": "file-dropped", "name": "c.csv"}).items is None
    assert parse_trigger(None).items is None and parse_trigger({}).items is None


@pytest.mark.parametrize(
    ("trigger", "where"),
    [
        ({"Records": []}, "trigger.Records"),
        ({"Records": "x"}, "trigger.Records"),
        ({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}, "trigger.Records[0].eventSource"),
        ({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}}}]},
         "trigger.Records[0].s3.object.key"),
        ({"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": 7}}}]},
         "trigger.Records[0].s3.object.key"),
        ({"message": "hello"}, "trigger.message"),
        ({"message": {"attributes": {}}}, "trigger.message"),
        ({"message": {"data": "not base64!"}}, "trigger.message.data"),
        ({"message": {"data": base64.b64encode(b"[1]").decode()}}, "trigger.message.data"),
        ({"message": {"attributes": {"objectId": "k"}}}, "trigger.message.attributes.bucketId"),
        ({"source": "aws.s3", "detail": {}}, "trigger.detail.bucket.name"),
        ({"kind": "storage#object", "bucket": "b"}, "trigger.name"),
        ({"items": []}, "trigger.items"),
        ({"items": "a.csv"}, "trigger.items"),
        ({"items": ["a.csv", ""]}, "trigger.items[1]"),
        ({"items": ["ftp://h/a.csv"]}, "trigger.items[0]"),
        ({"items": ["s3://bucket-only"]}, "trigger.items[0]"),
        ({"items": ["a"], "keys": ["b"]}, "trigger"),
        ({"items": ["x"] * 10_001}, "trigger"),
        ({"date": "10/03/2026"}, "trigger.date"),
        ({"date": 20260310}, "trigger.date"),
    ],
)  # fmt: skip
def test_bad_shapes_fail_naming_the_field(trigger, where) -> None:
    with pytest.raises(ConfigError) as err:
        parse_trigger(trigger)
    assert err.value.where == where, str(err.value)
    assert "\n" not in str(err.value)


def test_trigger_date_and_date_parameter_must_agree() -> None:
    sel = parse_trigger({"date": "2026-03-09"})
    assert merge_date(None, sel) == dt.date(2026, 3, 9)
    assert merge_date(dt.date(2026, 3, 9), sel) == dt.date(2026, 3, 9)
    assert merge_date(dt.date(2026, 3, 1), parse_trigger({})) == dt.date(2026, 3, 1)
    with pytest.raises(ConfigError) as err:
        merge_date(dt.date(2026, 3, 1), sel)
    assert err.value.where == "trigger.date"


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_any_key_survives_s3_url_encoding(key: str) -> None:
    """S3 encodes keys in notifications like `quote_plus` (space as '+', '+' as '%2B',
    UTF-8 percent-escapes): the parser gives back the exact key."""
    record = copy.deepcopy(S3_EVENT["Records"][0])
    record["s3"]["object"]["key"] = quote_plus(key, safe="/")
    [item] = parse_trigger({"Records": [record]}).items
    assert item.name == key
