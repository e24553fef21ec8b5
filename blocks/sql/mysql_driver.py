"""Which Python driver talks to MySQL/MariaDB: mysqlclient (C) when it can, else pymysql.

The connector block says `mysql+pymysql` (prefect-sqlalchemy's sync MySQL driver). pymysql
decodes every row in Python; mysqlclient (`MySQLdb`, the `sql-fast` extra, built against
libmariadb) does it in C and returns the same Python types (int, str, Decimal, datetime,
bytes), so the files written are the same. `auto` switches to mysqlclient when it is
importable and the connector has no `connect_args` (their keywords differ between the two
drivers; a block that sets them keeps pymysql). Any other dialect or driver is left alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine

from blocks.core.errors import ConfigError


def mysqlclient_available() -> bool:
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        return False
    return True


def _conversions() -> dict:
    """mysqlclient's converters with DATETIME/TIMESTAMP/DATE parsed by the C
    `fromisoformat` (its own parse them in Python, ~10x slower per cell); whatever that
    refuses goes to mysqlclient's own converter, and what that refuses too (zero or
    invalid dates: `0000-00-00`, `2026-00-10`) stays the server's text, as pymysql hands it
    back. mysqlclient's own converter says None there: a NOT NULL zero date would land as
    an empty field, and only when mysqlclient happened to be installed."""
    from datetime import date, datetime

    from MySQLdb import converters, times
    from MySQLdb.constants import FIELD_TYPE

    def date_time(text: str) -> Any:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return times.DateTime_or_None(text) or text

    def day(text: str) -> Any:
        try:
            return date.fromisoformat(text)
        except ValueError:
            return times.Date_or_None(text) or text

    conv = dict(converters.conversions)
    conv[FIELD_TYPE.DATETIME] = conv[FIELD_TYPE.TIMESTAMP] = date_time
    conv[FIELD_TYPE.DATE] = day
    return conv


def choose(connector: Any, choice: str, field: str) -> Engine:
    """The engine for `connector`: its own, or the same URL on mysqlclient (see module)."""
    engine = connector.get_engine(pool_pre_ping=True)
    url = engine.url
    if url.get_backend_name() not in ("mysql", "mariadb") or choice == "pymysql":
        return engine
    if url.get_driver_name() != "pymysql":
        return engine  # the connector names another driver itself: respected
    if choice == "auto" and (connector.connect_args or not mysqlclient_available()):
        return engine
    if not mysqlclient_available():
        raise ConfigError(field, "mysqlclient is not installed (pip install '.[sql-fast]')")
    fast = create_engine(
        url.set(drivername=f"{url.get_backend_name()}+mysqldb"),
        connect_args={**(connector.connect_args or {}), "conv": _conversions()},
        pool_pre_ping=True,
    )
    engine.dispose()  # never connected: the pool is lazy
    return fast
