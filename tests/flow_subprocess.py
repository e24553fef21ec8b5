"""Runs the local-folder pipeline in a separate process, for crash and race tests.

Usage: python tests/flow_subprocess.py LEDGER_URL LANDING_DIR SOURCE_DIR [--hang-after-first-chunk]
Prints the run summary as JSON. With --hang-after-first-chunk every fetch writes its first
chunk to staging, signals it by creating SOURCE_DIR/../fetching, then sleeps (to be killed).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from prefect import flow
from prefect_sqlalchemy import SqlAlchemyConnector

from blocks import IngestionQueue, Ledger, LocalFolderSource
from pipeline.engine import run_source


class HangingFolderSource(LocalFolderSource):
    """A local folder whose reads stall after the first chunk (like a dropped link)."""

    _block_type_slug = "test-hanging-folder-source"

    def fetch(self, candidate, out):
        with open(candidate.ref, "rb") as fh:
            out.write(fh.read(1024))
        out.flush()
        (Path(self.directory).parent / "fetching").touch()
        time.sleep(600)


@flow(name="subprocess-ingest")
def subprocess_ingest(ledger_url: str, landing: str, source_dir: str, hang: bool) -> dict:
    cls = HangingFolderSource if hang else LocalFolderSource
    source = cls(source_id="race", directory=source_dir, max_parallel=4)
    ledger = Ledger(database=SqlAlchemyConnector(connection_info=ledger_url))
    queue = IngestionQueue(landing_dir=landing)
    return run_source(source, ledger, queue, fail_on_item_error=False).counts()


if __name__ == "__main__":
    url, landing, src = sys.argv[1:4]
    start_at = float(os.environ.get("INGEST_TEST_START_AT", "0"))
    time.sleep(max(0.0, start_at - time.time()))
    print(json.dumps(subprocess_ingest(url, landing, src, "--hang-after-first-chunk" in sys.argv)))
