"""What the Snowflake and BigQuery query sources share: one query, exported to one file.

A run is one candidate: the result of the block's SQL (with bound parameters) written as
CSV, JSON Lines or Parquet, streamed chunk by chunk into the pipeline's staging file.

- Full mode (no `incremental_column`): the whole result each run, named
  `<file_name>.<ext>` (`file_name` takes date templates, default `export_{date:%Y%m%d}`).
  A rerun with the same content is dropped by the pipeline's content-SHA256 dedupe.
- Incremental mode: the query is wrapped as
  `SELECT * FROM (<query>) AS ingest_q WHERE ingest_q.<col> > <watermark> ORDER BY ...`
  and the file is named `<file_name>_after-<watermark>.<ext>` (`_initial` on the first
  run). `fetch` returns the new watermark (the largest value exported) and the pipeline
  writes it in the same transaction as the file's ledger row: it advances only after the
  file is recorded. See `blocks/warehouse_watermark.py`.
- An empty result lands nothing (`SkipItem`); the watermark stays where it is.

Subclasses give the placeholder syntax, a streaming executor and error translation.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, BinaryIO

from pydantic import Field

from blocks.date_templates import render_date_template
from blocks.errors import ConfigError, IngestError
from blocks.file_formats import EXTENSIONS, Column, OutputFormat, make_writer
from blocks.naming import safe_relative_name
from blocks.source import Candidate, DiscoverContext, SkipItem, SourceBlock
from blocks.warehouse_watermark import STATE_KEY, Watermark, is_identifier, larger, parse_initial
from blocks.watermark_values import kind_of

WATERMARK_PARAM = "ingest_watermark"
SUBQUERY_ALIAS = "ingest_q"


class WarehouseQueryError(IngestError):
    """The warehouse failed a query for a reason that may pass (network, capacity):
    retried by the pipeline. Bad SQL, missing tables and refused credentials are
    `ConfigError`s instead (not retried)."""


@dataclass(frozen=True)
class QueryPlan:
    """What discover decided for the one candidate of a run."""

    watermark: Watermark | None
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
            "Values bound to the query's named placeholders. A text value may hold date "
            "templates, e.g. '{date:%Y-%m-%d}' for the run's logical day."
        ),
    )
    incremental_column: str | None = Field(
        default=None,
        description=(
            "Column of the result that grows for new rows (load timestamp, sequence). When "
            "set, each run exports only rows above the watermark kept in the ledger."
        ),
    )
    initial_watermark: str | None = Field(
        default=None,
        description=(
            "Where the first incremental run starts (exclusive): an integer, an ISO date or "
            "date-time, or text. Empty: the first run exports every row."
        ),
    )
    output_format: OutputFormat = Field(
        default="csv", description="File format of the export: csv, jsonl or parquet."
    )
    file_name: str = Field(
        default="export_{date:%Y%m%d}",
        description=(
            "Name of the exported file without extension; date templates allowed. "
            "Incremental runs append '_after-<watermark>'."
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
    def _probe(self, sql: str, params: dict[str, Any]) -> list[str]:
        """Check credentials and the query without reading rows; return column names."""

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
        if self.initial_watermark is not None and col is None:
            raise ConfigError(f"{label}.initial_watermark", "needs incremental_column")
        for key in self.parameters:
            if not is_identifier(key):
                raise ConfigError(f"{label}.parameters", f"{key!r} is not a parameter name")
            if key == WATERMARK_PARAM:
                raise ConfigError(f"{label}.parameters", f"{key!r} is reserved")
        try:
            name = self.file_base(self.today())
            safe_relative_name(name + ".x")
        except ValueError as exc:
            raise ConfigError(f"{label}.file_name", str(exc)) from exc

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
        self, watermark: Watermark | None, parameters: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The SQL to run and its parameters (the watermark bound, never spliced)."""
        sql = self.base_query()
        params = dict(parameters)
        col = self.incremental_column
        if col is None:
            return sql, params
        ref = f"{SUBQUERY_ALIAS}.{col}"
        if watermark is None:
            where = f"{ref} IS NOT NULL"
        else:
            where = f"{ref} > {self._placeholder(WATERMARK_PARAM)}"
            params[WATERMARK_PARAM] = watermark.value
        wrapped = f"SELECT * FROM (\n{sql}\n) AS {SUBQUERY_ALIAS} WHERE {where} ORDER BY {ref}"
        return wrapped, params

    def current_watermark(self, state: Any) -> Watermark | None:
        """The watermark to start from: the ledger's, else `initial_watermark`."""
        col = self.incremental_column
        if col is None:
            return None
        field_ = f"{self._label}.incremental_column"
        if state:
            try:
                mark = Watermark.from_state(state)
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    field_, f"the ledger's watermark state is unreadable ({exc}): {state!r}"
                ) from exc
            if mark.column.lower() != col.lower():
                raise ConfigError(
                    field_,
                    f"the ledger's watermark is for column {mark.column!r}, not {col!r}; "
                    "reset the source's 'watermark' state or use a new source_id",
                )
            return mark
        if self.initial_watermark:
            return Watermark(col, parse_initial(self.initial_watermark))
        return None

    # ----------------------------------------------------------------- pipeline hooks
    def discover(self, ctx: DiscoverContext) -> Iterable[Candidate]:
        mark = self.current_watermark(ctx.get_state(STATE_KEY) if self.incremental_column else None)
        name = self.file_base(ctx.partition_date)
        if self.incremental_column:
            name += f"_after-{mark.label()}" if mark is not None else "_initial"
        name += "." + EXTENSIONS[self.output_format]
        plan = QueryPlan(mark, self.rendered_parameters(ctx.partition_date))
        return [Candidate(name=name, ref=plan)]

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        plan: QueryPlan = candidate.ref
        sql, params = self.build_query(plan.watermark, plan.parameters)
        log = _logger()
        col = self.incremental_column
        with self._execute(sql, params) as result:
            index = self._column_index(result.columns)
            writer = make_writer(self.output_format, out, result.columns)
            top: Any = None
            chunks = 0
            for chunk in result.chunks:
                if not chunk:
                    continue
                writer.write(chunk)
                chunks += 1
                if index is not None:
                    for row in chunk:
                        top = larger(top, row[index])
            if writer.rows == 0:
                since = f" above {col} = {plan.watermark.value!r}" if plan.watermark else ""
                raise SkipItem(f"the query returned no rows{since}")
            writer.close()
        log.info("%s: exported %d row(s) in %d chunk(s)", candidate.name, writer.rows, chunks)
        if col is None:
            return None
        if top is None:  # every exported row had NULL there: cannot happen (IS NOT NULL)
            raise IngestError(f"{candidate.name}: no value of {col} to move the watermark to")
        try:
            kind_of(top)
        except TypeError as exc:
            raise ConfigError(f"{self._label}.incremental_column", str(exc)) from exc
        new = Watermark(col, top)
        log.info(
            "%s: watermark %s -> %s", self.source_id, plan.watermark and plan.watermark.value, top
        )
        return {STATE_KEY: new.to_state(writer.rows)}

    def _column_index(self, columns: list[Column]) -> int | None:
        col = self.incremental_column
        if col is None:
            return None
        for i, c in enumerate(columns):
            if c.name.lower() == col.lower():
                return i
        raise ConfigError(
            f"{self._label}.incremental_column",
            f"{col!r} is not a column of the query's result ({', '.join(c.name for c in columns)})",
        )

    # ----------------------------------------------------------------- operator check
    def test_connection(self, day: date | None = None) -> dict[str, Any]:
        """Log in, and check the query compiles and its tables exist, reading no rows.

        Returns `{"ok": True, "columns": [...]}`; raises `ConfigError` naming the field at
        fault (credentials, query, incremental_column) or `WarehouseQueryError`.
        """
        self.preflight()
        day = day or self.today()
        mark = None
        if self.incremental_column and self.initial_watermark:
            mark = Watermark(self.incremental_column, parse_initial(self.initial_watermark))
        sql, params = self.build_query(mark, self.rendered_parameters(day))
        names = self._probe(sql, params)
        if self.incremental_column:
            self._column_index([Column(n) for n in names])
        return {"ok": True, "source_id": self.source_id, "columns": names}


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger("ingest.warehouse")
