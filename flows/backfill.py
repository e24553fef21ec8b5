"""Backfill flow: run one source for every day of a range, resumably.

Design: each day runs as a SUBFLOW of the source flow, called inside a `backfill-day` task,
at most `max_parallel_days` at once (a bounded window, like the pipeline's item window).
Why not `run_deployment` per day: the source deployments carry a concurrency limit of 1 with
CANCEL_NEW ("skip"), so every day but the first would be Cancelled by the server; ENQUEUE
would serialise them at ~30 s re-check intervals out of order. Subflows run in the backfill's
own process, are not subject to the deployment's limit, return their counts directly, and
still show as child runs in the UI. The deployment (when given) is only read for its
entrypoint and parameters.

Per-day outcomes are kept in the ledger's state table (source `ingest-backfill`, key
`<flow>|<source_block>|<day>`), so a rerun skips days already done unless `force`.

A day whose run listed nothing is `empty`, not `done`: its file may be missing upstream or
late, and the backfill cannot prove it took everything. Empty days are shown in the table,
logged as warnings, announced with the Prefect event `ingest.backfill.day.empty` (resource
`ingest.source.<source_id>`), retried by the next backfill, and (by default,
`fail_on_empty_days`) end the backfill Failed.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.flows import load_flow_from_entrypoint
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.core.errors import ConfigError
from blocks.core.events import emit_source_event
from blocks.core.ledger import Ledger
from pipeline.block_loading import load_shared_blocks
from pipeline.summary import artifact_key

MAX_SPAN_DAYS = 366
MAX_PARALLEL_DAYS = 16
STATE_SOURCE = "ingest-backfill"
EMPTY_DAY_EVENT = "ingest.backfill.day.empty"
# Parameters of a source flow that the backfill sets itself (or must not pass on).
_OWNED = ("date", "force", "jitter_seconds", "trigger", "fail_on_item_error")


@dataclass
class DayOutcome:
    day: str
    status: str  # done | empty | failed | already-done
    listed: int = 0
    landed: int = 0
    skipped: int = 0
    failed: int = 0
    error: str = ""


def validate_range(
    start_date: dt.date,
    end_date: dt.date,
    max_parallel_days: int,
    today: dt.date,
    max_span_days: int = MAX_SPAN_DAYS,
) -> list[dt.date]:
    """The days of the range; ConfigError naming the parameter when the range is bad."""
    if start_date > end_date:
        raise ConfigError(
            "start_date", f"{start_date} is after end_date {end_date} (the range is inclusive)"
        )
    if end_date > today:
        raise ConfigError("end_date", f"{end_date} is in the future (today is {today})")
    span = (end_date - start_date).days + 1
    if span > max_span_days:
        raise ConfigError(
            "end_date",
            f"range of {span} days exceeds the maximum of {max_span_days}; split the backfill",
        )
    if not 1 <= max_parallel_days <= MAX_PARALLEL_DAYS:
        raise ConfigError("max_parallel_days", f"must be between 1 and {MAX_PARALLEL_DAYS}")
    return [start_date + dt.timedelta(days=i) for i in range(span)]


def today_in(timezone: str) -> dt.date:
    try:
        return dt.datetime.now(ZoneInfo(timezone)).date()
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError("timezone", f"unknown IANA time zone {timezone!r}") from exc


async def _read_deployment(name: str) -> tuple[str, dict[str, Any]]:
    if "/" not in name:
        raise ConfigError("deployment", f"{name!r}: expected '<flow name>/<deployment name>'")
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(name)
        except Exception as exc:
            raise ConfigError("deployment", f"no deployment {name!r} on the Prefect API") from exc
    if not deployment.entrypoint:
        raise ConfigError("deployment", f"deployment {name!r} has no entrypoint")
    return deployment.entrypoint, dict(deployment.parameters or {})


def resolve_source(
    deployment: str | None, entrypoint: str | None, source_block: str | None
) -> tuple[str, dict[str, Any], str]:
    """(entrypoint, base parameters, label) from a deployment and/or entrypoint + block."""
    params: dict[str, Any] = {}
    if deployment:
        from prefect.utilities.asyncutils import run_coro_as_sync

        dep_entrypoint, params = run_coro_as_sync(_read_deployment(deployment))
        entrypoint = entrypoint or dep_entrypoint
    if not entrypoint:
        raise ConfigError(
            "deployment", "give a deployment ('flow/deployment') or an entrypoint + source_block"
        )
    if source_block:
        params["source_block"] = source_block
    if not params.get("source_block"):
        raise ConfigError("source_block", "name the saved source block to backfill")
    try:
        source_flow = load_flow_from_entrypoint(entrypoint)
    except Exception as exc:
        raise ConfigError("entrypoint", f"cannot load flow {entrypoint!r}: {exc}") from exc
    for key in _OWNED:
        params.pop(key, None)
    return entrypoint, params, f"{source_flow.name}|{params['source_block']}"


@task(name="backfill-day", cache_policy=NO_CACHE)
def run_day(entrypoint: str, params: dict[str, Any], day: dt.date, force: bool):
    """One day of the backfill: the source flow as a subflow, failures kept as counts.

    Takes the entrypoint, not the Flow object: Prefect walks task parameters, and a Flow
    object is not meant to be walked."""
    source_flow = load_flow_from_entrypoint(entrypoint)
    return source_flow(**params, date=day, force=force, fail_on_item_error=False)


def _state_key(label: str, day: dt.date) -> str:
    return f"{label}|{day.isoformat()}"


@flow(
    name="ingest-backfill",
    description="Re-run a source for each day of a range (resumable, bounded parallelism).",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_DAYS),
)
def ingest_backfill(
    start_date: dt.date,
    end_date: dt.date,
    deployment: str | None = None,
    entrypoint: str | None = None,
    source_block: str | None = None,
    ledger_block: str | None = None,
    queue_block: str | None = None,
    force: bool = False,
    max_parallel_days: int = 2,
    timezone: str = "UTC",
    fail_on_empty_days: bool = True,
) -> dict[str, Any]:
    """Run a source for every day from start_date to end_date (inclusive).

    Args:
        start_date: First day (inclusive).
        end_date: Last day (inclusive); not in the future (in `timezone`).
        deployment: '<flow>/<deployment>' of the source: its entrypoint and parameters are
            read from the Prefect API (blocks, options).
        entrypoint: Alternative to `deployment`: e.g. 'flows.local_folder:ingest_local_folder'.
        source_block: Source block name (required with `entrypoint`; overrides the
            deployment's).
        ledger_block: Ledger block (overrides the deployment's; empty: the default ledger).
        queue_block: Ingestion Queue block (overrides the deployment's).
        force: Re-run days already done and re-land items already in the ledger.
        max_parallel_days: Days running at once (1..16).
        timezone: IANA time zone deciding what "today" (the last allowed day) is.
        fail_on_empty_days: End the run Failed when a day listed nothing (file missing
            upstream, late, or not ready yet). Either way such days are reported `empty`
            (table, warning, event) and retried by the next backfill; set False for ranges
            where days without files are expected (weekends, holidays).
    """
    logger = get_run_logger()
    days = validate_range(start_date, end_date, max_parallel_days, today_in(timezone))
    source_entrypoint, params, label = resolve_source(deployment, entrypoint, source_block)
    if ledger_block:
        params["ledger_block"] = ledger_block
    if queue_block:
        params["queue_block"] = queue_block
    ledger, _ = load_shared_blocks(params.get("ledger_block"), params.get("queue_block"))
    try:
        outcomes = _run_days(
            source_entrypoint, params, label, days, force, max_parallel_days, ledger
        )
    finally:
        ledger.dispose()

    rows = [asdict(o) for o in outcomes]
    totals = {k: sum(getattr(o, k) for o in outcomes) for k in ("listed", "landed", "skipped")}
    totals["failed"] = sum(o.failed for o in outcomes)
    failed_days = [o.day for o in outcomes if o.status == "failed"]
    empty_days = [o.day for o in outcomes if o.status == "empty"]
    create_table_artifact(
        key=artifact_key("ingest-backfill", label.split("|")[-1]),
        table=rows,
        description=(
            f"Backfill {label} {start_date}..{end_date}: {len(days)} day(s), "
            f"{len(failed_days)} failed, {len(empty_days)} empty; totals {totals}"
        ),
    )
    logger.info(
        "backfill %s: %d day(s), failed days: %s, empty days: %s",
        label,
        len(days),
        failed_days or "none",
        empty_days or "none",
    )
    problems = []
    if failed_days:
        problems.append(f"{len(failed_days)} day(s) failed: {', '.join(failed_days)}")
    if empty_days:
        logger.warning(
            "backfill %s: nothing found for %d day(s): %s; the next backfill retries them",
            label,
            len(empty_days),
            ", ".join(empty_days),
        )
        if fail_on_empty_days:
            problems.append(
                f"{len(empty_days)} day(s) empty (nothing listed): {', '.join(empty_days)}; "
                "rerun the backfill once the files are there (fail_on_empty_days=False "
                "accepts days without files)"
            )
    if problems:
        raise RuntimeError(f"backfill {label}: " + "; ".join(problems))
    return {"days": rows, "totals": totals, "failed_days": failed_days, "empty_days": empty_days}


def _emit_empty_day(source_id: str, label: str, day: str) -> None:
    """The Prefect event for a day that listed nothing, so an automation can alert."""
    emit_source_event(EMPTY_DAY_EVENT, source_id, {"day": day, "backfill": label, "listed": 0})


def _run_days(
    entrypoint: str,
    params: dict[str, Any],
    label: str,
    days: list[dt.date],
    force: bool,
    max_parallel_days: int,
    ledger: Ledger,
) -> list[DayOutcome]:
    logger = get_run_logger()
    outcomes: dict[dt.date, DayOutcome] = {}
    todo: deque[dt.date] = deque()
    for day in days:
        previous = ledger.get_state(STATE_SOURCE, _state_key(label, day))
        if previous and previous.get("status") == "done" and not force:
            outcomes[day] = DayOutcome(day.isoformat(), "already-done")
        else:
            todo.append(day)
    progress_id = create_progress_artifact(
        progress=100.0 * len(outcomes) / len(days),
        key=artifact_key("ingest-backfill-progress", label.split("|")[-1]),
        description=f"Backfill {label}: days done",
    )
    pending: deque[tuple[dt.date, Any]] = deque()
    while todo or pending:
        while todo and len(pending) < max_parallel_days:
            day = todo.popleft()
            pending.append((day, run_day.submit(entrypoint, params, day, force)))
        day, future = pending.popleft()
        future.wait()
        result = future.state.result(raise_on_failure=False)
        if isinstance(result, dict):
            failed = int(result.get("failed", 0))
            listed = int(result.get("listed", 0))
            # Nothing listed proves nothing was there to take: the day stays pending.
            status = "failed" if failed else ("done" if listed else "empty")
            outcome = DayOutcome(
                day.isoformat(),
                status,
                listed=listed,
                landed=int(result.get("landed", 0)),
                skipped=int(result.get("skipped", 0)),
                failed=failed,
                error=(
                    f"{failed} item(s) failed"
                    if failed
                    else ("" if listed else "nothing listed: missing upstream or not ready")
                ),
            )
            if status == "empty":
                source_id = str(result.get("source") or label.split("|")[-1])
                logger.warning(
                    "day %s: nothing listed for %s (file missing upstream or not ready); "
                    "not marked done, the next backfill retries it",
                    outcome.day,
                    source_id,
                )
                _emit_empty_day(source_id, label, outcome.day)
        else:
            outcome = DayOutcome(
                day.isoformat(), "failed", error=f"{type(result).__name__}: {result}"[:500]
            )
        logger.info("day %s: %s", outcome.day, outcome.status)
        outcomes[day] = outcome
        ledger.set_state(STATE_SOURCE, _state_key(label, day), asdict(outcome))
        update_progress_artifact(progress_id, 100.0 * len(outcomes) / len(days))
    return [outcomes[d] for d in days]
