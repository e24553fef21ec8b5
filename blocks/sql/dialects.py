"""What the SQL source asks PostgreSQL and MySQL/MariaDB beyond plain SELECTs.

- `session_setup`: every connection runs in UTC (`SET TIME ZONE 'UTC'` /
  `SET time_zone = '+00:00'`), so `now()`, `timestamptz` and MySQL `TIMESTAMP` values
  come back in UTC whatever the server's default is.
- `clock_and_inflight`: the database clock and the start times of the other transactions
  still open, read in one statement. The SQL source caps the upper bound of a timestamp
  window below the oldest of them: a transaction that started before the cap and is still
  open may later commit rows stamped earlier (`now()` is its start time on PostgreSQL);
  everything below the cap is already committed (or rolled back), so a window that ends
  there cannot miss a late commit. PostgreSQL: `pg_stat_activity.xact_start` of client
  backends of this database (needs superuser or `pg_read_all_stats` to see other users'
  sessions). MySQL/MariaDB: `information_schema.INNODB_TRX.trx_started` (needs PROCESS),
  which is in the server's SYSTEM time zone, not the session's: converted to UTC in SQL.
  Without the privilege the cap is off and only the lag window protects late commits: the
  source logs that.
- `column_kind`: timestamp with or without time zone, integer, or other, from the DB-API
  cursor description (PostgreSQL type OIDs, MySQL field type codes).
- `fraction_digits`: the fractional-second precision a timestamp column stores
  (PostgreSQL `atttypmod`, MySQL `DATETIME_PRECISION`): window bounds are cut to it.
- `arrow_type`: the Arrow (Parquet) type of a result column, from the same description.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, text

ColumnKind = Literal["timestamptz", "timestamp", "date", "integer", "other"]

_PG_KINDS = {1184: "timestamptz", 1114: "timestamp", 1082: "date", 20: "integer", 21: "integer"}
_PG_KINDS[23] = "integer"
_PG_KINDS[1700] = "integer"  # numeric: accepted for id columns (bigint-like sequences)
# MySQL: TIMESTAMP (7) is stored in UTC and read in the session zone, which we set to UTC.
_MYSQL_KINDS = {7: "timestamptz", 12: "timestamp", 10: "date", 14: "date"}
_MYSQL_KINDS.update({1: "integer", 2: "integer", 3: "integer", 8: "integer", 9: "integer"})
_MYSQL_KINDS[246] = "integer"


def is_postgres(dialect: str) -> bool:
    return dialect == "postgresql"


def session_setup(dialect: str) -> str | None:
    if dialect == "postgresql":
        return "SET TIME ZONE 'UTC'"
    if dialect in ("mysql", "mariadb"):
        return "SET time_zone = '+00:00'"
    return None


def column_kind(dialect: str, description: Sequence[Any]) -> ColumnKind:
    code = description[1]
    table = _PG_KINDS if dialect == "postgresql" else _MYSQL_KINDS
    return table.get(code, "other")  # type: ignore[return-value]


def fraction_digits(conn: Connection, dialect: str, description: Any) -> int:
    """How many fractional-second digits a timestamp result column stores (0..6).

    PostgreSQL: `pg_attribute.atttypmod` of the table column the result comes from (the
    DB-API description's `table_oid`/`table_column`; -1 means the default, 6). MySQL/
    MariaDB: the result metadata's decimals (the column's `DATETIME_PRECISION`). Unknown
    (an expression, a driver without the metadata): 0, whole seconds, which is always safe
    for a window bound (it is only coarser)."""
    if dialect == "postgresql":
        oid = getattr(description, "table_oid", None)
        attnum = getattr(description, "table_column", None)
        if not oid or not attnum:
            return 0
        typmod = conn.execute(
            text("SELECT atttypmod FROM pg_attribute WHERE attrelid = :o AND attnum = :n"),
            {"o": oid, "n": attnum},
        ).scalar()
        if typmod is None:
            return 0
        return 6 if typmod < 0 else max(0, min(int(typmod), 6))
    scale = description[5] if len(description) > 5 else None
    return int(scale) if isinstance(scale, int) and 0 <= scale <= 6 else 0


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# INNODB_TRX.trx_started is a DATETIME (whole seconds) in the server process's own SYSTEM
# time zone (InnoDB fills it with localtime_r, on MySQL and MariaDB alike), whatever the
# session or global `time_zone` says. CONVERT_TZ from 'SYSTEM' uses the same localtime
# rules, needs no time zone tables, and converts each value with the offset of its own
# date (DST). A local time inside a DST fold (clocks set back) names two instants and
# CONVERT_TZ may pick the later one; the value converted two hours earlier, plus two hours,
# gives the earlier one, so LEAST keeps the cap at or below the real start (at worst held
# back by the fold's size for a transaction started within ~2 h after the clocks went back).
# Should the conversion give NULL, no zone on Earth is more than 14 h ahead of UTC.
_TRX_STARTED_UTC = (
    "COALESCE(LEAST(CONVERT_TZ(trx_started, 'SYSTEM', '+00:00'), "
    "CONVERT_TZ(trx_started - INTERVAL 2 HOUR, 'SYSTEM', '+00:00') + INTERVAL 2 HOUR), "
    "trx_started - INTERVAL 14 HOUR)"
)


def can_see_other_transactions(conn: Connection, dialect: str) -> bool:
    """Whether this login may read other sessions' transaction start times."""
    try:
        if dialect == "postgresql":
            return bool(
                conn.exec_driver_sql(
                    "SELECT current_setting('is_superuser') = 'on' "
                    "OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
                ).scalar()
            )
        conn.exec_driver_sql("SELECT 1 FROM information_schema.INNODB_TRX LIMIT 1").all()
        return True
    except Exception:
        return False


