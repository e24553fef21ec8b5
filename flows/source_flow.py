"""Builds the Prefect flow of a file-like source: same parameters for every source."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import Flow, flow
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.source import SourceBlock
from flows.block_loading import load_named_block, load_shared_blocks
from flows.pipeline import run_source

PARAMETER_DOCS = """
Args:
    source_block: Name of the saved source block.
    ledger_block: Name of the saved Ingest Ledger block (empty: SQLite in $INGEST_HOME, ~/.ingest).
    queue_block: Name of the saved Ingestion Queue block (empty: $INGEST_HOME/landing).
    force: Re-land items already in the ledger.
    date: Logical day of the run: fills date templates and the landing path (default:
        today in the source block's time zone). The backfill flow sets it.
    fail_on_item_error: End the run Failed when any item failed (else Completed with a
        partial count).
"""


def source_flow(block_cls: type[SourceBlock], name: str, summary: str) -> Flow[..., dict[str, Any]]:
    """A flow named `name` that runs the pipeline for a saved `block_cls` block."""

    def run(
        source_block: str,
        ledger_block: str | None = None,
        queue_block: str | None = None,
        force: bool = False,
        date: dt.date | None = None,
        fail_on_item_error: bool = True,
    ) -> dict[str, Any]:
        source = load_named_block(block_cls, source_block, "source_block")
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
