"""Snowflake query source: a SQL query's result exported to a file each run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prefect_snowflake import SnowflakeConnector
from pydantic import Field

from blocks.core.errors import ConfigError, CredentialsError, is_retryable
from blocks.core.file_formats import Column
from blocks.warehouse.query import QueryResult, WarehouseQueryError, WarehouseQuerySource, scrub

# Snowflake error numbers that mean "the login was refused" (wrong password, locked or
# disabled user, bad key, expired token, unknown account) rather than "try again".
_LOGIN_REFUSED = {390100, 390101, 390102, 390103, 390104, 390144, 390186, 390189, 390318, 394304}


def arrow_type(meta: Any) -> tuple[Any, bool]:
    """(Arrow type, value is JSON text) of one Snowflake cursor description entry."""
    import pyarrow as pa

    code = meta.type_code
    if code == 0:  # FIXED: NUMBER(p, s)
        scale = meta.scale or 0
        precision = meta.precision or 38
        if scale == 0:
            return pa.int64(), False
        return pa.decimal128(min(precision, 38), scale), False
    if code in (5, 9, 10, 17):  # VARIANT, OBJECT, ARRAY, MAP: JSON text
        return pa.string(), True
    return {
        1: pa.float64(),
        2: pa.string(),
        3: pa.date32(),
        4: pa.timestamp("us"),
        6: pa.timestamp("us", tz="UTC"),
        7: pa.timestamp("us", tz="UTC"),
        8: pa.timestamp("us"),
        11: pa.binary(),
        12: pa.time64("us"),
        13: pa.bool_(),
    }.get(code, pa.string()), False


class SnowflakeQuerySource(WarehouseQuerySource):
    """Exports the result of a Snowflake query to a CSV, JSON Lines or Parquet file each
    run, fully or incrementally: past a watermark kept in the ledger, with a lag window on
    time columns (`lag_seconds`) and `primary_key` for repeated values of other columns.

    Placeholders are the connector's pyformat: `WHERE region = %(region)s` with
    `parameters={"region": "EU"}` (values are escaped by the connector, never spliced by
    this block). Write a literal `%` as `%%`. Rows are read with `fetchmany(chunk_size)`,
    so memory stays bounded whatever the result size.
    """

    _block_type_name = "Snowflake Query Source"
    _block_type_slug = "snowflake-query-source"
    _description = (
        "Export a Snowflake query (bound parameters, optional incremental watermark with a "
        "lag window) to CSV, JSON Lines or Parquet, landed exactly once."
    )
    _documentation_url = (
        "https://docs.snowflake.com/en/developer-guide/python-connector/python-connector-api"
    )

    snowflake: SnowflakeConnector = Field(
        ...,
        title="Snowflake connection",
        description=("Saved Snowflake Connector block (credentials, database, warehouse, schema)."),
    )
    host: str | None = Field(
        default=None,
        description="Override the host name (PrivateLink, proxies); empty: from the account.",
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="Override the port.")
    protocol: Literal["https", "http"] = Field(
        default="https", description="'https' always, except against a local test server."
    )
    login_timeout_seconds: int = Field(
        default=60, ge=1, description="Give up logging in after this many seconds."
    )
    network_timeout_seconds: int | None = Field(
        default=None, ge=1, description="Give up on one network call after this many seconds."
    )
    session_parameters: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="Snowflake session parameters, e.g. {'QUERY_TAG': 'ingest'}.",
    )

    def _placeholder(self, name: str) -> str:
        return f"%({name})s"

    # ----------------------------------------------------------------- connection
    def _secrets(self) -> list[str | None]:
        creds = self.snowflake.credentials
        out: list[str | None] = []
        for secret in (creds.password, creds.private_key_passphrase, creds.token):
            out.append(secret.get_secret_value() if secret is not None else None)
        return out

    def _where(self) -> str:
        creds = self.snowflake.credentials
        return f"user {creds.user!r} on account {creds.account!r}"

    def connect(self) -> Any:
        """A new connection (closed by the caller), with errors that name the block field."""
        kwargs: dict[str, Any] = {
            "database": self.snowflake.database,
            "warehouse": self.snowflake.warehouse,
            "schema": self.snowflake.schema_,
            "protocol": self.protocol,
            "login_timeout": self.login_timeout_seconds,
        }
        if self.host:
            kwargs["host"] = self.host
        if self.port:
            kwargs["port"] = self.port
        if self.network_timeout_seconds:
            kwargs["network_timeout"] = self.network_timeout_seconds
        if self.session_parameters:
            kwargs["session_parameters"] = dict(self.session_parameters)
        try:
            import snowflake.connector

            return snowflake.connector.connect(**self._credential_params(), **kwargs)
        except Exception as exc:
            raise self._login_error(exc) from None

    def _credential_params(self) -> dict[str, Any]:
        """`SnowflakeCredentials.get_client`'s parameters without the unset (None) ones.

        A credentials block loaded from the API has every field set, many to None, and
        connector 5.x refuses None options ("Unsupported connection option type for
        'private_key_path': NoneType"), so the block's own `get_client` fails for saved
        blocks. Same mapping otherwise: secrets revealed, Okta endpoint, private key as DER.
        """
        creds = self.snowflake.credentials
        params: dict[str, Any] = {"application": "Prefect_Snowflake_Collection"}
        for key, value in creds.model_dump(exclude_none=True).items():
            if key == "block_type_slug":
                continue
            params[key] = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if params.get("authenticator") == "okta_endpoint":
            params["authenticator"] = params.pop("endpoint", None) or params.pop(
                "okta_endpoint", None
            )
        der = creds.resolve_private_key()
        if der is not None:
            params["private_key"] = der
            params.pop("password", None)
            params.pop("private_key_passphrase", None)
        params.pop("private_key_path", None)
        if isinstance(params.get("private_key"), str):  # PEM text: resolved above
            params.pop("private_key")
        return params

    def _login_error(self, exc: BaseException) -> Exception:
        text = scrub(getattr(exc, "raw_msg", None) or str(exc), self._secrets())
        errno = getattr(exc, "errno", None)
        if errno in _LOGIN_REFUSED or "password" in text.lower() or "authenticat" in text.lower():
            return CredentialsError(
                f"{self._label}.snowflake.credentials",
                f"Snowflake refused the login of {self._where()}: {text}",
            )
        return WarehouseQueryError(
            f"{self._label}: cannot connect to Snowflake as {self._where()}: "
            f"{type(exc).__name__}: {text}"
        )

    def _query_error(self, exc: BaseException) -> Exception:
        from snowflake.connector.errors import ProgrammingError

        text = scrub(getattr(exc, "raw_msg", None) or str(exc), self._secrets())
        errno = getattr(exc, "errno", None)
        code = f" (Snowflake error {errno:06d})" if isinstance(errno, int) and errno >= 0 else ""
        if isinstance(exc, (TypeError, ValueError, KeyError)):
            # raised by the connector's client-side pyformat binding, before any I/O
            return ConfigError(
                f"{self._label}.query",
                f"cannot bind the parameters ({type(exc).__name__}: {text}); placeholders are "
                "%(name)s and a literal % is written %% when the query has parameters",
            )
        if isinstance(exc, ProgrammingError):
            # SQL compilation errors, unknown objects, missing privileges: fix the block.
            return ConfigError(
                f"{self._label}.query", f"Snowflake rejected the query{code}: {text}"
            )
        return WarehouseQueryError(
            f"{self._label}: Snowflake query failed{code}: {text}", retryable=is_retryable(exc)
        )

    @contextmanager
    def _execute(self, sql: str, params: dict[str, Any]) -> Iterator[QueryResult]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, params or None)
            except Exception as exc:
                raise self._query_error(exc) from None
            columns = [Column(m.name, *arrow_type(m)) for m in cur.description]
            yield QueryResult(columns, self._chunks(cur))
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def _chunks(self, cur: Any) -> Iterator[list[tuple[Any, ...]]]:
        while True:
            try:
                rows = cur.fetchmany(self.chunk_size)
            except Exception as exc:
                raise self._query_error(exc) from None
            if not rows:
                return
            yield [tuple(r) for r in rows]

    def _probe(self, sql: str, params: dict[str, Any]) -> list[Column]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(f"SELECT * FROM (\n{sql}\n) AS ingest_probe LIMIT 0", params or None)
            except Exception as exc:
                raise self._query_error(exc) from None
            return [Column(m.name, *arrow_type(m)) for m in cur.description]
        finally:
            try:
                conn.close()
            except Exception:
                pass
