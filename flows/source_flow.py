"""Builds the Prefect flow of a file-like source: same parameters for every source."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from typing import Any

from prefect import Flow, flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.errors import ConfigError
from blocks.source import SourceBlock
from blocks.timezones import check_run_date
from flows.block_loading import load_named_block, load_shared_blocks
from flows.pipeline import run_source

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
    trigger: What started the run, e.g. a webhook's request body; logged, not used.
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
    ) -> dict[str, Any]:
        check_run_date(date)  # a far-future date fails before the jitter wait and any I/O
        apply_jitter(jitter_seconds)
        if trigger is not None:
            get_run_logger().info("started by trigger: %s", json.dumps(trigger)[:2000])
        source = load_named_block(block_cls, source_block, "source_block")
        check_run_date(date, source.timezone)  # exact bound: tomorrow in the source's zone
        ledger, queue = load_shared_blocks(ledger_block, queue_block)
        try:
            result = run_source(
                source,
                ledger,
                queue,
                force=force,
                partition_date=date,
                fail_on_item_error=fail_on_item_error,
            )
        finally:
            ledger.dispose()
        return result.counts()

    run.__name__ = name.replace("-", "_")
    run.__doc__ = summary + "\n" + PARAMETER_DOCS
    return flow(
        name=name,
        description=summary,
        task_runner=ThreadPoolTaskRunner(max_workers=64),
    )(run)
