"""Graceful drain of a work pool before its workers stop (`ingest-ops drain`).

Stopping a worker takes its flow-run processes down with it (process pools), and the runs
become Crashed only after the heartbeat grace of `ingest-ops install-automations`. A drain
avoids that:

1. pause the work pool (`is_paused=True`): the server hands no scheduled run to any
   worker of a paused pool (its `get_scheduled_flow_runs` query skips paused pools), so
   nothing new starts; scheduled runs stay Scheduled and are not lost;
2. wait until the pool has no flow run Pending, Running or Cancelling (optionally only the
   runs one worker started, by the `prefect.worker.name` label every worker puts on the
   runs it submits), or until the timeout;
3. report what is left. The pool stays paused: the operator stops the workers, then
   `ingest-ops drain --pool P --resume` (or `prefect work-pool resume P`) opens it again,
   and the runs that waited start (late).

Prefect has no per-worker pause: a drain always stops new starts on the whole pool.
`worker` narrows only which in-flight runs are waited for.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from blocks.core.errors import ConfigError

ACTIVE = ("PENDING", "RUNNING", "CANCELLING")
WORKER_LABEL = "prefect.worker.name"  # set by prefect.workers.base on each submitted run
MAX_TIMEOUT = 7 * 24 * 3600.0


@dataclass
class DrainReport:
    """What a drain found: `drained` is True when no in-flight run is left."""

    pool: str
    paused: bool
    drained: bool
    waited_seconds: float
    worker: str | None = None
    left: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    scheduled_waiting: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_timeout(timeout: float) -> float:
    """0..7 days in seconds; anything else is refused naming `--timeout`."""
    if (
        not isinstance(timeout, (int, float))
        or timeout != timeout
        or not (0 <= timeout <= MAX_TIMEOUT)
    ):
        raise ConfigError(
            "--timeout", f"must be between 0 and {int(MAX_TIMEOUT)} seconds, got {timeout!r}"
        )
    return float(timeout)


def _row(run: Any) -> dict[str, Any]:
    return {
        "flow_run_id": str(run.id),
        "flow_run": run.name,
        "state": run.state_name,
        "worker": (run.labels or {}).get(WORKER_LABEL),
        "started": run.start_time.isoformat(timespec="seconds") if run.start_time else None,
    }


async def _runs(client: Any, pool: str, state_types: list[str]) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    found: list[Any] = []
    while True:  # pages of 200 until a short page
        page = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=state_types))
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            limit=200,
            offset=len(found),
        )
        found.extend(page)
        if len(page) < 200:
            return found


async def _check_pool(client: Any, pool: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    if not pool or not pool.strip():
        raise ConfigError("--pool", "a work pool name is required")
    try:
        return await client.read_work_pool(pool)
    except ObjectNotFound:
        names = sorted(p.name for p in await client.read_work_pools())
        raise ConfigError(
            "--pool",
            f"no work pool {pool!r} on the Prefect API (pools: {', '.join(names) or 'none'})",
        ) from None


async def drain(
    pool: str,
    timeout: float,
    worker: str | None = None,
    poll_seconds: float = 2.0,
    settle_seconds: float = 3.0,
) -> DrainReport:
    """Pause `pool`, wait up to `timeout` seconds for its in-flight runs (those `worker`
    started, if given), and report. The pool is left paused.

    Bad input (unknown pool, timeout outside 0..7 days) raises `ConfigError` before the
    pool is touched. "Drained" needs no in-flight run for `settle_seconds` (bounded by the
    timeout): a worker's poll that was answered just before the pause submits its runs a
    moment later, and they must be seen and waited for.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    timeout = check_timeout(timeout)
    async with get_client() as client:
        await _check_pool(client, pool)
        await client.update_work_pool(pool, WorkPoolUpdate(is_paused=True))
        start = time.monotonic()
        seen: dict[str, dict[str, Any]] = {}
        empty_since: float | None = None
        while True:
            active = [
                r
                for r in await _runs(client, pool, list(ACTIVE))
                if worker is None or (r.labels or {}).get(WORKER_LABEL) == worker
            ]
            for run in active:
                seen[str(run.id)] = _row(run)
            now = time.monotonic()
            if active:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elapsed = now - start
            settled = empty_since is not None and (
                now - empty_since >= settle_seconds or elapsed >= timeout
            )
            if settled or elapsed >= timeout:
                break
            await asyncio.sleep(min(poll_seconds, max(0.1, timeout - elapsed)))
        left_ids = {str(r.id) for r in active}
        finished = []
        for run_id, row in seen.items():
            if run_id not in left_ids:
                final = await client.read_flow_run(run_id)
                finished.append({**row, "state": final.state_name})
        scheduled = await _runs(client, pool, ["SCHEDULED"])
    return DrainReport(
        pool=pool,
        paused=True,
        drained=not active,
        waited_seconds=round(time.monotonic() - start, 1),
        worker=worker,
        left=[_row(r) for r in active],
        finished=finished,
        scheduled_waiting=len(scheduled),
    )


async def resume(pool: str) -> dict[str, Any]:
    """Open the pool again; returns how many scheduled runs were waiting for it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    async with get_client() as client:
        await _check_pool(client, pool)
        waiting = await _runs(client, pool, ["SCHEDULED"])
        await client.update_work_pool(pool, WorkPoolUpdate(is_paused=False))
    return {"pool": pool, "paused": False, "scheduled_waiting": len(waiting)}
