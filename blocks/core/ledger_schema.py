"""Tables of the ingestion ledger ("DB service") and the ingestion queue.

One schema for SQLite (the laptop default) and PostgreSQL (production). Timestamps are
stored as UTC and always come back timezone-aware, whatever the backend keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 2

# Columns each schema version added to tables that already existed, applied in order by
# `blocks.core.ledger_migrations` to a ledger created by older code. A new ledger gets them
# from the table definitions below. Only nullable columns are added, so no old row needs a
# value and old code can still write (it leaves them NULL).
ADDED_COLUMNS: dict[int, list[tuple[str, str]]] = {
    2: [
        ("ingest_runs", "rows"),  # rows extracted (SQL, warehouse); NULL for file sources
        ("ingest_runs", "trigger"),  # schedule | manual | webhook | backfill | event
        ("ingest_items", "delivered_sha256"),  # checksum of the delivered archive, if unpacked
        ("ingest_items", "delivered_size"),
        ("ingest_queue", "published_at"),  # outbox: when the relay published it to a broker
        ("ingest_queue", "publish_attempts"),
        ("ingest_queue", "publish_error"),
    ],
}


class UTCDateTime(TypeDecorator):
    """Stores aware datetimes as UTC; returns them aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the ledger; pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQLite only autoincrements INTEGER PRIMARY KEY, not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

# status: landed | duplicate (same content already landed under another name) | failed
# | unpacked (a delivered archive or encrypted file whose items landed under their own names,
# see pipeline/unpack_landing.py; no landed file of its own)
items = Table(
    "ingest_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("remote_mtime", UTCDateTime, nullable=True),
    Column("remote_version", String(512), nullable=True),
    Column("landed_path", Text, nullable=True),
    Column("partition_date", String(10), nullable=True),  # the run's logical day
    Column("flow_run_id", String(64), nullable=True),
    Column("status", String(20), nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # v2: set when the delivered file was unpacked (gzip, zip member, PGP) before landing.
    Column("delivered_sha256", String(64), nullable=True),
    Column("delivered_size", BigInteger, nullable=True),
    # Failed rows keep sha256 NULL, so only landed/duplicate rows are unique.
    # Its index also serves the dedupe lookups by (source, name) (checked with EXPLAIN
    # on SQLite and PostgreSQL): no separate (source, name) index needed.
    UniqueConstraint("source", "name", "sha256", name="uq_ingest_items_source_name_sha"),
    Index("ix_ingest_items_source_sha", "source", "sha256"),
    Index("ix_ingest_items_source_created", "source", "created_at"),
    Index("ix_ingest_items_source_partition", "source", "partition_date"),
)

runs = Table(
    "ingest_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("flow_run_id", String(64), nullable=True),
    Column("partition_date", String(10), nullable=True),
    Column("status", String(20), nullable=False),  # running | completed | partial | failed
    Column("listed", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("landed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("seconds", String(32), nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("rows", BigInteger, nullable=True),  # v2
    Column("trigger", String(32), nullable=True),  # v2
    Index("ix_ingest_runs_source_started", "source", "started_at"),
)

state = Table(
    "ingest_state",
    metadata,
    Column("source", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),  # JSON
    Column("updated_at", UTCDateTime, nullable=False),
)

# status: ready | claimed | acked. A claim is a lease: an unacked message whose lease
# expired can be claimed again (at-least-once delivery to consumers).
queue = Table(
    "ingest_queue",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("source", String(200), nullable=False),
    Column("item_name", String(1024), nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("landed_path", Text, nullable=False),
    Column("payload", Text, nullable=False),  # JSON
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("acked_at", UTCDateTime, nullable=True),
    # v2, transactional outbox: NULL until a relay published the message to a broker.
    Column("published_at", UTCDateTime, nullable=True),
    Column("publish_attempts", Integer, nullable=True),
    Column("publish_error", Text, nullable=True),
    Index("ix_ingest_queue_status_created", "status", "created_at"),
)

# v2: the outbox relay's "not yet published, oldest first" without scanning the queue.
Index(
    "ix_ingest_queue_unpublished",
    queue.c.source,
    queue.c.created_at,
    postgresql_where=queue.c.published_at.is_(None),
    sqlite_where=queue.c.published_at.is_(None),
)

# Indexes each schema version added to tables that already existed (created by
# `blocks.core.ledger_migrations` with checkfirst, like the columns above).
ADDED_INDEXES: dict[int, list[str]] = {2: ["ix_ingest_queue_unpublished"]}

meta = Table(
    "ingest_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", String(200), nullable=False),
)
