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

from blocks.registry import BY_CLASS

# Core names -> module, imported on first use like the sources: `import blocks` itself
# loads no Prefect, so a process that needs one module (the SFTP range worker runs
# `blocks.sftp.range_worker`) does not pay Prefect's import (2.5 s and 117 MB measured).
_CORE: dict[str, str] = {
    "BrokerRelay": "blocks.core.outbox",
    "Candidate": "blocks.core.source",
    "ChecksumMismatch": "blocks.core.errors",
    "ClaimedMessage": "blocks.core.queue_consumer",
    "ConfigError": "blocks.core.errors",
    "DayCompleteRule": "blocks.reconcile.day_complete",
    "DiscoverContext": "blocks.core.source",
    "IngestError": "blocks.core.errors",
    "IngestionQueue": "blocks.core.ingestion_queue",
    "Ledger": "blocks.core.ledger",
    "LedgerError": "blocks.core.errors",
    "QueueConsumer": "blocks.core.queue_consumer",
    "SkipItem": "blocks.core.source",
    "UnsafeNameError": "blocks.core.errors",
    "WebhookEndpoint": "blocks.core.webhook_endpoint",
}

__all__ = [  # noqa: F822 (imported on first use by __getattr__)
    "BrokerRelay",
    "Candidate",
    "ChecksumMismatch",
    "ClaimedMessage",
    "ConfigError",
    "DayCompleteRule",
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
    """Import a core name or a source block (its line in `blocks/registry.py`) on first use.

    Eager imports would load boto3, the Google and Snowflake clients and pyarrow into
    every flow run (~180 MB RSS measured) even when it only runs, say, the SQL source.
    """
    if name in _CORE:
        value = getattr(importlib.import_module(_CORE[name]), name)
        globals()[name] = value
        return value
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
    return sorted(set(globals()) | set(_CORE) | set(BY_CLASS))
