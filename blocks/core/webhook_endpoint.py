"""Webhook endpoint block: which deployment a signed POST starts, and its secret."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks.core.logos import code_example, logo_url

SIGNATURE_HEADER = "X-Ingest-Signature"
TIMESTAMP_HEADER = "X-Ingest-Timestamp"


class WebhookEndpoint(Block):
    """One webhook route of the receiver (`python -m ops.webhook_receiver`).

    The block's NAME is the route: a block saved as `partner-drop` serves
    `POST /webhooks/partner-drop`. The request carries `X-Ingest-Timestamp: <unix
    seconds>` and `X-Ingest-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + raw
    body, keyed with secret>`; the body (a JSON object) becomes the deployment run's
    `trigger` parameter. Requests older or newer than `max_age_seconds` are refused and
    a replayed request starts no second run (its signature is the run's idempotency key).
    """

    _block_type_name = "Ingest Webhook Endpoint"
    _block_type_slug = "ingest-webhook-endpoint"
    _logo_url = logo_url("ingest-webhook-endpoint")
    _code_example = code_example("WebhookEndpoint", "endpoint", "print(endpoint.deployment)")
    _description = (
        "A signed webhook route that starts a source's deployment (HMAC-SHA256 secret, "
        "body size limit)."
    )

    source: str = Field(description="Source id this endpoint is for (shown in logs).")
    deployment: str = Field(
        description="Deployment to start, '<flow name>/<deployment name>', "
        "e.g. 'ingest-local-folder/local-folder-demo'."
    )
    secret: SecretStr = Field(description="Shared HMAC-SHA256 secret (min 16 characters).")
    max_age_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Refuse requests whose X-Ingest-Timestamp is further than this from "
        "now (replay protection). 0: senders that cannot send a timestamp sign the body "
        "alone; replays are then only deduplicated, never refused.",
    )
    max_body_bytes: int = Field(
        default=65536, ge=1, le=10 * 1024 * 1024, description="Larger bodies get 413."
    )
    payload: Literal["any", "items"] = Field(
        default="any",
        title="Payload",
        description="any: any JSON object starts a run; a body in a known event shape (S3 "
        "Records, GCS Pub/Sub, items/names/keys/paths, date) must be well formed and the "
        "run takes exactly what it names, any other body starts a normal run. items: the "
        "body must name items or a date in a known shape; anything else gets 400 and "
        "starts nothing.",
    )

    @field_validator("deployment")
    @classmethod
    def _flow_slash_deployment(cls, value: str) -> str:
        if value.count("/") != 1 or not all(value.split("/")):
            raise ValueError("deployment: expected '<flow name>/<deployment name>'")
        return value

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("secret: must be at least 16 characters")
        return value