def clock_and_inflight(
    conn: Connection, dialect: str, with_inflight: bool
) -> tuple[datetime, list[tuple[Any, datetime]]]:
    """(database clock in UTC, [(session id, transaction start in UTC)] of the other open
    transactions). The clock is read FIRST: a transaction that starts after it has a start
    time (and `now()`) at or above the clock, so it cannot stamp rows below the cap."""
    if dialect == "postgresql":
        now = conn.exec_driver_sql("SELECT clock_timestamp()").scalar()
        rows = []
        if with_inflight:
            rows = conn.execute(
                text(
                    "SELECT pid, xact_start FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND xact_start IS NOT NULL"
                )
            ).all()
    else:
        # UTC_TIMESTAMP does not depend on the session time_zone (NOW() would).
        now = _utc(conn.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar())
        found: list[tuple[Any, datetime]] = []
        if with_inflight:
            # trx_started has whole seconds, and InnoDB starts a transaction only when its
            # first statement reaches the table, AFTER that statement fixed NOW(): a row can
            # be stamped just before its transaction's start. One second earlier covers the
            # rounding and that gap once the statement is done...
            trx = conn.execute(
                text(
                    f"SELECT trx_mysql_thread_id, {_TRX_STARTED_UTC} "
                    "FROM information_schema.INNODB_TRX "
                    "WHERE trx_mysql_thread_id <> CONNECTION_ID()"
                )
            ).all()
            found = [(r[0], _utc(r[1]) - timedelta(seconds=1)) for r in trx]
            # ...and while it runs (not yet in INNODB_TRX: seen losing a row in
            # tests/test_sql_no_loss_property.py), its own start caps the bound: a statement
            # stamps NOW() = its start.
            found += [(("statement", sid), now - age) for sid, age in _running_statements(conn)]
        return now, found
    return _utc(now), [(r[0], _utc(r[1])) for r in rows]  # type: ignore[return-value]


