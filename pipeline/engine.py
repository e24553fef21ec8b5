"""The one pipeline every source runs: discover -> dedupe -> fetch -> hand off -> record.

Sources plug in through `blocks.core.source.SourceBlock` (see its module docstring). This module
owns everything else:

- discover (task): one listing per run; unsafe names become failed items, not a crash;
  `min_age_seconds` and `stability_seconds` leave half-written files for a later run.
- dedupe (task): one set-based ledger query for the whole listing (by name and change
  fingerprint), then by content sha256 after the fetch (unless the source says the item
  is a row/record window: `SourceBlock.content_dedupe`).
- land-item (task, one per new item, retried with exponential backoff): stream to a
  staging `*.part` file while hashing, verify size and announced checksum, drop content
  already landed, move into the landing area without clobbering, then write ledger row +
  queue message (+ source state) in one transaction, emit the event, run the source's
  after-landing action.
- a ledger failure fails the run at once; one item's failure never stops the others.

Changed items (same name, new content) are landed as a new version when the source says
`changed_items='land'` (the default); if the day's landing path already holds the old
content, the new one lands as `name~<sha12>.ext` beside it. A changed fingerprint with the
same content is not landed again: the ledger just remembers the new fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.futures import PrefectFuture
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from blocks.core.errors import (
    ChecksumMismatch,
    IngestError,
    LedgerError,
    UnsafeNameError,
    is_retryable,
)
from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.ledger import KnownItem, LandedRecord, Ledger
from blocks.core.naming import check_safe_name, safe_relative_name
from blocks.core.source import (
    Candidate,
    DiscoverContext,
    ItemGone,
    NamedItem,
    NotTaken,
    SkipItem,
    SourceBlock,
)
from blocks.core.unpack import check_unpack_config, unpack_mode
from pipeline.gc_freeze import long_lived_heap_frozen
from pipeline.land_batching import BatchRecords
from pipeline.run_trigger import current_trigger
from pipeline.summary import RunSummary

ItemStatus = Literal["landed", "skipped", "failed"]
SMALL_ITEM_BYTES = 1024 * 1024  # items up to this size may share a land-batch task


class ItemsFailed(IngestError):
    """Raised at the end of a run in which some items failed (after the summary is saved)."""


@dataclass(frozen=True)
class ItemOutcome:
    name: str
    status: ItemStatus
    bytes: int = 0
    landed_path: str | None = None
    reason: str = ""
    rows: int | None = None  # rows in the item, when the source counts them (SQL, warehouse)
    # a delivery unpacked into several items (zip members, ...): one outcome per item,
    # counted instead of this one (`pipeline/unpack_landing.py`)
    members: tuple[ItemOutcome, ...] = ()


class HashingWriter:
    """File-like sink that hashes and counts what a source writes into the staging file.

    A source may instead write the staging file itself (`path`, e.g. byte ranges from
    several connections at once) and call `hash_written(upto)` as the file becomes
    complete from its start; the two ways must not be mixed in one fetch.

    A source that writes rows (SQL, warehouse) sets `rows` to how many it wrote; the run
    summary and the ledger's run history add them up.
    """

    def __init__(self, fh, path: Path | None = None) -> None:
        self._fh = fh
        self._digest = hashlib.sha256()
        self.size = 0
        self.rows: int | None = None
        self.path = path
        self._reader = None
        self._buffer: bytearray | None = None

    def hash_written(self, upto: int) -> None:
        """Hash and count bytes [size, upto) that the source put into `path` itself."""
        if upto <= self.size:
            return
        if self._reader is None:
            assert self.path is not None, "hash_written needs the staging path"
            self._reader = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed in close)
            self._buffer = bytearray(1024 * 1024)
        view = memoryview(self._buffer)
        while self.size < upto:
            want = view[: min(len(view), upto - self.size)]
            n = os.preadv(self._reader.fileno(), [want], self.size)
            if n <= 0:
                raise IngestError(f"staging file {self.path} ends at {self.size}, expected {upto}")
            self._digest.update(view[:n])
            self.size += n

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._fh.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry only what `blocks.core.errors.is_retryable` says may
    pass (a wrong password or host key is never tried again: servers lock accounts)."""
    error = state.data
    return not isinstance(error, BaseException) or is_retryable(error)


