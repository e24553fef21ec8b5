"""Where the embedded defaults live: `$INGEST_HOME` (default `~/.ingest`).

Absolute on purpose: a process worker runs each flow run in a temporary working
directory, so a relative default would vanish with it.
"""

from __future__ import annotations

import os
from pathlib import Path


def ingest_home() -> Path:
    return Path(os.environ.get("INGEST_HOME") or "~/.ingest").expanduser().absolute()


def default_ledger_path() -> str:
    return os.environ.get("INGEST_LEDGER_PATH") or str(ingest_home() / "ledger.db")


def default_landing_dir() -> str:
    return os.environ.get("INGEST_LANDING_DIR") or str(ingest_home() / "landing")
