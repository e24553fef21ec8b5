"""The downstream flow the Day Complete Rule end-to-end test starts (importable by a real
worker with PYTHONPATH=<worktree>)."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run


@flow(name="e2e-recon")
def recon(date: str, landed_paths: dict[str, list[str]], out_dir: str) -> dict[str, list[str]]:
    """Writes what it was given (date, landed paths, whether each path exists) to
    `<out_dir>/<date>-<flow run id>.json`, so the test sees every run's parameters."""
    record = {
        "date": date,
        "landed_paths": landed_paths,
        "exist": all(Path(p).is_file() for paths in landed_paths.values() for p in paths),
    }
    Path(out_dir, f"{date}-{flow_run.id}.json").write_text(json.dumps(record))
    return landed_paths
