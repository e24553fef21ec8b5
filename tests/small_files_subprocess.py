"""Lands a folder of small files through land-batch tasks, in a process a test kills.

Usage: python tests/small_files_subprocess.py LEDGER_DB LANDING_DIR SOURCE_DIR BATCH [EVENT_PER]
fsync is on (the batch's syncfs barriers run); prints the run's counts as JSON at the end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefect import flow

from blocks import IngestionQueue, Ledger, LocalFolderSource
from pipeline.engine import run_source
from tests.conftest import sqlite_connector


@flow(name="small-files-subprocess")
def small_files(
    ledger_db: str, landing: str, source_dir: str, batch: int, event_per: str = "item"
) -> dict:
    source = LocalFolderSource(
        source_id="smallkill", directory=source_dir, max_parallel=2, small_item_batch=batch
    )
    ledger = Ledger(database=sqlite_connector(Path(ledger_db)))
    queue = IngestionQueue(landing_dir=landing, fsync=True, event_per=event_per)
    return run_source(source, ledger, queue).counts()


if __name__ == "__main__":
    event_per = sys.argv[5] if len(sys.argv) > 5 else "item"
    print(json.dumps(small_files(*sys.argv[1:4], int(sys.argv[4]), event_per)))
