"""Prefect blocks of the ingestion product.

Register them all with `prefect block register -m blocks`. Sources whose integration extra
is not installed (e.g. `pip install "prefect-ingest[aws]"` for S3) are left out, so a
core-only install still imports; `MISSING_EXTRAS` says what to install for each.
"""

import importlib

from blocks.errors import ChecksumMismatch, ConfigError, IngestError, LedgerError, UnsafeNameError
from blocks.handoff import IngestionQueue
from blocks.ledger import Ledger
from blocks.local_folder import LocalFolderSource
from blocks.queue_consumer import ClaimedMessage, QueueConsumer
from blocks.source import Candidate, DiscoverContext, SkipItem
from blocks.webhook import WebhookEndpoint

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

# class name -> (module, pip extra that provides its third-party packages)
_OPTIONAL_SOURCES = {
    "GcsSource": ("blocks.gcs_source", "gcp"),
    "RestApiSource": ("blocks.rest_api", "http"),
    "S3Source": ("blocks.s3_source", "aws"),
    "SftpSource": ("blocks.sftp", "sftp"),
    "SharePointSource": ("blocks.sharepoint", "http"),
    "SqlSource": ("blocks.sql_source", "sql"),
    "SnowflakeQuerySource": ("blocks.snowflake_source", "snowflake"),
    "BigQueryQuerySource": ("blocks.bigquery_source", "gcp"),
}
MISSING_EXTRAS: dict[str, str] = {}

for _name, (_module, _extra) in _OPTIONAL_SOURCES.items():
    try:
        globals()[_name] = getattr(importlib.import_module(_module), _name)
        __all__.append(_name)
    except ModuleNotFoundError as _exc:
        if (_exc.name or "").split(".")[0] in ("blocks", "flows"):
            raise
        MISSING_EXTRAS[_name] = f'pip install "prefect-ingest[{_extra}]" ({_exc.name} is missing)'
