"""Webhook receiver: a small Starlette app that starts a source's deployment on a signed POST.

Run: `python -m ops.webhook_receiver --host 127.0.0.1 --port 8088` (PREFECT_API_URL set).

- `GET /`: health (`{"status": "ok"}`).
- `POST /webhooks/{name}`: loads the `Ingest Webhook Endpoint` block named `name` (404 if
  none), checks the body size (413 above `max_body_bytes`, read in bounded chunks; a lying
  Content-Length does not help), checks `X-Ingest-Timestamp` is within `max_age_seconds`
  of now and `X-Ingest-Signature: sha256=<hex>` = HMAC-SHA256 of `"<timestamp>." + body`
  with the block's secret in constant time (401), parses the body as a JSON object (422),
  then `run_deployment(block.deployment, parameters={"trigger": body}, timeout=0,
  idempotency_key=...)` and answers 202 with the flow run id. The deployment's
  concurrency policy applies (a CANCEL_NEW deployment cancels a run that would overlap).

Replays: a captured request is refused once its timestamp is older than `max_age_seconds`
(default 300); inside that window the same request carries the same signature, which is
the run's idempotency key, so Prefect hands back the run it already started instead of a
new one (202 with the same id).

Prefect Cloud has built-in webhooks; this receiver is for the self-hosted server. The secret
is never logged or echoed; error bodies say what is wrong, not what was expected.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from blocks.core import block_lookup
from blocks.core.webhook_endpoint import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookEndpoint

logger = logging.getLogger("ingest.webhook")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")

Loader = Callable[[str], Awaitable["WebhookEndpoint | None"]]
Starter = Callable[[str, dict[str, Any], str], Awaitable[str]]


class _TooLarge(Exception):
    pass


def sign(secret: str, body: bytes, timestamp: int | str | None = None) -> str:
    """The signature header value a sender must send for `body` sent at `timestamp`.

    With a timestamp (the default scheme) the signed bytes are `b"<timestamp>." + body`;
    without one (`max_age_seconds=0` endpoints) the body alone.
    """
    signed = body if timestamp is None else f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers for a sender (and the tests): timestamp now, signature over it and body."""
    stamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(secret, body, stamp)}


async def load_endpoint(name: str) -> WebhookEndpoint | None:
    """The named endpoint block, None if there is none. Installs the block lookup first
    (idempotent): without it each load imports every installed Prefect collection to
    resolve the block type."""
    block_lookup.install()
    try:
        return await WebhookEndpoint.aload(name)
    except ValueError:  # Prefect's "Unable to find block document named ..."
        return None


async def start_deployment(deployment: str, trigger: dict[str, Any], key: str) -> str:
    from prefect.deployments import run_deployment

    run = await run_deployment(
        deployment, parameters={"trigger": trigger}, timeout=0, idempotency_key=key
    )
    return str(run.id)


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _refused_payload(payload: dict[str, Any], mode: str) -> str | None:
    """Why the body cannot start a run, or None. Checked here, so a sender learns of a
    malformed event at once (400) instead of through a Failed run; the flow checks again."""
    from blocks.core.errors import ConfigError
    from pipeline.event_payloads import parse_trigger

    try:
        selection = parse_trigger(payload)
    except ConfigError as exc:
        return str(exc)
    if mode == "items" and selection.items is None and selection.date is None:
        return (
            "trigger: unknown payload shape; this endpoint (payload=items) takes S3 event "
            'Records, a GCS Pub/Sub message or object, {"items": [...]} (or names, keys, '
            'paths) or {"date": "YYYY-MM-DD"}'
        )
    return None


def create_app(loader: Loader = load_endpoint, starter: Starter = start_deployment) -> Starlette:
    """The ASGI app; `loader` and `starter` are the Prefect seams (blocks, run_deployment)."""

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def receive(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if not _NAME.match(name):
            return _error(404, f"no webhook endpoint {name[:100]!r}")
        endpoint = await loader(name)
        if endpoint is None:
            return _error(404, f"no webhook endpoint {name!r}")
        try:
            body = await _read_bounded(request, endpoint.max_body_bytes)
        except _TooLarge:
            return _error(413, f"body larger than {endpoint.max_body_bytes} bytes")
        given = request.headers.get(SIGNATURE_HEADER, "")
        stamp: str | None = None
        if endpoint.max_age_seconds:
            stamp = request.headers.get(TIMESTAMP_HEADER, "")
            if not stamp.isdigit():
                return _error(401, f"missing or invalid {TIMESTAMP_HEADER} (unix seconds)")
            if abs(time.time() - int(stamp)) > endpoint.max_age_seconds:
                logger.warning("webhook %s: timestamp outside the allowed window", name)
                return _error(
                    401, f"{TIMESTAMP_HEADER} is more than {endpoint.max_age_seconds} s from now"
                )
        expected = sign(endpoint.secret.get_secret_value(), body, stamp)
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            logger.warning("webhook %s: bad or missing signature", name)
            return _error(401, f"missing or invalid {SIGNATURE_HEADER} (sha256=<hex hmac>)")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(422, f"body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return _error(422, "body must be a JSON object")
        refused = _refused_payload(payload, endpoint.payload)
        if refused:
            logger.warning("webhook %s: payload refused: %s", name, refused)
            return _error(400, refused)
        try:
            # Same signed request, same key: Prefect returns the run it already made.
            key = f"webhook-{name}-{expected.removeprefix('sha256=')}"
            run_id = await starter(endpoint.deployment, payload, key)
        except Exception as exc:
            logger.error("webhook %s: cannot start %s: %s", name, endpoint.deployment, exc)
            return _error(502, f"could not start deployment {endpoint.deployment!r}")
        logger.info("webhook %s: started %s run %s", name, endpoint.deployment, run_id)
        return JSONResponse(
            {"flow_run_id": run_id, "deployment": endpoint.deployment}, status_code=202
        )

    return Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/webhooks/{name}", receive, methods=["POST"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m ops.webhook_receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One line per request is ours; httpx would add an INFO line for each Prefect API call
    # (block load, deployment lookup, create_flow_run) the request makes.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
