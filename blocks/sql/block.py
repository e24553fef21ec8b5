"""SQL source: PostgreSQL and MySQL/MariaDB tables or queries, incremental, no row lost.

How a run works (see `SqlSource` for the fields):

1. discover: computes ONE window `[lower, upper)` and offers it as one candidate.
   - lower: the ledger state `watermark` (or `start_value`, or nothing on a first run).
   - upper, timestamp mode: the database clock minus `lag_seconds`, capped below the start
     of the oldest transaction still open in the database (`inflight_cap`). Everything below
     that bound is committed, so the read, whatever snapshot it uses, sees all of it: the
     bound is not a `SELECT MAX` from another snapshot (airbyte#85918).
   - upper, id mode: `MAX(id)` now, used only once every transaction that was open when it
     was read has ended (waits up to `settle_seconds`): ids come from a sequence in
     allocation order, so every smaller id is then committed or rolled back.
2. fetch: reads the window in keyset chunks on `(incremental column, primary key)`, each
   chunk its own short transaction (no transaction held for minutes; memory bounded by
   `chunk_size`), and streams it into the pipeline's file. PostgreSQL + CSV uses
   `COPY (SELECT ...) TO STDOUT` per chunk. It returns the new watermark, which the pipeline
   writes in the SAME ledger transaction as the file's ledger row and queue message
   (dlt#4052): a crash before that re-extracts the same window next run.
3. An empty window raises `SkipItem` with the advanced watermark (nothing to land).

Time zones: every session runs in UTC. `timestamptz` / MySQL `TIMESTAMP` columns are
compared as instants. Naive columns (`timestamp without time zone`, `DATETIME`) are read as
wall-clock times in `timestamp_timezone` (default UTC): bounds are converted into that zone
before they are bound. Watermarks are stored in UTC with an explicit offset.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, ClassVar, Literal
from zoneinfo import ZoneInfo

from prefect_sqlalchemy import SqlAlchemyConnector
from pydantic import Field, PrivateAttr, field_validator
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    column,
    event,
    false,
    func,
    select,
    text,
    type_coerce,
)
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.types import NullType

from blocks.core import file_formats as formats
from blocks.core import watermark_values as values
from blocks.core.errors import ConfigError, IngestError, boundary_error, is_retryable
from blocks.core.run_logger import run_logger
from blocks.core.source import (
    Candidate,
    DiscoverContext,
    SkipItem,
    SourceBlock,
    report_rows,
    unknown_option,
)
from blocks.core.timezones import TimezoneName
from blocks.core.write_behind import ThreadedSink
from blocks.sql import arrow_copy, mysql_csv, mysql_driver, parallel_copy
from blocks.sql import dialects as dialects
from blocks.sql import watermark as wm
from blocks.sql.pg_ranges import register_range_text

UTC = UTC
_WHERE = "SqlSource"


def _option_datetime(options: Mapping[str, Any], key: str) -> datetime | None:
    """A run option that is a datetime or an ISO 8601 string; else ConfigError."""
    value = options.get(key)
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"options.{key}", "must be an ISO 8601 date-time, e.g. 2026-01-31T00:00")


_COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Window:
    """What one candidate extracts."""

    kind: Literal["full", "incremental", "backfill"]
    lower: dict[str, Any] | None = None  # watermark position (state form), or {"start": v}
    upper: Any = None  # timestamp mode: aware datetime (exclusive); id mode: int (inclusive)
    backfill: tuple[datetime, datetime] | None = None


@dataclass
class _Prepared:
    engine: Engine
    dialect: str
    base: Any  # FromClause: the table, or the query as a subquery
    names: list[str]  # output column names
    descriptions: list[tuple[Any, ...]]  # DB-API description of the output columns
    inc_kind: str | None
    can_see_others: bool
    inc_digits: int = 6  # fractional-second digits the incremental column stores
    # MySQL CSV: the server-rendered line (`mysql_csv.plan`), planned on the first fetch
    lines: mysql_csv.LinePlan | None = None


class SqlSource(SourceBlock):
    """PostgreSQL or MySQL/MariaDB table (or query) extracted to files, incrementally.

    Credentials come from a nested prefect-sqlalchemy `SqlAlchemyConnector` block
    (`postgresql+psycopg2` or `mysql+pymysql`). Each run lands the rows past the stored
    watermark as one file (CSV, JSONL or Parquet); the watermark advances in the same
    ledger transaction as that file's ledger row. Modes: `none` (the whole table each run;
    identical content is not landed twice), `timestamp` (a last-modified column; updates are
    re-extracted), `id` (an increasing id; appends only). Windows are half-open
    `[previous upper bound, new upper bound)` so rows sharing the boundary value are never
    lost; the upper bound stays below transactions still open (and `lag_seconds` behind the
    clock) so late commits are caught. Rows whose incremental column is NULL are never
    extracted incrementally. Identifiers are quoted by SQLAlchemy; `query_parameters` are
    bound parameters.
    """

    _block_type_name = "SQL Source"
    _block_type_slug = "sql-source"
    _description = (
        "Incremental extraction of a PostgreSQL or MySQL/MariaDB table or query to CSV, "
        "JSONL or Parquet files, with a lossless watermark kept in the ingest ledger."
    )

    database: SqlAlchemyConnector = Field(
        ...,
        title="Source database",
        description="Database credentials: a prefect-sqlalchemy SQLAlchemy Connector "
        "(postgresql+psycopg2 or mysql+pymysql).",
    )
    table: str | None = Field(
        default=None, description="Table (or view) to extract. Give this or `query`."
    )
    db_schema: str | None = Field(
        default=None,
        title="Schema",
        description="Schema of the table (PostgreSQL schema / MySQL database); empty: default.",
    )
    query: str | None = Field(
        default=None,
        description="A SELECT to extract instead of a table; use `:name` placeholders for "
        "values, given in `query_parameters` (bound, never pasted into the SQL).",
    )
    query_parameters: dict[str, Any] = Field(
        default_factory=dict,
        description='Values of the query\'s `:name` placeholders, e.g. {"region": "EU"}.',
    )
    columns: list[str] = Field(
        default_factory=list, description="Columns to extract (empty: all, in table order)."
    )
    incremental_mode: Literal["none", "timestamp", "id"] = Field(
        default="none",
        description="none: whole table each run; timestamp: rows whose `incremental_column` "
        "(last-modified time) moved past the watermark; id: rows with a larger increasing id.",
    )
    incremental_column: str | None = Field(
        default=None, description="Timestamp or id column driving incremental extraction."
    )
    primary_key: list[str] = Field(
        default_factory=list,
        description="Primary key column(s): enable short keyset-chunk transactions and "
        "`max_rows_per_file`. Without it a run reads with one streaming cursor.",
    )
    lag_seconds: float = Field(
        default=0,
        ge=0,
        description="Timestamp mode: leave rows stamped in the last N seconds for the next "
        "run, so rows committed late with older timestamps (clock skew, application-side "
        "timestamps, sessions the in-flight cap cannot see) are still caught.",
    )
    inflight_cap: bool = Field(
        default=True,
        description="Keep the window's upper bound below the oldest transaction still open "
        "in the database (PostgreSQL pg_stat_activity, MySQL INNODB_TRX). A long-open "
        "transaction then holds extraction back instead of risking a lost row.",
    )
    settle_seconds: float = Field(
        default=30,
        ge=0,
        description="Id mode: how long a run waits for transactions open at its MAX(id) "
        "to end before it leaves the increment to the next run.",
    )
    start_value: str | None = Field(
        default=None,
        description="First run only: start from this timestamp (ISO 8601; naive means "
        "`timestamp_timezone`) or id instead of taking everything.",
    )
    timestamp_timezone: TimezoneName = Field(
        default="UTC",
        description="IANA zone of the wall-clock values in naive timestamp columns "
        "(timestamp without time zone, DATETIME).",
    )
    chunk_size: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="Rows per read chunk (and per short transaction) when rows pass through "
        "Python (JSONL, Parquet, MySQL): bounds memory.",
    )
    copy_chunk_rows: int = Field(
        default=1_000_000,
        ge=1,
        description="PostgreSQL COPY fast path: rows per COPY statement (and per short "
        "transaction). Rows are streamed, so memory does not depend on it.",
    )
    max_rows_per_file: int | None = Field(
        default=None,
        ge=1,
        description="Split a big increment into files of at most this many rows (needs "
        "`primary_key`); the flow keeps extracting until caught up.",
    )
    output_format: formats.OutputFormat = Field(
        default="csv", description="File format: csv (with header), jsonl or parquet."
    )
    output_name: str | None = Field(
        default=None,
        description="Folder name of the files in the landing area (default: the table name, "
        "or 'query').",
    )
    use_copy: bool = Field(
        default=True,
        description="PostgreSQL: stream with COPY (SELECT ...) TO STDOUT: CSV as is, "
        "Parquet parsed column-wise by pyarrow (fast paths).",
    )
    parallel_streams: int = Field(
        default=1,
        ge=1,
        le=16,
        description="PostgreSQL COPY paths: extract a window as N key ranges at once, each "
        "on its own connection, all under ONE exported snapshot (the union equals a "
        "single-snapshot read). Needs `none` mode with one integer primary key, or `id` "
        "mode, and no `max_rows_per_file` cut; otherwise one stream. The snapshot stays "
        "open for the whole extraction (other timestamp sources' in-flight cap waits for "
        "it), hence the default 1.",
    )
    parallel_split: Literal["key", "physical"] = Field(
        default="key",
        description="How `parallel_streams` cuts a window. key: ranges of the integer key, "
        "each in key order (the file equals a one-stream file). physical: ranges of the "
        "table's pages (ctid; PostgreSQL 14+, `none` mode on a table, no primary key "
        "needed): ~15% less server CPU, but the rows come in storage order, so an UPDATE, "
        "VACUUM FULL or CLUSTER that moves rows without changing them lands an unchanged "
        "table once more (a duplicate file, never a lost row).",
    )
    mysql_driver: Literal["auto", "mysqlclient", "pymysql"] = Field(
        default="auto",
        title="MySQL driver",
        description="MySQL/MariaDB: auto uses mysqlclient (C driver, the `sql-fast` extra) "
        "when it is installed and the connector has no `connect_args`, else pymysql. The "
        "run log names the driver used.",
    )
    single_transaction: bool = Field(
        default=False,
        description="Read the whole run in one REPEATABLE READ snapshot (a consistent copy "
        "of the table in `none` mode) instead of short per-chunk transactions. On "
        "PostgreSQL + CSV this is one COPY (a sequential scan for a whole table): fastest, "
        "but the transaction stays open for the whole copy.",
    )

    _prepared: _Prepared | None = PrivateAttr(default=None)
    _backfill: tuple[datetime, datetime] | None = PrivateAttr(default=None)
    _max_files: int = PrivateAttr(default=100)

    # Run options (the flow's `options` parameter) and a retried connection check first.
    run_options: ClassVar[tuple[str, ...]] = ("backfill_start", "backfill_end", "max_files")
    check_before_run: ClassVar[bool] = True

    @field_validator("output_name")
    @classmethod
    def _plain_output_name(cls, value: str | None) -> str | None:
        # It names a folder of the landing area: a path in it would land files elsewhere.
        if not value:
            return None  # the default: the table name, or 'query'
        if (
            value.strip() in ("", ".", "..")
            or value.startswith("~")
            or any(bad in value for bad in ("/", "\\"))
        ):
            raise ConfigError(
                f"{_WHERE}.output_name",
                f"{value!r} must be a plain name (no '/', '\\', '..' or absolute path)",
            )
        return value

    # ------------------------------------------------------------------ configuration
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timestamp_timezone)

    @property
    def file_base(self) -> str:
        # Passed through unchanged: the pipeline refuses unsafe names ("../x") itself.
        return self.output_name or self.table or "query"

    def preflight(self) -> None:
        """Configuration checks before any I/O; each error names the field."""
        if bool(self.table) == bool(self.query):
            raise ConfigError(f"{_WHERE}.table", "give exactly one of `table` and `query`")
        if self.query is not None and not self.query.strip().rstrip(";").strip():
            raise ConfigError(f"{_WHERE}.query", "is empty")
        if self.query_parameters and not self.query:
            raise ConfigError(f"{_WHERE}.query_parameters", "only used with `query`")
        if self.incremental_mode != "none" and not self.incremental_column:
            raise ConfigError(
                f"{_WHERE}.incremental_column",
                f"required for incremental_mode={self.incremental_mode!r}",
            )
        if self.lag_seconds and self.incremental_mode != "timestamp":
            raise ConfigError(f"{_WHERE}.lag_seconds", "only applies to incremental_mode=timestamp")
        if self.max_rows_per_file and (not self.primary_key or self.incremental_mode == "none"):
            raise ConfigError(
                f"{_WHERE}.max_rows_per_file",
                "needs `primary_key` and an incremental mode (the file ends on an exact row)",
            )
        for fld in ("columns", "primary_key"):
            values = getattr(self, fld)
            if len(set(values)) != len(values) or any(not v for v in values):
                raise ConfigError(f"{_WHERE}.{fld}", "has empty or repeated column names")
        if self.parallel_split == "physical" and (
            self.incremental_mode != "none" or not self.table
        ):
            raise ConfigError(
                f"{_WHERE}.parallel_split",
                "'physical' needs incremental_mode='none' and a `table` (page ranges cover "
                "a whole table; an incremental window is a small part of it)",
            )
        if self.parallel_streams > 1 and not (
            self.incremental_mode == "id"
            or (self.incremental_mode == "none" and len(self.primary_key) == 1)
            or self.parallel_split == "physical"
        ):
            raise ConfigError(
                f"{_WHERE}.parallel_streams",
                "needs incremental_mode='id', or 'none' with exactly one (integer) "
                "primary_key column (the ranges are split on an integer key), or "
                "parallel_split='physical'",
            )
        if self.stability_seconds:
            raise ConfigError(f"{_WHERE}.stability_seconds", "does not apply to SQL sources")
        if self.start_value is not None:
            self._parse_start(self.start_value)
        if self.output_format == "parquet":
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError as exc:
                raise ConfigError(f"{_WHERE}.output_format", "parquet needs pyarrow") from exc

    def _parse_start(self, raw: str) -> Any:
        try:
            if self.incremental_mode == "id":
                return int(raw)
            value = datetime.fromisoformat(raw)
        except ValueError as exc:
            kind = "an integer" if self.incremental_mode == "id" else "an ISO 8601 timestamp"
            raise ConfigError(f"{_WHERE}.start_value", f"{raw!r} is not {kind}") from exc
        return self._aware(value).isoformat()

    def _aware(self, value: datetime) -> datetime:
        """A user-given timestamp as UTC; naive means `timestamp_timezone`."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        return value.astimezone(UTC)

    @property
    def backfill_window(self) -> tuple[datetime, datetime] | None:
        """The (start, end) this run re-extracts, if it is a backfill."""
        return self._backfill

    def set_backfill(self, start: datetime | None, end: datetime | None) -> None:
        """Make this run re-extract `start <= column < end` instead of the increment
        (the watermark is not touched). Used by the flow's backfill options."""
        if start is None and end is None:
            self._backfill = None
            return
        if self.incremental_mode != "timestamp":
            raise ConfigError("options.backfill_start", "backfill needs incremental_mode=timestamp")
        if start is None or end is None:
            raise ConfigError("options.backfill_end", "give both backfill_start and backfill_end")
        start, end = self._aware(start), self._aware(end)
        if end <= start:
            raise ConfigError("options.backfill_end", "must be after backfill_start")
        self._backfill = (start, end)

    def apply_run_options(self, options: Mapping[str, Any] | None) -> None:
        """`backfill_start` / `backfill_end` (datetimes or ISO strings; naive means
        `timestamp_timezone`): re-extract that range; `max_files` (default 100): at most
        this many files per flow run when `max_rows_per_file` splits increments."""
        options = dict(options or {})
        for key in options:
            if key not in self.run_options:
                raise unknown_option(key, self.run_options)
        max_files = options.get("max_files", 100)
        if isinstance(max_files, bool) or not isinstance(max_files, int) or max_files < 1:
            raise ConfigError("options.max_files", "must be an integer of at least 1")
        self._max_files = max_files
        self.set_backfill(
            _option_datetime(options, "backfill_start"), _option_datetime(options, "backfill_end")
        )

    @contextmanager
    def run_session(self) -> Iterator[bool]:
        """Hold the source's advisory lock for the run (`run_lock`)."""
        with self.run_lock() as mine:
            yield mine

    def runs_again(self, ledger: Any, summary: Any, runs: int) -> bool:
        """Another file while a split increment is not caught up, at most `max_files`."""
        if runs >= self._max_files or self._backfill is not None or not summary.landed:
            return False
        return bool((ledger.get_state(self.source_id, wm.STATE_KEY) or {}).get("more"))

    # ------------------------------------------------------------------ database
    def _engine(self) -> Engine:
        engine = mysql_driver.choose(self.database, self.mysql_driver, f"{_WHERE}.mysql_driver")
        setup = dialects.session_setup(engine.dialect.name)
        if setup and engine not in _SET_UP:
            ranges = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"
            event.listen(
                engine, "connect", _session_hook(setup, register_range_text if ranges else None)
            )
            _SET_UP.add(engine)
            engine.dispose()  # connections made before the hook would miss the setup
        return engine

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        prep = self._prepare()
        try:
            with prep.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            # classified (a refused login is never retried, a lost link is), naming the link
            raise boundary_error(
                exc,
                f"{_WHERE}.database",
                f"{_target(prep.engine)}: database error: {self._scrub(_short(exc))}",
            ) from exc

    def _scrub(self, message: str) -> str:
        """Never let the password reach a log, an artifact or an exception."""
        info = self.database.connection_info
        secret = getattr(getattr(info, "password", None), "get_secret_value", None)
        if secret is not None and secret():
            message = message.replace(secret(), "********")
        return message

    def _prepare(self) -> _Prepared:
        """Connect, find the table/query and its columns, check every configured name.

        Bad names raise ConfigError naming the field and listing what exists."""
        if self._prepared is not None:
            return self._prepared
        self.preflight()
        try:
            engine = self._engine()
        except Exception as exc:
            raise ConfigError(
                f"{_WHERE}.database", f"cannot create an engine: {self._scrub(_short(exc))}"
            ) from exc
        dialect = engine.dialect.name
        if dialect not in ("postgresql", "mysql", "mariadb"):
            raise ConfigError(
                f"{_WHERE}.database", f"dialect {dialect!r} is not supported (postgresql, mysql)"
            )
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:  # not the table's fault: refused, down, bad login
            engine.dispose()
            raise boundary_error(
                exc,
                f"{_WHERE}.database",
                f"cannot connect to {_target(engine)}: {self._scrub(_short(exc))}",
            ) from exc
        try:
            with conn:
                base = self._reflect(conn) if self.table else self._query_base(conn)
                available = list(base.c.keys())
                names = self.columns or available
                self._check_names("columns", names, available)
                self._check_names("primary_key", self.primary_key, available)
                if self.incremental_column:
                    self._check_names("incremental_column", [self.incremental_column], available)
                wanted = [base.c[n] for n in names]
                probe_cols = wanted + (
                    [base.c[self.incremental_column]] if self.incremental_column else []
                )
                result = conn.execute(select(*probe_cols).select_from(base).where(false()))
                raw_descriptions = list(result.cursor.description)
                descriptions = [tuple(d) for d in raw_descriptions]
                result.close()
                digits = 6
                if self.incremental_mode == "timestamp":
                    digits = dialects.fraction_digits(conn, dialect, raw_descriptions[-1])
                can_see = self.inflight_cap and dialects.can_see_other_transactions(conn, dialect)
        except (ConfigError, IngestError):
            engine.dispose()
            raise
        except SQLAlchemyError as exc:
            engine.dispose()
            if is_retryable(exc):  # the link dropped while probing: not the table's fault
                raise boundary_error(
                    exc, f"{_WHERE}.database", f"{_target(engine)}: {self._scrub(_short(exc))}"
                ) from exc
            raise ConfigError(
                f"{_WHERE}.{'table' if self.table else 'query'}",
                self._scrub(_short(exc)),
            ) from exc
        inc_kind = None
        if self.incremental_column:
            inc_kind = dialects.column_kind(dialect, descriptions[-1])
            descriptions = descriptions[:-1]
            self._check_kind(inc_kind)
        if self.incremental_mode != "none" and self.inflight_cap and not can_see:
            run_logger("ingest.sql").warning(
                "%s: this login cannot see other sessions' transactions; the in-flight cap "
                "is off and only lag_seconds protects late commits (grant pg_read_all_stats "
                "on PostgreSQL, PROCESS on MySQL)",
                self.source_id,
            )
        self._prepared = _Prepared(
            engine, dialect, base, list(names), descriptions, inc_kind, can_see, digits
        )
        return self._prepared

    def _reflect(self, conn: Connection) -> Table:
        try:
            return Table(self.table, MetaData(), schema=self.db_schema, autoload_with=conn)
        except NoSuchTableError as exc:
            where = f" in schema {self.db_schema!r}" if self.db_schema else ""
            raise ConfigError(
                f"{_WHERE}.table", f"table {self.table!r} not found{where} (names are exact)"
            ) from exc

    def _query_base(self, conn: Connection) -> Any:
        sql = self.query.strip().rstrip(";")  # type: ignore[union-attr]
        try:
            clause = text(sql).bindparams(**self.query_parameters)
        except Exception as exc:  # a parameter the query does not use
            raise ConfigError(f"{_WHERE}.query_parameters", str(exc)) from exc
        missing = [p for p in clause._bindparams if p not in self.query_parameters]
        if missing:
            raise ConfigError(
                f"{_WHERE}.query_parameters", f"no value for placeholder(s) {missing}"
            )
        # The user's own SQL, wrapped as a subquery: only its column names are read here.
        probe = conn.execute(text(f"SELECT * FROM ({sql}) AS q WHERE 1=0"), self.query_parameters)
        names = list(probe.keys())
        probe.close()
        return clause.columns(*[column(n) for n in names]).subquery("q")

    def _check_names(self, fld: str, names: Sequence[str], available: list[str]) -> None:
        unknown = [n for n in names if n not in available]
        if unknown:
            what = f"table {self.table!r}" if self.table else "the query"
            raise ConfigError(
                f"{_WHERE}.{fld}",
                f"unknown column(s) {unknown} in {what}; it has {available}",
            )

    def _check_kind(self, kind: str) -> None:
        if self.incremental_mode == "timestamp" and kind not in ("timestamp", "timestamptz"):
            raise ConfigError(
                f"{_WHERE}.incremental_column",
                f"{self.incremental_column!r} is not a timestamp column (incremental_mode="
                "'timestamp' needs timestamp/timestamptz/DATETIME/TIMESTAMP)",
            )
        if self.incremental_mode == "id" and kind != "integer":
            raise ConfigError(
                f"{_WHERE}.incremental_column",
                f"{self.incremental_column!r} is not an integer column (incremental_mode='id')",
            )

    def test_connection(self) -> dict[str, Any]:
        """Connect, check the table/query and every configured column; return a summary.

        Raises ConfigError naming the field that is wrong."""
        self._prepared = None
        prep = self._prepare()
        with self._connect() as conn:
            version = conn.exec_driver_sql("SELECT version()").scalar()
        return {
            "ok": True,
            "source_id": self.source_id,
            "dialect": prep.dialect,
            "server_version": version,
            "columns": prep.names,
            "incremental_column_type": prep.inc_kind,
            "inflight_cap": bool(prep.can_see_others),
        }

    @contextmanager
    def run_lock(self) -> Iterator[bool]:
        """Hold a lock on this source for one flow run; yields False if another run has it.

        Two overlapping runs would read the same watermark and land overlapping windows.
        The lock is a session-level advisory lock in the SOURCE database
        (`pg_try_advisory_lock` / MySQL `GET_LOCK`), held on its own connection outside any
        transaction (so the in-flight cap does not see it) and released at the end, or by
        the server if the worker dies."""
        prep = self._prepare()
        name = "ingest-sql:" + hashlib.sha256(self.source_id.encode()).hexdigest()[:40]
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._connect() as conn:
            if dialects.is_postgres(prep.dialect):
                got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                release, params = "SELECT pg_advisory_unlock(:k)", {"k": key}
            else:
                got = conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar()
                release, params = "SELECT RELEASE_LOCK(:n)", {"n": name}
            conn.commit()  # session locks survive the commit; no transaction stays open
            try:
                yield bool(got)
            finally:
                if got:
                    conn.execute(text(release), params)
                    conn.commit()

    def close(self) -> None:
        """Release pooled connections."""
        if self._prepared is not None:
            self._prepared.engine.dispose()
            self._prepared = None

    # ------------------------------------------------------------------ values
    def _to_db(self, instant: datetime) -> datetime:
        """A UTC instant as the incremental column's type wants it bound."""
        prep = self._prepare()
        if prep.inc_kind == "timestamptz":
            if dialects.is_postgres(prep.dialect):
                return instant.astimezone(UTC)
            return instant.astimezone(UTC).replace(tzinfo=None)  # MySQL TIMESTAMP, UTC session
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def _from_db(self, value: datetime) -> datetime:
        """A value read from the incremental column as a UTC instant."""
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        if self._prepare().inc_kind == "timestamptz":
            return value.replace(tzinfo=UTC)
        return value.replace(tzinfo=self.zone).astimezone(UTC)

    def _bind(self, stored: Any) -> Any:
        """A stored watermark value of the incremental column, ready to bind."""
        if self.incremental_mode == "timestamp":
            return self._to_db(values.parse_utc(stored))
        return int(stored)

    def _key_columns(self) -> list[str]:
        if not self.primary_key:
            return []
        if self.incremental_mode == "none":
            return list(self.primary_key)
        inc = self.incremental_column
        return [inc] + [p for p in self.primary_key if p != inc]  # type: ignore[list-item]

    # ------------------------------------------------------------------ discover
    def discover(self, ctx: DiscoverContext) -> Iterator[Candidate]:
        prep = self._prepare()
        ext = formats.EXTENSIONS[self.output_format]
        if self._backfill is not None:
            start, end = self._backfill
            name = f"{self.file_base}/backfill-{values.stamp(start)}-{values.stamp(end)}.{ext}"
            yield Candidate(name=name, ref=Window("backfill", backfill=(start, end)))
            return
        if self.incremental_mode == "none":
            name = f"{self.file_base}/full-{ctx.partition_date:%Y%m%d}.{ext}"
            yield Candidate(name=name, ref=Window("full"))
            return
        lower = self._stored_position(ctx)
        upper = self._timestamp_upper(prep) if self.incremental_mode == "timestamp" else None
        if self.incremental_mode == "timestamp":
            floor = lower and (lower.get("below") or lower.get("through") or lower.get("start"))
            if floor is not None and values.parse_utc(floor) >= upper:
                run_logger("ingest.sql").info(
                    "%s: no settled rows past the watermark yet", self.source_id
                )
                return
        else:
            upper = self._id_upper(prep, lower)
            if upper is None:
                return
        name = f"{self.file_base}/{wm.label(lower, self.incremental_mode)}.{ext}"
        yield Candidate(name=name, ref=Window("incremental", lower=lower, upper=upper))

    def _stored_position(self, ctx: DiscoverContext) -> dict[str, Any] | None:
        state = ctx.get_state(wm.STATE_KEY)
        if not state:
            if self.start_value is None:
                return None
            return {"start": self._parse_start(self.start_value)}
        expected = (self.incremental_mode, self.incremental_column)
        if (state.get("mode"), state.get("column")) != expected or (
            state.get("pk") and state.get("key") != self._key_columns()
        ):
            raise ConfigError(
                f"{_WHERE}.incremental_column",
                f"the stored watermark is for mode={state.get('mode')!r} column="
                f"{state.get('column')!r} key={state.get('key')!r}; this block says "
                f"mode={expected[0]!r} column={expected[1]!r} key={self._key_columns()}. "
                "Use a new source_id (or delete the 'watermark' state) to start over",
            )
        return state

    def _timestamp_upper(self, prep: _Prepared) -> datetime:
        """Exclusive upper bound: clock - lag, below the oldest open transaction."""
        with self._connect() as conn:
            now, open_txns = dialects.clock_and_inflight(
                conn, prep.dialect, self.inflight_cap and prep.can_see_others
            )
        upper = now - timedelta(seconds=self.lag_seconds)
        if self.inflight_cap and prep.can_see_others:  # the view of open transactions lags
            upper = min(upper, now - dialects.INFLIGHT_VIEW_LAG.get(prep.dialect, timedelta()))
        if open_txns:
            oldest = min(start for _, start in open_txns)
            if oldest < upper:
                run_logger("ingest.sql").info(
                    "%s: upper bound held at %s by a transaction open since then",
                    self.source_id,
                    oldest.isoformat(),
                )
                upper = oldest
        return self._column_floor(upper, prep)

    def _column_floor(self, instant: datetime, prep: _Prepared) -> datetime:
        """`instant` cut down to a value the incremental column can store.

        A column of p fractional digits stores a row stamped at t as t truncated (MariaDB)
        or rounded (PostgreSQL: up to half a unit AFTER the value it names) to p digits.
        Every row stamped at or after `instant` therefore stores a value >= the cut
        `instant`, so it lands in the next window (`>=` this bound); with the microsecond
        bound, a row stamped later in the same second stored a value below it and was lost."""
        unit = 10 ** (6 - prep.inc_digits)
        local = self._to_db(instant)  # the column's own clock (UTC, or the naive zone)
        cut = local.replace(microsecond=local.microsecond - local.microsecond % unit)
        return self._from_db(cut)

    def _id_upper(self, prep: _Prepared, lower: dict[str, Any] | None) -> int | None:
        """MAX(id) past the watermark, once every transaction open at that moment ended."""
        inc = prep.base.c[self.incremental_column]
        stmt = select(func.max(inc)).select_from(prep.base)
        for clause in self._lower_clauses(lower):
            stmt = stmt.where(clause)
        with self._connect() as conn:
            top = conn.execute(stmt).scalar()
            conn.rollback()
            # a view of open transactions taken after the MAX (InnoDB's is a cache)
            time.sleep(dialects.INFLIGHT_VIEW_REFRESH_SECONDS.get(prep.dialect, 0))
            _, open_txns = dialects.clock_and_inflight(
                conn, prep.dialect, self.inflight_cap and prep.can_see_others
            )
        if top is None:
            run_logger("ingest.sql").info("%s: no rows past the watermark", self.source_id)
            return None
        deadline = time.monotonic() + self.settle_seconds
        while open_txns:
            if time.monotonic() >= deadline:
                run_logger("ingest.sql").warning(
                    "%s: %d transaction(s) open since before MAX(id)=%s did not end within "
                    "settle_seconds; leaving this increment to the next run",
                    self.source_id,
                    len(open_txns),
                    top,
                )
                return None
            time.sleep(0.2)
            with self._connect() as conn:
                open_txns = dialects.still_open(conn, prep.dialect, open_txns)
        return int(top)

    # ------------------------------------------------------------------ window clauses
    def _lower_clauses(self, lower: dict[str, Any] | None) -> list[Any]:
        if not lower:
            return []
        base = self._prepare().base
        inc = base.c[self.incremental_column]
        if "start" in lower:
            return [inc >= self._bind(lower["start"])]
        if "below" in lower:
            return [inc >= self._bind(lower["below"])]
        through = self._bind(lower["through"])
        if not lower.get("pk"):
            return [inc > through]
        cols = [base.c[k] for k in lower["key"]]
        return [wm.keyset_after(cols, [through, *lower["pk"]])]

    def _window_clauses(self, window: Window) -> list[Any]:
        base = self._prepare().base
        if window.kind == "full":
            return []
        inc = base.c[self.incremental_column]
        if window.kind == "backfill":
            start, end = window.backfill  # type: ignore[misc]
            return [inc >= self._to_db(start), inc < self._to_db(end)]
        clauses = self._lower_clauses(window.lower)
        if self.incremental_mode == "timestamp":
            clauses.append(inc < self._to_db(window.upper))
        else:
            clauses.append(inc <= window.upper)
        return clauses

    # ------------------------------------------------------------------ fetch
    def content_dedupe(self, candidate: Candidate) -> bool:
        """Only a whole-table snapshot (`none` mode) is dropped when its bytes were landed
        before; an incremental or backfill window is its own delivery, even when its file
        equals an earlier window's (e.g. `columns` without a key)."""
        window = candidate.ref
        return not isinstance(window, Window) or window.kind == "full"

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        window: Window = candidate.ref
        prep = self._prepare()
        where = self._window_clauses(window)
        key_names = self._key_columns()
        limit = self.max_rows_per_file if window.kind == "incremental" else None
        order = [prep.base.c[k] for k in key_names]
        if not order and window.kind != "full":
            order = [prep.base.c[self.incremental_column]]
        path = self._extraction_path(prep)
        if path != "rows":
            rows, last_key = self._copy(out, where, key_names, order, limit, path == "arrow")
        else:
            rows, last_key = self._read(out, where, key_names, order, limit)
        capped = limit is not None and last_key is not None and rows >= limit
        state = (
            self._state(window, rows, last_key, capped) if window.kind == "incremental" else None
        )
        run_logger("ingest.sql").info("%s: %s: %d row(s)", self.source_id, candidate.name, rows)
        report_rows(out, rows)
        updates = {wm.STATE_KEY: state} if state is not None else {}
        if rows == 0:
            raise SkipItem("no rows in this window", state=updates)
        return updates

    def _state(
        self, window: Window, rows: int, last_key: Sequence[Any] | None, capped: bool
    ) -> dict[str, Any]:
        state: dict[str, Any] = {
            "mode": self.incremental_mode,
            "column": self.incremental_column,
            "key": self._key_columns(),
            "rows": rows,
            "more": capped,
            "extracted_at": datetime.now(UTC).isoformat(),
        }
        if capped:
            first = last_key[0]  # type: ignore[index]
            if self.incremental_mode == "timestamp":
                first = self._from_db(first)
            state["through"] = values.to_json(first)
            state["pk"] = [values.to_json(v) for v in last_key[1:]]  # type: ignore[index]
        elif self.incremental_mode == "timestamp":
            state["below"] = window.upper.isoformat()
        else:
            state["through"] = int(window.upper)
        return state

    def _extraction_path(self, prep: _Prepared) -> Literal["copy", "arrow", "rows"]:
        """copy: PostgreSQL COPY CSV as is; arrow: COPY CSV parsed column-wise into Parquet
        (`blocks/sql/arrow_copy.py`); rows: rows through Python (`_read`), on MySQL + CSV
        as lines the server renders when every column allows it (`mysql_csv`). Logged once."""
        path: Literal["copy", "arrow", "rows"] = "rows"
        if self.use_copy and dialects.is_postgres(prep.dialect):
            if self.output_format == "csv":
                path = "copy"
            elif self.output_format == "parquet" and arrow_copy.supported(prep.descriptions):
                path = "arrow"
        if path == "rows" and not dialects.is_postgres(prep.dialect):
            driver = prep.engine.dialect.driver
            how = "rows"
            if self.output_format == "csv":
                if prep.lines is None:
                    with self._connect() as conn:
                        prep.lines = mysql_csv.plan(
                            conn, prep.base, prep.names, prep.descriptions, driver
                        )
                if prep.lines.line is not None:
                    how = "server-rendered CSV lines"
                else:
                    how = f"rows ({prep.lines.reason})"
            run_logger("ingest.sql").info("%s: extraction: %s via %s", self.source_id, how, driver)
        else:
            run_logger("ingest.sql").info("%s: extraction: %s", self.source_id, path)
        return path

    @staticmethod
    def _make_writer_schema(prep: _Prepared) -> Any:
        """The Parquet schema the row path writes (the Arrow path writes the same)."""
        import pyarrow as pa

        return pa.schema(
            [
                pa.field(name, dialects.arrow_type(prep.dialect, d))
                for name, d in zip(prep.names, prep.descriptions, strict=True)
            ]
        )

    def _make_writer(self, out: BinaryIO, prep: _Prepared) -> formats.RowWriter:
        """Values are written as PostgreSQL's COPY writes them (the fast path agrees)."""
        parquet = self.output_format == "parquet"  # pyarrow is only needed for Parquet
        columns = [
            formats.Column(name, dialects.arrow_type(prep.dialect, d) if parquet else None)
            for name, d in zip(prep.names, prep.descriptions, strict=True)
        ]
        return formats.make_writer(self.output_format, out, columns, formats.POSTGRES)

    @contextmanager
    def _reader(self) -> Iterator[Callable[[], Any]]:
        """Yields `conn()` giving the connection for the next chunk: a fresh short
        transaction per chunk, or one REPEATABLE READ snapshot (`single_transaction`)."""
        if not self.single_transaction:

            @contextmanager
            def fresh() -> Iterator[Connection]:
                with self._connect() as conn:
                    yield conn

            yield fresh
            return
        with self._connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():

                @contextmanager
                def same() -> Iterator[Connection]:
                    yield conn

                yield same

    def _read(
        self,
        out: BinaryIO,
        where: list[Any],
        key_names: list[str],
        order: list[Any],
        limit: int | None,
    ) -> tuple[int, list[Any] | None]:
        """Python path: keyset chunks (or one streaming cursor without a key)."""
        prep = self._prepare()
        writer: Any = self._make_writer(out, prep)
        cols = [prep.base.c[n] for n in prep.names]
        line = prep.lines.line if prep.lines is not None and self.output_format == "csv" else None
        if line is not None:  # one CSV line per row, rendered by the server
            writer, cols = mysql_csv.LineWriter(out, writer), [line]
        keys = [prep.base.c[k] for k in key_names]
        total, last = 0, None
        with self._reader() as conn_for_chunk:
            if not keys:
                # No key to resume from: one server-side cursor (one transaction), still
                # reading chunk_size rows at a time.
                stmt = select(*self._driver_values(cols)).select_from(prep.base)
                stmt = stmt.where(*where).order_by(*order)
                with conn_for_chunk() as conn:
                    result = conn.execution_options(yield_per=self.chunk_size).execute(stmt)
                    for part in result.partitions(self.chunk_size):
                        writer.write(part)
                        total += len(part)
            else:
                labelled = [k.label(f"__key{i}") for i, k in enumerate(keys)]
                width = len(cols)
                while True:
                    n = self.chunk_size if limit is None else min(self.chunk_size, limit - total)
                    if n <= 0:
                        break
                    stmt = select(*cols, *labelled).select_from(prep.base).where(*where)
                    if last is not None:
                        stmt = stmt.where(wm.keyset_after(keys, last))
                    stmt = stmt.order_by(*keys).limit(n)
                    with conn_for_chunk() as conn, mysql_csv.gc_paused(line is not None):
                        # one short transaction per chunk; the driver's tuples as they are
                        # (no SQLAlchemy Row per row: the writers take plain sequences)
                        result = conn.execute(stmt)
                        rows = result.cursor.fetchall()
                        result.close()
                    if rows:
                        # the line path reads item 0 of each row in C: no slicing loop
                        writer.write(rows if line is not None else [r[:width] for r in rows])
                        last = list(rows[-1][width:])
                        total += len(rows)
                    if len(rows) < n:
                        break
        writer.close()
        return total, last

    @staticmethod
    def _driver_values(cols: list[Any]) -> list[Any]:
        """`cols` typeless (NullType, no result processor), so the streaming cursor's rows
        hold the driver's own values, as the keyed chunks' raw tuples do. The reflected
        table's SQLAlchemy types would convert them. MySQL/MariaDB: TIME wrapped into a time
        of day (`-838:59:59` read `01:00:01`), SET to a Python set (printed in hash order),
        MySQL's JSON parsed and re-printed, BIT to an int. PostgreSQL: an enum array (text
        `{happy,sad}` to psycopg2) split into a list (written as JSON `["happy", "sad"]`),
        ranges re-built as SQLAlchemy's Range (the driver gives PostgreSQL's text,
        `pg_ranges`). No CAST: the SQL only gains column labels of the same names."""
        return [type_coerce(c, NullType()) for c in cols]

    def _copy(
        self,
        out: BinaryIO,
        where: list[Any],
        key_names: list[str],
        order: list[Any],
        limit: int | None,
        parquet: bool = False,
    ) -> tuple[int, list[Any] | None]:
        """PostgreSQL fast path: COPY (SELECT ...) TO STDOUT per keyset chunk (`parquet`:
        the CSV is parsed column-wise into Parquet by `arrow_copy.ParquetCopySink`).

        Each chunk is one short transaction: a boundary query finds the key of the chunk's
        last row (an index-only scan; run one chunk ahead on a second connection when the
        run has no row limit), then COPY streams the rows up to it straight into the
        pipeline's writer."""
        prep = self._prepare()
        cols = [prep.base.c[n] for n in prep.names]
        if parquet:
            cols = arrow_copy.select_columns(cols, prep.descriptions)
        keys = [prep.base.c[k] for k in key_names]
        if self.single_transaction and limit is None:
            # One snapshot anyway: one COPY, no keyset ranges, so a full table is a plain
            # sequential scan (fastest; the transaction lasts as long as the copy).
            keys = []
            if not where:
                order = []
        raw = prep.engine.raw_connection()
        # psycopg2 calls write() once per row; a C-level buffer turns that into one
        # Python-level write per MiB, hashed and written by a second thread.
        if parquet:
            schema = self._make_writer_schema(prep)
            sink: Any = arrow_copy.ParquetCopySink(out, prep.names, schema, prep.descriptions)
        else:
            sink = io.BufferedWriter(ThreadedSink(out), _COPY_BUFFER)
        total, last, header = 0, None, not parquet
        # Unlimited keyset runs find the next chunk's end on a second connection while
        # this chunk's COPY streams (the boundary scan costs ~0.1 s per million rows).
        # Safe: each chunk's COPY selects a key range, not a row count.
        ahead = _BoundaryAhead(self, prep, keys, where) if keys and limit is None else None
        try:
            parallel = self._copy_parallel(prep, cols, where, order, limit, sink, header)
            if parallel is not None:
                return parallel, None
            cur = raw.cursor()
            if self.single_transaction:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if ahead is not None:
                ahead.request(None)
            while True:
                chunk_where = list(where)
                end = None
                if ahead is not None:
                    end = ahead.result()
                    if last is not None:
                        chunk_where.append(wm.keyset_after(keys, last))
                    if end is not None:
                        chunk_where.append(wm.keyset_upto(keys, end))
                        ahead.request(end)
                elif keys:
                    n = (
                        self.copy_chunk_rows
                        if limit is None
                        else min(self.copy_chunk_rows, limit - total)
                    )
                    if n <= 0:
                        break
                    if last is not None:
                        chunk_where.append(wm.keyset_after(keys, last))
                    cur.execute(
                        self._literal_sql(cur, self._boundary(prep, keys, chunk_where, n), prep)
                    )
                    found = cur.fetchone()
                    end = list(found) if found else None
                    if end is not None:
                        chunk_where.append(wm.keyset_upto(keys, end))
                stmt = select(*cols).select_from(prep.base).where(*chunk_where).order_by(*order)
                sql = self._literal_sql(cur, stmt, prep)
                options = "FORMAT csv, HEADER true" if header else "FORMAT csv"
                cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH ({options})", sink, _COPY_BUFFER)
                sink.flush()
                header = False
                total += max(cur.rowcount, 0)
                if not self.single_transaction:
                    raw.rollback()  # end this chunk's transaction: no long-held snapshot
                if end is None:
                    break
                last = end
        except Exception as exc:
            if isinstance(exc, (SkipItem, ConfigError)):
                raise
            raise IngestError(
                f"{_WHERE}: COPY failed: {self._scrub(_short(exc))}", retryable=is_retryable(exc)
            ) from exc
        finally:
            try:
                sink.close()  # waits for the writer thread; raises its error, if any
            finally:
                try:
                    raw.rollback()
                finally:
                    raw.close()
                    if ahead is not None:
                        ahead.close()
        return total, last

    def _copy_parallel(
        self,
        prep: _Prepared,
        cols: list[Any],
        where: list[Any],
        order: list[Any],
        limit: int | None,
        sink: Any,
        header: bool,
    ) -> int | None:
        """`parallel_streams` key (or page) ranges under one snapshot
        (`blocks/sql/parallel_copy.py`); None: not applicable here, copy serially."""
        if self.parallel_streams <= 1 or limit is not None:
            return None
        if self.incremental_mode == "id":
            name: str | None = self.incremental_column
        else:
            name = self.primary_key[0] if len(self.primary_key) == 1 else None
        pages = None
        if self.parallel_split == "physical":
            pages = prep.engine.dialect.identifier_preparer.format_table(prep.base)
        notes: list[str] = []
        rows = parallel_copy.copy_parallel(
            prep.engine,
            prep.base,
            cols,
            where,
            order,
            prep.base.c[name] if name is not None else None,
            self.parallel_streams,
            sink,
            header,
            lambda cur, stmt: self._literal_sql(cur, stmt, prep),
            self._asyncpg_params(prep),
            pages=pages,
            notes=notes,
        )
        log = run_logger("ingest.sql")
        # One note: the split used. More, or no rows: a fallback the user should see.
        level = logging.INFO if rows is not None and len(notes) == 1 else logging.WARNING
        log.log(
            level,
            "%s: parallel_streams=%d: %s",
            self.source_id,
            self.parallel_streams,
            "; ".join(notes) + (" under one snapshot" if rows is not None else ""),
        )
        return rows

    def _asyncpg_params(self, prep: _Prepared) -> dict[str, Any] | None:
        """asyncpg keywords for the parallel ranges (`parallel_copy`), when the connector
        is a plain host/port/user/password/database URL; None (psycopg2 ranges) when it
        has `connect_args` or URL query options asyncpg might read differently."""
        url = prep.engine.url
        if self.database.connect_args or url.query or not url.host:
            return None
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            return None
        return {
            "host": url.host,
            "port": url.port or 5432,
            "user": url.username,
            "password": url.password,
            "database": url.database,  # TLS: asyncpg's default is libpq's `prefer` too
        }

    @staticmethod
    def _boundary(prep: _Prepared, keys: list[Any], where: list[Any], n: int) -> Any:
        """The key of the n-th row after `where`, in key order (an index-only scan)."""
        return (
            select(*keys)
            .select_from(prep.base)
            .where(*where)
            .order_by(*keys)
            .offset(n - 1)
            .limit(1)
        )

    @staticmethod
    def _literal_sql(cur: Any, stmt: Any, prep: _Prepared) -> str:
        """The statement with its parameters escaped by psycopg2 itself (COPY takes no
        bind parameters): values go through the driver's quoting, never string pasting."""
        compiled = stmt.compile(dialect=prep.engine.dialect)
        return cur.mogrify(str(compiled), compiled.params).decode()


