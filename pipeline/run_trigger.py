"""What started a flow run, as the run history shows it (schedule, manual, webhook, ...)."""

from __future__ import annotations

from typing import Any

# Tag of runs started by `ingest-ops run --ignore-overlap-limit`.
OVERRIDE_TAG = "overlap-limit-ignored"


def trigger_of(run: Any) -> str:
    """What started a flow run: `webhook` (a `trigger` parameter: the receiver passes the
    request body), `backfill` (a subflow: the backfill flow runs each day as one),
    `schedule` (auto-scheduled), `automation`, `manual` (UI, CLI, API on a deployment),
    `override` (`ingest-ops run --ignore-overlap-limit`) or `local` (the flow called in a
    Python process, no deployment)."""
    if OVERRIDE_TAG in (run.tags or []):
        return "override"
    if (run.parameters or {}).get("trigger") is not None:
        return "webhook"
    if run.parent_task_run_id is not None:
        return "backfill"
    if run.auto_scheduled:
        return "schedule"
    if str(getattr(run.created_by, "type", "") or "").upper() == "AUTOMATION":
        return "automation"
    return "manual" if run.deployment_id else "local"


def current_trigger() -> str | None:
    """`trigger_of` the flow run this code runs in; None outside a flow run."""
    try:
        from prefect.context import get_run_context

        run = getattr(get_run_context(), "flow_run", None)
    except Exception:  # noqa: BLE001 (no run context: called outside Prefect)
        return None
    return trigger_of(run) if run is not None else None
