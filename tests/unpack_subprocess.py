"""Runs a local-folder pipeline that unpacks zips, in a separate process, to be killed.

Usage: python tests/unpack_subprocess.py LEDGER_URL LANDING_DIR SOURCE_DIR
Once the first unpacked member is recorded (ledger row + message), the run creates
SOURCE_DIR/../one-member-recorded and sleeps, so the test can kill it between two members.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow
from prefect_sqlalchemy import SqlAlchemyConnector

from blocks import IngestionQueue, Ledger, LocalFolderSource
from pipeline.engine import run_source


class StallingQueue(IngestionQueue):
    """Announces nothing: stalls right after the first item is recorded."""

    _block_type_slug = "test-stalling-queue"
    signal_file: str = ""

    def announce(self, message, batched: bool = False) -> None:
        Path(self.signal_file).touch()
        time.sleep(600)


@flow(name="unpack-subprocess")
def unpack_ingest(ledger_url: str, landing: str, source_dir: str) -> dict:
    source = LocalFolderSource(source_id="killed", directory=source_dir, unpack="zip")
    ledger = Ledger(database=SqlAlchemyConnector(connection_info=ledger_url))
    signal = str(Path(source_dir).parent / "one-member-recorded")
    queue = StallingQueue(landing_dir=landing, signal_file=signal)
    return run_source(source, ledger, queue).counts()


if __name__ == "__main__":
    unpack_ingest(*sys.argv[1:4])
