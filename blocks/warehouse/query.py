"""What the Snowflake and BigQuery query sources share: one query, exported to one file.

A run is one candidate: the result of the block's SQL (with bound parameters) written as
CSV, JSON Lines or Parquet, streamed chunk by chunk into the pipeline's staging file.

- Full mode (no `incremental_column`): the whole result each run, named
  `<file_name>.<ext>` (`file_name` takes date templates, default `export_{date:%Y%m%d}`).
  A rerun with the same content is dropped by the pipeline's content-SHA256 dedupe.
- Incremental mode: the query is wrapped as
  `SELECT * FROM (<query>) AS ingest_q WHERE <window on ingest_q.C> ORDER BY C[, key...]`
  with the window's bounds bound as parameters, never spliced. Time columns get a
  half-open window `[previous bound, warehouse clock - lag_seconds)` fixed when the run
  starts, so rows sharing the boundary value and rows committed late (within the lag) are
  not lost; number and text columns continue above the largest value delivered, and with
  `primary_key` also take later rows sharing that value. See
  `blocks/warehouse/watermark.py` for the rules and what is not caught.
  The file is named `<file_name>_<window label>.<ext>` (`_initial` on the first run,
  `_from-<bound>` for a time window, `_after-<value>` above a value). `fetch` returns the
  new watermark and the pipeline writes it in the same transaction as the file's ledger
  row: it advances only after the file is recorded.
- An empty result lands nothing (`SkipItem`); a time window's bound still advances (there
  was nothing below it to deliver), a value watermark stays where it is.

Subclasses give the placeholder syntax, a streaming executor, a zero-row probe of the
result's columns and error translation.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from pydantic import Field

from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError, IngestError
from blocks.core.file_formats import EXTENSIONS, Column, OutputFormat, make_writer
from blocks.core.naming import safe_relative_name
from blocks.core.run_logger import run_logger
from blocks.core.source import Candidate, DiscoverContext, SkipItem, SourceBlock, report_rows
from blocks.core.timezones import TimezoneName
from blocks.warehouse.watermark import (
    STATE_KEY,
    TIME_KINDS,
    Position,
    Progress,
    Window,
    check_settings,
    column_kind,
    empty_state,
    initial_value,
    is_identifier,
    stored_position,
    upper_bound,
)

WATERMARK_PARAM = "ingest_watermark"
UPPER_PARAM = "ingest_upper"
SUBQUERY_ALIAS = "ingest_q"


class WarehouseQueryError(IngestError):
    """The warehouse failed a query for a reason that may pass (network, capacity):
    retried by the pipeline. Bad SQL, missing tables and refused credentials are
    `ConfigError`s instead (not retried)."""


@dataclass(frozen=True)
class QueryPlan:
    """What discover decided for the one candidate of a run."""

    window: Window | None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class QueryResult:
    """A running query: its columns and an iterator of row chunks (bounded memory)."""

    columns: list[Column]
    chunks: Iterator[list[tuple[Any, ...]]]


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret value replaced (defence in depth for error texts)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class WarehouseQuerySource(SourceBlock):
    """Base of the query sources (not a block type of its own)."""

    query: str = Field(
        ...,
        description=(
            "SQL SELECT whose result is exported (one statement, no trailing ';'). Bind "
            "values with `parameters` (placeholders: see the block's description)."
        ),
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            'Values bound to the query\'s named placeholders, e.g. {"region": "EU"}. A text '
            "value may hold date templates, e.g. '{date:%Y-%m-%d}' for the run's logical day."
        ),
    )
    incremental_column: str | None = Field(
        default=None,
        description=(
            "Column of the result that grows for new rows (load timestamp, sequence). When "
            "set, each run exports only the rows past the watermark kept in the ledger."
        ),
    )
    initial_watermark: str | None = Field(
        default=None,
        description=(
            "Where the first incremental run starts (exclusive): an integer, an ISO date or "
            "date-time, or text. Empty: the first run exports every row."
        ),
    )
    lag_seconds: float = Field(
        default=0,
        ge=0,
        description=(
            "Time columns (TIMESTAMP, DATETIME, DATE): leave rows stamped in the last N "
            "seconds of the warehouse clock for the next run, so rows committed late with "
            "older values are still exported. Rows visible later than that are not."
        ),
    )
    primary_key: list[str] = Field(
        default_factory=list,
        description=(
            "Number or text incremental column: result column(s) that identify a row, so "
            "rows arriving later with the same value as the last export are still taken "
            "(each once). Also orders rows within one value."
        ),
    )
    timestamp_timezone: TimezoneName = Field(
        default="UTC",
        description=(
            "IANA zone of the wall-clock values in naive time columns (Snowflake "
            "TIMESTAMP_NTZ, BigQuery DATETIME, DATE) for the lag window's bound."
        ),
    )
    output_format: OutputFormat = Field(
        default="csv", description="File format of the export: csv, jsonl or parquet."
    )
    file_name: str = Field(
        default="export_{date:%Y%m%d}",
        description=(
            "Name of the exported file without extension; date templates allowed. "
            "Incremental runs append the window's start, e.g. '_after-<watermark>'."
        ),
    )
    chunk_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Rows fetched and written at a time (bounds memory).",
    )

    # ----------------------------------------------------------------- subclass hooks
    @property
    def _label(self) -> str:
        return type(self).__name__

    @abstractmethod
    def _placeholder(self, name: str) -> str:
        """The SQL text of a bound parameter named `name`."""

    @abstractmethod
    def _execute(self, sql: str, params: dict[str, Any]) -> AbstractContextManager[QueryResult]:
        """Run `sql` and yield its streaming result; translate errors (see
        `WarehouseQueryError`)."""

    @abstractmethod
    def _probe(self, sql: str, params: dict[str, Any]) -> list[Column]:
        """Check credentials and the query without reading rows; return its columns."""

    # ----------------------------------------------------------------- configuration
    def preflight(self) -> None:
        label = self._label
        if not self.base_query():
            raise ConfigError(f"{label}.query", "is empty")
        col = self.incremental_column
        if col is not None and not is_identifier(col):
            raise ConfigError(
                f"{label}.incremental_column",
                f"{col!r} is not a plain column name (letters, digits, '_', '$')",
            )
        for fld in ("initial_watermark", "primary_key", "lag_seconds"):
            if getattr(self, fld) and col is None:
                raise ConfigError(f"{label}.{fld}", "needs incremental_column")
        keys = self.primary_key
        bad = [k for k in keys if not is_identifier(k)]
        if bad or len({k.lower() for k in keys}) != len(keys):
            raise ConfigError(f"{label}.primary_key", f"bad or repeated column names {keys}")
        for key in self.parameters:
            if not is_identifier(key):
                raise ConfigError(f"{label}.parameters", f"{key!r} is not a parameter name")
            if key in (WATERMARK_PARAM, UPPER_PARAM):
                raise ConfigError(f"{label}.parameters", f"{key!r} is reserved")
        try:
            name = self.file_base(self.today())
            safe_relative_name(name + ".x")
        except ValueError as exc:
            raise ConfigError(f"{label}.file_name", str(exc)) from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timestamp_timezone)

    def base_query(self) -> str:
        return self.query.strip().rstrip(";").strip()

    def file_base(self, day: date) -> str:
        return render_date_template(self.file_name, day)

    def rendered_parameters(self, day: date) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.parameters.items():
            if isinstance(value, str) and "{date" in value:
                try:
                    value = render_date_template(value, day)
                except ValueError as exc:
                    raise ConfigError(f"{self._label}.parameters.{key}", str(exc)) from exc
            out[key] = value
        return out

    def build_query(
        self, window: Window | None, parameters: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The SQL to run and its parameters (the window's bounds bound, never spliced).
        Without a window: every row with a value, unordered (the zero-row probe)."""
        sql = self.base_query()
        params = dict(parameters)
        col = self.incremental_column
        if col is None:
            return sql, params
        ref = f"{SUBQUERY_ALIAS}.{col}"
        where = []
        lower = window.lower if window is not None else None
        if lower is not None and lower.value is not None:
            op = ">=" if lower.inclusive else ">"
            where.append(f"{ref} {op} {self._placeholder(WATERMARK_PARAM)}")
            params[WATERMARK_PARAM] = lower.value
        if window is not None and window.upper is not None:
            where.append(f"{ref} < {self._placeholder(UPPER_PARAM)}")
            params[UPPER_PARAM] = window.upper
        if not where:
            where.append(f"{ref} IS NOT NULL")
        wrapped = f"SELECT * FROM (\n{sql}\n) AS {SUBQUERY_ALIAS} WHERE {' AND '.join(where)}"
        if window is not None:
            keys = [f"{SUBQUERY_ALIAS}.{k}" for k in self.primary_key]
            wrapped += " ORDER BY " + ", ".join([ref, *keys])
        return wrapped, params

    # ----------------------------------------------------------------- the window
    def plan_window(self, state: Any, day: date) -> Window | None:
        """This run's window: from the ledger state (else `initial_watermark`), up to the
        warehouse clock minus `lag_seconds` for time columns. None: nothing can be due yet
        (the bound has not moved past the stored one)."""
        if state:
            lower = stored_position(state, self._label, self.incremental_column, self.primary_key)
        else:
            lower = self._first_position(
                self._probe(*self.build_query(None, self.rendered_parameters(day)))
            )
        self._check_fit(lower.kind)
        upper = None
        if lower.kind in TIME_KINDS:
            upper = upper_bound(self._warehouse_now(), self.lag_seconds, lower.kind, self.zone)
            if lower.value is not None and lower.value >= upper:
                return None
        return Window(lower, upper, tuple(self.primary_key))

    def _first_position(self, columns: list[Column]) -> Position:
        """No state yet: the column's kind from the probed result columns, then where
        `initial_watermark` says."""
        col = self.incremental_column
        column = columns[self._column_indexes(columns)[0]]
        try:
            kind = column_kind(column)
        except ValueError as exc:
            raise ConfigError(f"{self._label}.incremental_column", str(exc)) from exc
        if not self.initial_watermark:
            return Position(col, kind)  # type: ignore[arg-type]
        try:
            value = initial_value(self.initial_watermark, kind, self.zone)
        except ValueError as exc:
            raise ConfigError(
                f"{self._label}.initial_watermark", f"does not fit a {kind} column: {exc}"
            ) from exc
        return Position(col, kind, value)  # type: ignore[arg-type]

    def _check_fit(self, kind: str) -> None:
        check_settings(kind, self._label, self.primary_key, self.lag_seconds)

    def _warehouse_now(self) -> datetime:
        """The warehouse clock (`CURRENT_TIMESTAMP()`), the base of a time window's bound."""
        with self._execute("SELECT CURRENT_TIMESTAMP() AS ingest_now", {}) as result:
            rows = [row for chunk in result.chunks for row in chunk]
        if not rows or not isinstance(rows[0][0], datetime):
            raise WarehouseQueryError(f"{self._label}: CURRENT_TIMESTAMP() returned {rows!r}")
        return rows[0][0]

    # ----------------------------------------------------------------- pipeline hooks
    def discover(self, ctx: DiscoverContext) -> Iterable[Candidate]:
        day = ctx.partition_date
        name = self.file_base(day)
        window = None
        if self.incremental_column:
            window = self.plan_window(ctx.get_state(STATE_KEY), day)
            if window is None:
                run_logger("ingest.warehouse").info(
                    "%s: the window's bound has not moved past the watermark yet",
                    self.source_id,
                )
                return []
            name += "_" + window.lower.label()
        name += "." + EXTENSIONS[self.output_format]
        return [Candidate(name=name, ref=QueryPlan(window, self.rendered_parameters(day)))]

    def content_dedupe(self, candidate: Candidate) -> bool:
        """Only a full export (a snapshot) is dropped when its bytes were landed before;
        an incremental window is its own delivery even if its file equals an earlier one."""
        plan = candidate.ref
        return not isinstance(plan, QueryPlan) or plan.window is None

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        plan: QueryPlan = candidate.ref
        window = plan.window
        sql, params = self.build_query(window, plan.parameters)
        log = run_logger("ingest.warehouse")
        with self._execute(sql, params) as result:
            progress = None
            if window is not None:
                progress = Progress(window, *self._column_indexes(result.columns))
            writer = make_writer(self.output_format, out, result.columns)
            chunks = 0
            for chunk in result.chunks:
                if progress is not None:
                    chunk = progress.take(chunk)
                if not chunk:
                    continue
                writer.write(chunk)
                chunks += 1
            if writer.rows == 0:
                where = f" in {window.describe()}" if window is not None else ""
                raise SkipItem(f"the query returned no new rows{where}", state=empty_state(window))
            writer.close()
        log.info("%s: exported %d row(s) in %d chunk(s)", candidate.name, writer.rows, chunks)
        report_rows(out, writer.rows)
        if progress is None:
            return None
        if progress.dropped:
            log.info("%s: %d row(s) already delivered", candidate.name, progress.dropped)
        try:
            state = progress.state(writer.rows)
        except TypeError as exc:
            raise ConfigError(f"{self._label}.incremental_column", str(exc)) from exc
        log.info("%s: watermark -> %s", self.source_id, state.get("below", state.get("value")))
        return {STATE_KEY: state}

    def _column_indexes(self, columns: list[Column]) -> tuple[int, list[int]]:
        """Where the incremental column and the key columns are in the result;
        ConfigError naming the field if one is missing."""
        lowered = [c.name.lower() for c in columns]
        found = []
        for fld, names in (
            ("incremental_column", [self.incremental_column or ""]),
            ("primary_key", self.primary_key),
        ):
            for name in names:
                if name.lower() not in lowered:
                    raise ConfigError(
                        f"{self._label}.{fld}",
                        f"{name!r} is not a column of the query's result "
                        f"({', '.join(c.name for c in columns)})",
                    )
                found.append(lowered.index(name.lower()))
        return found[0], found[1:]

    # ----------------------------------------------------------------- operator check
    def test_connection(self, day: date | None = None) -> dict[str, Any]:
        """Log in, and check the query compiles and its tables exist, reading no rows.

        Returns `{"ok": True, "columns": [...]}`; raises `ConfigError` naming the field at
        fault (credentials, query, incremental_column, primary_key, lag_seconds) or
        `WarehouseQueryError`.
        """
        self.preflight()
        day = day or self.today()
        sql, params = self.build_query(None, self.rendered_parameters(day))
        columns = self._probe(sql, params)
        if self.incremental_column:
            self._check_fit(self._first_position(columns).kind)
        return {"ok": True, "source_id": self.source_id, "columns": [c.name for c in columns]}