# ----------------------------------------------------------------------------- discover
def take_ready(source: SourceBlock, candidates: list[Candidate], now: datetime) -> list[Candidate]:
    """Drop items younger than the source's minimum age."""
    if not source.min_age_seconds:
        return candidates
    cutoff = now - timedelta(seconds=source.min_age_seconds)
    return [c for c in candidates if c.mtime is None or c.mtime <= cutoff]


def take_stable(first: list[Candidate], second: Iterable[Candidate]) -> list[Candidate]:
    """Items present in both listings with the same size and mtime."""
    again = {c.name: (c.size, c.mtime) for c in second}
    return [c for c in first if again.get(c.name) == (c.size, c.mtime)]


# Listed items held at once while the ledger picks the new ones out of them: a listing of
# millions is never in memory whole, only its new items are (measured: 1M names held whole
# cost ~220 bytes each on top of the run).
LISTING_CHUNK = 20_000


@dataclass
class Listing:
    """What the discover step hands on: the items to fetch (listing order), the refused
    ones (unsafe names), and counts of the rest."""

    to_fetch: list[Candidate]
    refused: list[ItemOutcome]
    listed: int = 0  # ready items plus refused ones (the run's `listed`)
    already: int = 0  # known to the ledger: skipped
    not_ready: int = 0  # younger than min_age_seconds, or not stable yet


@task(
    name="discover",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=exponential_backoff(2),
    retry_condition_fn=retry_if_transient,
)
def discover(source: SourceBlock, ctx: DiscoverContext, force: bool = False) -> Listing:
    """List the source and keep what is new: the ledger decides chunk by chunk
    (`LISTING_CHUNK` items), so only the new items are ever held whole. A source with
    `stability_seconds` lists twice and holds its first listing to compare."""
    logger = get_run_logger()
    cutoff = None
    if source.min_age_seconds:  # as take_ready
        cutoff = datetime.now(UTC) - timedelta(seconds=source.min_age_seconds)
    listing: Iterable[Candidate] = source.discover(ctx)
    out = Listing(to_fetch=[], refused=[])
    if source.stability_seconds:
        first = list(listing)
        time.sleep(source.stability_seconds)
        listing = take_stable(first, source.discover(ctx))
        out.not_ready = len(first) - len(listing)
    chunk: list[Candidate] = []
    for cand in listing:
        if cutoff is not None and cand.mtime is not None and cand.mtime > cutoff:
            out.not_ready += 1
            continue
        try:
            check_safe_name(cand.name)
        except UnsafeNameError as exc:
            out.refused.append(ItemOutcome(cand.name, "failed", reason=str(exc)))
            continue
        chunk.append(cand)
        if len(chunk) == LISTING_CHUNK:
            _keep_new(out, ctx.ledger, source, chunk, force)
            chunk = []
    _keep_new(out, ctx.ledger, source, chunk, force)
    out.listed += len(out.refused)
    logger.info(
        "discovered %d item(s) in %s; %d not ready or not stable yet; %d refused names",
        out.listed,
        source.source_id,
        out.not_ready,
        len(out.refused),
    )
    return out


def _keep_new(
    out: Listing, ledger: Ledger, source: SourceBlock, chunk: list[Candidate], force: bool
) -> None:
    if not chunk:
        return
    fetch, already = dedupe_chunk(ledger, source, chunk, force)
    out.to_fetch += fetch
    out.already += already
    out.listed += len(chunk)


