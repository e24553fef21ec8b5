"""Health flow: per-source success rate, last success, backlog, and missing daily files.

Reads the ledger (`ingest_runs`, `ingest_items`), so it works for every source and costs
one small query per source. First it closes runs left `running` by a flow run that died
(`reconcile_runs`: the flow run's final state in Prefect, or `abandoned` when Prefect does
not know it and it is old), so crashed runs count as failures.

Beyond the ledger (`flows/source_checks.py`): each source block a deployment runs is
checked with its `test_connection` (in parallel, each bounded by
`connection_timeout_seconds`; event `ingest.source.connection-failed` per failure), and a
`freshness` rule per source ("nothing newly landed for N hours", any source type) emits
`ingest.source.stale`. Either ends the run Failed, as a missing file does.

For sources that expect one file per day, a file not landed by `cutoff + grace_minutes`
(in the source's time zone) is "missing": the flow emits the Prefect event
`ingest.source.missing` (resource `ingest.source.<source>`) and ends Failed, so either an
automation on the event or one on failed `ingest-health` runs alerts.

Example automation (Prefect UI > Automations, or `prefect automation create`):
trigger on event `ingest.source.missing`, match `prefect.resource.id: ingest.source.*`,
action "Send a notification" with body `{{ event.payload.message }}`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Failed
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from blocks.core import ledger_schema as t
from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError, IngestError
from blocks.core.events import emit_source_event
from blocks.core.ledger import Ledger
from blocks.core.timezones import TimezoneName
from flows.source_checks import (
    ALL_SOURCES,
    ConnectionChecks,
    check_freshness_sources,
    emit_connection_failed,
    emit_stale,
    last_landed,
    load_sources,
    parse_freshness,
    source_blocks_of_deployments,
    stale_message,
)
from pipeline.block_loading import load_named_block

MISSING_EVENT = "ingest.source.missing"
HEALTH_ARTIFACT_KEY = "ingest-health"  # one stable key: the sources dashboard


class ExpectedDaily(BaseModel):
    """A file expected every day: `pattern` (date-templated glob) landed by cutoff + grace."""

    pattern: str = Field(description="Date-templated glob, e.g. 'BANK_{date:%Y%m%d}*.csv'.")
    cutoff: dt.time = Field(description="Local time by which the file is due, e.g. '07:00'.")
    grace_minutes: int = Field(default=30, ge=0, le=24 * 60)
    timezone: TimezoneName = Field(default="UTC", description="IANA time zone of cutoff.")
    weekdays_only: bool = Field(default=False, description="No file expected Sat/Sun.")


@dataclass
class SourceHealth:
    """One row of the `ingest-health` table artifact (and of `ingest-ops health`)."""

    source: str
    runs: int
    success_rate: float | None
    last_success: str | None
    last_status: str | None
    backlog: int
    missing: str = ""
    last_run: str | None = None  # start of the newest finished run (its state: last_status)
    next_run: str | None = None  # next scheduled run of the source's deployment, if any
    connection: str = ""  # "ok" / the failed check's line / "" (not checked)
    stale: str = ""  # why the source is stale under its freshness rule

    def log_line(self) -> str:
        rate = "n/a" if self.success_rate is None else f"{self.success_rate:.0%}"
        return (
            f"{self.source}: last run {self.last_run or 'never'} {self.last_status or ''}, "
            f"success {rate} of {self.runs} run(s), last success {self.last_success or 'never'}, "
            f"backlog {self.backlog}, next run {self.next_run or 'none scheduled'}"
            + (f"; MISSING: {self.missing}" if self.missing else "")
            + (f"; STALE: {self.stale}" if self.stale else "")
            + (f"; CONNECTION: {self.connection}" if self.connection not in ("", "ok") else "")
        )


class SourcesMissing(IngestError):
    """Raised at the end of a health run in which expected files are missing."""


# Prefect's final flow-run states -> the ledger run status a run left `running` gets.
# Completed too: the flow ended without closing its ledger run (its outcome is unknown).
_CLOSED_AS = {
    "CRASHED": "crashed",
    "CANCELLED": "cancelled",
    "FAILED": "failed",
    "COMPLETED": "abandoned",
}
DEFAULT_ABANDON_AFTER_HOURS = 24.0


def reconcile_runs(
    ledger: Ledger,
    now: dt.datetime | None = None,
    abandon_after: dt.timedelta = dt.timedelta(hours=DEFAULT_ABANDON_AFTER_HOURS),
) -> list[dict[str, Any]]:
    """Close ledger runs left `running` by a flow run that died; returns what it closed.

    A run killed with its worker (SIGKILL, OOM, host lost) never reaches `finish_run`, so
    its `ingest_runs` row stayed `running` and the success rate skipped it. Each open row
    is looked up in Prefect by its flow_run_id: a final state closes it as `crashed`,
    `cancelled` or `failed` (`abandoned` if the flow run Completed without closing it). A
    row whose flow run Prefect does not know (deleted, another Prefect server, or no id)
    is closed as `abandoned` once it is older than `abandon_after`. Rows whose flow run is
    still Running stay open: a dead run is marked Crashed by the automation
    `ingest-ops install-automations` installs, and the next health check closes it.
    When the Prefect API cannot be read, only id-less rows are considered.
    """
    now = now or dt.datetime.now(dt.UTC)
    rows = ledger.open_runs()
    if not rows:
        return []
    states = _flow_run_states({str(r["flow_run_id"]) for r in rows if r["flow_run_id"]})
    closed: list[dict[str, Any]] = []
    for row in rows:
        run_id = str(row["flow_run_id"] or "")
        started = row["started_at"]
        if started.tzinfo is None:
            started = started.replace(tzinfo=dt.UTC)
        if states is None and run_id:
            continue  # Prefect unreachable: do not guess
        state = (states or {}).get(run_id)
        if state is not None:
            state_type, state_name, message = state
            status = _CLOSED_AS.get(state_type)
            if status is None:
                continue  # still scheduled, pending, running, paused, cancelling
            error = f"flow run {run_id} ended {state_name}" + (f": {message}" if message else "")
        elif now - started > abandon_after:
            status = "abandoned"
            what = f"flow run {run_id} is unknown to the Prefect API" if run_id else "no flow run"
            error = f"{what}; still running after {abandon_after} (closed by health)"
        else:
            continue
        if ledger.close_run(row["id"], status, error):
            closed.append({"id": row["id"], "source": row["source"], "status": status})
    return closed


def _flow_run_states(ids: set[str]) -> dict[str, tuple[str, str, str]] | None:
    """{flow_run_id: (state type, state name, message)} for the ids Prefect knows, or None
    when the API cannot be read."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    wanted = []
    for value in ids:
        try:
            wanted.append(uuid.UUID(value))
        except ValueError:
            pass  # not a Prefect id: unknown to Prefect
    found: dict[str, tuple[str, str, str]] = {}
    if not wanted:
        return found
    try:
        with get_client(sync_client=True) as client:
            for start in range(0, len(wanted), 200):
                chunk = wanted[start : start + 200]
                for run in client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                    limit=len(chunk),
                ):
                    state = run.state
                    if state is None:
                        continue
                    message = (state.message or "").strip()
                    first_line = message.splitlines()[0][:500] if message else ""
                    found[str(run.id)] = (state.type.value, state.name, first_line)
    except Exception as exc:  # noqa: BLE001 (health must still report from the ledger)
        logging.getLogger(__name__).warning(
            "cannot read flow run states from the Prefect API (%s: %s); runs left "
            "'running' are not reconciled",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return None
    return found


def source_health(ledger: Ledger, source: str, last_n_runs: int) -> SourceHealth:
    """Success rate over the last N finished runs, last success, failed-not-landed backlog."""
    r, i = t.runs.c, t.items.c
    with ledger.transaction() as conn:
        recent = conn.execute(
            select(r.status, r.started_at)
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
                        landed.c.status.in_(("landed", "duplicate", "unpacked")),
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
        last_run=recent[0].started_at.isoformat(timespec="seconds") if recent else None,
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
                i.status.in_(("landed", "duplicate", "unpacked")),
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


def next_runs(ledger: Ledger, sources: list[str]) -> dict[str, str]:
    """{source: expected start (ISO) of its deployment's next scheduled run}.

    A source's deployment is the one its newest ledger runs were flow runs of (runs that
    were backfill subflows or local calls have none). Sources without one, a paused
    deployment or nothing scheduled are left out; an unreadable API gives {} (one warning).
    """
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    r = t.runs.c
    run_ids: dict[str, list[uuid.UUID]] = {}
    with ledger.transaction() as conn:
        for source in sources:
            for value in conn.execute(
                select(r.flow_run_id)
                .where(r.source == source, r.flow_run_id.is_not(None))
                .order_by(r.started_at.desc(), r.id.desc())
                .limit(10)
            ).scalars():
                try:
                    run_ids.setdefault(source, []).append(uuid.UUID(value))
                except ValueError:
                    pass
    if not run_ids:
        return {}
    found: dict[str, str] = {}
    try:
        with get_client(sync_client=True) as client:
            wanted = [i for ids in run_ids.values() for i in ids]
            deployment_of = {
                run.id: run.deployment_id
                for run in client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=wanted)),
                    limit=len(wanted),
                )
                if run.deployment_id is not None
            }
            nexts: dict[uuid.UUID, str | None] = {}
            for source, ids in run_ids.items():
                dep_id = next((deployment_of[i] for i in ids if i in deployment_of), None)
                if dep_id is None:
                    continue
                if dep_id not in nexts:
                    nexts[dep_id] = None
                    try:
                        paused = client.read_deployment(dep_id).paused
                    except ObjectNotFound:  # deleted since: no next run
                        paused = True
                    if not paused:
                        upcoming = client.read_flow_runs(
                            flow_run_filter=FlowRunFilter(
                                deployment_id=FlowRunFilterDeploymentId(any_=[dep_id]),
                                state=FlowRunFilterState(
                                    type=FlowRunFilterStateType(any_=["SCHEDULED"])
                                ),
                            ),
                            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                            limit=1,
                        )
                        if upcoming and upcoming[0].expected_start_time:
                            nexts[dep_id] = upcoming[0].expected_start_time.isoformat(
                                timespec="seconds"
                            )
                if nexts[dep_id]:
                    found[source] = nexts[dep_id]
    except Exception as exc:  # noqa: BLE001 (health must still report from the ledger)
        logging.getLogger(__name__).warning(
            "cannot read next scheduled runs from the Prefect API (%s)", type(exc).__name__
        )
        return {}
    return found


