"""Landing of unpacked deliveries (see `blocks/core/unpack.py` for what is unpacked how).

`land_one` hands a verified staged delivery here when the source unpacks. The delivery is
unpacked completely into staging files first (a bad archive lands nothing), then each
unpacked item is landed exactly like a plain item: content dedupe, no-clobber move, ledger
row + one queue message in one transaction, its landed event (`IngestionQueue.event_per`:
'batch' gives one `ingest.items.landed` for all the archive's landed members, emitted
after the last; 'item' one `ingest.item.landed` per member). Each item's row
keeps the delivered file's checksum and size (`delivered_sha256`, `delivered_size`).

Last, the delivery itself gets a ledger row with status `unpacked` (its name, sha256, size
and remote version; no landed path), written with the source's state. That row is what the
next run's listing dedupe finds, so an archive already unpacked is not fetched again; a
delivery with the sha256 of an archive already unpacked is skipped as a whole (same name:
`archive unchanged`; another name: recorded `duplicate`). A crash before that row leaves
some items recorded: the next run fetches and unpacks again, finds those items in the
ledger (content unchanged) and lands only the rest, so each item lands once.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import get_run_logger
from sqlalchemy import select

from blocks.core import ledger_schema as t
from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.ledger import LandedRecord, Ledger, QueueMessage
from blocks.core.source import Candidate, SourceBlock
from blocks.core.unpack import Unpacked, expand
from pipeline.engine import ItemOutcome


def unpacked_archive(ledger: Ledger, source: str, sha256: str) -> str | None:
    """Name of a delivery of this source with this sha256 that was already unpacked."""
    i = t.items.c
    stmt = (
        select(i.name)
        .where(i.source == source, i.sha256 == sha256, i.status == "unpacked")
        .order_by(i.id)
        .limit(1)
    )
    with ledger.transaction() as conn:
        return conn.execute(stmt).scalar()


def land_unpacked(
    source: SourceBlock,
    ledger: Ledger,
    queue: IngestionQueue,
    candidate: Candidate,
    staged: Path,
    sha: str,
    size: int,
    state: dict | None,
    day: date,
    flow_run_id: str | None,
    force: bool,
) -> ItemOutcome | None:
    """Unpack and land one verified delivery; None when `auto` finds a plain file."""
    sid = source.source_id
    if not force:
        known = unpacked_archive(ledger, sid, sha)
        if known is not None:
            if known == candidate.name:
                ledger.refresh_version(sid, candidate.name, sha, candidate.version)
                reason = "archive unchanged (already unpacked)"
            else:
                ledger.record_landed(
                    _archive_row(sid, candidate, sha, size, flow_run_id, day, "duplicate")
                )
                reason = f"same archive as {known} (already unpacked)"
            for key, value in (state or {}).items():
                ledger.set_state(sid, key, value)
            return ItemOutcome(candidate.name, "skipped", reason=reason)

    items = expand(
        source, staged, candidate.name, size, lambda: queue.new_staging_file(sid), queue.fsync
    )
    if items is None:
        return None
    announced: list[QueueMessage] = []  # event_per 'batch': one event for the archive
    try:
        outcomes = tuple(
            _land_item(
                source,
                ledger,
                queue,
                candidate,
                item,
                sha,
                size,
                day,
                flow_run_id,
                force,
                announced,
            )
            for item in items
        )
    finally:
        for item in items:
            item.path.unlink(missing_ok=True)
        _announce_members(queue, candidate, announced)
    # The delivery's own row last: until it is written a rerun unpacks again. The source's
    # after-landing action (delete, archive) runs once every item is recorded.
    row = _archive_row(sid, candidate, sha, size, flow_run_id, day, "unpacked")
    if ledger.record_landed(row, None, state, replace=force):
        try:
            source.after_landing(candidate)
        except Exception as exc:
            get_run_logger().warning(
                "%s: unpacked and landed, but the after-landing action failed: %s",
                candidate.name,
                exc,
            )
    landed = [o for o in outcomes if o.status == "landed"]
    reason = "" if items else "archive holds no files"
    return ItemOutcome(
        candidate.name,
        "landed" if landed else "skipped",
        bytes=sum(o.bytes for o in landed),
        reason=reason,
        members=outcomes,
    )


def _archive_row(
    sid: str,
    candidate: Candidate,
    sha: str,
    size: int,
    flow_run_id: str | None,
    day: date,
    status: str,
) -> LandedRecord:
    """The delivery's own ledger row: no landed file, its status says what became of it."""
    return LandedRecord(
        source=sid,
        name=candidate.name,
        sha256=sha,
        size=size,
        landed_path="",
        flow_run_id=flow_run_id,
        remote_mtime=candidate.mtime,
        remote_version=candidate.version,
        status=status,
        partition_date=day,
        delivered_sha256=sha,
        delivered_size=size,
    )


def _announce_members(
    queue: IngestionQueue, candidate: Candidate, announced: list[QueueMessage]
) -> None:
    """The `ingest.items.landed` event(s) of an archive's landed members (`event_per`
    'batch'), also when a later member failed: the recorded ones are landed."""
    try:
        queue.announce_batch(announced)
    except Exception as exc:  # the queue rows are the durable hand-off; this is extra
        get_run_logger().warning(
            "%s: members landed, but their batch event failed: %s", candidate.name, exc
        )


def _land_item(
    source: SourceBlock,
    ledger: Ledger,
    queue: IngestionQueue,
    candidate: Candidate,
    item: Unpacked,
    sha: str,
    size: int,
    day: date,
    flow_run_id: str | None,
    force: bool,
    announced: list[QueueMessage],
) -> ItemOutcome:
    """One unpacked item, landed as `land_one` lands a plain item; its message joins
    `announced` for the archive's one event (`event_per` 'batch')."""
    sid = source.source_id
    common = dict(
        source=sid,
        name=item.name,
        sha256=item.sha256,
        size=item.size,
        flow_run_id=flow_run_id,
        remote_mtime=candidate.mtime,
        partition_date=day,
        delivered_sha256=sha,
        delivered_size=size,
    )
    if not force and source.content_dedupe(candidate):
        same = ledger.landed_by_sha(sid, item.sha256)
        if same is not None:
            if same.name == item.name:
                return ItemOutcome(item.name, "skipped", reason="content unchanged")
            ledger.record_landed(
                LandedRecord(landed_path=same.landed_path or "", status="duplicate", **common)
            )
            return ItemOutcome(item.name, "skipped", reason=f"same content as {same.name}")
    target = queue.landing_path(sid, day, item.name)
    placed = queue.place(item.path, target, item.sha256, ledger.sha_at_path)
    record = LandedRecord(landed_path=str(placed), **common)
    message = queue.message_for(record, generation=(flow_run_id or "force") if force else "")
    message.payload.update(delivered_name=candidate.name, delivered_sha256=sha, delivered_size=size)
    if not ledger.record_landed(record, message, None, replace=force):
        return ItemOutcome(item.name, "skipped", reason="recorded by a concurrent run")
    announced.append(message)
    try:
        queue.announce(message, batched=True)
    except Exception as exc:  # the queue row is the durable hand-off; this is extra
        get_run_logger().warning(
            "%s: landed, but the event/downstream trigger failed: %s", item.name, exc
        )
    return ItemOutcome(item.name, "landed", bytes=item.size, landed_path=str(placed))
