"""`ingest-ops`: one command line for operators (Typer; talks to PREFECT_API_URL).

    ingest-ops [--json] sources [--tag ingest] [--last-n 20]
    ingest-ops [--json] test-connection <block-type-slug>/<block-name>
    ingest-ops [--json] run <flow>/<deployment> [--date D] [--force] [--param k=v ...]
                        [--ignore-overlap-limit [--by WHO] [--reason TEXT]]
    ingest-ops [--json] backfill <flow>/<deployment> START END [--force] [--max-parallel-days 2]
                        [--allow-empty-days]
                        [--via ingest-backfill/backfill | --local]
    ingest-ops [--json] pause|resume <flow>/<deployment>
    ingest-ops [--json] ledger [--source S] [--limit 20] [--ledger-block NAME]
    ingest-ops [--json] runs [--source S] [--limit 20] [--ledger-block NAME]
    ingest-ops [--json] health [--ledger-block NAME] [--last-n 20] [--abandon-after-hours 24]
    ingest-ops [--json] retention [--days 30] [--source-days S=N ...] [--apply]
                        [--ledger-block NAME] [--queue-block NAME]
    ingest-ops [--json] install-automations [--grace-seconds 240] [--notify-block SLUG/NAME]
    ingest-ops metrics [--host 127.0.0.1] [--port 9464] [--ledger-block NAME]
    ingest-ops [--json] relay [--block NAME | --queue-block NAME] [--source S] [--limit N]
                        [--ledger-block NAME]
    ingest-ops [--json] drain --pool P [--timeout 600] [--worker NAME] | drain --pool P --resume

Also runnable as `python -m ops.cli`. Errors go to stderr with exit code 1 (2 for usage).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any
from uuid import UUID

import typer

from pipeline.run_trigger import OVERRIDE_TAG, trigger_of

app = typer.Typer(
    name="ingest-ops", help="Operate the ingestion deployments.", no_args_is_help=True
)
_OPTS: dict[str, bool] = {"json": False}
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@app.callback()
def main(
    json_output: bool = typer.Option(False, "--json", help="Machine-readable JSON output."),
) -> None:
    """Before any command: install the block lookup (`blocks.core.block_lookup`), so that
    `test-connection x-source/NAME` finds our lazily imported source classes by slug and
    no `Block.load` imports every installed Prefect collection."""
    from blocks.core import block_lookup

    block_lookup.install()
    _OPTS["json"] = json_output


def _emit(data: Any, table: list[dict[str, Any]] | None = None) -> None:
    if _OPTS["json"]:
        typer.echo(json.dumps(data, default=str, indent=2))
        return
    rows = table if table is not None else (data if isinstance(data, list) else [data])
    if not rows:
        typer.echo("(none)")
        return
    cols = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in cols}
    typer.echo("  ".join(c.ljust(widths[c]) for c in cols))
    for row in rows:
        typer.echo("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in cols))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else " ".join(str(value).split())[:80]  # one line per row


def _fail(message: str) -> None:
    if _OPTS["json"]:
        typer.echo(json.dumps({"error": message}), err=True)
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def describe_schedule(schedule: Any) -> str:
    """One line: `cron '30 6 * * 1-5' Europe/Paris`, `every 300s`,
    `rrule 'FREQ=DAILY;BYHOUR=6' Europe/Paris` (an rrule's DTSTART line is left out; its
    TZID is the zone when the schedule names none)."""
    tz = getattr(schedule, "timezone", None)
    if getattr(schedule, "cron", None):
        return f"cron '{schedule.cron}' {tz or 'UTC'}"
    if getattr(schedule, "interval", None):
        return f"every {int(schedule.interval.total_seconds())}s"
    if getattr(schedule, "rrule", None):
        rules = []
        for line in str(schedule.rrule).replace("\\n", "\n").splitlines():
            head, _, value = line.strip().partition(":")
            if head.upper().startswith("DTSTART"):
                tz = tz or next(
                    (p[5:] for p in head.split(";") if p.upper().startswith("TZID=")), None
                )
            elif value and head.upper() in ("RRULE", "EXRULE", "RDATE", "EXDATE"):
                rules.append(value if head.upper() == "RRULE" else line.strip())
            elif line.strip() and not value:
                rules.append(line.strip())  # a bare "FREQ=..." rule
        return f"rrule '{' '.join(rules)}' {tz or 'UTC'}"
    return type(schedule).__name__


# A run the server cancelled because its deployment's concurrency limit was full
# (collision strategy CANCEL_NEW: "Deployment concurrency limit reached."), or a waiting
# run `ingest-ops pause` cancelled: the run was skipped, the source did not fail.
PAUSED_MESSAGE = "Deployment paused (ingest-ops pause): waiting run not started."


def skip_reason(run: Any) -> str | None:
    """'overlap' for a flow run cancelled by the overlap policy, 'paused' for one
    `ingest-ops pause` cancelled, None for any other run."""
    if run.state_type is None or run.state_type.value != "CANCELLED":
        return None
    message = (run.state.message if run.state is not None else "") or ""
    if "concurrency limit" in message.lower():
        return "overlap"
    return "paused" if message == PAUSED_MESSAGE else None


def is_skipped(run: Any) -> bool:
    """True for a flow run cancelled by the overlap policy or by `ingest-ops pause`."""
    return skip_reason(run) is not None


async def _deployment_id(client: Any, name: str) -> UUID:
    if name.count("/") != 1:
        _fail(f"deployment: {name!r}: expected '<flow name>/<deployment name>'")
    try:
        return (await client.read_deployment_by_name(name)).id
    except Exception:
        _fail(f"deployment: no deployment {name!r} on the Prefect API")
    raise AssertionError  # unreachable


async def _sources(tag: str | None, last_n: int) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterTags,
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    rows = []
    async with get_client() as client:
        dep_filter = DeploymentFilter(tags=DeploymentFilterTags(all_=[tag])) if tag else None
        deployments = await client.read_deployments(deployment_filter=dep_filter)
        flows = {f.id: f.name for f in await client.read_flows()}
        for dep in sorted(deployments, key=lambda d: (flows.get(d.flow_id, ""), d.name)):
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(FINAL))),
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=last_n,
            )
            finished = [r for r in runs if r.state_type is not None]
            skipped = [r for r in finished if is_skipped(r)]
            done = [r for r in finished if not is_skipped(r)]
            completed = sum(1 for r in done if r.state_type.value == "COMPLETED")
            last = done[0] if done else None
            rows.append(
                {
                    "deployment": f"{flows.get(dep.flow_id, '?')}/{dep.name}",
                    "schedules": "; ".join(
                        describe_schedule(s.schedule) + ("" if s.active else " (inactive)")
                        for s in dep.schedules
                    ),
                    "paused": dep.paused,
                    "last_run_state": last.state_name if last else None,
                    "last_run_time": last.start_time or last.expected_start_time if last else None,
                    "success_rate": (completed / len(done)) if done else None,
                    "runs_considered": len(done),
                    "skipped": len(skipped),
                }
            )
    return rows


@app.command()
def sources(
    tag: str = typer.Option(None, help="Only deployments with this tag (e.g. ingest)."),
    last_n: int = typer.Option(20, min=1, max=200, help="Runs considered for health."),
) -> None:
    """List deployments with schedule, last run state and success rate of the last N runs.

    Runs the server cancelled under the overlap policy (CANCEL_NEW) or that `pause`
    cancelled count as `skipped`, not in the success rate."""
    _emit(asyncio.run(_sources(tag, last_n)))


@app.command("test-connection")
def test_connection(
    block: str = typer.Argument(..., help="<block-type-slug>/<block-name>"),
) -> None:
    """Load a source block and check it (its test_connection, else preflight + one listing)."""
    from prefect.blocks.core import Block

    from blocks.core.source import DiscoverContext

    if block.count("/") != 1:
        _fail(f"block: {block!r}: expected '<block-type-slug>/<block-name>'")
    try:
        loaded = Block.load(block)
    except Exception as exc:
        _fail(f"block: cannot load {block!r}: {exc}")
    try:
        if hasattr(loaded, "test_connection"):
            result = loaded.test_connection()
        else:
            if hasattr(loaded, "preflight"):
                loaded.preflight()
            items = []
            if hasattr(loaded, "discover"):
                items = list(loaded.discover(DiscoverContext(partition_date=loaded.today())))
            result = {"ok": True, "items": len(items), "sample": [c.name for c in items[:10]]}
    except Exception as exc:
        _fail(f"{block}: connection test failed: {type(exc).__name__}: {exc}")
    _emit({"block": block, **result})


def _parse_params(params: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--param: {item!r}: expected key=value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _start(deployment: str, parameters: dict[str, Any]) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    async def go() -> Any:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            await _deployment_id(client, deployment)
        return await run_deployment(deployment, parameters=parameters, timeout=0)

    run = asyncio.run(go())
    return {
        "deployment": deployment,
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
        "state": run.state_name,
        "parameters": parameters,
    }


OVERRIDE_EVENT = "ingest.overlap-limit.ignored"


def _run_ignoring_overlap(
    deployment: str, parameters: dict[str, Any], by: str, reason: str | None
) -> dict[str, Any]:
    """Run the deployment's flow in this process, outside its concurrency limit.

    The server enforces a deployment's limit when a run of the deployment goes Pending
    (`SecureFlowConcurrencySlots`), and when a run of the deployment that holds no lease
    leaves Running it releases one slot (`ReleaseFlowConcurrencySlots`): a deployment run
    forced past the limit would free the slot of the run that holds it, and the next
    scheduled run would overlap that one. So the override run is the deployment's flow
    (its entrypoint, its parameters overlaid with the given ones) called here, a flow run
    with no deployment: the limit neither stops it nor is changed by it. It carries the tag
    `overlap-limit-ignored` and `deployment:<flow>/<deployment>`, logs who asked, and an
    `ingest.overlap-limit.ignored` event names the deployment, the flow run and who asked.
    The deployment's work pool, job variables and infrastructure are not used.
    """
    from prefect import tags
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.flows import load_flow_from_entrypoint
    from prefect.logging.loggers import flow_run_logger

    async def read() -> Any:
        async with get_client() as client:
            dep_id = await _deployment_id(client, deployment)
            return await client.read_deployment(dep_id)

    dep = asyncio.run(read())
    if not dep.entrypoint:
        _fail(f"deployment {deployment!r} has no entrypoint to run")
    try:
        flow_obj = load_flow_from_entrypoint(dep.entrypoint, use_placeholder_flow=False)
    except Exception as exc:
        _fail(f"deployment {deployment!r}: cannot load {dep.entrypoint!r} here: {exc}")
    params = {**(dep.parameters or {}), **parameters}
    note = (
        f"overlap limit of deployment {deployment} ignored on request of {by} "
        f"(ingest-ops run --ignore-overlap-limit){': ' + reason if reason else ''}"
    )
    typer.echo(f"warning: {note}", err=True)

    def announce(flow: Any, flow_run: Any, state: Any) -> None:
        flow_run_logger(flow_run, flow).warning(note)
        emit_event(
            event=OVERRIDE_EVENT,
            resource={
                "prefect.resource.id": f"prefect.deployment.{dep.id}",
                "prefect.resource.name": deployment,
            },
            related=[
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                    "prefect.resource.role": "flow-run",
                    "prefect.resource.name": flow_run.name,
                }
            ],
            payload={"by": by, "reason": reason, "flow_run_id": str(flow_run.id)},
        )

    with tags(*(dep.tags or []), OVERRIDE_TAG, f"deployment:{deployment}"):
        hooks = [*flow_obj.on_running_hooks, announce]  # keep the flow's own hooks
        state = flow_obj.with_options(on_running=hooks)(**params, return_state=True)
    result = state.result(raise_on_failure=False)
    return {
        "deployment": deployment,
        "flow_run_id": str(state.state_details.flow_run_id),
        "state": state.name,
        "overlap_limit_ignored_by": by,
        "parameters": parameters,
        "result": result if isinstance(result, (dict, list, int, float, str)) else str(result),
    }


@app.command()
def run(
    deployment: str = typer.Argument(..., help="<flow name>/<deployment name>"),
    date: dt.datetime = typer.Option(None, formats=["%Y-%m-%d"], help="Logical day."),
    force: bool = typer.Option(False, help="Re-land items already in the ledger."),
    param: list[str] = typer.Option([], help="Extra parameter key=value (JSON values)."),
    ignore_overlap_limit: bool = typer.Option(
        False,
        "--ignore-overlap-limit",
        help="Run now even while another run holds the deployment's concurrency slot: the "
        "deployment's flow runs in this process (not on the worker), logged and evented as "
        "an override. Has nothing to do with --force.",
    ),
    by: str = typer.Option(None, help="Who asked for --ignore-overlap-limit (default: $USER)."),
    reason: str = typer.Option(None, help="Why (logged with --ignore-overlap-limit)."),
) -> None:
    """Start a deployment run now (the deployment's overlap policy applies, unless
    --ignore-overlap-limit: then the flow runs here, waited for, outside the limit)."""
    from blocks.core.errors import ConfigError
    from blocks.core.timezones import check_run_date

    parameters = _parse_params(param)
    if date:
        try:  # the flow checks the exact bound (its source's zone); refuse typos here
            check_run_date(date.date())
        except ConfigError as exc:
            _fail(str(exc))
        parameters["date"] = date.date().isoformat()
    if force:
        parameters["force"] = True
    if (by or reason) and not ignore_overlap_limit:
        _fail("--by and --reason go with --ignore-overlap-limit")
    if ignore_overlap_limit:
        import getpass

        out = _run_ignoring_overlap(deployment, parameters, by or getpass.getuser(), reason)
        _emit(out)
        if out["state"] != "Completed":
            raise typer.Exit(1)
        return
    _emit(_start(deployment, parameters))


@app.command()
def backfill(
    deployment: str = typer.Argument(..., help="Source deployment <flow>/<deployment>."),
    start: dt.datetime = typer.Argument(..., formats=["%Y-%m-%d"]),
    end: dt.datetime = typer.Argument(..., formats=["%Y-%m-%d"]),
    force: bool = typer.Option(False, help="Redo days already done."),
    max_parallel_days: int = typer.Option(2, min=1, max=16),
    fail_on_empty_days: bool = typer.Option(
        True,
        "--fail-on-empty-days/--allow-empty-days",
        help="End Failed when a day listed nothing (empty days are retried either way).",
    ),
    via: str = typer.Option("ingest-backfill/backfill", help="Backfill deployment to start."),
    local: bool = typer.Option(False, help="Run the backfill flow in this process instead."),
) -> None:
    """Backfill a source for START..END (inclusive), through the backfill deployment."""
    from flows.backfill import today_in, validate_range

    try:  # fail here, not in a remote run, when the range is bad
        validate_range(start.date(), end.date(), max_parallel_days, today_in("UTC"))
    except Exception as exc:
        _fail(str(exc))
    parameters = {
        "deployment": deployment,
        "start_date": start.date().isoformat(),
        "end_date": end.date().isoformat(),
        "force": force,
        "max_parallel_days": max_parallel_days,
        "fail_on_empty_days": fail_on_empty_days,
    }
    if local:
        from flows.backfill import ingest_backfill

        state = ingest_backfill(
            **{**parameters, "start_date": start.date(), "end_date": end.date()},
            return_state=True,
        )
        result = state.result(raise_on_failure=False)
        _emit(
            {"state": state.name, "result": result if isinstance(result, dict) else str(result)},
            table=result["days"] if isinstance(result, dict) else None,
        )
        if not state.is_completed():
            raise typer.Exit(1)
        return
    _emit(_start(via, parameters))


async def _set_paused(deployment: str, paused: bool) -> int:
    """Pause or resume; on pause, also cancel the deployment's runs that have not started.

    Prefect's pause deletes future auto-scheduled runs only: runs waiting for a
    concurrency slot (ENQUEUE, state `AwaitingConcurrencySlot`), late runs and manual runs
    scheduled for later stayed, and went on starting while the deployment was paused.
    They are cancelled (kept in the history, counted as skipped). Returns how many.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.states import Cancelled

    async with get_client() as client:
        dep_id = await _deployment_id(client, deployment)
        if not paused:
            await client.resume_deployment(dep_id)
            return 0
        await client.pause_deployment(dep_id)
        seen: set[UUID] = set()
        gate = asyncio.Semaphore(8)

        async def cancel_if_waiting(run_id: UUID) -> bool:
            async with gate:
                # Re-read right before: a waiting run may have got its slot since the page
                # was read, and a forced Cancelled would hide a run that is now running.
                current = await client.read_flow_run(run_id)
                if current.state_type is None or current.state_type.value != "SCHEDULED":
                    return False
                await client.set_flow_run_state(
                    run_id, Cancelled(message=PAUSED_MESSAGE), force=True
                )
                return True

        cancelled = 0
        # Until a read finds nothing new: each pass cancels what it read (pages of 200),
        # and a scheduler pass that began before the pause may still add runs just after.
        while True:
            waiting = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[dep_id]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["SCHEDULED"])),
                ),
                limit=200,
            )
            fresh = [run.id for run in waiting if run.id not in seen]
            if not fresh:
                return cancelled
            seen.update(fresh)
            cancelled += sum(await asyncio.gather(*(cancel_if_waiting(i) for i in fresh)))
            await asyncio.sleep(1)