# InnoDB serves INFORMATION_SCHEMA.INNODB_TRX from a cache refreshed at most every 0.1 s
# (trx_i_s_cache): a transaction that began just before the read may be missing from it.
# The timestamp bound stays this far behind the clock on MySQL/MariaDB: a transaction the
# view missed began above the bound, so its rows are stamped above it too.
# Seen losing rows in tests/test_sql_no_loss_property.py (a row stamped 10 ms before the
# clock read, its transaction still open, INNODB_TRX empty).
# InnoDB refreshes that cache only when it was last read more than 0.1 s ago: a reader
# polling faster than that keeps it frozen. Our own reads are spaced by this much where a
# fresh view is needed (id mode); another tool polling INNODB_TRX several times a second
# could still freeze it for longer than INFLIGHT_VIEW_LAG: `lag_seconds` covers that.
INFLIGHT_VIEW_LAG = {"mysql": timedelta(seconds=1), "mariadb": timedelta(seconds=1)}
INFLIGHT_VIEW_REFRESH_SECONDS = {"mysql": 0.15, "mariadb": 0.15}


def _running_statements(conn: Connection) -> list[tuple[Any, timedelta]]:
    """(session id, how long its current statement has run) of the other sessions running
    a statement. MariaDB gives milliseconds (`TIME_MS`); MySQL only whole seconds (`TIME`,
    taken one second longer)."""
    where = "WHERE ID <> CONNECTION_ID() AND COMMAND IN ('Query', 'Execute')"
    try:
        rows = conn.execute(
            text(f"SELECT ID, TIME_MS FROM information_schema.PROCESSLIST {where}")
        ).all()
        return [(r[0], timedelta(milliseconds=float(r[1] or 0))) for r in rows]
    except Exception:  # MySQL: no TIME_MS
        conn.rollback()
        rows = conn.execute(
            text(f"SELECT ID, TIME FROM information_schema.PROCESSLIST {where}")
        ).all()
        return [(r[0], timedelta(seconds=int(r[1] or 0) + 1)) for r in rows]


def still_open(
    conn: Connection, dialect: str, sessions: list[tuple[Any, datetime]]
) -> list[tuple[Any, datetime]]:
    """Which of these (session, transaction start) pairs are still the same open transaction."""
    if not sessions:
        return []
    _, current = clock_and_inflight(conn, dialect, True)
    now_open = set(current)
    return [s for s in sessions if s in now_open]


# PostgreSQL type OIDs and MySQL FIELD_TYPE codes -> Arrow types. Anything else is written
# as text, which is exact (numeric without a declared scale, uuid, json, intervals...).
_PG_OIDS = {
    16: "bool",
    20: "int64",
    21: "int16",
    23: "int32",
    26: "int64",
    700: "float32",
    701: "float64",
    17: "binary",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
}
_MYSQL_CODES = {
    1: "int64",  # TINY (sign unknown from the code alone: widest safe type)
    2: "int64",
    3: "int64",
    8: "int64",
    9: "int64",
    4: "float32",
    5: "float64",
    10: "date",
    12: "timestamp",
    7: "timestamptz",  # TIMESTAMP: stored in UTC, read with session time zone +00:00
}


def arrow_type(dialect: str, description: Sequence[Any]) -> Any:
    """The Arrow type of one DB-API cursor description entry."""
    import pyarrow as pa

    code = description[1]
    if dialect == "postgresql":
        kind = _PG_OIDS.get(code)
        if code == 1700:  # numeric(p, s): exact decimal when the scale is declared
            precision, scale = description[4], description[5]
            if precision and scale is not None and 0 < precision <= 38:
                return pa.decimal128(precision, scale)
    else:
        kind = _MYSQL_CODES.get(code)
        # DECIMAL, TEXT and BLOB codes do not say precision or charset reliably through
        # pymysql: they are written as text (exact; blobs as \x<hex>).
    return {
        "bool": pa.bool_(),
        "int16": pa.int16(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "binary": pa.binary(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
    }.get(kind, pa.string())
