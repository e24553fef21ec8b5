"""The ingestion ledger ("DB service") block: what was taken, every run, and source state."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect.blocks.core import Block
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from pydantic import Field, PrivateAttr
from sqlalchemy import (
    Connection,
    Engine,
    String,
    any_,
    bindparam,
    column,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from blocks.core import ledger_schema as t
from blocks.core import quiet_logs
from blocks.core.defaults import default_ledger_path
from blocks.core.errors import ConfigError, LedgerError
from blocks.core.ledger_migrations import migrate
from blocks.core.logos import code_example, logo_url

_ENGINE_LOCK = threading.Lock()
quiet_logs.install()  # no 'Created a new engine.' at INFO on every run and CLI call
# Keeps each IN (...) list well under bound-parameter limits (dialects other than
# PostgreSQL and SQLite, which get a chunk's names as one parameter).
_IN_CHUNK = 5000
# Rows that make an item "already ingested". 'unpacked': a delivery whose items were
# unpacked and landed under other names.
DEDUPE_STATUSES = ("landed", "duplicate", "unpacked")
# Names per dedupe query where they travel as one parameter (measured best on each).
_CHUNK = {"postgresql": 20000, "sqlite": 5000}


# The columns a KnownItem is built from.
_KNOWN_COLUMNS = (
    t.items.c.name,
    t.items.c.sha256,
    t.items.c.size,
    t.items.c.remote_version,
    t.items.c.landed_path,
    t.items.c.status,
)


def _names_clause(dialect: str) -> Any:
    """`ingest_items.name` is one of the :names parameter (see `Ledger.iter_known_items`)."""
    name = t.items.c.name
    if dialect == "postgresql":
        return name == any_(bindparam("names", type_=ARRAY(String)))
    if dialect == "sqlite":
        return name.in_(select(column("value")).select_from(func.json_each(bindparam("names"))))
    return name.in_(bindparam("names", expanding=True))


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_database() -> SqlAlchemyConnector:
    path = default_ledger_path()
    return SqlAlchemyConnector(
        connection_info=ConnectionComponents(driver=SyncDriver.SQLITE_PYSQLITE, database=path)
    )


@dataclass(frozen=True)
class KnownItem:
    """A ledger row as the dedupe step needs it."""

    name: str
    sha256: str | None
    size: int | None
    remote_version: str | None
    landed_path: str | None
    status: str


@dataclass(frozen=True)
class LandedRecord:
    """Everything the record step writes for one landed (or duplicate) item."""

    source: str
    name: str
    sha256: str
    size: int
    landed_path: str
    flow_run_id: str | None
    remote_mtime: datetime | None = None
    remote_version: str | None = None
    status: str = "landed"
    partition_date: date | None = None
    # the delivered file's checksum and size when it was unpacked before landing (gzip,
    # zip member, PGP; `pipeline/unpack_landing.py`), else None
    delivered_sha256: str | None = None
    delivered_size: int | None = None


@dataclass(frozen=True)
class QueueMessage:
    """One ingestion-queue message; `message_id` is derived from (source, name, sha256)."""

    message_id: str
    source: str
    item_name: str
    sha256: str
    size: int
    landed_path: str
    payload: dict[str, Any]


class Ledger(Block):
    """Ingestion ledger ("DB service"): the items taken, the runs, and per-source state.

    Backed by SQLAlchemy through a nested prefect-sqlalchemy `SqlAlchemyConnector`, so the
    database credentials are their own block (rotate once, every ledger follows). The default
    is a SQLite file (`$INGEST_LEDGER_PATH`, else `$INGEST_HOME/ledger.db`, else
    `~/.ingest/ledger.db`); use PostgreSQL in
    production with the same code. Tables are created on first use.

    Tables: `ingest_items` (unique on source, name, sha256), `ingest_runs`, `ingest_state`
    (watermarks and cursors) and `ingest_queue` (the ingestion queue's messages, written in
    the same transaction as the item they announce).
    """

    _block_type_name = "Ingest Ledger"
    _block_type_slug = "ingest-ledger"
    _logo_url = logo_url("ingest-ledger")
    _code_example = code_example(
        "Ledger", "ledger", "ledger.check()\nprint(ledger.recent_runs(None, limit=5))"
    )
    _description = (
        "Ledger of ingested items, runs and source state (watermarks) in a SQL database "
        "(SQLite by default, PostgreSQL in production)."
    )

    database: SqlAlchemyConnector = Field(
        default_factory=default_database,
        title="Ledger database",
        description=(
            "Database holding the ledger and the queue table: a prefect-sqlalchemy "
            "SQLAlchemy Connector (sqlite+pysqlite or postgresql+psycopg2)."
        ),
    )
    table_check: bool = Field(
        default=True, description="Create missing ledger tables on first use."
    )

    _engine: Engine | None = PrivateAttr(default=None)

    # ----------------------------------------------------------------- connection
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with _ENGINE_LOCK:  # tasks in threads share one block: create one engine
                if self._engine is None:
                    self._engine = self._create_engine()
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _create_engine(self) -> Engine:
        info = self.database.connection_info
        driver = getattr(info, "driver", None)
        is_sqlite = "sqlite" in str(getattr(driver, "value", driver))
        if is_sqlite and info.database and info.database != ":memory:":
            _check_sqlite_path(str(info.database))
        try:
            # A ping per checkout finds a server connection that died between runs; a
            # SQLite file has no link to lose, and the ping was a query per transaction.
            engine = self.database.get_engine(pool_pre_ping=not is_sqlite)
        except Exception as exc:  # driver import errors, bad URLs
            raise LedgerError(f"Ledger.database: cannot create engine: {_redact(exc)}") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        if self.table_check:
            self._ensure_schema(engine)
        return engine

    def _ensure_schema(self, engine: Engine) -> None:
        try:
            try:
                t.metadata.create_all(engine, checkfirst=True)
            except (OperationalError, ProgrammingError, IntegrityError):
                # Another process created the tables between our check and create.
                t.metadata.create_all(engine, checkfirst=True)
            with engine.begin() as conn:
                current = conn.execute(
                    select(t.meta.c.value).where(t.meta.c.key == "schema_version")
                ).scalar()
                if current is None:
                    try:
                        conn.execute(
                            insert(t.meta).values(key="schema_version", value=str(t.SCHEMA_VERSION))
                        )
                    except IntegrityError:
                        pass  # another process created it first
                elif int(current) > t.SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger schema version {current} is newer than this code "
                        f"({t.SCHEMA_VERSION}); upgrade the package"
                    )
            if current is not None and int(current) < t.SCHEMA_VERSION:
                migrate(engine, int(current))
        except SQLAlchemyError as exc:
            raise LedgerError(
                f"Ledger.database: cannot prepare ledger tables: {_short(exc)}"
            ) from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One database transaction; any database error becomes a LedgerError."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise LedgerError(f"Ledger.database: database error: {_short(exc)}") from exc

    def check(self) -> None:
        """Fail fast (LedgerError) when the ledger database is unreachable."""
        with self.transaction() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # ----------------------------------------------------------------- dedupe
    def known_items(
        self, source: str, names: Iterable[str], since: datetime | None = None
    ) -> dict[str, list[KnownItem]]:
        """Landed/duplicate rows for these names of one source: the set-based dedupe query.

        `since` limits the answer to rows created in a time window (the seeds' "already
        ingested within N days" rule). For big listings prefer `iter_known_items`, which
        holds one chunk's rows at a time.
        """
        found: dict[str, list[KnownItem]] = {}
        for _chunk, known in self.iter_known_items(source, names, since):
            found.update(known)
        return found

    def iter_known_items(
        self, source: str, names: Iterable[str], since: datetime | None = None
    ) -> Iterator[tuple[list[str], dict[str, list[KnownItem]]]]:
        """`known_items` streamed: yields (names of a chunk, their ledger rows) chunk by chunk.

        Each chunk's names go to the database as ONE parameter (a PostgreSQL array, a
        SQLite JSON array read by `json_each`), not one bind parameter per name: with
        expanding `IN (...)` lists SQLAlchemy compiled and the server planned thousands of
        parameters per query (100k names vs 200k rows: 3.8 s on PostgreSQL, 1.8 s on
        SQLite, against 0.8 s and 0.4 s). Lookups use the (source, name, sha256) unique
        index. Duplicate names are asked once.
        """
        dialect = self.dialect
        stmt = select(*_KNOWN_COLUMNS).where(
            t.items.c.source == source,
            # 'unpacked': a delivery whose items were unpacked and landed under other names
            t.items.c.status.in_(DEDUPE_STATUSES),
            _names_clause(dialect),
        )
        if since is not None:
            stmt = stmt.where(t.items.c.created_at >= since)
        size = _CHUNK.get(dialect, _IN_CHUNK)
        seen: set[str] = set()
        chunk: list[str] = []
        with self.transaction() as conn:
            for name in names:
                if name in seen:
                    continue
                seen.add(name)
                chunk.append(name)
                if len(chunk) == size:
                    yield chunk, self._known_chunk(conn, stmt, dialect, chunk)
                    chunk = []
            if chunk:
                yield chunk, self._known_chunk(conn, stmt, dialect, chunk)

    @staticmethod
    def _known_chunk(
        conn: Connection, stmt: Any, dialect: str, chunk: list[str]
    ) -> dict[str, list[KnownItem]]:
        param: Any = json.dumps(chunk) if dialect == "sqlite" else chunk
        found: dict[str, list[KnownItem]] = {}
        for row in conn.execute(stmt, {"names": param}):
            found.setdefault(row.name, []).append(KnownItem(*row))
        return found

    def iter_names_to_fetch(
        self,
        source: str,
        listing: Iterable[tuple[str, str | None]],
        since: datetime | None = None,
        any_version: bool = False,
    ) -> Iterator[tuple[int, set[tuple[str, str | None]]]]:
        """The dedupe decision made by the database: of the listed (name, fingerprint)
        pairs, those with no landed/duplicate row of that name and fingerprint (with
        `any_version`: of that name at all), optionally only among rows created `since`.

        Streamed in chunks: yields (pairs in the chunk, the chunk's pairs to fetch). Only
        the new and changed pairs come back to Python, so a 100k-item listing that is
        almost all known costs one indexed anti-join per chunk, not 100k row objects. A
        NULL fingerprint never matches: such an item is fetched and its content hash
        decides.
        """
        dialect = self.dialect
        version_match = "" if any_version else " AND i.remote_version = l.version"
        since_clause = " AND i.created_at >= :since" if since is not None else ""
        statuses = ", ".join(f"'{s}'" for s in DEDUPE_STATUSES)
        if dialect == "postgresql":
            pairs = "unnest(CAST(:names AS text[]), CAST(:versions AS text[])) AS l(name, version)"
        elif dialect == "sqlite":
            pairs = (
                "(SELECT json_extract(value, '$[0]') AS name, json_extract(value, '$[1]') "
                "AS version FROM json_each(:pairs)) AS l"
            )
        else:
            raise LedgerError(f"Ledger.database: dialect {dialect!r} is not supported")
        known = (
            f"SELECT 1 AS hit FROM {t.items.name} i WHERE i.source = :source AND i.name = "
            f"l.name AND i.status IN ({statuses}){version_match}{since_clause}"
        )
        if dialect == "postgresql":
            # One index probe per listed pair (LATERAL ... LIMIT 1 cannot be flattened):
            # as NOT EXISTS the planner hashed the whole source's ledger rows, a cost that
            # grows with the ledger (1M rows: 3.8 s against 1.4 s for 100k probes, EXPLAIN
            # ANALYZE under load), while the listing is what stays bounded.
            stmt = text(
                f"SELECT l.name, l.version FROM {pairs} LEFT JOIN LATERAL ({known} LIMIT 1) "
                "k ON true WHERE k.hit IS NULL"
            )
        else:
            stmt = text(f"SELECT l.name, l.version FROM {pairs} WHERE NOT EXISTS ({known})")
        params: dict[str, Any] = {"source": source}
        if since is not None:  # compared as the UTCDateTime column stores it
            stmt = stmt.bindparams(bindparam("since", type_=t.UTCDateTime()))
            params["since"] = since
        size = _CHUNK.get(dialect, _IN_CHUNK) * 4
        chunk: list[tuple[str, str | None]] = []

        def ask(conn: Connection) -> set[tuple[str, str | None]]:
            if dialect == "postgresql":
                params["names"] = [n for n, _ in chunk]
                params["versions"] = [v for _, v in chunk]
            else:
                params["pairs"] = json.dumps(chunk)
            return {(row[0], row[1]) for row in conn.execute(stmt, params)}

        with self.transaction() as conn:
            for pair in listing:
                chunk.append(pair)
                if len(chunk) == size:
                    yield len(chunk), ask(conn)
                    chunk = []
            if chunk:
                yield len(chunk), ask(conn)

    def landed_by_sha(self, source: str, sha256: str) -> KnownItem | None:
        """A landed row of this source with this content, if any (content dedupe)."""
        stmt = (
            select(*_KNOWN_COLUMNS)
            .where(
                t.items.c.source == source,
                t.items.c.sha256 == sha256,
                t.items.c.status == "landed",
            )
            .order_by(t.items.c.id)
            .limit(1)
        )
        with self.transaction() as conn:
            row = conn.execute(stmt).first()
        return KnownItem(**row._mapping) if row else None

    def landed_by_sha_many(self, source: str, shas: Sequence[str]) -> dict[str, KnownItem]:
        """`landed_by_sha` for several contents in one query (a land-batch's items):
        the first landed row of this source for each sha256 that has one."""
        if not shas:
            return {}
        stmt = (
            select(*_KNOWN_COLUMNS)
            .where(
                t.items.c.source == source,
                t.items.c.sha256.in_(sorted(set(shas))),
                t.items.c.status == "landed",
            )
            .order_by(t.items.c.id)
        )
        found: dict[str, KnownItem] = {}
        with self.transaction() as conn:
            for row in conn.execute(stmt):
                found.setdefault(row.sha256, KnownItem(**row._mapping))
        return found

    def sha_at_path(self, landed_path: str) -> str | None:
        """The sha256 recorded for a landed path, if the ledger knows the path."""
        stmt = (
            select(t.items.c.sha256)
            .where(t.items.c.landed_path == landed_path, t.items.c.status == "landed")
            .limit(1)
        )
        with self.transaction() as conn:
            return conn.execute(stmt).scalar()

    # ----------------------------------------------------------------- record
    def record_landed(
        self,
        record: LandedRecord,
        message: QueueMessage | None = None,
        state_updates: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> bool:
        """Write the item row, its queue message and any state in ONE transaction.

        Returns False (and writes nothing) when the same (source, name, sha256) is already
        recorded: a concurrent or repeated run got there first. With `replace` (a forced
        re-land) the existing row is updated to the new landing instead.
        """
        now = utcnow()
        values = _item_values(record, now)
        c = t.items.c
        try:
            with self.transaction() as conn:
                replaced = 0
                if replace:
                    replaced = conn.execute(
                        update(t.items)
                        .where(
                            c.source == record.source,
                            c.name == record.name,
                            c.sha256 == record.sha256,
                        )
                        .values(**values)
                    ).rowcount
                if not replaced:
                    conn.execute(
                        insert(t.items).values(
                            source=record.source,
                            name=record.name,
                            sha256=record.sha256,
                            created_at=now,
                            **values,
                        )
                    )
                if message is not None:
                    self._insert_message(conn, message, now)
                for key, value in (state_updates or {}).items():
                    self._upsert_state(conn, record.source, key, value, now)
        except IntegrityError:
            return False
        return True

    def record_landed_many(
        self,
        entries: Sequence[tuple[LandedRecord, QueueMessage | None, Mapping[str, Any] | None]],
        replace: bool = False,
    ) -> list[bool]:
        """`record_landed` for several items (a land-batch) in ONE transaction.

        All rows, messages and state of the batch commit together or not at all. If any
        item is already recorded (a concurrent run got there first), or with `replace`,
        each item gets its own `record_landed` transaction instead, and its own answer.
        """
        if not entries:
            return []
        if replace:
            return [self.record_landed(r, m, s, replace=True) for r, m, s in entries]
        now = utcnow()
        rows = [
            dict(
                source=r.source,
                name=r.name,
                sha256=r.sha256,
                created_at=now,
                **_item_values(r, now),
            )
            for r, _m, _s in entries
        ]
        try:
            with self.transaction() as conn:
                conn.execute(insert(t.items), rows)  # one executemany
                self._insert_messages(conn, [m for _r, m, _s in entries if m is not None], now)
                for record, _m, state in entries:
                    for key, value in (state or {}).items():
                        self._upsert_state(conn, record.source, key, value, now)
        except IntegrityError:
            return [self.record_landed(r, m, s) for r, m, s in entries]
        return [True] * len(entries)

    def refresh_version(
        self, source: str, name: str, sha256: str, remote_version: str | None
    ) -> None:
        """Remember a new remote version whose content we already hold (skip it next time)."""
        with self.transaction() as conn:
            conn.execute(
                update(t.items)
                .where(
                    t.items.c.source == source,
                    t.items.c.name == name,
                    t.items.c.sha256 == sha256,
                )
                .values(remote_version=remote_version, updated_at=utcnow())
            )

    def record_failure(
        self,
        source: str,
        name: str,
        flow_run_id: str | None,
        error: str,
        size: int | None = None,
        partition_date: date | None = None,
    ) -> None:
        now = utcnow()
        with self.transaction() as conn:
            conn.execute(
                insert(t.items).values(
                    source=source,
                    name=name,
                    sha256=None,
                    size=size,
                    partition_date=partition_date.isoformat() if partition_date else None,
                    flow_run_id=flow_run_id,
                    status="failed",
                    error=error[:4000],
                    created_at=now,
                    updated_at=now,
                )
            )

    def _insert_message(self, conn: Connection, message: QueueMessage, now: datetime) -> None:
        self._insert_messages(conn, [message], now)

    def _insert_messages(
        self, conn: Connection, messages: Sequence[QueueMessage], now: datetime
    ) -> None:
        """Insert the messages whose id is not in the queue yet: one lookup, one insert."""
        if not messages:
            return
        ids = [m.message_id for m in messages]
        # deterministic ids: a rerun never makes a second message
        known = set(
            conn.execute(select(t.queue.c.message_id).where(t.queue.c.message_id.in_(ids)))
            .scalars()
            .all()
        )
        rows, seen = [], set()
        for m in messages:
            if m.message_id in known or m.message_id in seen:
                continue
            seen.add(m.message_id)
            rows.append(
                dict(
                    message_id=m.message_id,
                    source=m.source,
                    item_name=m.item_name,
                    sha256=m.sha256,
                    size=m.size,
                    landed_path=m.landed_path,
                    payload=json.dumps(m.payload, default=str, sort_keys=True),
                    status="ready",
                    attempts=0,
                    created_at=now,
                )
            )
        if rows:
            conn.execute(insert(t.queue), rows)

    # ----------------------------------------------------------------- runs
    def start_run(
        self,
        source: str,
        flow_run_id: str | None,
        partition_date: date | None,
        trigger: str | None = None,
    ) -> int:
        """A `running` row; `trigger` says what started it (schedule, manual, webhook, ...)."""
        with self.transaction() as conn:
            result = conn.execute(
                insert(t.runs).values(
                    source=source,
                    flow_run_id=flow_run_id,
                    partition_date=partition_date.isoformat() if partition_date else None,
                    status="running",
                    listed=0,
                    skipped=0,
                    landed=0,
                    failed=0,
                    bytes=0,
                    started_at=utcnow(),
                    trigger=trigger and trigger[:32],
                )
            )
            return int(result.inserted_primary_key[0])

    def finish_run(
        self, run_id: int, status: str, counts: Mapping[str, Any], error: str | None = None
    ) -> None:
        values = {
            k: counts[k]
            for k in ("listed", "skipped", "landed", "failed", "bytes", "rows")
            if k in counts
        }
        if "seconds" in counts:
            values["seconds"] = f"{float(counts['seconds']):.3f}"
        with self.transaction() as conn:
            conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id)
                .values(
                    status=status,
                    error=(error or None) and error[:4000],
                    finished_at=utcnow(),
                    **values,
                )
            )

    def open_runs(self, source: str | None = None) -> list[dict[str, Any]]:
        """Runs still `running` (id, source, flow_run_id, started_at), oldest first."""
        r = t.runs.c
        stmt = select(r.id, r.source, r.flow_run_id, r.started_at).where(r.status == "running")
        if source is not None:
            stmt = stmt.where(r.source == source)
        with self.transaction() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt.order_by(r.id))]

    def close_run(self, run_id: int, status: str, error: str) -> bool:
        """Close a run left `running` (its process died); False if it was closed meanwhile.

        Only a row still `running` is changed, so a run that finishes concurrently keeps
        its own outcome and counts.
        """
        with self.transaction() as conn:
            changed = conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id, t.runs.c.status == "running")
                .values(status=status, error=error[:4000], finished_at=utcnow())
            ).rowcount
        return changed == 1

    def recent_runs(self, source: str | None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs of a source (None: of every source), newest first."""
        stmt = select(t.runs).order_by(t.runs.c.started_at.desc(), t.runs.c.id.desc()).limit(limit)
        if source is not None:
            stmt = stmt.where(t.runs.c.source == source)
        with self.transaction() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def recent_items(self, source: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        stmt = select(t.items).order_by(t.items.c.id.desc()).limit(limit)
        if source:
            stmt = stmt.where(t.items.c.source == source)
        with self.transaction() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def count_items(
        self, source: str, status: str = "landed", partition_date: date | None = None
    ) -> int:
        """How many rows of a status a source has, optionally for one logical day."""
        stmt = (
            select(func.count())
            .select_from(t.items)
            .where(t.items.c.source == source, t.items.c.status == status)
        )
        if partition_date is not None:
            stmt = stmt.where(t.items.c.partition_date == partition_date.isoformat())
        with self.transaction() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    # ----------------------------------------------------------------- state
    def get_state(self, source: str, key: str, default: Any = None) -> Any:
        stmt = select(t.state.c.value).where(t.state.c.source == source, t.state.c.key == key)
        with self.transaction() as conn:
            raw = conn.execute(stmt).scalar()
        return default if raw is None else json.loads(raw)

    def set_state(self, source: str, key: str, value: Any) -> None:
        with self.transaction() as conn:
            self._upsert_state(conn, source, key, value, utcnow())

    def _upsert_state(
        self, conn: Connection, source: str, key: str, value: Any, now: datetime
    ) -> None:
        raw = json.dumps(value, default=str, sort_keys=True)
        changed = conn.execute(
            update(t.state)
            .where(t.state.c.source == source, t.state.c.key == key)
            .values(value=raw, updated_at=now)
        ).rowcount
        if not changed:
            conn.execute(insert(t.state).values(source=source, key=key, value=raw, updated_at=now))

    # ----------------------------------------------------------------- housekeeping
    def failed_since(self, source: str, since: timedelta) -> Sequence[dict[str, Any]]:
        stmt = select(t.items).where(
            t.items.c.source == source,
            t.items.c.status == "failed",
            t.items.c.created_at >= utcnow() - since,
        )
        with self.transaction() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]


def _item_values(record: LandedRecord, now: datetime) -> dict[str, Any]:
    """The `ingest_items` columns a landing writes besides its key (source, name, sha256)
    and `created_at`: the same for one item (`record_landed`) and a batch."""
    return dict(
        size=record.size,
        remote_mtime=record.remote_mtime,
        remote_version=record.remote_version,
        landed_path=record.landed_path,
        partition_date=record.partition_date.isoformat() if record.partition_date else None,
        flow_run_id=record.flow_run_id,
        status=record.status,
        delivered_sha256=record.delivered_sha256,
        delivered_size=record.delivered_size,
        error=None,  # a forced re-land clears the retention flow's 'pruned' marker
        updated_at=now,
    )


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers and one writer work at once; busy_timeout makes concurrent
    # processes wait for the write lock instead of failing with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _check_sqlite_path(database: str) -> None:
    """Create the SQLite file's folder; an unusable path is a ConfigError naming the field.

    Without this a missing, uncreatable or read-only folder surfaced as a raw OSError
    (or sqlite's "unable to open database file") deep in the first query.
    """
    if not os.path.isabs(database):
        # sqlite resolves it against the working directory: a process worker's temporary
        # one, deleted after the run, so the next run would find an empty ledger (and
        # SQLAlchemy does not expand '~').
        raise ConfigError(
            "Ledger.database", f"SQLite path {database!r} is relative; give an absolute path"
        )
    path = os.path.abspath(database)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise ConfigError("Ledger.database", f"SQLite file {path} is a directory")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "Ledger.database",
            f"cannot create the folder {folder} of SQLite file {path}: "
            f"{exc.strerror or type(exc).__name__}",
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        # sqlite needs to create the file and its -wal/-shm journals beside it
        raise ConfigError(
            "Ledger.database", f"folder {folder} of SQLite file {path} is not writable"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError("Ledger.database", f"SQLite file {path} is not readable and writable")


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)\S*@")


def _redact(exc: BaseException | str) -> str:
    """First line of an error with any URL password masked (`scheme://user:***@host`)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return _URL_PASSWORD.sub(r"\1***@", line)


def _short(exc: BaseException) -> str:
    """First line of a database error, without the SQL and parameters SQLAlchemy appends."""
    orig = getattr(exc, "orig", None)
    return _redact(orig if orig is not None else exc)
