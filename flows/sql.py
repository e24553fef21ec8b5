"""Flow: extract a PostgreSQL or MySQL/MariaDB table (or query) incrementally."""

from __future__ import annotations

from blocks.sql.block import SqlSource
from pipeline.source_flow import source_flow

ingest_sql = source_flow(
    SqlSource,
    "ingest-sql",
    "Extract new rows of a SQL table or query to files, past a lossless watermark kept in "
    "the ledger; land, enqueue and record them exactly once. Each pass lands one file per "
    "window and advances the watermark in the same ledger transaction; with "
    "`max_rows_per_file` the run keeps extracting until caught up (options.max_files).",
)