def known_sources(ledger: Ledger) -> list[str]:
    with ledger.transaction() as conn:
        return sorted(conn.execute(select(t.runs.c.source).distinct()).scalars())


def _emit_missing(source: str, message: str, rule: ExpectedDaily) -> None:
    payload = {"message": message, "pattern": rule.pattern, "cutoff": str(rule.cutoff)}
    emit_source_event(MISSING_EVENT, source, payload)


@flow(name="ingest-health", description="Per-source health; fails when expected files miss.")
def ingest_health(
    sources: list[str] | None = None,
    ledger_block: str | None = None,
    last_n_runs: int = 20,
    expected: dict[str, ExpectedDaily] | None = None,
    now: dt.datetime | None = None,
    abandon_after_hours: float = DEFAULT_ABANDON_AFTER_HOURS,
    freshness: dict[str, float] | None = None,
    check_connections: bool = True,
    connection_timeout_seconds: float = 30.0,
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
        abandon_after_hours: A ledger run still `running` whose flow run Prefect does
            not know is closed as `abandoned` after this many hours (runs whose flow run
            ended Crashed/Cancelled/Failed are closed at once); both count as failures.
        freshness: Per source id (or "*" for every source), hours without a newly landed
            item after which the source is stale: {"crm": 2, "*": 26}. Stale: event
            `ingest.source.stale` and a Failed run. A source id nothing knows is refused.
        check_connections: Run `test_connection` of every source block a deployment runs
            (its `source_block` parameter); with `sources`, only those sources' blocks.
            A failure: event `ingest.source.connection-failed` and a Failed run.
        connection_timeout_seconds: Bound of each connection check (they run in parallel).
    """
    if not 1 <= last_n_runs <= 1000:
        raise ConfigError("last_n_runs", "must be between 1 and 1000")
    if not 0 < abandon_after_hours <= 24 * 365:
        raise ConfigError("abandon_after_hours", "must be more than 0 and at most 8760")
    logger = get_run_logger()
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ConfigError("now", "must carry a time zone")
    if not 0 < connection_timeout_seconds <= 3600:
        raise ConfigError("connection_timeout_seconds", "must be more than 0 and at most 3600")
    rules = parse_freshness(freshness)
    expected = expected or {}
    ledger = load_named_block(Ledger, ledger_block, "ledger_block") if ledger_block else Ledger()
    checks: ConnectionChecks | None = None
    try:
        in_ledger = known_sources(ledger)
        deployed = (
            load_sources(source_blocks_of_deployments() or {}) if check_connections or rules else []
        )
        # Unknown sources are refused before the ledger is touched (nothing closed yet).
        deployed_ids = {b.source_id for b in deployed if b.source_id}
        check_freshness_sources(rules, {*in_ledger, *(sources or []), *expected, *deployed_ids})
        to_check = [b for b in deployed if not sources or b.source_id in sources]
        if check_connections and to_check:  # collected after the ledger work: they overlap
            checks = ConnectionChecks(to_check, connection_timeout_seconds)
        for run in reconcile_runs(ledger, now, dt.timedelta(hours=abandon_after_hours)):
            logger.warning("closed ledger run %(id)s of %(source)s as %(status)s", run)
        explicit = [k for k in rules if k != ALL_SOURCES]
        names = list(dict.fromkeys([*(sources or in_ledger), *expected, *explicit]))
        report: list[SourceHealth] = []
        missing: list[str] = []
        problems: list[str] = []
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
            hours = rules.get(name, rules.get(ALL_SOURCES))
            if hours is not None:
                landed_at, first_run = last_landed(ledger, name)
                message = stale_message(name, hours, now, landed_at, first_run)
                if message:
                    health.stale = message
                    problems.append(message)
                    emit_stale(name, message, hours, landed_at)
                    logger.error(message)
            report.append(health)
        upcoming = next_runs(ledger, names)
    finally:
        ledger.dispose()
    if checks is not None:
        by_source = {h.source: h for h in report}
        for check in checks.collect():
            if check.ok:
                logger.info("%s: connection ok in %.2f s", check.block, check.seconds)
                if check.source_id in by_source:
                    by_source[check.source_id].connection = "ok"
                continue
            problems.append(check.line())
            emit_connection_failed(check)
            logger.error(check.line())
            row = by_source.get(check.resource)
            if row is None:  # a deployed source without ledger runs, or an unloadable block
                row = by_source[check.resource] = SourceHealth(
                    source=check.resource,
                    runs=0,
                    success_rate=None,
                    last_success=None,
                    last_status=None,
                    backlog=0,
                )
                report.append(row)
            row.connection = "; ".join(filter(None, [row.connection, check.line()]))
    for health in report:
        health.next_run = upcoming.get(health.source)
        logger.info(health.log_line())
    rows = [asdict(h) for h in report]
    create_table_artifact(
        key=HEALTH_ARTIFACT_KEY,
        table=rows or [{"source": "(no sources)"}],
        description=f"Ingest health at {now.isoformat(timespec='seconds')}",
    )
    if missing or problems:
        # An expected outcome: a Failed state with the message, not a raised exception
        # (Prefect would log its full traceback).
        return Failed(message=str(SourcesMissing("; ".join([*missing, *problems]))))
    return rows
