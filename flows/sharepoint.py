"""Flow: ingest new files from a SharePoint / OneDrive folder (Microsoft Graph)."""

from __future__ import annotations

from blocks.sharepoint.block import SharePointSource
from pipeline.source_flow import source_flow

ingest_sharepoint = source_flow(
    SharePointSource,
    "ingest-sharepoint",
    "Land new files from a SharePoint / OneDrive folder via Microsoft Graph: list (paged), "
    "dedupe by name against the ledger, download new files streaming, land, enqueue, record.",
)
