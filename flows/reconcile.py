"""The `ingest-reconcile` flow: evaluate the saved Day Complete Rules over recent days.

Source runs already evaluate the rules naming them at their end
(`blocks.reconcile.day_complete.after_source_run`); this flow, on a schedule, is the
safety net: it starts a day whose start failed or crashed after its claim (same
idempotency key, so never twice), covers a day completed while the Prefect API was down,
and fails naming the field of a rule that is wrong (unknown source or deployment).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Failed

from blocks.core.errors import ConfigError
from blocks.reconcile.day_complete import PrefectStarter, evaluate_all, load_rules
from pipeline.block_loading import load_shared_blocks

ARTIFACT_KEY = "ingest-reconcile"
MAX_DAYS_BACK = 366


@flow(name="ingest-reconcile", description="Start every complete day of the Day Complete Rules.")
def ingest_reconcile(
    days_back: int = 3,
    date: dt.date | None = None,
    rules: list[str] | None = None,
    ledger_block: str | None = None,
) -> list[dict[str, Any]] | Failed:
    """Evaluate Day Complete Rules and start each day whose expected files have all landed.

    Args:
        days_back: Evaluate today (UTC) and tomorrow plus this many days before (0..366).
        date: Evaluate this one partition date instead (a backfill's day, say).
        rules: Names of saved `day-complete-rule` blocks (empty: every saved rule).
        ledger_block: Ingest Ledger block the sources record in (empty: the default).

    Returns the outcome per rule and day (incomplete with what is missing, started,
    already-started); ends Failed, naming the field, when a rule is invalid, names an
    unknown source or deployment, or a start failed. Nothing is claimed for a rule that
    fails, so fixing it and running again starts its complete days.
    """
    if isinstance(days_back, bool) or not 0 <= days_back <= MAX_DAYS_BACK:
        raise ConfigError("days_back", f"must be a whole number between 0 and {MAX_DAYS_BACK}")
    logger = get_run_logger()
    if date is not None:
        days = [date]
    else:
        tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
        days = [tomorrow - dt.timedelta(days=n) for n in range(days_back + 2)][::-1]
    ledger, _ = load_shared_blocks(ledger_block, None)
    try:
        loaded, bad = load_rules(rules)
        outcomes = bad + evaluate_all(
            loaded, days, ledger, PrefectStarter(), check_unknown_sources=True, log=logger.info
        )
    finally:
        ledger.dispose()
    rows = [o.row() for o in outcomes]
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=[
            {**r, "missing": ", ".join(r["missing"])[:500]}
            for r in rows
            if r["status"] != "already-started"
        ]
        or [{"rule": "(nothing to do)"}],
        description=f"Day Complete Rules, {days[0]} .. {days[-1]}",
    )
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        logger.error("rule %s %s: %s", o.rule, o.date, o.error)
    if failed:
        return Failed(message="; ".join(f"{o.error}" for o in failed)[:2000])
    if not loaded:
        logger.warning("no day-complete-rule block saved: nothing to evaluate")
    return rows