@task(
    name="discover-named",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=exponential_backoff(2),
    retry_condition_fn=retry_if_transient,
)
def discover_named(
    source: SourceBlock, ctx: DiscoverContext, items: Sequence[NamedItem]
) -> tuple[list[Candidate], list[ItemOutcome]]:
    """Stat exactly the items an event names (`SourceBlock.candidates_for`, no listing),
    with the listing's checks: an unsafe name is refused before the source is asked, and
    `min_age_seconds` / `stability_seconds` hold. A named item that is not taken (unsafe,
    missing, outside the prefix/pattern, another bucket, not ready) is a failed item with
    its reason, never a silent skip; the others go on."""
    refused: list[ItemOutcome] = []
    safe: dict[tuple[str, str | None], NamedItem] = {}
    for item in items:
        try:
            safe_relative_name(item.name)
            safe.setdefault((item.name, item.bucket), item)  # a key named twice: once
        except UnsafeNameError as exc:
            refused.append(ItemOutcome(item.name, "failed", reason=f"{item.where}: {exc}"))
    asked = list(safe.values())

    def stat() -> tuple[list[Candidate], list[ItemOutcome]]:
        found: list[Candidate] = []
        not_taken: list[ItemOutcome] = []
        answered: set[str] = set()
        for got in source.candidates_for(asked, ctx) if asked else ():
            answered.add(got.name)
            if isinstance(got, NotTaken):
                not_taken.append(ItemOutcome(got.name, "failed", reason=got.reason))
            else:
                found.append(got)
        not_taken += [
            ItemOutcome(i.name, "failed", reason="not found at the source")
            for i in asked
            if i.name not in answered
        ]
        return found, not_taken

    found, not_taken = stat()
    refused += not_taken
    if found and source.stability_seconds:
        time.sleep(source.stability_seconds)
        stable = take_stable(found, stat()[0])
        kept = {c.name for c in stable}
        refused += [
            ItemOutcome(c.name, "failed", reason="still changing (stability_seconds); not taken")
            for c in found
            if c.name not in kept
        ]
        found = stable
    ready = take_ready(source, found, datetime.now(UTC))
    kept = {c.name for c in ready}
    refused += [
        ItemOutcome(c.name, "failed", reason="younger than min_age_seconds; not taken")
        for c in found
        if c.name not in kept
    ]
    get_run_logger().info(
        "%d named item(s) in %s: %d to dedupe, %d not taken",
        len(items),
        source.source_id,
        len(ready),
        len(refused),
    )
    return ready, refused


# ----------------------------------------------------------------------------- dedupe
def plan_fetches(
    candidates: list[Candidate],
    known: dict[str, list[KnownItem]],
    force: bool,
    changed_items: str,
) -> tuple[list[Candidate], list[Candidate]]:
    """Split a listing into (to fetch, already ingested) from ledger rows by name."""
    fetch: list[Candidate] = []
    skip: list[Candidate] = []
    for cand in candidates:
        rows = known.get(cand.name)
        if force or not rows:
            fetch.append(cand)
        elif changed_items == "ignore":
            skip.append(cand)
        elif cand.version is not None and any(r.remote_version == cand.version for r in rows):
            skip.append(cand)
        else:
            fetch.append(cand)  # fingerprint changed or unknown: the content hash decides
    return fetch, skip


@task(name="dedupe", cache_policy=NO_CACHE, persist_result=False)
def dedupe(
    ledger: Ledger, source: SourceBlock, candidates: list[Candidate], force: bool
) -> tuple[list[Candidate], int]:
    """(items to fetch in listing order, how many are already ingested): `dedupe_chunk`
    as a task, for the items an event names. Call it through `dedupe_listing`."""
    return dedupe_chunk(ledger, source, candidates, force)


def dedupe_chunk(
    ledger: Ledger, source: SourceBlock, candidates: list[Candidate], force: bool
) -> tuple[list[Candidate], int]:
    """(items to fetch in listing order, how many are already ingested). The database
    decides (`Ledger.iter_names_to_fetch`, the same rule as `plan_fetches`), chunk by
    chunk, and only the new and changed items come back."""
    if force:
        return list(candidates), 0
    since = None
    if source.dedupe_window_days:
        since = datetime.now(UTC) - timedelta(days=source.dedupe_window_days)
    wanted: set[tuple[str, str | None]] = set()
    for _count_in_chunk, to_fetch in ledger.iter_names_to_fetch(
        source.source_id,
        ((c.name, c.version) for c in candidates),
        since,
        any_version=source.changed_items == "ignore",
    ):
        wanted |= to_fetch
    fetch = [c for c in candidates if (c.name, c.version) in wanted]
    return fetch, len(candidates) - len(fetch)


def dedupe_listing(
    ledger: Ledger, source: SourceBlock, candidates: list[Candidate], force: bool
) -> tuple[list[Candidate], int]:
    """Run the `dedupe` task with the listing passed by reference.

    Prefect walks every task parameter (`visit_collection`, to find futures and record
    inputs): a plain 100,000-item list cost ~5 s before the task started. `quote` tells
    Prefect not to look inside; the listing holds no futures.
    """
    return dedupe(ledger, source, quote(candidates), force)


