"""The place-and-record step of a `land-batch` task: two durability barriers, one ledger
transaction and then the events for all the small items the batch fetched.

Per item, landing a 1 KiB file cost ~14 ms of file fsync, ~8 ms of folder fsync and one
ledger transaction (another disk sync) here: ~50 files/s per thread. A batch instead
fetches and verifies its items into staging files without syncing each one, then:

1. makes the staged files durable at once (`syncfs` of the landing file system, Linux;
   elsewhere an fsync of every file and folder),
2. places each one (`IngestionQueue.place`: hard link, no clobber, same-content dedupe),
3. makes the links and folders durable at once (the same barrier),
4. writes every item row, queue message and source state in ONE transaction
   (`Ledger.record_landed_many`),
5. emits one `ingest.items.landed` event for the batch (the queue's default `event_per:
   batch`; with `event_per: item`, each item's `ingest.item.landed`) and runs the source's
   after-landing action.

The crash guarantees stay those of one item ("How nothing is lost" in the README): a kill
before step 4 leaves at most landed files without rows (never a half-written one: step 1
comes first), which the next run fetches again and `place` recognises as the same content
at the same path (no second file, then one row, one message); a kill after step 4 leaves
rows only for durable files, and the deterministic message id keeps one message per item.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from blocks.core.errors import LedgerError
from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.landing_store import is_object_uri
from blocks.core.ledger import LandedRecord, Ledger
from blocks.core.source import Candidate, SourceBlock


@dataclass
class _Pending:
    index: int
    candidate: Candidate
    staged: Path
    target: Path
    sha256: str
    size: int
    state: dict[str, Any] | None
    by_content: bool = False  # content dedupe still to check (at flush, one query)


@dataclass
class BatchRecords:
    """Items a `land-batch` has fetched and verified but not yet placed nor recorded.

    `results` is the batch's list of outcomes: `add` returns an item's provisional
    'landed' outcome, `flush` puts the final one (or the item's error) in its place.
    """

    source: SourceBlock
    ledger: Ledger
    queue: IngestionQueue
    day: date
    flow_run_id: str | None
    force: bool
    results: list[Any]
    pending: list[_Pending] = field(default_factory=list)

    def add(
        self,
        index: int,
        candidate: Candidate,
        staged: Path,
        target: Path,
        sha256: str,
        size: int,
        state: dict[str, Any] | None,
        rows: int | None,
        by_content: bool = False,
    ) -> Any:
        """Take over the staged file (the caller deletes its own name on return).

        `by_content`: the source dedupes by content and no pending item has this content;
        whether the ledger already holds it is asked at `flush`, for all items at once."""
        from pipeline.engine import ItemOutcome

        kept = staged.with_name(staged.stem + ".batch.part")  # still cleaned if we die
        os.replace(staged, kept)
        self.pending.append(
            _Pending(index, candidate, kept, target, sha256, size, state, by_content)
        )
        return ItemOutcome(candidate.name, "landed", bytes=size, landed_path=str(target), rows=rows)

    def holds(self, sha256: str) -> bool:
        """True if a pending item has this content (content dedupe must see its row)."""
        return any(p.sha256 == sha256 for p in self.pending)

    def flush(self) -> None:
        """Sync, place, sync, record in one transaction, then announce the pending items."""
        from pipeline.engine import ItemOutcome

        items, self.pending = self.pending, []
        if not items:
            return
        try:
            self._flush(items, ItemOutcome)
        finally:
            for p in items:
                p.staged.unlink(missing_ok=True)

    def _durable(self, paths: list[Path | str], items: list[_Pending]) -> bool:
        """make_durable, or the error in the place of each item (retried on its own)."""
        try:
            make_durable(paths)
        except OSError as exc:
            for p in items:
                self.results[p.index] = exc
            return False
        return True

    def _skip_known_content(self, items: list[_Pending]) -> list[_Pending]:
        """The items whose content the ledger does not hold yet; each other one gets its
        'same content' outcome (as `land_one` gives it one by one)."""
        from pipeline.engine import skip_same_content

        asked = [p for p in items if p.by_content]
        if not asked:
            return items
        sid = self.source.source_id
        try:
            known = self.ledger.landed_by_sha_many(sid, [p.sha256 for p in asked])
        except Exception as exc:  # a LedgerError: the run stops
            for p in items:
                self.results[p.index] = exc
            raise
        new: list[_Pending] = []
        for p in items:
            same = known.get(p.sha256) if p.by_content else None
            if same is None:
                new.append(p)
                continue
            try:
                self.results[p.index] = skip_same_content(
                    self.ledger, sid, p.candidate, p.sha256, p.size, p.state, self.day,
                    self.flow_run_id, same,
                )  # fmt: skip
            except LedgerError as exc:  # the run stops
                self.results[p.index] = exc
                raise
            except Exception as exc:  # this item only: the run retries it on its own
                self.results[p.index] = exc
        return new

    def _flush(self, items: list[_Pending], outcome_type: Any) -> None:
        queue, ledger = self.queue, self.ledger
        items = self._skip_known_content(items)
        if not items:
            return
        # the content on disk before any landing path names it
        if queue.fsync and not self._durable([p.staged for p in items], items):
            return
        placed: list[tuple[_Pending, Path | str]] = []
        for p in items:
            try:
                where = queue.place(
                    p.staged, p.target, p.sha256, ledger.sha_at_path, sync_dir=False
                )
            except Exception as exc:  # this item only: the run retries it on its own
                self.results[p.index] = exc
                continue
            placed.append((p, where))
        # the links and folders on disk before the rows name them; if that fails, the
        # files stay placed without rows: a retry or the next run re-lands them
        if queue.fsync and not self._durable([w for _p, w in placed], [p for p, _w in placed]):
            return
        entries = []
        for p, where in placed:
            record = LandedRecord(
                source=self.source.source_id,
                name=p.candidate.name,
                sha256=p.sha256,
                size=p.size,
                landed_path=str(where),
                flow_run_id=self.flow_run_id,
                remote_mtime=p.candidate.mtime,
                remote_version=p.candidate.version,
                partition_date=self.day,
            )
            generation = (self.flow_run_id or "force") if self.force else ""
            entries.append((record, queue.message_for(record, generation=generation), p.state))
        try:
            recorded = ledger.record_landed_many(entries, replace=self.force)
        except Exception as exc:  # a LedgerError: nothing of the batch is recorded
            for p, _where in placed:
                self.results[p.index] = exc
            raise
        logger = get_run_logger()
        announced = []  # with `event_per` 'batch': one event for the batch, not one per item
        for (p, where), (_record, message, _state), ok in zip(
            placed, entries, recorded, strict=True
        ):
            name = p.candidate.name
            if not ok:
                self.results[p.index] = outcome_type(
                    name, "skipped", reason="recorded by a concurrent run"
                )
                continue
            self.results[p.index] = replace(self.results[p.index], landed_path=str(where))
            # Per item, each event goes through Prefect's events worker (queued, sent in
            # the background). One POST /events per batch, with the run context's related
            # resources looked up once, measured 91 ms per 50 events in this thread
            # against 7 ms for the worker's queue: not worth it. What costs is the number
            # of events (`IngestionQueue.event_per`).
            try:
                queue.announce(message, batched=True)
            except Exception as exc:  # the queue row is the durable hand-off; this is extra
                logger.warning("%s: landed, but the event/downstream trigger failed: %s", name, exc)
            announced.append(message)
            try:
                self.source.after_landing(p.candidate)
            except Exception as exc:
                logger.warning("%s: landed, but the after-landing action failed: %s", name, exc)
        try:
            queue.announce_batch(announced)
        except Exception as exc:  # as above: the queue rows are the hand-off
            logger.warning(
                "%d items landed (%s...), but their batch event failed: %s",
                len(announced), announced[0].item_name if announced else "", exc,
            )  # fmt: skip


_libc: Any = None


def _syncfs(path: Path) -> bool:
    """syncfs(2) on the file system holding `path`: one journal commit for everything."""
    global _libc
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
    except (OSError, AttributeError):
        return False
    try:
        return _libc.syncfs(fd) == 0
    except AttributeError:
        return False
    finally:
        os.close(fd)


def make_durable(placed: list[Path | str]) -> None:
    """Every placed local file and its folder on disk before the batch's rows are written.

    Object URIs (a landing bucket) are durable once stored and are skipped. The staging
    and landing folders share a file system (`IngestionQueue.preflight` checks it), so one
    `syncfs` covers the file data, the hard links and the folders.
    """
    local = [Path(p) for p in placed if not is_object_uri(str(p))]
    if not local or _syncfs(local[0].parent):
        return
    for path in local:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in {p.parent for p in local}:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