@app.command()
def pause(deployment: str = typer.Argument(..., help="<flow name>/<deployment name>")) -> None:
    """Pause a deployment's schedules and cancel its runs that have not started yet (future
    scheduled runs, runs waiting for a concurrency slot, late runs)."""
    cancelled = asyncio.run(_set_paused(deployment, True))
    _emit({"deployment": deployment, "paused": True, "cancelled_waiting_runs": cancelled})


@app.command()
def resume(deployment: str = typer.Argument(..., help="<flow name>/<deployment name>")) -> None:
    """Resume a deployment's schedules."""
    asyncio.run(_set_paused(deployment, False))
    _emit({"deployment": deployment, "paused": False})


def _ledger(name: str | None):
    from blocks.core.ledger import Ledger
    from pipeline.block_loading import load_named_block

    try:
        return load_named_block(Ledger, name, "--ledger-block") if name else Ledger()
    except Exception as exc:
        _fail(str(exc))


@app.command()
def ledger(
    source: str = typer.Option(None, help="Only this source id."),
    limit: int = typer.Option(20, min=1, max=10000),
    ledger_block: str = typer.Option(None, help="Ingest Ledger block (default: local SQLite)."),
) -> None:
    """Show the most recent ledger entries (landed, duplicate, failed items)."""
    from blocks.core.errors import IngestError

    led = _ledger(ledger_block)
    try:
        rows = led.recent_items(source, limit)
    except IngestError as exc:  # unusable or unreachable ledger: one line, not a traceback
        _fail(str(exc))
    finally:
        led.dispose()
    keep = ("source", "name", "status", "partition_date", "size", "sha256", "created_at", "error")
    _emit([{k: r.get(k) for k in keep} for r in rows])


