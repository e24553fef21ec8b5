"""Webhook receiver: routing, auth and limits with Starlette's TestClient and real blocks
on the test API. The deployment start is the one seam replaced (recorded); the e2e test
starts a real run through a real receiver."""

from __future__ import annotations

import json
import logging
import time

import pytest
from starlette.testclient import TestClient

from blocks.core.webhook_endpoint import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookEndpoint
from ops.webhook_receiver import create_app, sign, signed_headers

SECRET = "s3cret-value-0123456789"


@pytest.fixture
def endpoint(save_block) -> str:
    return save_block(
        WebhookEndpoint(
            source="bank",
            deployment="ingest-local-folder/bank",
            secret=SECRET,
            max_body_bytes=1000,
        ),
        prefix="wh",
    )


@pytest.fixture
def started():
    return []


@pytest.fixture
def client(started) -> TestClient:
    async def starter(deployment, trigger, key):
        started.append((deployment, trigger, key))
        return "run-1"

    return TestClient(create_app(starter=starter))


def post(client, name, body: bytes, signature: str | None = None, headers=None):
    """POST with `headers`, or with a timestamp of now and the given signature."""
    if headers is None:
        headers = {TIMESTAMP_HEADER: str(int(time.time()))}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
    headers = {"content-type": "application/json", **headers}
    return client.post(f"/webhooks/{name}", content=body, headers=headers)


def signed(body: bytes, now: float | None = None) -> dict[str, str]:
    return signed_headers(SECRET, body, now)


def test_health(client):
    assert client.get("/").json() == {"status": "ok"}


def test_signed_post_starts_the_deployment(client, endpoint, started):
    body = json.dumps({"file": "BANK_20260310.csv"}).encode()
    resp = post(client, endpoint, body, headers=signed(body))
    assert resp.status_code == 202, resp.text
    assert resp.json()["flow_run_id"] == "run-1"
    [(deployment, trigger, _)] = started
    assert (deployment, trigger) == ("ingest-local-folder/bank", {"file": "BANK_20260310.csv"})


@pytest.mark.parametrize("signature", [None, "", "sha256=00", "sha256=" + "0" * 64])
def test_bad_signature_is_401(client, endpoint, started, signature, caplog):
    caplog.set_level(logging.DEBUG)
    resp = post(client, endpoint, b'{"a": 1}', signature)
    assert resp.status_code == 401 and SIGNATURE_HEADER in resp.json()["error"]
    assert started == []
    assert SECRET not in resp.text and SECRET not in caplog.text


def test_signature_with_another_secret_is_401(client, endpoint):
    body = b'{"a": 1}'
    assert (
        post(client, endpoint, body, headers=signed_headers("another-secret-00", body)).status_code
        == 401
    )
    # the body alone signed (the no-timestamp scheme) does not pass a timestamped endpoint
    assert post(client, endpoint, body, sign(SECRET, body)).status_code == 401


@pytest.mark.parametrize(("offset", "words"), [(-400, "300 s"), (400, "300 s"), (None, "missing")])
def test_stale_future_or_missing_timestamp_is_401(client, endpoint, started, offset, words):
    body = b'{"a": 1}'
    if offset is None:
        headers = {SIGNATURE_HEADER: sign(SECRET, body, "")}
    else:
        headers = signed(body, time.time() + offset)  # correctly signed, wrong time
    resp = post(client, endpoint, body, headers=headers)
    assert resp.status_code == 401 and words in resp.json()["error"] and started == []


def test_replay_reuses_the_idempotency_key(client, endpoint, started):
    body = b'{"file": "a.csv"}'
    headers = signed(body)
    assert post(client, endpoint, body, headers=headers).status_code == 202
    assert post(client, endpoint, body, headers=headers).status_code == 202  # replayed
    later = signed(body, time.time() + 1)  # the sender's next, genuine delivery
    assert post(client, endpoint, body, headers=later).status_code == 202
    keys = [key for _, _, key in started]
    assert keys[0] == keys[1] != keys[2] and keys[0].startswith(f"webhook-{endpoint}-")
    assert SECRET not in "".join(keys)


def test_endpoint_without_timestamps_signs_the_body(client, save_block, started):
    name = save_block(
        WebhookEndpoint(source="legacy", deployment="a/b", secret=SECRET, max_age_seconds=0),
        prefix="wh",
    )
    body = b'{"a": 1}'
    assert (
        post(client, name, body, headers={SIGNATURE_HEADER: sign(SECRET, body)}).status_code == 202
    )
    assert post(client, name, body, headers=signed(body)).status_code == 401


