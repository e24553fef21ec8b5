"""Quick start: land a demo folder with the local folder flow on embedded defaults.

`python -m ops.demo [FOLDER]` creates FOLDER (default ./demo/inbox) with a few CSV files
if it is empty, saves a Local Folder Source block named `demo-inbox` on the configured
Prefect API (Prefect's embedded SQLite API when none is configured), and runs the flow
twice with the default SQLite ledger and landing area under $INGEST_HOME (default
~/.ingest): the first run lands the files, the second lands nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from blocks import IngestionQueue, Ledger, LocalFolderSource, QueueConsumer
from flows.local_folder import ingest_local_folder


def make_demo_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    for day in ("20250110", "20250111", "20250112"):
        rows = "\n".join(f"{day},{i},{i * 7 % 13}" for i in range(100))
        (folder / f"AXIS_RECON_{day}.csv").write_text(f"date,id,amount\n{rows}\n")


def main(argv: list[str]) -> int:
    folder = Path(argv[1] if len(argv) > 1 else "demo/inbox").absolute()
    make_demo_files(folder)
    LocalFolderSource(source_id="demo", directory=str(folder), pattern="*.csv").save(
        "demo-inbox", overwrite=True
    )
    first = ingest_local_folder(source_block="demo-inbox")
    second = ingest_local_folder(source_block="demo-inbox")
    queue = IngestionQueue()
    pending = QueueConsumer(Ledger(), "demo").pending_count("demo")
    for label, run in (("first run: ", first), ("second run:", second)):
        print(f"{label} landed={run['landed']} skipped={run['skipped']} failed={run['failed']}")
    print(f"landing area: {queue.landing_root}  queue messages waiting: {pending}")
    for path in sorted(queue.landing_root.rglob("*.csv")):
        print("  ", path.relative_to(queue.landing_root))
    return 0 if first["failed"] == 0 and second["landed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
