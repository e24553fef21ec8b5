"""Webhook receiver: routing, auth and limits with Starlette's TestClient and real blocks
on the test API. The deployment start is the one seam replaced (recorded); the e2e test
starts a real run through a real receiver."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.testclient import TestClient

from blocks.webhook import SIGNATURE_HEADER, WebhookEndpoint
from flows.webhook import create_app, sign

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
    async def starter(deployment, trigger):
        started.append((deployment, trigger))
        return "run-1"

    return TestClient(create_app(starter=starter))


def post(client, name, body: bytes, signature: str | None):
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return client.post(f"/webhooks/{name}", content=body, headers=headers)


def test_health(client):
    assert client.get("/").json() == {"status": "ok"}


def test_signed_post_starts_the_deployment(client, endpoint, started):
    body = json.dumps({"file": "BANK_20260310.csv"}).encode()
    resp = post(client, endpoint, body, sign(SECRET, body))
    assert resp.status_code == 202, resp.text
    assert resp.json()["flow_run_id"] == "run-1"
    assert started == [("ingest-local-folder/bank", {"file": "BANK_20260310.csv"})]


@pytest.mark.parametrize("signature", [None, "", "sha256=00", "sha256=" + "0" * 64])
def test_bad_signature_is_401(client, endpoint, started, signature, caplog):
    caplog.set_level(logging.DEBUG)
    resp = post(client, endpoint, b'{"a": 1}', signature)
    assert resp.status_code == 401 and SIGNATURE_HEADER in resp.json()["error"]
    assert started == []
    assert SECRET not in resp.text and SECRET not in caplog.text


def test_signature_with_another_secret_is_401(client, endpoint):
    body = b'{"a": 1}'
    assert post(client, endpoint, body, sign("another-secret-0000", body)).status_code == 401


def test_unknown_endpoint_is_404(client, prefect_api):
    body = b"{}"
    assert post(client, "no-such-endpoint", body, sign(SECRET, body)).status_code == 404
    assert post(client, "Bad_Name", body, sign(SECRET, body)).status_code == 404


def test_large_body_is_413_before_auth(client, endpoint, started):
    body = json.dumps({"x": "y" * 2000}).encode()
    resp = post(client, endpoint, body, sign(SECRET, body))
    assert resp.status_code == 413 and "1000 bytes" in resp.json()["error"]

    def chunks():  # no Content-Length: the streamed size is bounded too
        for _ in range(5):
            yield b"x" * 400

    resp = client.post(f"/webhooks/{endpoint}", content=chunks())
    assert resp.status_code == 413 and started == []


@pytest.mark.parametrize(("body", "words"), [(b"not json", "valid JSON"), (b"[1, 2]", "object")])
def test_signed_non_object_is_422(client, endpoint, started, body, words):
    resp = post(client, endpoint, body, sign(SECRET, body))
    assert resp.status_code == 422 and words in resp.json()["error"] and started == []


def test_block_validation_names_fields():
    with pytest.raises(ValueError, match="secret"):
        WebhookEndpoint(source="x", deployment="a/b", secret="short")
    with pytest.raises(ValueError, match="deployment"):
        WebhookEndpoint(source="x", deployment="nodash", secret=SECRET)


def test_secret_not_in_block_repr():
    block = WebhookEndpoint(source="x", deployment="a/b", secret=SECRET)
    assert SECRET not in repr(block) and SECRET not in str(block.model_dump())