# ----------------------------------------------------------------------------- land one item
@task(name="land-batch", cache_policy=NO_CACHE)
def land_batch(
    source: SourceBlock,
    ledger: Ledger,
    queue: IngestionQueue,
    candidates: list[Candidate],
    day: date,
    flow_run_id: str | None,
    force: bool,
) -> list[ItemOutcome | Exception]:
    """Land several small items one after another in one task.

    Each item is fetched, verified and placed as `land-item` does, without a disk sync
    each; then the whole batch is made durable at once and recorded in ONE ledger
    transaction, and its events follow (`pipeline/land_batching.py`). An item's error is
    returned in its place, not raised, so the run can retry that item alone as a
    `land-item` task (with Prefect's retries). A ledger error ends the batch at once (the
    run stops).
    """
    source.prefetch(candidates)  # e.g. SFTP: every item's OPEN/READ/CLOSE in one pipeline
    results: list[ItemOutcome | Exception] = []
    batch = BatchRecords(source, ledger, queue, day, flow_run_id, force, results)
    try:
        for cand in candidates:
            try:
                results.append(
                    land_one(source, ledger, queue, cand, day, flow_run_id, force, batch)
                )
            except LedgerError as exc:
                results.append(exc)
                break
            except Exception as exc:  # returned: the run decides about a retry
                results.append(exc)
        batch.flush()
    except LedgerError:  # flush put the error in the place of every item it held
        pass
    return results


def land_one(
    source: SourceBlock,
    ledger: Ledger,
    queue: IngestionQueue,
    candidate: Candidate,
    day: date,
    flow_run_id: str | None,
    force: bool,
    batch: BatchRecords | None = None,
) -> ItemOutcome:
    """Fetch one item to staging, verify it, land it and record it (idempotent).

    With `batch` (a `land-batch` task), a verified new item is handed over staged and
    unsynced: `batch.flush()` syncs, places, records and announces all the batch's items
    at once. Every other ledger write first flushes the batch, so the ledger sees the
    items in order.
    """
    logger = get_run_logger()
    sid = source.source_id
    staged = queue.new_staging_file(sid)
    try:
        with open(staged, "wb") as fh:
            writer = HashingWriter(fh, staged)
            try:
                state = source.fetch(candidate, writer)
            except SkipItem as why:
                if batch is not None:
                    batch.flush()
                for key, value in why.state.items():
                    ledger.set_state(sid, key, value)
                if isinstance(why, ItemGone):
                    logger.warning("%s: %s; skipped", candidate.name, why)
                return ItemOutcome(
                    candidate.name, "skipped", reason=str(why) or "skipped by source"
                )
            finally:
                writer.close()
            fh.flush()
            if queue.fsync and batch is None:  # a batch syncs all its files at once
                os.fsync(fh.fileno())
        sha, size = writer.hexdigest(), writer.size
        if candidate.size is not None and size != candidate.size:
            raise IngestError(
                f"{candidate.name}: got {size} bytes, the listing said {candidate.size}"
            )
        expected = (candidate.expected_sha256 or "").lower()
        if expected and sha != expected:
            kept = queue.quarantine(staged, sid, candidate.name)
            raise ChecksumMismatch(
                f"{candidate.name}: sha256 {sha} does not match the announced {expected}; "
                f"not landed, kept in {kept}"
            )
        if unpack_mode(source) != "none":  # gunzip / zip members / PGP before landing
            from pipeline.unpack_landing import land_unpacked

            if batch is not None:
                batch.flush()

            unpacked = land_unpacked(
                source, ledger, queue, candidate, staged, sha, size, state, day, flow_run_id, force
            )
            if unpacked is not None:
                return unpacked

        # Content dedupe is for files; a row/record window is its own delivery even when
        # its bytes equal an earlier window's (the source says which it is).
        by_content = not force and source.content_dedupe(candidate)
        at_flush = False
        if by_content and batch is not None:
            if batch.holds(sha):
                batch.flush()  # an item of this batch has this content: its row must be seen
            else:
                at_flush = True  # checked with the batch's other items in one query
        if by_content and not at_flush:
            same = ledger.landed_by_sha(sid, sha)
            if same is not None:
                return skip_same_content(
                    ledger, sid, candidate, sha, size, state, day, flow_run_id, same
                )

        target = queue.landing_path(sid, day, candidate.name)
        if batch is not None:  # placed, synced, recorded and announced with the whole batch
            return batch.add(
                len(batch.results), candidate, staged, target, sha, size, state, writer.rows,
                by_content=at_flush,
            )  # fmt: skip
        placed = queue.place(staged, target, sha, ledger.sha_at_path)
        record = LandedRecord(
            source=sid,
            name=candidate.name,
            sha256=sha,
            size=size,
            landed_path=str(placed),
            flow_run_id=flow_run_id,
            remote_mtime=candidate.mtime,
            remote_version=candidate.version,
            partition_date=day,
        )
        message = queue.message_for(record, generation=(flow_run_id or "force") if force else "")
        if not ledger.record_landed(record, message, state, replace=force):
            return ItemOutcome(candidate.name, "skipped", reason="recorded by a concurrent run")
        try:
            queue.announce(message)
        except Exception as exc:  # the queue row is the durable hand-off; this is extra
            logger.warning(
                "%s: landed, but the event/downstream trigger failed: %s", candidate.name, exc
            )
        try:
            source.after_landing(candidate)
        except Exception as exc:
            logger.warning(
                "%s: landed, but the after-landing action failed: %s", candidate.name, exc
            )
        return ItemOutcome(
            candidate.name, "landed", bytes=size, landed_path=str(placed), rows=writer.rows
        )
    finally:
        staged.unlink(missing_ok=True)


