"""Flows and a block used by the operations tests (importable by a real worker with
PYTHONPATH=<worktree>): a date-templated folder source and a slow flow."""

from __future__ import annotations

import time

from prefect import flow

from blocks.local_folder.block import LocalFolderSource
from pipeline.source_flow import source_flow


class DatedFolderSource(LocalFolderSource):
    """A local folder under its own block type, used with a date-templated pattern
    (`BANK_{date:%Y%m%d}.csv`): `LocalFolderSource` renders the template itself, so this
    subclass only gives the operations tests a flow and block type of their own."""

    _block_type_name = "Test Dated Folder Source"
    _block_type_slug = "test-dated-folder-source"


ingest_dated_folder = source_flow(
    DatedFolderSource, "ingest-dated-folder", "Test: date-templated local folder."
)


@flow(name="ops-slow")
def slow(seconds: float = 20.0) -> float:
    """Sleeps; used to prove overlap policies and clean worker shutdown."""
    time.sleep(seconds)
    return seconds
