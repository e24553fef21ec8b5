"""Prefect blocks of the ingestion product.

Register them all with `prefect block register -m blocks`. Source blocks (one line each in
`blocks/registry.py`) are imported on first use, so a flow run loads only its own source's
client libraries; sources whose integration extra is not installed (e.g.
`pip install "prefect-ingest[aws]"` for S3) are skipped by the registration, and
`MISSING_EXTRAS` says what to install for each one asked for.

Importing this package changes nothing in Prefect: the block-lookup patch
(`blocks.core.block_lookup.install()`) is installed by the entry points that load blocks.
"""

import importlib

from blocks.core.errors import (
    ChecksumMismatch,
    ConfigError,
    IngestError,
    LedgerError,
    UnsafeNameError,
)
from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.ledger import Ledger
from blocks.core.queue_consumer import ClaimedMessage, QueueConsumer
from blocks.core.source import Candidate, DiscoverContext, SkipItem
from blocks.core.webhook_endpoint import WebhookEndpoint
from blocks.registry import BY_CLASS

__all__ = [
    "Candidate",
    "ChecksumMismatch",
    "ClaimedMessage",
    "ConfigError",
    "DiscoverContext",
    "IngestError",
    "IngestionQueue",
    "Ledger",
    "LedgerError",
    "QueueConsumer",
    "SkipItem",
    "UnsafeNameError",
    "WebhookEndpoint",
]

MISSING_EXTRAS: dict[str, str] = {}  # filled as sources whose extra is missing are asked for


def __getattr__(name: str):
    """Import a source block on first use (PEP 562), from its line in `blocks/registry.py`.

    Eager imports would load boto3, the Google and Snowflake clients and pyarrow into
    every flow run (~180 MB RSS measured) even when it only runs, say, the SQL source.
    """
    source = BY_CLASS.get(name)
    if source is None:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(source.module), name)
    except ModuleNotFoundError as exc:
        if source.extra is None or (exc.name or "").split(".")[0] in ("blocks", "flows"):
            raise
        MISSING_EXTRAS[name] = (
            f'pip install "prefect-ingest[{source.extra}]" ({exc.name} is missing)'
        )
        # AttributeError: `prefect block register -m blocks` (inspect.getmembers) skips it
        raise AttributeError(f"{name} needs {MISSING_EXTRAS[name]}") from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(BY_CLASS))
