"""Prefect blocks of the ingestion product.

Register them all with `prefect block register -m blocks`.
"""

from blocks.errors import ChecksumMismatch, ConfigError, IngestError, LedgerError, UnsafeNameError
from blocks.gcs_source import GcsSource
from blocks.handoff import IngestionQueue
from blocks.ledger import Ledger
from blocks.local_folder import LocalFolderSource
from blocks.queue_consumer import ClaimedMessage, QueueConsumer
from blocks.rest_api import RestApiSource
from blocks.s3_source import S3Source
from blocks.sftp import SftpSource
from blocks.sharepoint import SharePointSource
from blocks.source import Candidate, DiscoverContext, SkipItem
from blocks.sql_source import SqlSource
from blocks.webhook import WebhookEndpoint

__all__ = [
    "Candidate",
    "ChecksumMismatch",
    "ClaimedMessage",
    "ConfigError",
    "DiscoverContext",
    "GcsSource",
    "IngestError",
    "IngestionQueue",
    "Ledger",
    "LedgerError",
    "LocalFolderSource",
    "QueueConsumer",
    "RestApiSource",
    "S3Source",
    "SftpSource",
    "SharePointSource",
    "SkipItem",
    "SqlSource",
    "UnsafeNameError",
    "WebhookEndpoint",
]
