"""Flow: ingest files from an SFTP server."""

from __future__ import annotations

from blocks.sftp.block import SftpSource
from pipeline.source_flow import source_flow

ingest_sftp = source_flow(
    SftpSource,
    "ingest-sftp",
    "Land new files from an SFTP folder exactly once: list (date-templated pattern), dedupe "
    "against the ledger, download with pipelined reads over parallel connections, verify "
    "SHA256 sidecars, land, enqueue, record. `date` picks the day; `force` re-downloads.",
)