def skip_same_content(
    ledger: Ledger,
    sid: str,
    candidate: Candidate,
    sha: str,
    size: int,
    state: Mapping[str, Any] | None,
    day: date,
    flow_run_id: str | None,
    same: KnownItem,
) -> ItemOutcome:
    """An item whose content this source already landed (`same`): not landed again.
    The same name remembers its new version; another name is recorded as its duplicate."""
    if same.name == candidate.name:
        ledger.refresh_version(sid, candidate.name, sha, candidate.version)
        reason = "content unchanged"
    else:
        ledger.record_landed(
            LandedRecord(
                source=sid,
                name=candidate.name,
                sha256=sha,
                size=size,
                landed_path=same.landed_path or "",
                flow_run_id=flow_run_id,
                remote_mtime=candidate.mtime,
                remote_version=candidate.version,
                status="duplicate",
                partition_date=day,
            )
        )
        reason = f"same content as {same.name}"
    for key, value in (state or {}).items():  # rows already delivered: move on
        ledger.set_state(sid, key, value)
    return ItemOutcome(candidate.name, "skipped", reason=reason)


# One item as its own task run: land_one with Prefect's retries (set per source by the run).
land_item = task(
    name="land-item",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_if_transient,
    retry_jitter_factor=0.5,
)(land_one)


