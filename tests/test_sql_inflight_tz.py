"""The MariaDB in-flight cap on servers whose system time zone is not UTC (ingest-sql flow).

`information_schema.INNODB_TRX.trx_started` is a DATETIME in the server process's own
(SYSTEM) time zone, whatever the session `time_zone` says. Read as UTC, a server in
Asia/Tokyo put every open transaction 9 hours in the future (the cap never held and the
transaction's rows, committed after the run, were lost), and a server in America/New_York
held the bound 5 hours back (nothing landed). Each test here starts its own `mariadbd`
under that `TZ` (`tests.sql_servers.mariadb_server_in_tz`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from blocks.sql.block import SqlSource
from tests.landed_rows import counts, delivered_ids
from tests.sql_servers import SourceDb, mariadb_database, mariadb_server_in_tz
from tests.test_sql import run, source_for, watermark

pytestmark = pytest.mark.usefixtures("prefect_api")
UTC = UTC
SLOW_ROWS = 501


@pytest.fixture(scope="module", params=["Asia/Tokyo", "America/New_York"])
def tz_source(request) -> Iterator[tuple[str, SourceDb]]:
    """(TZ, a throwaway database) on a MariaDB server started under that TZ."""
    with (
        mariadb_server_in_tz(request.param) as (host, port, user),
        mariadb_database(host, port, user, "sqltz") as db,
    ):
        yield request.param, db


# Column kinds: TIMESTAMP (an instant; read in UTC by the source) and a naive DATETIME that
# the application fills with NOW() in the server's SYSTEM zone, which the source is told
# through `timestamp_timezone`.
COLUMNS = {
    "timestamp": "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
    "datetime_system_zone": "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
}


@pytest.mark.parametrize("column", list(COLUMNS))
def test_transaction_open_across_a_run_loses_nothing_and_does_not_hold_hours_back(
    save_block, sqlite_ledger, queue, tz_source, column
) -> None:
    """A row committed before a transaction opens lands in the run; the 501 rows of the
    transaction, open across that run and committed after it, land in the next run, as
    does a row committed during it with a later stamp: each row exactly once."""
    tz, db = tz_source
    table = f"orders_{column}"
    db.run(
        f"DROP TABLE IF EXISTS `{table}`",
        f"CREATE TABLE `{table}` (id int AUTO_INCREMENT PRIMARY KEY, "
        f"updated_at {COLUMNS[column]}, note varchar(40), KEY (updated_at, id))",
    )
    zone = tz if column == "datetime_system_zone" else "UTC"
    source = source_for(
        db, table, source_id=f"tz-{tz.replace('/', '_')}-{column}", timestamp_timezone=zone
    )
    db.run(f"INSERT INTO `{table}` (note) VALUES ('before')")  # id 1
    # trx_started has whole seconds, and the cap sits one second below it (a statement
    # stamps NOW() before InnoDB starts its transaction): the open one starts 2 s later
    time.sleep(2.1)
    with db.engine.connect() as slow:
        for _ in range(SLOW_ROWS):  # ids 2..502, stamped while the transaction is open
            slow.execute(text(f"INSERT INTO `{table}` (note) VALUES ('slow')"))
        db.run(f"INSERT INTO `{table}` (note) VALUES ('fast')")  # id 503, committed
        started = datetime.now(UTC)
        counts(run(save_block, sqlite_ledger, queue, source))
        first = delivered_ids(sqlite_ledger, source.source_id)
        mark = watermark(sqlite_ledger, source.source_id)
        slow.commit()
    counts(run(save_block, sqlite_ledger, queue, source))
    ids = delivered_ids(sqlite_ledger, source.source_id)
    lost = set(range(1, SLOW_ROWS + 3)) - set(ids)
    assert not lost, f"{len(lost)} row(s) lost on a server in {tz}"
    assert sorted(ids) == list(range(1, SLOW_ROWS + 3))  # none twice
    # The first run landed what was committed before the transaction opened, and its
    # bound was held just below that transaction's start, not hours away from it.
    assert first == [1], (tz, len(first))
    bound = datetime.fromisoformat(mark["below"])
    assert started - timedelta(seconds=30) < bound <= started, (tz, bound, started)


def test_inflight_start_is_read_in_the_server_system_zone(tz_source) -> None:
    """The start the cap uses is the transaction's real start (UTC), within the second,
    taken one second earlier (whole seconds, and NOW() fixed before InnoDB starts it)."""
    from blocks.sql import dialects as dialects

    tz, db = tz_source
    db.run("CREATE TABLE IF NOT EXISTS probe (i int) ENGINE=InnoDB")
    source = SqlSource(database=db.connector(), table="probe", source_id="probe")
    with db.engine.connect() as other:
        before = datetime.now(UTC)
        other.execute(text("INSERT INTO probe VALUES (1)"))
        after = datetime.now(UTC)
        with source._connect() as conn:
            clock, open_txns = dialects.clock_and_inflight(conn, "mariadb", True)
        other.rollback()
    assert abs(clock - datetime.now(UTC)) < timedelta(seconds=30), (tz, clock)
    (start,) = [s for _, s in open_txns]
    assert before - timedelta(seconds=2) <= start <= after - timedelta(seconds=1), (tz, start)
