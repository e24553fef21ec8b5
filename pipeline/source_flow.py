"""Builds the Prefect flow of every source: same parameters, same run for every source.

Source-specific behaviour comes only through the `SourceBlock` run hooks: `options`
(`apply_run_options`), a retried connection check (`check_before_run`), `run_session` (e.g.
an advisory lock) and `runs_again` (more passes until caught up)."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from blocks.core.errors import ConfigError
from blocks.core.outbox import relay_after_run
from blocks.core.source import SourceBlock, no_named_items
from blocks.core.timezones import check_run_date
from pipeline.block_loading import load_named_block, load_shared_blocks
from pipeline.engine import current_flow_run_id, retry_if_transient, run_source
from pipeline.event_payloads import merge_date, parse_trigger
from pipeline.summary import LANDED_NAMES_MAX, RunSummary

PARAMETER_DOCS = """
Args:
    source_block: Name of the saved source block.
    ledger_block: Name of the saved Ingest Ledger block (empty: SQLite in $INGEST_HOME, ~/.ingest).
    queue_block: Name of the saved Ingestion Queue block (empty: $INGEST_HOME/landing).
    force: Re-land items already in the ledger.
    date: Logical day of the run: fills date templates and the landing path (default:
        today in the source block's time zone; at most tomorrow there). The backfill flow
        sets it.
    fail_on_item_error: End the run Failed when any item failed (else Completed with a
        partial count).
    jitter_seconds: Wait a random 0..jitter_seconds (at most 3600) before starting, so many
        deployments on the same schedule do not hit a server at once. Default 0.
    trigger: What started the run, e.g. a webhook's request body; logged. When it names
        items (an S3 event notification, a GCS Pub/Sub notification, `{"items": [...]}`)
        the run takes exactly those, no listing; `{"date": "YYYY-MM-DD"}` sets the day
        (see pipeline/event_payloads.py). A recognised key with a bad shape fails naming
        `trigger.<field>` before any I/O.
    options: Source-specific run options, checked before any I/O; an option the source
        does not know fails naming `options.<key>`. SQL: `backfill_start` /
        `backfill_end` (re-extract a range of the timestamp column; the watermark is not
        touched) and `max_files` (at most this many files per run, default 100).
"""

MAX_JITTER_SECONDS = 3600.0


def apply_jitter(jitter_seconds: float) -> float:
    """Sleep a random bounded delay; returns the delay. Bad values fail naming the parameter."""
    if not 0 <= jitter_seconds <= MAX_JITTER_SECONDS:
        raise ConfigError("jitter_seconds", f"must be between 0 and {MAX_JITTER_SECONDS:.0f}")
    delay = random.uniform(0, jitter_seconds) if jitter_seconds else 0.0
    if delay:
        get_run_logger().info("jitter: waiting %.1f s before starting", delay)
        time.sleep(delay)
    return delay


_COUNTS = ("listed", "skipped", "landed", "failed", "bytes", "seconds")


@task(name="connect", cache_policy=NO_CACHE, retry_condition_fn=retry_if_transient)
def connect(source: SourceBlock) -> dict[str, Any]:
    """Connect and check the source (`test_connection`)."""
    return source.test_connection()


def check_connection(source: SourceBlock) -> dict[str, Any]:
    """`connect`, retried like an item (`retries`, `retry_delay_seconds` of the block) when
    the source cannot be reached; a refused login or a bad name fails at once."""
    retries = source.retries
    delays = exponential_backoff(source.retry_delay_seconds or 0.001)(retries) if retries else 0
    return connect.with_options(retries=retries, retry_delay_seconds=delays)(source)


def source_flow(block_cls: type[SourceBlock], name: str, summary: str) -> Flow[..., dict[str, Any]]:
    """A flow named `name` that runs the pipeline for a saved `block_cls` block."""

    def run(
        source_block: str,
        ledger_block: str | None = None,
        queue_block: str | None = None,
        force: bool = False,
        date: dt.date | None = None,
        fail_on_item_error: bool = True,
        jitter_seconds: float = 0,
        trigger: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = parse_trigger(trigger)  # a bad payload fails before any wait or I/O
        date = merge_date(date, event)
        check_run_date(date)  # a far-future date fails before the jitter wait and any I/O
        apply_jitter(jitter_seconds)
        if trigger is not None:
            get_run_logger().info(
                "started by trigger (%s): %s", event.describe(), json.dumps(trigger)[:2000]
            )
        source = load_named_block(block_cls, source_block, "source_block")
        if event.items is not None and not source.takes_named_items:
            raise no_named_items(source)
        check_run_date(date, source.timezone)  # exact bound: tomorrow in the source's zone
        source.apply_run_options(options)  # before any I/O
        ledger, queue = load_shared_blocks(ledger_block, queue_block)
        day = (date or source.today()).isoformat()
        totals: dict[str, Any] = RunSummary(source=source.source_id, partition_date=day).counts()
        totals["runs"] = 0
        totals["landed_names"] = []
        totals["landed_names_truncated"] = False
        try:
            if source.check_before_run:
                source.preflight()
                check_connection(source)  # bad names fail here, before any extraction
            with source.run_session() as go:
                if not go:
                    get_run_logger().warning(
                        "%s: another run of this source is in progress; nothing done",
                        source.source_id,
                    )
                    totals["status"] = "locked"
                    return totals
                while True:
                    one_pass = run_source(
                        source,
                        ledger,
                        queue,
                        force=force,
                        partition_date=date,
                        fail_on_item_error=fail_on_item_error,
                        items=event.items,
                    )
                    _add(totals, one_pass)
                    if event.items is not None:
                        break  # the named items are taken: one pass
                    if not source.runs_again(ledger, one_pass, totals["runs"]):
                        break
        finally:
            try:  # also after a failed pass: what landed is handed to the broker
                relay_error = relay_after_run(ledger, queue.relay_block, source.source_id, totals)
            finally:
                source.close()
                # Only a run that landed something can complete a day; a rule saved later,
                # or an evaluation that failed, is caught by the ingest-reconcile sweep.
                if totals["landed"]:
                    evaluate_day_rules(source.source_id, dt.date.fromisoformat(day), ledger)
                ledger.dispose()
        if relay_error is not None:
            raise relay_error  # Failed, naming the broker; the messages wait in the outbox
        return totals

    run.__name__ = name.replace("-", "_")
    run.__doc__ = summary + "\n" + PARAMETER_DOCS
    return flow(
        name=name,
        description=summary,
        task_runner=ThreadPoolTaskRunner(max_workers=64),
    )(run)


def evaluate_day_rules(source_id: str, day: dt.date, ledger: Any) -> None:
    """Start the Day Complete Rules naming this source that this day completes (never
    raises; see blocks/reconcile/day_complete.py). Only inside a flow run: an API is there."""
    if current_flow_run_id() is None:
        return
    from blocks.reconcile.day_complete import after_source_run

    after_source_run(source_id, day, ledger, get_run_logger())


def _add(totals: dict[str, Any], summary: RunSummary) -> None:
    """Fold one pipeline pass into the flow's totals (counts summed, last status, the
    first LANDED_NAMES_MAX landed names; `landed_names_truncated` when more landed)."""
    counts = summary.counts()
    totals["runs"] += 1
    totals["partition_date"] = counts["partition_date"]
    totals["status"] = counts["status"]
    for key in _COUNTS:
        totals[key] += counts.get(key) or 0
    if counts.get("rows") is not None:
        totals["rows"] = (totals.get("rows") or 0) + counts["rows"]
    room = LANDED_NAMES_MAX - len(totals["landed_names"])
    totals["landed_names"] += summary.landed_names[:room]
    totals["landed_names_truncated"] = totals["landed"] > len(totals["landed_names"])
