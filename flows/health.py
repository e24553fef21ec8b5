"""Health flow: per-source success rate, last success, backlog, and missing daily files.

Reads the ledger only (`ingest_runs`, `ingest_items`), so it works for every source and
costs one small query per source. For sources that expect one file per day, a file not
landed by `cutoff + grace_minutes` (in the source's time zone) is "missing": the flow emits
the Prefect event `ingest.source.missing` (resource `ingest.source.<source>`) and ends
Failed, so either an automation on the event or one on failed `ingest-health` runs alerts.

Example automation (Prefect UI > Automations, or `prefect automation create`):
trigger on event `ingest.source.missing`, match `prefect.resource.id: ingest.source.*`,
action "Send a notification" with body `{{ event.payload.message }}`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select

from blocks import ledger_schema as t
from blocks.date_templates import render_date_template
from blocks.errors import ConfigError, IngestError
from blocks.ledger import Ledger
from blocks.timezones import check_timezone
from flows.block_loading import load_named_block

MISSING_EVENT = "ingest.source.missing"


class ExpectedDaily(BaseModel):
    """A file expected every day: `pattern` (date-templated glob) landed by cutoff + grace."""

    pattern: str = Field(description="Date-templated glob, e.g. 'BANK_{date:%Y%m%d}*.csv'.")
    cutoff: dt.time = Field(description="Local time by which the file is due, e.g. '07:00'.")
    grace_minutes: int = Field(default=30, ge=0, le=24 * 60)
    timezone: str = Field(default="UTC", description="IANA time zone of cutoff.")
    weekdays_only: bool = Field(default=False, description="No file expected Sat/Sun.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_timezone(value)


@dataclass
class SourceHealth:
    source: str
    runs: int
    success_rate: float | None
    last_success: str | None
    last_status: str | None
    backlog: int
    missing: str = ""


class SourcesMissing(IngestError):
    """Raised at the end of a health run in which expected files are missing."""


def source_health(ledger: Ledger, source: str, last_n_runs: int) -> SourceHealth:
    """Success rate over the last N finished runs, last success, failed-not-landed backlog."""
    r, i = t.runs.c, t.items.c
    with ledger.transaction() as conn:
        recent = conn.execute(
            select(r.status)
            .where(r.source == source, r.status != "running")
            .order_by(r.started_at.desc(), r.id.desc())
            .limit(last_n_runs)
        ).all()
        last_success = conn.execute(
            select(func.max(r.finished_at)).where(r.source == source, r.status == "completed")
        ).scalar()
        # Backlog: names whose latest failure has no landed/duplicate row created after it.
        latest_failure = (
            select(i.name, func.max(i.created_at).label("failed_at"))
            .where(i.source == source, i.status == "failed")
            .group_by(i.name)
            .subquery()
        )
        landed = t.items.alias("landed")
        backlog = conn.execute(
            select(func.count()).select_from(
                select(latest_failure.c.name)
                .where(
                    ~select(landed.c.id)
                    .where(
                        landed.c.source == source,
                        landed.c.name == latest_failure.c.name,
                        landed.c.status.in_(("landed", "duplicate")),
                        landed.c.created_at >= latest_failure.c.failed_at,
                    )
                    .exists()
                )
                .subquery()
            )
        ).scalar()
    statuses = [row.status for row in recent]
    return SourceHealth(
        source=source,
        runs=len(statuses),
        success_rate=(statuses.count("completed") / len(statuses)) if statuses else None,
        last_success=last_success.isoformat() if last_success else None,
        last_status=statuses[0] if statuses else None,
        backlog=int(backlog or 0),
    )


def missing_message(
    ledger: Ledger, source: str, rule: ExpectedDaily, now: dt.datetime
) -> str | None:
    """Why today's expected file is missing, or None (landed, not due yet, or no file day)."""
    local_now = now.astimezone(ZoneInfo(rule.timezone))
    day = local_now.date()
    if rule.weekdays_only and day.weekday() >= 5:
        return None
    due = dt.datetime.combine(day, rule.cutoff, ZoneInfo(rule.timezone)) + dt.timedelta(
        minutes=rule.grace_minutes
    )
    if local_now < due:
        return None
    wanted = render_date_template(rule.pattern, day)
    i = t.items.c
    with ledger.transaction() as conn:
        names = conn.execute(
            select(i.name)
            .distinct()
            .where(
                i.source == source,
                i.status.in_(("landed", "duplicate")),
                i.partition_date == day.isoformat(),
            )
        ).scalars()
        if any(fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], wanted) for name in names):
            return None
    return (
        f"{source}: no file matching {wanted!r} landed for {day} by "
        f"{due.strftime('%H:%M %Z')} (cutoff {rule.cutoff.strftime('%H:%M')} + "
        f"{rule.grace_minutes} min grace)"
    )


def known_sources(ledger: Ledger) -> list[str]:
    with ledger.transaction() as conn:
        return sorted(conn.execute(select(t.runs.c.source).distinct()).scalars())


def _emit_missing(source: str, message: str, rule: ExpectedDaily) -> None:
    from prefect.events import emit_event

    emit_event(
        event=MISSING_EVENT,
        resource={
            "prefect.resource.id": f"ingest.source.{source}",
            "prefect.resource.name": source,
        },
        payload={"message": message, "pattern": rule.pattern, "cutoff": str(rule.cutoff)},
    )


@flow(name="ingest-health", description="Per-source health; fails when expected files miss.")
def ingest_health(
    sources: list[str] | None = None,
    ledger_block: str | None = None,
    last_n_runs: int = 20,
    expected: dict[str, ExpectedDaily] | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Health of the given sources (default: every source in the ledger).

    Args:
        sources: Source ids to check; empty: all sources with runs in the ledger.
        ledger_block: Ingest Ledger block (empty: the default SQLite ledger).
        last_n_runs: Window of finished runs for the success rate (1..1000).
        expected: Per source id, a file expected every day: {"pattern":
            "BANK_{date:%Y%m%d}*.csv", "cutoff": "07:00", "grace_minutes": 30,
            "timezone": "Europe/Paris"}. Missing after cutoff + grace: event
            `ingest.source.missing` and a Failed run.
        now: Evaluation time (tests; default: now).
    """
    if not 1 <= last_n_runs <= 1000:
        raise ConfigError("last_n_runs", "must be between 1 and 1000")
    logger = get_run_logger()
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ConfigError("now", "must carry a time zone")
    expected = expected or {}
    ledger = load_named_block(Ledger, ledger_block, "ledger_block") if ledger_block else Ledger()
    try:
        names = list(dict.fromkeys([*(sources or known_sources(ledger)), *expected]))
        report: list[SourceHealth] = []
        missing: list[str] = []
        for name in names:
            health = source_health(ledger, name, last_n_runs)
            rule = expected.get(name)
            if rule is not None:
                message = missing_message(ledger, name, rule, now)
                if message:
                    health.missing = message
                    missing.append(message)
                    _emit_missing(name, message, rule)
                    logger.error(message)
            report.append(health)
    finally:
        ledger.dispose()
    rows = [asdict(h) for h in report]
    create_table_artifact(
        key="ingest-health",
        table=rows or [{"source": "(no sources)"}],
        description=f"Ingest health at {now.isoformat(timespec='seconds')}",
    )
    if missing:
        raise SourcesMissing("; ".join(missing))
    return rows
