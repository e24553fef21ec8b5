"""Brings a ledger created by older code up to `SCHEMA_VERSION`, in place.

Each version only adds nullable columns (`ledger_schema.ADDED_COLUMNS`), so a migration is
`ALTER TABLE ... ADD COLUMN` for each column still missing, then the version bump. It is
idempotent and safe when several workers start at once: a column another process added
meanwhile is seen on the next look, and the version only moves forward.
"""

from __future__ import annotations

from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from blocks.core import ledger_schema as t


def missing_columns(conn: Connection, target: int) -> list[tuple[str, str]]:
    """(table, column) pairs that versions up to `target` add and the database lacks."""
    inspector = inspect(conn)
    have: dict[str, set[str]] = {}
    missing = []
    for version in sorted(v for v in t.ADDED_COLUMNS if v <= target):
        for table, column in t.ADDED_COLUMNS[version]:
            if table not in have:
                have[table] = {c["name"] for c in inspector.get_columns(table)}
            if column not in have[table]:
                missing.append((table, column))
    return missing


def _add_column(engine: Engine, table: str, column: str) -> None:
    col = t.metadata.tables[table].c[column]
    quote = engine.dialect.identifier_preparer.quote
    col_type = col.type.compile(dialect=engine.dialect)
    ddl = f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {col_type}"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
    except (OperationalError, ProgrammingError):
        # Another process added it first ("duplicate column"); anything else shows below.
        with engine.connect() as conn:
            if (table, column) in missing_columns(conn, max(t.ADDED_COLUMNS)):
                raise


def migrate(engine: Engine, current: int) -> int:
    """Add what versions after `current` need; returns the version now recorded."""
    if current >= t.SCHEMA_VERSION:
        return current
    with engine.connect() as conn:
        missing = missing_columns(conn, t.SCHEMA_VERSION)
    for table, column in missing:
        _add_column(engine, table, column)
    wanted = {n for v, names in t.ADDED_INDEXES.items() if v > current for n in names}
    for table in t.metadata.sorted_tables:
        for index in table.indexes:
            if index.name in wanted:
                try:
                    index.create(engine, checkfirst=True)
                except (OperationalError, ProgrammingError):
                    # another process created it between the check and the create
                    with engine.connect() as conn:
                        present = {i["name"] for i in inspect(conn).get_indexes(table.name)}
                    if index.name not in present:
                        raise
    with engine.begin() as conn:
        recorded = conn.execute(
            select(t.meta.c.value).where(t.meta.c.key == "schema_version")
        ).scalar()
        if recorded is not None and int(recorded) < t.SCHEMA_VERSION:
            conn.execute(
                update(t.meta)
                .where(t.meta.c.key == "schema_version")
                .values(value=str(t.SCHEMA_VERSION))
            )
    return t.SCHEMA_VERSION
