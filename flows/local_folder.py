"""Flow: ingest a watched local folder."""

from __future__ import annotations

from blocks.local_folder.block import LocalFolderSource
from pipeline.source_flow import source_flow

ingest_local_folder = source_flow(
    LocalFolderSource,
    "ingest-local-folder",
    "Land new files from a watched local folder exactly once: list, dedupe against the "
    "ledger, stage, land, enqueue, record.",
)
