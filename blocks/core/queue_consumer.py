"""Consumer side of the ingestion queue: claim messages with a lease, then ack them.

Delivery is at-least-once: a claimed message that is not acked before its lease ends
can be claimed again. Two consumers never hold the same live claim:
- PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` then update, in one transaction;
- SQLite: the claim runs inside `BEGIN IMMEDIATE`, which takes the database's single
  write lock before reading, so claims are serialised.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from blocks.core import ledger_schema as t
from blocks.core.errors import LedgerError
from blocks.core.ledger import Ledger, utcnow


@dataclass(frozen=True)
class ClaimedMessage:
    message_id: str
    source: str
    item_name: str
    sha256: str | None
    size: int | None
    landed_path: str
    payload: dict[str, Any]
    attempts: int
    lease_expires_at: datetime


class QueueConsumer:
    """Claims and acks ingestion-queue messages for one consumer.

    Example:
        consumer = QueueConsumer(Ledger.load("ledger"), consumer_id="loader-1")
        for msg in consumer.claim(limit=10):
            load(msg.landed_path)
            consumer.ack([msg.message_id])
    """

    def __init__(self, ledger: Ledger, consumer_id: str, lease_seconds: float = 300.0) -> None:
        if not consumer_id:
            raise ValueError("consumer_id: must not be empty")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds: must be > 0")
        self.ledger = ledger
        self.consumer_id = consumer_id
        self.lease = timedelta(seconds=lease_seconds)

    def claim(self, limit: int = 10, source: str | None = None) -> list[ClaimedMessage]:
        """Claim up to `limit` ready (or lease-expired) messages, oldest first."""
        if limit < 1:
            raise ValueError("limit: must be >= 1")
        engine = self.ledger.engine
        try:
            with engine.connect() as conn:
                if engine.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                claimed = self._claim_in(conn, limit, source)
                conn.commit()
                return claimed
        except SQLAlchemyError as exc:
            raise LedgerError(f"queue claim failed: {type(exc).__name__}") from exc

    def _claim_in(self, conn: Connection, limit: int, source: str | None) -> list[ClaimedMessage]:
        now = utcnow()
        q = t.queue.c
        claimable = or_(q.status == "ready", (q.status == "claimed") & (q.lease_expires_at < now))
        pick = (
            select(q.message_id).where(claimable).order_by(q.created_at, q.message_id).limit(limit)
        )
        if source:
            pick = pick.where(q.source == source)
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        ids = list(conn.execute(pick).scalars())
        if not ids:
            return []
        expires = now + self.lease
        rows = conn.execute(
            update(t.queue)
            .where(q.message_id.in_(ids), claimable)
            .values(
                status="claimed",
                claimed_by=self.consumer_id,
                lease_expires_at=expires,
                attempts=q.attempts + 1,
            )
            .returning(
                q.message_id,
                q.source,
                q.item_name,
                q.sha256,
                q.size,
                q.landed_path,
                q.payload,
                q.attempts,
                q.lease_expires_at,
            )
        ).all()
        # the returned columns are ClaimedMessage's fields; only the payload is JSON text
        return [
            ClaimedMessage(**{**r._mapping, "payload": json.loads(r.payload)})
            for r in sorted(rows, key=lambda r: ids.index(r.message_id))
        ]

    def ack(self, message_ids: Sequence[str]) -> int:
        """Mark messages done. Only this consumer's live claims are acked; returns how many."""
        return self._finish(message_ids, status="acked")

    def release(self, message_ids: Sequence[str]) -> int:
        """Give claimed messages back to the queue at once (e.g. on a consumer error)."""
        return self._finish(message_ids, status="ready")

    def _finish(self, message_ids: Sequence[str], status: str) -> int:
        if not message_ids:
            return 0
        q = t.queue.c
        values: dict[str, Any] = {"status": status}
        if status == "acked":
            values["acked_at"] = utcnow()
        else:
            values.update(claimed_by=None, lease_expires_at=None)
        with self.ledger.transaction() as conn:
            return conn.execute(
                update(t.queue)
                .where(
                    q.message_id.in_(list(message_ids)),
                    q.status == "claimed",
                    q.claimed_by == self.consumer_id,
                )
                .values(**values)
            ).rowcount

    def pending_count(self, source: str | None = None) -> int:
        q = t.queue.c
        stmt = select(func.count()).select_from(t.queue).where(q.status != "acked")
        if source:
            stmt = stmt.where(q.source == source)
        with self.ledger.transaction() as conn:
            return int(conn.execute(stmt).scalar() or 0)
