"""Flow: export a BigQuery query to a file and land it exactly once."""

from __future__ import annotations

from blocks.warehouse.bigquery import BigQueryQuerySource
from pipeline.source_flow import source_flow

ingest_bigquery = source_flow(
    BigQueryQuerySource,
    "ingest-bigquery",
    "Export a BigQuery query (all rows, or the rows past the ledger's watermark, behind a "
    "lag window on time columns) to CSV/JSONL/Parquet, land it, enqueue it and record it; "
    "the watermark moves only with the recorded file.",
)
