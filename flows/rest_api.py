"""Flow: ingest a REST API (or a plain HTTP pull) into one landed file per run."""

from __future__ import annotations

from blocks.http.rest_api import RestApiSource
from pipeline.source_flow import source_flow

ingest_rest = source_flow(
    RestApiSource,
    "ingest-rest",
    "Pull records from a REST API page by page (auth, pagination, retries, incremental "
    "watermark) into one JSONL/CSV file, dedupe by content sha256, land, enqueue, record.",
)
