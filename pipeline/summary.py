"""Run summary: counts kept during a run, shown as a table artifact and in the logs."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect.artifacts import create_table_artifact

# A run's result lists at most this many landed names (a run of 100k files would otherwise
# return, and persist, a multi-megabyte result); the counts stay exact.
LANDED_NAMES_MAX = 1000


@dataclass
class RunSummary:
    source: str
    partition_date: str
    listed: int = 0
    skipped: int = 0
    landed: int = 0
    failed: int = 0
    bytes: int = 0
    rows: int | None = None  # None: the source does not count rows (files)
    seconds: float = 0.0
    status: str = "running"
    failures: list[dict[str, str]] = field(default_factory=list)
    landed_names: list[str] = field(default_factory=list)  # first LANDED_NAMES_MAX

    def counts(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("failures", "landed_names")}

    def note_landed(self, name: str) -> None:
        """Count one landed item; its name is kept while fewer than LANDED_NAMES_MAX are."""
        self.landed += 1
        if len(self.landed_names) < LANDED_NAMES_MAX:
            self.landed_names.append(name)

    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    def log_line(self) -> str:
        return (
            f"source={self.source} date={self.partition_date} status={self.status} "
            f"listed={self.listed} skipped={self.skipped} landed={self.landed} "
            f"failed={self.failed} bytes={self.bytes}"
            + (f" rows={self.rows}" if self.rows is not None else "")
            + f" seconds={self.seconds:.2f} "
            f"({self.mb_per_second():.1f} MB/s)"
        )

    def table(self) -> list[dict[str, Any]]:
        """Rows of the artifact: counts (seconds to 2 decimals), MB/s, then one row per
        failure (at most 100)."""
        rows: list[dict[str, Any]] = []
        for key, value in self.counts().items():
            if key == "rows" and value is None:
                continue
            rows.append({"what": key, "value": round(value, 2) if key == "seconds" else value})
            if key == "seconds":
                rows.append({"what": "MB/s", "value": round(self.mb_per_second(), 2)})
        rows += [{"what": f"failed: {f['name']}", "value": f["error"]} for f in self.failures[:100]]
        return rows

    def publish(self) -> None:
        """Table artifact on the flow run: one row of counts, then one row per failure."""
        create_table_artifact(
            key=artifact_key("ingest-summary", self.source),
            table=self.table(),
            description=f"Ingest run summary: {self.log_line()}",
        )


def artifact_key(prefix: str, source: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', source.lower())}".strip("-")