async def _flow_runs(ids: set[str]) -> dict[str, Any] | None:
    """{id: FlowRun} for the ids Prefect knows; None when the API cannot be read."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    wanted = []
    for value in ids:
        try:
            wanted.append(UUID(value))
        except ValueError:
            pass
    found: dict[str, Any] = {}
    try:
        async with get_client() as client:
            for start in range(0, len(wanted), 200):
                chunk = wanted[start : start + 200]
                for run in await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                    limit=len(chunk),
                ):
                    found[str(run.id)] = run
    except Exception:  # noqa: BLE001 (the ledger's history is still worth showing)
        return None
    return found


@app.command()
def runs(
    source: str = typer.Option(None, help="Only this source id."),
    limit: int = typer.Option(20, min=1, max=10000),
    ledger_block: str = typer.Option(None, help="Ingest Ledger block (default: local SQLite)."),
) -> None:
    """Run history from the ledger, newest first: items, rows (SQL and warehouse sources),
    bytes, duration and what started each run (schedule, manual, webhook, backfill,
    automation, override, local)."""
    from blocks.core.errors import IngestError

    led = _ledger(ledger_block)
    try:
        history = led.recent_runs(source, limit)
    except IngestError as exc:
        _fail(str(exc))
    finally:
        led.dispose()
    found = asyncio.run(_flow_runs({str(r["flow_run_id"]) for r in history if r["flow_run_id"]}))
    rows, table = [], []
    for r in history:
        flow_run = (found or {}).get(str(r["flow_run_id"] or ""))
        seconds = float(r["seconds"]) if r["seconds"] else None
        row = {
            "started_at": r["started_at"].isoformat(timespec="seconds"),
            "source": r["source"],
            "date": r["partition_date"],
            "status": r["status"],
            "trigger": r["trigger"]
            or (trigger_of(flow_run) if flow_run else ("?" if found is None else None)),
            "listed": r["listed"],
            "landed": r["landed"],
            "skipped": r["skipped"],
            "failed": r["failed"],
            "bytes": r["bytes"],
            "rows": r["rows"],
            "seconds": seconds,
            "flow_run": flow_run.name if flow_run else None,
            "flow_run_id": r["flow_run_id"],
            "error": r["error"],
        }
        rows.append(row)
        table.append(
            {
                **{k: row[k] for k in ("started_at", "source", "date", "status", "trigger")},
                "items": f"{r['landed']}/{r['listed']}",
                "skipped": r["skipped"],
                "failed": r["failed"],
                "rows": r["rows"],
                "MB": round(r["bytes"] / 1e6, 2),
                "seconds": seconds,
                "flow_run": row["flow_run"],
            }
        )
    _emit(rows, table=table)


@app.command()
def health(
    ledger_block: str = typer.Option(None, help="Ingest Ledger block (default: local SQLite)."),
    last_n: int = typer.Option(20, min=1, max=1000),
    abandon_after_hours: float = typer.Option(
        24.0,
        min=0.001,
        max=8760,
        help="Close a run still 'running' whose flow run Prefect does not know as "
        "'abandoned' after this long (runs whose flow run Crashed/was Cancelled/Failed "
        "are closed at once).",
    ),
) -> None:
    """Per-source health from the ledger: last run and state, success rate, last success,
    backlog, and the next scheduled run of the source's deployment.

    First closes ledger runs left 'running' by flow runs that died (their final state in
    Prefect), so they count as failures.
    """
    from dataclasses import asdict

    from blocks.core.errors import IngestError
    from flows.health import known_sources, next_runs, reconcile_runs, source_health

    led = _ledger(ledger_block)
    try:
        reconcile_runs(led, abandon_after=dt.timedelta(hours=abandon_after_hours))
        names = known_sources(led)
        upcoming = next_runs(led, names)
        rows = [
            {**asdict(source_health(led, s, last_n)), "next_run": upcoming.get(s)} for s in names
        ]
    except IngestError as exc:  # unusable or unreachable ledger: one line, not a traceback
        _fail(str(exc))
    finally:
        led.dispose()
    _emit(rows)


@app.command()
def retention(
    days: int = typer.Option(None, help="Retention in days for every source in the ledger."),
    source_days: list[str] = typer.Option(
        [], "--source-days", help="SOURCE=DAYS for one source (repeatable); overrides --days."
    ),
    apply: bool = typer.Option(False, "--apply", help="Delete (default: dry run, report only)."),
    ledger_block: str = typer.Option(None, help="Ingest Ledger block (default: local SQLite)."),
    queue_block: str = typer.Option(None, help="Ingestion Queue block (default: local)."),
) -> None:
    """Prune acked queue messages, finished run rows and landed files older than N days per
    source (the `ingest-retention` flow's work, run here). Dry run unless --apply; exit 1
    when a landed path was refused or could not be deleted."""
    from blocks.core.errors import IngestError
    from blocks.core.ingestion_queue import IngestionQueue
    from flows.retention import known_sources, prune_source, resolve_days
    from pipeline.block_loading import load_named_block

    overrides: dict[str, int] = {}
    for item in source_days:
        name, _, value = item.partition("=")
        try:
            overrides[name] = int(value)
        except ValueError:
            _fail(f"--source-days: {item!r} is not SOURCE=DAYS")
    led = _ledger(ledger_block)
    try:
        queue = (
            load_named_block(IngestionQueue, queue_block, "--queue-block")
            if queue_block
            else IngestionQueue()
        )
        plan = resolve_days(days, overrides, known_sources(led))
        now = dt.datetime.now(dt.UTC)
        results = [
            prune_source(
                led, queue.landing_root, s, n, now, dry_run=not apply, store=queue.landing_store()
            )
            for s, n in plan.items()
        ]
    except IngestError as exc:  # bad days, unknown source, unreachable ledger: one line
        where = getattr(exc, "where", "")
        option = {"days": "--days"}.get(where) or where.replace("source_days.", "--source-days ")
        _fail(f"{option}: {str(exc).removeprefix(where + ': ')}" if where else str(exc))
    finally:
        led.dispose()
    _emit([r.row() for r in results])
    problems = [p for r in results for p in r.problems]
    if problems:
        _fail(f"{len(problems)} landed path(s) refused or not deleted: {problems[0]}")


@app.command("install-automations")
def install_automations(
    grace_seconds: int = typer.Option(
        240,
        help="Mark a run Crashed when no heartbeat came for this long; must exceed "
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY on the workers (default 180).",
    ),
    notify_block: str = typer.Option(
        None,
        help="Also install the alerts (failed/crashed runs, missing files, stale sources, "
        "failed connection checks), sent through this notification block "
        "(<block-type-slug>/<name>, e.g. custom-webhook/ops-alerts).",
    ),
) -> None:
    """Create (or replace) the automations the product relies on: crash unresponsive runs,
    and with --notify-block the alerts (ops/alerts.py)."""
    from ops.automations import install

    try:
        if notify_block is not None:
            from ops.alerts import notification_block_id

            notification_block_id(notify_block)  # a bad block changes nothing
        installed = install(grace_seconds)
        if notify_block is not None:
            from ops.alerts import install_alerts

            installed.update(install_alerts(notify_block))
    except ValueError as exc:  # ConfigError too: one line naming the option
        _fail(str(exc))
    _emit(installed)


@app.command()
def metrics(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(9464, min=1, max=65535),
    ledger_block: str = typer.Option(None, help="Ingest Ledger block (default: local SQLite)."),
    prefect: bool = typer.Option(
        True, "--prefect/--no-prefect", help="Also count skipped runs from the Prefect API."
    ),
) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until stopped: runs by state,
    items landed/failed/skipped, bytes, run-duration histogram, queue backlog, last success
    (per source, from the ledger) and runs skipped by the overlap policy or a pause (per
    deployment, from the Prefect API). Read at each scrape."""
    import signal
    import threading

    from ops.metrics import serve

    led = _ledger(ledger_block)
    try:
        led.check()
    except Exception as exc:  # noqa: BLE001
        _fail(str(exc))
    server, _thread = serve(led, host, port, prefect)
    typer.echo(f"serving metrics on http://{host}:{port}/metrics", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        led.dispose()


DRAIN_RUNS_LEFT_EXIT = 3  # timeout reached with runs still in flight (1: error, 2: usage)


@app.command()
def drain(
    pool: str = typer.Option(..., "--pool", help="Work pool to drain."),
    timeout: float = typer.Option(
        600.0, min=0, max=7 * 24 * 3600, help="Seconds to wait for in-flight runs."
    ),
    worker: str = typer.Option(
        None,
        help="Wait only for the runs this worker started (its --name); the whole "
        "pool still stops starting runs (Prefect has no per-worker pause).",
    ),
    resume_pool: bool = typer.Option(False, "--resume", help="Resume the pool instead."),
) -> None:
    """Pause a work pool (no new run starts on any of its workers), wait up to --timeout
    for its Pending/Running runs, report what is left. The pool stays paused: stop the
    workers, then `ingest-ops drain --pool P --resume`. Exit 3 when runs are left."""
    from blocks.core.errors import ConfigError
    from ops import drain as draining

    try:
        if resume_pool:
            _emit(asyncio.run(draining.resume(pool)))
            return
        report = asyncio.run(draining.drain(pool, timeout, worker))
    except ConfigError as exc:  # unknown pool, bad timeout: nothing was paused
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 (the API went away mid-drain: say so, no traceback)
        _fail(
            f"drain of pool {pool!r} stopped: {type(exc).__name__}: {exc} (the pool may be "
            f"paused: `prefect work-pool inspect {pool}`)"
        )
    out = report.as_dict()
    _emit(out, table=[{k: v for k, v in out.items() if k not in ("left", "finished")}])
    if not report.drained:
        names = ", ".join(f"{r['flow_run']} ({r['state']})" for r in report.left)
        typer.echo(
            f"error: {len(report.left)} run(s) still in flight after {timeout:g}s, pool "
            f"{pool!r} left paused: {names}",
            err=True,
        )
        raise typer.Exit(DRAIN_RUNS_LEFT_EXIT)


@app.command()
def relay(
    block: str = typer.Option(None, help="Broker Relay block to publish with."),
    queue_block: str = typer.Option(None, help="Or: the Ingestion Queue block's relay_block."),
    source: str = typer.Option(None, help="Only this source's messages (default: all)."),
    limit: int = typer.Option(None, min=1, help="At most N messages (default: all)."),
    ledger_block: str = typer.Option(None, help="Ingest Ledger block (default: local SQLite)."),
) -> None:
    """Publish the queue messages not yet published (the outbox) to a broker, oldest
    first, e.g. after the broker was down during runs. Exit 1 naming the broker when it
    does not take them; they stay in the outbox for the next try."""
    from blocks.core.errors import IngestError
    from blocks.core.outbox import relay_from_cli

    led = _ledger(ledger_block)
    try:
        _emit(relay_from_cli(led, block, queue_block, source, limit).row())
    except IngestError as exc:
        _fail(str(exc))
    finally:
        led.dispose()


if __name__ == "__main__":
    app()
