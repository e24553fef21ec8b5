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
        connect_args=connector.connect_args or {},
        pool_pre_ping=True,
    )
    engine.dispose()  # never connected: the pool is lazy
    return fast
