"""BigQuery query source: a SQL query's result exported to a file each run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect_gcp.bigquery import BigQueryWarehouse
from pydantic import Field

from blocks.core.errors import ConfigError, CredentialsError, is_retryable
from blocks.core.file_formats import Column
from blocks.core.watermark_values import value_kind
from blocks.warehouse.query import QueryResult, WarehouseQueryError, WarehouseQuerySource, scrub


def arrow_type(schema_field: Any) -> Any:
    """The Arrow type of one BigQuery result field (nested and repeated ones as JSON text)."""
    import pyarrow as pa

    if schema_field.mode == "REPEATED":
        return pa.string()
    return {
        "INTEGER": pa.int64(),
        "INT64": pa.int64(),
        "FLOAT": pa.float64(),
        "FLOAT64": pa.float64(),
        "NUMERIC": pa.decimal128(38, 9),
        "BOOLEAN": pa.bool_(),
        "BOOL": pa.bool_(),
        "STRING": pa.string(),
        "BYTES": pa.binary(),
        "DATE": pa.date32(),
        "DATETIME": pa.timestamp("us"),
        "TIMESTAMP": pa.timestamp("us", tz="UTC"),
        "TIME": pa.time64("us"),
    }.get(schema_field.field_type, pa.string())  # BIGNUMERIC, JSON, RECORD, GEOGRAPHY: text


def query_parameter(name: str, value: Any) -> Any:
    """A typed BigQuery query parameter for a Python value."""
    from google.cloud import bigquery

    if isinstance(value, (list, tuple)):
        kind = _scalar_type(value[0]) if value else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, list(value))
    return bigquery.ScalarQueryParameter(name, _scalar_type(value), value)


# Python value kinds (blocks/core/watermark_values.py) -> BigQuery parameter types.
_PARAMETER_TYPES = {
    "bool": "BOOL",
    "int": "INT64",
    "float": "FLOAT64",
    "decimal": "NUMERIC",
    "timestamp": "TIMESTAMP",
    "datetime": "DATETIME",
    "date": "DATE",
    "time": "TIME",
    "bytes": "BYTES",
}


def _scalar_type(value: Any) -> str:
    return _PARAMETER_TYPES.get(value_kind(value) or "", "STRING")


class BigQueryQuerySource(WarehouseQuerySource):
    """Exports the result of a BigQuery (GoogleSQL) query to a CSV, JSON Lines or Parquet
    file each run, fully or incrementally: past a watermark kept in the ledger, with a lag
    window on time columns (`lag_seconds`) and `primary_key` for repeated values of other
    columns.

    Placeholders are named query parameters: `WHERE region = @region` with
    `parameters={"region": "EU"}` (typed from the value: text, integer, float, boolean,
    or a list for `IN UNNEST(@list)`). The result is read page by page (`chunk_size` rows
    a page) and each page is written before the next is requested.
    """

    _block_type_name = "BigQuery Query Source"
    _block_type_slug = "bigquery-query-source"
    _description = (
        "Export a BigQuery query (named parameters, optional incremental watermark with a "
        "lag window) to CSV, JSON Lines or Parquet, landed exactly once."
    )
    _documentation_url = "https://cloud.google.com/bigquery/docs/parameterized-queries"

    bigquery: BigQueryWarehouse = Field(
        ...,
        title="BigQuery warehouse",
        description="Saved BigQuery Warehouse block (holds the GCP Credentials block).",
    )
    project: str | None = Field(
        default=None,
        description="Project that runs (and pays for) the query; empty: the credentials' project.",
    )
    location: str | None = Field(
        default=None, description="Location of the datasets, e.g. 'EU' or 'us-central1'."
    )
    maximum_bytes_billed: int | None = Field(
        default=None,
        ge=1,
        description="Refuse a query that would bill more bytes than this (cost guard).",
    )
    job_timeout_seconds: float = Field(
        default=3600, gt=0, description="Give up waiting for the query job after this long."
    )
    api_timeout_seconds: float = Field(
        default=60,
        gt=0,
        le=3600,
        description=(
            "Time bound of each BigQuery API call, its retries included (starting a job, "
            "the dry runs of test_connection): an unreachable endpoint fails after this "
            "long instead of retrying for 10 minutes."
        ),
    )
    api_endpoint: str | None = Field(
        default=None,
        description=(
            "Override the BigQuery API endpoint (Private Service Connect, a local "
            "emulator); empty: Google's public endpoint."
        ),
    )

    def _placeholder(self, name: str) -> str:
        return f"@{name}"

    # ----------------------------------------------------------------- client
    @property
    def _credentials_field(self) -> str:
        return f"{self._label}.bigquery.gcp_credentials"

    def _secrets(self) -> list[str | None]:
        info = self.bigquery.gcp_credentials.service_account_info
        if info is None:
            return []
        value = info.get_secret_value()
        return [value.get("private_key"), value.get("private_key_id")]

    def client(self) -> Any:
        """A BigQuery client built from the nested credentials block."""
        creds = self.bigquery.gcp_credentials
        project = self.project or creds.project
        try:
            if not self.api_endpoint:
                return creds.get_bigquery_client(project=project, location=self.location)
            from google.api_core.client_options import ClientOptions
            from google.cloud import bigquery

            return bigquery.Client(
                project=project,
                credentials=creds.get_credentials_from_service_account(),
                location=self.location,
                client_options=ClientOptions(api_endpoint=self.api_endpoint),
            )
        except Exception as exc:
            raise ConfigError(
                self._credentials_field,
                f"no usable Google credentials: {type(exc).__name__}: "
                + scrub(str(exc), self._secrets()),
            ) from None

    def _error(self, exc: BaseException) -> Exception:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        text = scrub(getattr(exc, "message", None) or str(exc), self._secrets())
        if isinstance(exc, auth_exc.GoogleAuthError) and not is_retryable(exc):
            return CredentialsError(
                self._credentials_field, f"Google refused the credentials: {text}"
            )
        if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden)):
            return CredentialsError(
                self._credentials_field,
                f"BigQuery refused access ({exc.code}): {text}",
            )
        if isinstance(exc, (gexc.BadRequest, gexc.NotFound)):
            return ConfigError(f"{self._label}.query", f"BigQuery rejected the query: {text}")
        if isinstance(exc, gexc.RetryError):  # api_timeout_seconds ran out: say where, why
            cause = exc.cause
            text = (
                f"no answer from {self.api_endpoint or 'the BigQuery API'} within "
                f"api_timeout_seconds={self.api_timeout_seconds:g}"
                + (f" (last error: {type(cause).__name__})" if cause is not None else "")
            )
        return WarehouseQueryError(
            f"{self._label}: BigQuery query failed: {type(exc).__name__}: {text}",
            retryable=is_retryable(exc),
        )

    def _bounded(self) -> dict[str, Any]:
        """Arguments bounding one `client.query` call. The client's defaults retry a refused
        connection for 600 s, and wrap that in a second 600 s job-insert retry unless
        `job_retry` is None; a failed job is retried by the pipeline's item retries."""
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        bound = self.api_timeout_seconds
        return {"retry": DEFAULT_RETRY.with_timeout(bound), "timeout": bound, "job_retry": None}

    def _job_config(self, params: dict[str, Any], dry_run: bool = False) -> Any:
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=[query_parameter(k, v) for k, v in params.items()],
            use_legacy_sql=False,
            maximum_bytes_billed=self.maximum_bytes_billed,
            dry_run=dry_run,
            use_query_cache=not dry_run,
        )

    @contextmanager
    def _execute(self, sql: str, params: dict[str, Any]) -> Iterator[QueryResult]:
        client = self.client()
        try:
            try:
                job = client.query(sql, job_config=self._job_config(params), **self._bounded())
                rows = job.result(page_size=self.chunk_size, timeout=self.job_timeout_seconds)
            except Exception as exc:
                raise self._error(exc) from None
            columns = [Column(f.name, arrow_type(f)) for f in rows.schema]
            yield QueryResult(columns, self._pages(rows))
        finally:
            client.close()

    def _pages(self, rows: Any) -> Iterator[list[tuple[Any, ...]]]:
        pages = iter(rows.pages)
        while True:
            try:
                page = next(pages, None)
                if page is None:
                    return
                chunk = [tuple(r.values()) for r in page]
            except Exception as exc:
                raise self._error(exc) from None
            yield chunk

    def _probe(self, sql: str, params: dict[str, Any]) -> list[Column]:
        client = self.client()
        try:
            # A dry run compiles the query and resolves its tables, reading (and billing)
            # nothing; a SELECT 1 first tells bad credentials from a bad query.
            dry = self._job_config({}, dry_run=True)
            client.query("SELECT 1", job_config=dry, **self._bounded())
            dry = self._job_config(params, dry_run=True)
            job = client.query(sql, job_config=dry, **self._bounded())
            return [Column(f.name, arrow_type(f)) for f in job.schema or []]
        except Exception as exc:
            raise self._error(exc) from None
        finally:
            client.close()