class _BoundaryAhead:
    """Finds keyset chunk ends one chunk ahead, on its own connection and thread."""

    def __init__(self, source: SqlSource, prep: _Prepared, keys: list[Any], where: list[Any]):
        from concurrent.futures import ThreadPoolExecutor

        self._source, self._prep, self._keys, self._where = source, prep, keys, where
        self._raw = prep.engine.raw_connection()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sql-copy-boundary")
        self._future: Any = None

    def request(self, after: list[Any] | None) -> None:
        self._future = self._pool.submit(self._find, after)

    def result(self) -> list[Any] | None:
        return self._future.result()

    def _find(self, after: list[Any] | None) -> list[Any] | None:
        where = list(self._where)
        if after is not None:
            where.append(wm.keyset_after(self._keys, after))
        n = self._source.copy_chunk_rows
        cur = self._raw.cursor()
        try:
            stmt = SqlSource._boundary(self._prep, self._keys, where, n)
            cur.execute(SqlSource._literal_sql(cur, stmt, self._prep))
            found = cur.fetchone()
        finally:
            cur.close()
            self._raw.rollback()  # one short transaction per lookup
        return list(found) if found else None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._raw.close()


_SET_UP: weakref.WeakSet[Engine] = weakref.WeakSet()


def _session_hook(
    sql: str, prepare: Callable[[Any], None] | None = None
) -> Callable[[Any, Any], None]:
    def hook(dbapi_conn: Any, _record: Any) -> None:
        if prepare is not None:
            prepare(dbapi_conn)
        cur = dbapi_conn.cursor()
        cur.execute(sql)
        cur.close()
        dbapi_conn.commit()  # a SET inside a rolled-back transaction would be undone

    return hook


def _target(engine: Engine) -> str:
    """The database a source talks to, for messages: driver, user, host, port, database
    (never the password)."""
    url = engine.url
    port = f":{url.port}" if url.port else ""
    user = f"{url.username}@" if url.username else ""
    return f"{url.get_backend_name()}://{user}{url.host or ''}{port}/{url.database or ''}"


def _short(exc: BaseException) -> str:
    """First line of a database error, without the SQL and parameters SQLAlchemy appends."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__
