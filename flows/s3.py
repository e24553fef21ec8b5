"""Flow: ingest new objects from S3 (needs only the `aws` extra)."""

from __future__ import annotations

from blocks.object_store.s3 import S3Source
from pipeline.source_flow import source_flow

ingest_s3 = source_flow(
    S3Source,
    "ingest-s3",
    "Land new objects from an S3 bucket (or S3-compatible store) exactly once: paged "
    "listing, dedupe by key + ETag against the ledger, streamed download, land, enqueue, "
    "record, then keep/delete/archive the object.",
)
