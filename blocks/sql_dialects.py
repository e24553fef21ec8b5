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
  sessions). MySQL/MariaDB: `information_schema.INNODB_TRX.trx_started` (needs PROCESS).
  Without the privilege the cap is off and only the lag window protects late commits: the
  source logs that.
- `column_kind`: timestamp with or without time zone, integer, or other, from the DB-API
  cursor description (PostgreSQL type OIDs, MySQL field type codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
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


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


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
        now = conn.exec_driver_sql("SELECT NOW(6)").scalar()
        rows = []
        if with_inflight:
            rows = conn.execute(
                text(
                    "SELECT trx_mysql_thread_id, trx_started FROM information_schema.INNODB_TRX "
                    "WHERE trx_mysql_thread_id <> CONNECTION_ID()"
                )
            ).all()
    return _utc(now), [(r[0], _utc(r[1])) for r in rows]  # type: ignore[return-value]


def still_open(
    conn: Connection, dialect: str, sessions: list[tuple[Any, datetime]]
) -> list[tuple[Any, datetime]]:
    """Which of these (session, transaction start) pairs are still the same open transaction."""
    if not sessions:
        return []
    _, current = clock_and_inflight(conn, dialect, True)
    now_open = set(current)
    return [s for s in sessions if s in now_open]