# ----------------------------------------------------------------------------- run
def clean_stale_staging(queue: IngestionQueue, source_id: str, older_than: float = 6 * 3600) -> int:
    """Remove *.part files a crashed run left behind (never a landed file), and what
    killed uploads left in a landing bucket."""
    removed = queue.clean_stale_objects(source_id, older_than)
    folder = queue.staging_root / source_id
    if not folder.is_dir():
        return removed
    cutoff = time.time() - older_than
    for part in folder.glob("*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def current_flow_run_id() -> str | None:
    try:
        ctx = get_run_context()
    except Exception:
        return None
    run = getattr(ctx, "flow_run", None)
    return str(run.id) if run is not None else None


def run_source(
    source: SourceBlock,
    ledger: Ledger,
    queue: IngestionQueue,
    *,
    force: bool = False,
    partition_date: date | None = None,
    fail_on_item_error: bool = True,
    items: Sequence[NamedItem] | None = None,
) -> RunSummary:
    """Run the pipeline for one source inside a flow. Returns the summary.

    `items` (from an event, `pipeline/event_payloads.py`): take exactly these instead of
    listing the source; the dedupe, landing and records are the same.

    Raises ConfigError before any I/O for bad configuration, LedgerError at once when the
    ledger fails, and ItemsFailed at the end if items failed and `fail_on_item_error`.
    """
    logger = get_run_logger()
    started = time.monotonic()
    day = partition_date or source.today()
    source.preflight()
    check_unpack_config(source)
    queue.preflight()
    ledger.check()
    flow_run_id = current_flow_run_id()
    summary = RunSummary(source=source.source_id, partition_date=day.isoformat())
    run_row = ledger.start_run(source.source_id, flow_run_id, day, trigger=current_trigger())
    clean_stale_staging(queue, source.source_id)
    try:
        # the long-lived heap out of the GC's full collections while items are listed and
        # landed (pipeline/gc_freeze.py)
        with long_lived_heap_frozen():
            ctx = DiscoverContext(day, flow_run_id, force, ledger, source.source_id)
            if items is None:  # listed and deduped chunk by chunk
                listing = discover(source, ctx, force)
                to_fetch, refused, already = listing.to_fetch, listing.refused, listing.already
                summary.listed = listing.listed
            else:  # an event named the items: stat exactly those, no listing
                candidates, refused = discover_named(source, ctx, quote(list(items)))
                summary.listed = len(candidates) + len(refused)
                to_fetch, already = dedupe_listing(ledger, source, candidates, force)
            summary.skipped = already
            for outcome in refused:
                _count(summary, outcome)
                ledger.record_failure(
                    source.source_id, outcome.name, flow_run_id, outcome.reason, None, day
                )
            logger.info("%d new item(s) to fetch, %d already ingested", len(to_fetch), already)
            _land_all(source, ledger, queue, to_fetch, day, flow_run_id, force, summary)
    except BaseException as exc:
        summary.status = "failed"
        summary.seconds = time.monotonic() - started
        _finish(ledger, run_row, summary, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        source.close()
    summary.seconds = time.monotonic() - started
    summary.status = (
        "completed" if not summary.failed else ("failed" if fail_on_item_error else "partial")
    )
    _finish(ledger, run_row, summary)
    logger.info(summary.log_line())
    if summary.failed and fail_on_item_error:
        raise ItemsFailed(
            f"{summary.failed} of {summary.listed} item(s) failed in {source.source_id}: "
            + "; ".join(f"{f['name']}: {f['error']}" for f in summary.failures[:5])
        )
    return summary


def plan_batches(items: list[Candidate], source: SourceBlock) -> list[list[Candidate]]:
    """Group items into units of work, in listing order: big or unknown-size items alone,
    small ones in batches of at most `small_item_batch`, and never fewer units than
    `max_parallel` can run at once."""

    def small(c: Candidate) -> bool:
        return source.small_item_batch > 1 and c.size is not None and c.size <= SMALL_ITEM_BYTES

    count = sum(1 for c in items if small(c))
    per = max(1, min(source.small_item_batch, -(-count // source.max_parallel)))
    units: list[list[Candidate]] = []
    batch: list[Candidate] = []
    for cand in items:
        if not small(cand):
            units.append([cand])
            continue
        batch.append(cand)
        if len(batch) == per:
            units.append(batch)
            batch = []
    if batch:
        units.append(batch)
    return units


def _land_all(
    source: SourceBlock,
    ledger: Ledger,
    queue: IngestionQueue,
    items: list[Candidate],
    day: date,
    flow_run_id: str | None,
    force: bool,
    summary: RunSummary,
) -> None:
    """Land every item, at most `max_parallel` units of work in flight.

    A unit is one `land-item` task (retried by Prefect) or, for small items, one
    `land-batch` task: Prefect's own cost per task run (~20 ms here) would otherwise cap
    small files at ~50/s. An item that fails inside a batch gets its remaining attempts
    as a `land-item` task of its own. The bounded window keeps memory flat for huge
    listings and lets a ledger failure stop the run before more items are started.
    """
    if not items:
        return  # a run with nothing new builds no task variants
    logger = get_run_logger()

    def single(retries: int):
        return land_item.with_options(
            retries=retries,
            retry_delay_seconds=exponential_backoff(source.retry_delay_seconds or 0.001)(retries)
            if retries
            else 0,
        )

    first_try = single(source.retries)
    second_try = single(max(0, source.retries - 1))
    pending: deque[tuple[list[Candidate], PrefectFuture[Any]]] = deque()
    ledger_error: BaseException | None = None
    progress = _Progress(summary.source, len(items))
    units = deque(plan_batches(items, source))
    args = (day, flow_run_id, force)

    def failed(cand: Candidate, result: BaseException) -> None:
        nonlocal ledger_error
        error = f"{type(result).__name__}: {result}"
        logger.error("%s failed: %s", cand.name, error)
        _count(summary, ItemOutcome(cand.name, "failed", reason=error))
        try:
            ledger.record_failure(summary.source, cand.name, flow_run_id, error, cand.size, day)
        except LedgerError as exc:
            ledger_error = ledger_error or exc
        progress.step(summary)

    while True:
        while ledger_error is None and units and len(pending) < source.max_parallel:
            unit = units.popleft()
            if isinstance(unit, _Retry):
                future = second_try.submit(source, ledger, queue, unit[0], *args)
            elif len(unit) == 1:
                future = first_try.submit(source, ledger, queue, unit[0], *args)
            else:
                # quoted: Prefect would walk every candidate of the list (~1 ms each batch)
                future = land_batch.submit(source, ledger, queue, quote(unit), *args)
            pending.append((unit, future))
        if not pending:
            break
        unit, future = pending.popleft()
        future.wait()
        result = future.state.result(raise_on_failure=False)
        batched = len(unit) > 1 and not isinstance(unit, _Retry)
        # a batch returns one outcome per item it reached; if the task itself failed,
        # its error stands for every item of it
        outcomes = result if isinstance(result, list) else [result] * len(unit)
        for cand, outcome in zip(unit, outcomes, strict=False):
            if isinstance(outcome, ItemOutcome):
                _count(summary, outcome)
                progress.step(summary)
            elif isinstance(outcome, LedgerError):
                ledger_error = ledger_error or outcome
            elif batched and source.retries and is_retryable(outcome):
                logger.warning("%s: %s; retrying it on its own", cand.name, outcome)
                units.append(_Retry([cand]))
            else:
                failed(cand, outcome)
    progress.done()
    if ledger_error is not None:
        raise ledger_error


class _Retry(list):
    """One item that failed inside a batch: its remaining attempts as a `land-item` task."""


def _count(summary: RunSummary, outcome: ItemOutcome) -> None:
    if outcome.members:
        for member in outcome.members:
            _count(summary, member)
    elif outcome.status == "landed":
        summary.note_landed(outcome.name)
        summary.bytes += outcome.bytes
        if outcome.rows is not None:
            summary.rows = (summary.rows or 0) + outcome.rows
    elif outcome.status == "skipped":
        summary.skipped += 1
    else:
        summary.failed += 1
        summary.failures.append({"name": outcome.name, "error": outcome.reason})


def _finish(ledger: Ledger, run_row: int, summary: RunSummary, error: str | None = None) -> None:
    try:
        ledger.finish_run(run_row, summary.status, summary.counts(), error)
    except LedgerError:
        if error is None:
            raise
    if error is None and not summary.landed and not summary.failed:
        return  # nothing new: the log line and the ledger's run row say so (no API call)
    try:
        summary.publish()
    except Exception as exc:  # an artifact must not hide the real outcome
        get_run_logger().warning("could not publish the summary artifact: %s", exc)


class _Progress:
    """Progress artifact for long runs (updated at most every 2 s)."""

    def __init__(self, source: str, total: int) -> None:
        self.total = total
        self.done_count = 0
        self.artifact_id = None
        self._last = 0.0
        if total >= 50:
            try:
                from prefect.artifacts import create_progress_artifact

                self.artifact_id = create_progress_artifact(
                    progress=0.0, description=f"{source}: {total} item(s) to land"
                )
            except Exception:
                self.artifact_id = None

    def step(self, summary: RunSummary) -> None:
        self.done_count += 1
        now = time.monotonic()
        if self.artifact_id is not None and now - self._last > 2:
            self._last = now
            self._update()

    def done(self) -> None:
        if self.artifact_id is not None:
            self._update()

    def _update(self) -> None:
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(
                self.artifact_id, progress=100.0 * self.done_count / self.total
            )
        except Exception:
            self.artifact_id = None


def landed_files(root: Path) -> list[Path]:
    """Every file under a landing root (helper for operators and tests)."""
    return sorted(p for p in root.rglob("*") if p.is_file())
