"""Flows and a block used by the operations tests (importable by a real worker with
PYTHONPATH=<worktree>): a date-templated folder source and a slow flow."""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone

from prefect import flow

from blocks.date_templates import render_date_template
from blocks.local_folder import LocalFolderSource
from blocks.source import Candidate, DiscoverContext
from flows.source_flow import source_flow


class DatedFolderSource(LocalFolderSource):
    """A local folder whose pattern is date-templated: takes only the run day's files
    (like an SFTP source with `BANK_{date:%Y%m%d}.csv`)."""

    _block_type_name = "Test Dated Folder Source"
    _block_type_slug = "test-dated-folder-source"

    def discover(self, ctx: DiscoverContext) -> Iterator[Candidate]:
        wanted = render_date_template(self.pattern, ctx.partition_date)
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False) and fnmatch.fnmatchcase(entry.name, wanted):
                st = entry.stat(follow_symlinks=False)
                yield Candidate(
                    name=entry.name,
                    size=st.st_size,
                    mtime=datetime.fromtimestamp(st.st_mtime, tz=timezone.utc),
                    version=f"{st.st_size}:{st.st_mtime_ns}",
                    ref=entry.path,
                )


ingest_dated_folder = source_flow(
    DatedFolderSource, "ingest-dated-folder", "Test: date-templated local folder."
)


@flow(name="ops-slow")
def slow(seconds: float = 20.0) -> float:
    """Sleeps; used to prove overlap policies and clean worker shutdown."""
    time.sleep(seconds)
    return seconds
