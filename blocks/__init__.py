"""Prefect blocks of the ingestion product.

Register them all with `prefect block register -m blocks`. Optional sources are imported
on first use, so a flow run loads only its own source's client libraries; sources whose
integration extra is not installed (e.g. `pip install "prefect-ingest[aws]"` for S3) are
skipped by the registration, and `MISSING_EXTRAS` says what to install for each one asked
for.
"""

import importlib

from blocks.core import block_lookup
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
from blocks.local_folder.block import LocalFolderSource

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
    "LocalFolderSource",
    "QueueConsumer",
    "SkipItem",
    "UnsafeNameError",
    "WebhookEndpoint",
]

block_lookup.install()

# class name -> (module, pip extra that provides its third-party packages)
_OPTIONAL_SOURCES = {
    "GcsSource": ("blocks.object_store.gcs", "gcp"),
    "RestApiSource": ("blocks.http.rest_api", "http"),
    "S3Source": ("blocks.object_store.s3", "aws"),
    "SftpSource": ("blocks.sftp.block", "sftp"),
    "SharePointSource": ("blocks.sharepoint.block", "http"),
    "SqlSource": ("blocks.sql.block", "sql"),
    "SnowflakeQuerySource": ("blocks.warehouse.snowflake", "snowflake"),
    "BigQueryQuerySource": ("blocks.warehouse.bigquery", "gcp"),
}
MISSING_EXTRAS: dict[str, str] = {}  # filled as optional sources are asked for


def __getattr__(name: str):
    """Import an optional source on first use (PEP 562).

    Eager imports would load boto3, the Google and Snowflake clients and pyarrow into
    every flow run (~180 MB RSS measured) even when it only runs, say, the SQL source.
    """
    spec = _OPTIONAL_SOURCES.get(name)
    if spec is None:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    module, extra = spec
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("blocks", "flows"):
            raise
        MISSING_EXTRAS[name] = f'pip install "prefect-ingest[{extra}]" ({exc.name} is missing)'
        # AttributeError: `prefect block register -m blocks` (inspect.getmembers) skips it
        raise AttributeError(f"{name} needs {MISSING_EXTRAS[name]}") from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OPTIONAL_SOURCES))