def test_unknown_endpoint_is_404(client, prefect_api):
    body = b"{}"
    assert post(client, "no-such-endpoint", body, headers=signed(body)).status_code == 404
    assert post(client, "Bad_Name", body, headers=signed(body)).status_code == 404


def test_large_body_is_413_before_auth(client, endpoint, started):
    body = json.dumps({"x": "y" * 2000}).encode()
    resp = post(client, endpoint, body, headers=signed(body))
    assert resp.status_code == 413 and "1000 bytes" in resp.json()["error"]

    def chunks():  # no Content-Length: the streamed size is bounded too
        for _ in range(5):
            yield b"x" * 400

    resp = client.post(f"/webhooks/{endpoint}", content=chunks())
    assert resp.status_code == 413 and started == []


@pytest.mark.parametrize(("body", "words"), [(b"not json", "valid JSON"), (b"[1, 2]", "object")])
def test_signed_non_object_is_422(client, endpoint, started, body, words):
    resp = post(client, endpoint, body, headers=signed(body))
    assert resp.status_code == 422 and words in resp.json()["error"] and started == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"Records": [{"eventSource": "aws:s3", "s3": {}}]}, "trigger.Records[0]"),
        ({"items": "a.csv"}, "trigger.items"),
        ({"date": "yesterday"}, "trigger.date"),
    ],
)
def test_malformed_event_is_400_and_starts_nothing(client, endpoint, started, body, words):
    raw = json.dumps(body).encode()
    resp = post(client, endpoint, raw, headers=signed(raw))
    assert resp.status_code == 400 and words in resp.json()["error"] and started == []


def test_items_endpoint_refuses_an_unknown_shape(client, save_block, started):
    name = save_block(
        WebhookEndpoint(source="bank", deployment="ingest-s3/bank", secret=SECRET, payload="items"),
        prefix="whi",
    )
    unknown = json.dumps({"event": "file-dropped"}).encode()
    resp = post(client, name, unknown, headers=signed(unknown))
    assert resp.status_code == 400 and "unknown payload shape" in resp.json()["error"]
    assert started == []
    named = json.dumps({"items": ["in/a.csv"]}).encode()
    assert post(client, name, named, headers=signed(named)).status_code == 202
    assert [t for _, t, _ in started] == [{"items": ["in/a.csv"]}]


def test_block_validation_names_fields():
    with pytest.raises(ValueError, match="secret"):
        WebhookEndpoint(source="x", deployment="a/b", secret="short")
    with pytest.raises(ValueError, match="deployment"):
        WebhookEndpoint(source="x", deployment="nodash", secret=SECRET)


def test_secret_not_in_block_repr():
    block = WebhookEndpoint(source="x", deployment="a/b", secret=SECRET)
    assert SECRET not in repr(block) and SECRET not in str(block.model_dump())


def test_receiver_logs_one_line_per_request_not_its_api_calls(save_block, tmp_path):
    """The real receiver process against the test API: a signed POST starts a run of a real
    deployment; its output has the 'started' line and no httpx/Prefect client INFO lines."""
    import asyncio
    import os
    import socket
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    async def make_deployment() -> str:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("webhook-log-test")
            name = f"d-{uuid.uuid4().hex[:8]}"
            await client.create_deployment(
                flow_id=flow_id, name=name, entrypoint="tests.ops_flows:slow"
            )
        return f"webhook-log-test/{name}"

    deployment = asyncio.run(make_deployment())
    name = save_block(
        WebhookEndpoint(source="bank", deployment=deployment, secret=SECRET), prefix="wh"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_LOGGING_LEVEL": "INFO",  # as a server would run it; not the tests' WARNING
        "PYTHONPATH": str(root),
    }
    log = tmp_path / "receiver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.webhook_receiver", "--port", str(port)],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        body = json.dumps({"file": "a.csv"}).encode()
        resp = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/{name}",
            content=body,
            headers=signed_headers(SECRET, body),
            timeout=60,
        )
        assert resp.status_code == 202, resp.text
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    assert f"webhook {name}: started {deployment} run {resp.json()['flow_run_id']}" in text
    assert "HTTP Request:" not in text, text  # httpx's INFO line for each Prefect API call
    assert " | INFO    | prefect.client" not in text, text
    assert SECRET not in text
