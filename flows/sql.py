"""Flow: extract a PostgreSQL or MySQL/MariaDB table (or query) incrementally."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from blocks.errors import ConfigError
from blocks.handoff import IngestionQueue
from blocks.ledger import Ledger
from blocks.sql_source import SqlSource
from blocks.sql_watermark import STATE_KEY
from blocks.timezones import check_run_date
from flows.block_loading import load_named_block, load_shared_blocks
from flows.pipeline import retry_if_transient, run_source

_COUNTS = ("listed", "skipped", "landed", "failed", "bytes", "seconds")


@task(name="connect", cache_policy=NO_CACHE, retry_condition_fn=retry_if_transient)
def connect(source: SqlSource) -> dict[str, Any]:
    """Connect and check the table/query and every configured column (`test_connection`)."""
    return source.test_connection()


def check_connection(source: SqlSource) -> dict[str, Any]:
    """`connect`, retried like an item (`retries`, `retry_delay_seconds` of the block) when
    the database cannot be reached; a refused login or a bad name fails at once."""
    retries = source.retries
    delays = exponential_backoff(source.retry_delay_seconds or 0.001)(retries) if retries else 0
    return connect.with_options(retries=retries, retry_delay_seconds=delays)(source)


@flow(
    name="ingest-sql",
    description="Extract new rows of a SQL table or query to files, past a lossless "
    "watermark kept in the ledger; land, enqueue and record them exactly once.",
    task_runner=ThreadPoolTaskRunner(max_workers=4),
)
def ingest_sql(
    source_block: str,
    ledger_block: str | None = None,
    queue_block: str | None = None,
    force: bool = False,
    date: dt.date | None = None,
    fail_on_item_error: bool = True,
    backfill_start: dt.datetime | None = None,
    backfill_end: dt.datetime | None = None,
    max_files: int = 100,
) -> dict[str, Any]:
    """Extract the rows past the stored watermark of a saved SQL Source block.

    Each run lands one file per window; the watermark advances in the same ledger
    transaction as the file's ledger row, so a crash re-extracts the same rows next run.
    With `max_rows_per_file` on the block, the flow keeps extracting files until caught up
    (at most `max_files` per flow run).

    Args:
        source_block: Name of the saved SQL Source block.
        ledger_block: Name of the saved Ingest Ledger block (empty: SQLite in .ingest/).
        queue_block: Name of the saved Ingestion Queue block (empty: .ingest/landing).
        force: Re-land content already in the ledger.
        date: Logical day of the run: the landing folder (default: today in the block's
            time zone; at most tomorrow there).
        fail_on_item_error: End the run Failed when the extraction failed.
        backfill_start: With backfill_end: re-extract `start <= column < end` of the
            timestamp column into one file; the watermark is not touched. Naive values are
            in the block's `timestamp_timezone`.
        backfill_end: End (exclusive) of the backfill range.
        max_files: At most this many files in one flow run when increments are split.
    """
    if max_files < 1:
        raise ConfigError("max_files", "must be at least 1")
    check_run_date(date)  # a far-future date fails before any I/O
    source = load_named_block(SqlSource, source_block, "source_block")
    check_run_date(date, source.timezone)  # exact bound: tomorrow in the source's zone
    source.set_backfill(backfill_start, backfill_end)
    ledger, queue = load_shared_blocks(ledger_block, queue_block)
    totals: dict[str, Any] = dict.fromkeys(_COUNTS, 0)
    totals.update(runs=0, source=source.source_id)
    try:
        source.preflight()
        check_connection(source)  # bad table/column names fail here, before any extraction
        with source.run_lock() as mine:
            if not mine:
                get_run_logger().warning(
                    "%s: another run of this source is in progress; nothing done",
                    source.source_id,
                )
                totals["status"] = "locked"
                return totals
            _extract(source, ledger, queue, totals, force, date, fail_on_item_error, max_files)
    finally:
        source.close()
        ledger.dispose()
    return totals


def _extract(
    source: SqlSource,
    ledger: Ledger,
    queue: IngestionQueue,
    totals: dict[str, Any],
    force: bool,
    date: dt.date | None,
    fail_on_item_error: bool,
    max_files: int,
) -> None:
    """Run the pipeline until caught up (a file per run), at most `max_files` times."""
    for _ in range(max_files):
        summary = run_source(
            source,
            ledger,
            queue,
            force=force,
            partition_date=date,
            fail_on_item_error=fail_on_item_error,
        )
        counts = summary.counts()
        totals["runs"] += 1
        totals["partition_date"] = counts["partition_date"]
        totals["status"] = counts["status"]
        for key in _COUNTS:
            totals[key] += counts.get(key) or 0
        state = ledger.get_state(source.source_id, STATE_KEY) or {}
        if source.backfill_window or not summary.landed or not state.get("more"):
            break
