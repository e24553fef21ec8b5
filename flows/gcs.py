"""Flow: ingest new objects from Google Cloud Storage (needs only the `gcp` extra)."""

from __future__ import annotations

from blocks.object_store.gcs import GcsSource
from pipeline.source_flow import source_flow

ingest_gcs = source_flow(
    GcsSource,
    "ingest-gcs",
    "Land new objects from a Google Cloud Storage bucket exactly once: paged listing, "
    "dedupe by key + generation against the ledger, streamed download, land, enqueue, "
    "record, then keep/delete/archive the object.",
)
