# ruff: noqa: F401, F811  (the real-server fixtures of test_ops_e2e are used by name)
"""Event-driven runs end to end: a REAL `prefect server start` with a REAL process worker
(the fixtures of tests/test_ops_e2e.py, one server for this module), the webhook receiver
as its own process, an S3 source on the moto server.

A signed S3 event notification (the real JSON, keys URL-encoded) posted to the receiver
starts the deployment; the run takes exactly the objects the event names (one with a
space and a '+' in its key), not the third object in the bucket. An event naming a
missing object and a new one lands the new one and ends Failed naming the missing one.
An event of an unknown record type ends Failed naming `trigger.Records[0].eventSource`,
landing nothing.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import quote_plus
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client

from blocks import S3Source
from blocks.core.webhook_endpoint import WebhookEndpoint
from ops.webhook_receiver import signed_headers
from tests.objstore_servers import aws_credentials, moto_endpoint
from tests.test_ops_e2e import (
    Env,
    _base,
    _ledger,
    deploy_test_copy,
    env,
    free_port,
    stores,
    wait_final,
    wait_http,
    worker,
)

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]
SECRET = "e2e-event-secret-0123"


def record(bucket: str, key: str, source: str = "aws:s3") -> dict:
    return {
        "eventVersion": "2.1",
        "eventSource": source,
        "awsRegion": "us-east-1",
        "eventTime": "2026-03-10T08:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe="/"), "size": 1, "sequencer": "00"},
        },
    }


@pytest.fixture(scope="module")
def s3(env: Env, stores, moto_endpoint):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
    )
    bucket = "e2e-events"
    client.create_bucket(Bucket=bucket)
    for key in ("drop/a b+c.csv", "drop/second.csv", "drop/not-named.csv"):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    S3Source(
        source_id="e2e-s3",
        aws_credentials=aws_credentials(moto_endpoint),
        bucket=bucket,
        prefix="drop/",
        retries=0,
    ).save("e2e-s3", overwrite=True)
    deploy_test_copy(
        env,
        [
            _base(
                "e2e-s3-events",
                "flows.s3:ingest_s3",
                parameters={"source_block": "e2e-s3", **stores},
            )
        ],
    )
    WebhookEndpoint(source="e2e-s3", deployment="ingest-s3/e2e-s3-events", secret=SECRET).save(
        "e2e-s3-events", overwrite=True
    )
    port = free_port()
    receiver = env.start(
        "webhook-events", sys.executable, "-m", "ops.webhook_receiver",
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    assert wait_http(f"http://127.0.0.1:{port}/", 60, receiver), env.log("webhook-events")
    return {
        "client": client,
        "bucket": bucket,
        "url": f"http://127.0.0.1:{port}/webhooks/e2e-s3-events",
    }


def post_event(env: Env, url: str, event: dict):
    body = json.dumps(event).encode()
    resp = httpx.post(url, content=body, headers=signed_headers(SECRET, body), timeout=30)
    assert resp.status_code == 202, resp.text
    with get_client(sync_client=True) as client:
        return wait_final(client, UUID(resp.json()["flow_run_id"]), 180)


def landed_names(env: Env) -> list[str]:
    return sorted(
        r["name"] for r in _ledger(env).recent_items("e2e-s3", 100) if r["status"] == "landed"
    )


def test_s3_event_through_the_webhook_takes_exactly_the_named_objects(env: Env, worker, s3):
    bucket = s3["bucket"]
    run = post_event(
        env,
        s3["url"],
        {"Records": [record(bucket, "drop/a b+c.csv"), record(bucket, "drop/second.csv")]},
    )
    assert run.state_name == "Completed", env.log("worker")
    assert landed_names(env) == ["drop/a b+c.csv", "drop/second.csv"]
    landed = sorted((env.tmp / "landing" / "e2e-s3").rglob("*.csv"))
    assert [p.name for p in landed] == ["a b+c.csv", "second.csv"]
    assert landed[0].read_bytes() == b"drop/a b+c.csv"


def test_missing_object_fails_the_run_and_the_others_land(env: Env, worker, s3):
    s3["client"].put_object(Bucket=s3["bucket"], Key="drop/third.csv", Body=b"3")
    event = {
        "Records": [record(s3["bucket"], "drop/gone.csv"), record(s3["bucket"], "drop/third.csv")]
    }
    run = post_event(env, s3["url"], event)
    assert run.state_name == "Failed", env.log("worker")
    assert "drop/gone.csv" in run.state.message and "no such object" in run.state.message
    assert "drop/third.csv" in landed_names(env)
    assert "drop/not-named.csv" not in landed_names(env)


def test_unknown_record_type_fails_naming_the_field(env: Env, worker, s3):
    from prefect.deployments import run_deployment

    before = landed_names(env)
    bad = {"Records": [record(s3["bucket"], "drop/x.csv", "aws:sqs")]}
    # The receiver refuses it before starting anything: 400 naming the field.
    body = json.dumps(bad).encode()
    resp = httpx.post(s3["url"], content=body, headers=signed_headers(SECRET, body), timeout=30)
    assert resp.status_code == 400 and "trigger.Records[0].eventSource" in resp.text
    # A run started with it anyway (a manual run) fails naming the field, taking nothing.
    started = run_deployment("ingest-s3/e2e-s3-events", parameters={"trigger": bad}, timeout=0)
    with get_client(sync_client=True) as client:
        run = wait_final(client, started.id, 180)
    assert run.state_name == "Failed", env.log("worker")
    assert "trigger.Records[0].eventSource" in run.state.message
    assert landed_names(env) == before
