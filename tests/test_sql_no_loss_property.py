# ruff: noqa: F811  (pytest fixtures imported from tests/sql_servers.py)
"""Nothing lost: the SQL source's windows against concurrent writers on the real servers.

- Regressions: rows written in the same second as a run's upper bound into a
  second-precision column (PostgreSQL `timestamptz(0)` rounds, MariaDB `TIMESTAMP` truncates)
  fell below the next window; two windows with byte-identical files were deduped by content
  and the second never queued.
- Property (hypothesis): random column precision (0, 3, 6), tz-aware and naive columns,
  writer session time zones, transactions held open across runs, commits straddling runs,
  many rows per timestamp, updates and NULLs, a writer thread inserting while runs go on,
  interleaved with `ingest-sql` runs. The landed files, parsed, must hold the current
  version of every row (0 lost) and no row version twice (updates are re-extracted: the
  documented rule; rows with a NULL timestamp are never extracted).

Few examples by default; `INGEST_PROPERTY_EXAMPLES=200` for a long run. A failing example is
printed by hypothesis (the scenario dict, with the lost ids); it becomes a plain regression
test as `_property(pg_source, save_block, {...the printed scenario...})`. Found on the old
code (MariaDB): `{'digits': 0, 'aware': False, 'zone': 'America/Bogota', 'steps':
[('insert', 2, True), ('update', 1, True), ('close', False), ('run', 'quick')], ...}`: 37
of 87 rows lost.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from sqlalchemy import Connection, text

from blocks import IngestionQueue, Ledger, QueueConsumer
from blocks.sql.block import SqlSource
from flows.sql import ingest_sql
from tests.conftest import sqlite_connector
from tests.landed_rows import keep_result, landed, read_rows
from tests.sql_servers import (  # noqa: F401
    SourceDb,
    mariadb_database,
    mariadb_server_in_tz,
    my_source,
    pg_source,
)

pytestmark = pytest.mark.usefixtures("prefect_api")
EXAMPLES = int(os.environ.get("INGEST_PROPERTY_EXAMPLES", "5"))
# Writer session zones: (IANA name for PostgreSQL and the source, fixed offset for MariaDB,
# whose server has no time zone tables here). None of them has DST.
ZONES = {
    "UTC": "+00:00",
    "Asia/Tokyo": "+09:00",
    "Asia/Kolkata": "+05:30",
    "America/Bogota": "-05:00",
}


# ----------------------------------------------------------------------------- the table
@dataclass
class Table:
    """One throwaway table with `id`, `version` (unique per write) and `ts`."""

    db: SourceDb
    name: str
    digits: int
    aware: bool
    zone: str
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def pg(self) -> bool:
        return self.db.kind == "postgres"

    def create(self) -> None:
        p = self.digits
        if self.pg:
            typ = f"timestamptz({p})" if self.aware else f"timestamp({p})"
            self.db.run(
                f'CREATE TABLE "{self.name}" (id serial PRIMARY KEY, version int NOT NULL, '
                f"ts {typ} DEFAULT now(), note text)",
                f'CREATE INDEX ON "{self.name}" (ts, id)',
            )
        else:
            typ = f"TIMESTAMP({p})" if self.aware else f"DATETIME({p})"
            self.db.run(
                f"CREATE TABLE `{self.name}` (id int AUTO_INCREMENT PRIMARY KEY, version int "
                f"NOT NULL, ts {typ} NULL DEFAULT CURRENT_TIMESTAMP({p}), note text, "
                "KEY (ts, id))"
            )

    @property
    def now(self) -> str:
        return "now()" if self.pg else f"NOW({self.digits})"

    @property
    def quoted(self) -> str:
        return f'"{self.name}"' if self.pg else f"`{self.name}`"

    @contextmanager
    def session(self) -> Iterator[Connection]:
        """A writer connection in the scenario's session time zone (naive columns are
        wall-clock times there: the source's `timestamp_timezone`)."""
        engine = self.db.engine
        with engine.connect() as conn:
            if self.pg:
                conn.execute(text(f"SET TIME ZONE '{self.zone}'"))
            else:
                conn.execute(text(f"SET time_zone = '{ZONES[self.zone]}'"))
            conn.commit()
            yield conn

    def insert(self, conn: Connection, n: int, null: bool = False) -> None:
        """n rows in one statement (one timestamp for all on both servers)."""
        ts = "NULL" if null else self.now
        rows = ", ".join(f"({next(self.versions)}, {ts}, 'w')" for _ in range(n))
        conn.execute(text(f"INSERT INTO {self.quoted} (version, ts, note) VALUES {rows}"))

    def update(self, conn: Connection, ids: list[int], null: bool = False) -> None:
        ts = "NULL" if null else self.now
        for i in ids:
            conn.execute(
                text(f"UPDATE {self.quoted} SET version = :v, ts = {ts}, note = 'u' WHERE id = :i"),
                {"v": next(self.versions), "i": i},
            )

    def ids(self) -> list[int]:
        with self.db.engine.connect() as conn:
            return [r[0] for r in conn.execute(text(f"SELECT id FROM {self.quoted}"))]

    def current(self) -> dict[int, tuple[int, bool]]:
        """id -> (version, timestamp is NULL) as the table holds them now."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(text(f"SELECT id, version, ts IS NULL FROM {self.quoted}"))
            return {r[0]: (r[1], bool(r[2])) for r in rows}


class Writer(threading.Thread):
    """Inserts rows while a run goes on: single rows, bursts sharing a timestamp, and short
    transactions that may commit after the run read its window."""

    def __init__(self, table: Table, seed: int, holds: bool = True, most: int = 10**9) -> None:
        super().__init__(daemon=True)
        self.table, self.rng, self.stop = table, random.Random(seed), threading.Event()
        self.holds, self.most = holds, most
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.table.session() as conn:
                written = 0
                while not self.stop.is_set() and written < self.most:
                    n = self.rng.choice([1, 1, 3])
                    self.table.insert(conn, n)
                    written += n
                    if self.holds and self.rng.random() < 0.3:
                        time.sleep(self.rng.uniform(0.01, 0.15))  # held open a moment
                    conn.commit()
                    time.sleep(self.rng.uniform(0, 0.03))
        except BaseException as exc:  # reported by the test
            self.error = exc


@contextmanager
def writing(table: Table, seed: int, holds: bool = True, most: int = 10**9) -> Iterator[None]:
    writer = Writer(table, seed, holds, most)
    writer.start()
    try:
        yield
    finally:
        writer.stop.set()
        writer.join(30)
        if writer.error is not None:
            raise writer.error


# ----------------------------------------------------------------------------- runs
@dataclass
class Harness:
    """Blocks saved once; `run()` runs the ingest-sql flow and checks it completed."""

    table: Table
    source: SqlSource
    ledger: Ledger
    queue: IngestionQueue
    names: dict[str, str]

    def run(self) -> dict:
        state = ingest_sql(
            source_block=self.names["source"],
            ledger_block=self.names["ledger"],
            queue_block=self.names["queue"],
            return_state=True,
        )
        state = keep_result(state, self.ledger, self.source.source_id)
        assert state.is_completed(), state.message
        return state.result()

    def delivered(self) -> list[tuple[int, int]]:
        """(id, version) of every row in every landed file, in delivery order."""
        out = []
        for row in landed(self.ledger, self.source.source_id):
            out += [(int(r["id"]), int(r["version"])) for r in read_rows(row["landed_path"])]
        return out


@contextmanager
def harness(db: SourceDb, save_block: Callable, digits: int, aware: bool, zone: str, **fields):
    name = f"nl_{uuid.uuid4().hex[:10]}"
    table = Table(db, name, digits, aware, zone)
    table.create()
    folder = Path(tempfile.mkdtemp(prefix="nl-"))
    ledger = Ledger(database=sqlite_connector(folder / "ledger.db"))
    queue = IngestionQueue(landing_dir=str(folder / "landing"), fsync=False)
    fields.setdefault("primary_key", ["id"])
    source = SqlSource(
        database=db.connector(),
        table=name,
        source_id=f"{db.kind}-{name}",
        incremental_mode="timestamp",
        incremental_column="ts",
        timestamp_timezone=zone,
        retries=0,
        **fields,
    )
    names = {
        k: save_block(b, k) for k, b in (("source", source), ("ledger", ledger), ("queue", queue))
    }
    try:
        yield Harness(table, source, ledger, queue, names)
    finally:
        ledger.dispose()
        db.run(f"DROP TABLE IF EXISTS {table.quoted}")


def settle_and_finish(h: Harness) -> None:
    """Let the clock pass every write by more than a second (a value rounded up names a
    moment up to half a unit later), then run until caught up: a run stops after
    `max_files` files of `max_rows_per_file` rows, and its bound is held below any
    transaction open on the server (MariaDB's INNODB_TRX is server-wide: another test's
    open transaction holds this source back, which is not a loss)."""
    writes_done = datetime.now(UTC)
    time.sleep(1.6)
    deadline = time.monotonic() + 120
    while True:
        h.run()
        mark = h.ledger.get_state(h.source.source_id, "watermark") or {}
        below = mark.get("below")
        caught_up = below is not None and not mark.get("more")
        if caught_up and datetime.fromisoformat(below) >= writes_done + timedelta(seconds=0.6):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not caught up within 120 s (bound held?): {mark}")
        time.sleep(0 if mark.get("more") else 1)


def check_nothing_lost(h: Harness) -> None:
    delivered = h.delivered()
    current = h.table.current()
    twice = sorted({d for d in delivered if delivered.count(d) > 1})
    last: dict[int, int] = {}
    for i, v in delivered:
        last[i] = v
    lost = sorted(i for i, (v, null) in current.items() if not null and last.get(i) != v)
    never_stamped = sorted(i for i, (_v, null) in current.items() if null and i not in last)
    stray = [d for d in delivered if d[0] in never_stamped]
    if currently_in_test_context():
        note(f"rows={len(current)} delivered={len(delivered)} lost={lost} twice={twice}")
    assert not lost, f"{len(lost)} of {len(current)} row(s) lost: ids {lost[:20]}"
    assert not twice, f"row versions delivered twice: {twice[:20]}"
    assert not stray, f"rows never stamped were delivered: {stray[:20]}"


# ----------------------------------------------------------------------------- regressions
def _kind(request) -> SourceDb:
    return request.getfixturevalue("pg_source" if request.param == "pg" else "my_source")


@pytest.fixture(params=["pg", "mariadb"])
def db(request) -> SourceDb:
    return _kind(request)


def test_mariadb_rows_written_in_the_run_second_are_not_lost(
    my_source: SourceDb, save_block
) -> None:
    """MariaDB `TIMESTAMP` (whole seconds, truncated), default lag_seconds=0: a writer
    inserts rows with `DEFAULT CURRENT_TIMESTAMP` all the time while runs go on. Rows
    stamped after a run read its window but in the same second as its upper bound stored a
    value below that bound and fell below the next window (old code: ~280 of ~370 lost).
    Now none is lost. (PostgreSQL: `test_pg_row_of_a_held_transaction_in_the_bound_second`
    is the deterministic case; the property test covers the rest.)"""
    with harness(my_source, save_block, digits=0, aware=True, zone="UTC") as h:
        with h.table.session() as conn:
            h.table.insert(conn, 3)
            conn.commit()
        for seed in range(4):
            # quick autocommit inserts: an open transaction would cap the bound instead
            with writing(h.table, seed, holds=False):
                h.run()
        settle_and_finish(h)
        check_nothing_lost(h)


def test_pg_row_of_a_held_transaction_in_the_bound_second(pg_source: SourceDb, save_block):
    """PostgreSQL timestamptz(0): a transaction opened early in a second stamps its row with
    now() (its start, rounded DOWN to that second) and stays open across a run, which
    caps its upper bound at that start. Before, the bound kept the microseconds, so the
    committed row (stored below it) was never in any window."""
    with harness(pg_source, save_block, digits=0, aware=True, zone="UTC") as h:
        with h.table.session() as conn:
            h.table.insert(conn, 2)
            conn.commit()
        time.sleep(1.05 - time.time() % 1)  # early in a second: now() rounds down
        with h.table.session() as held:
            h.table.insert(held, 1)  # transaction open from here
            started = held.execute(text("SELECT now()")).scalar()
            assert started.microsecond < 500_000  # the value is stored below the start
            h.run()
            held.commit()
        settle_and_finish(h)
        check_nothing_lost(h)
        assert len(h.delivered()) == 3


def test_byte_identical_windows_are_both_queued(db: SourceDb, save_block) -> None:
    """`columns` without a key: two windows hold byte-identical files. Each window is its
    own delivery: both are landed and queued (the content dedupe is for files)."""
    with harness(
        db, save_block, digits=6, aware=True, zone="UTC", columns=["note"], primary_key=[]
    ) as h:
        with h.table.session() as conn:
            h.table.insert(conn, 1)
            conn.commit()
        time.sleep(1.1)
        first = h.run()
        with h.table.session() as conn:
            h.table.insert(conn, 1)
            conn.commit()
        time.sleep(1.1)
        second = h.run()
        assert (first["landed"], second["landed"]) == (1, 1), (first, second)
        items = landed(h.ledger, h.source.source_id)
        assert len(items) == 2 and items[0]["sha256"] == items[1]["sha256"]
        assert QueueConsumer(h.ledger, "c").pending_count(h.source.source_id) == 2
        assert [r["note"] for i in items for r in read_rows(i["landed_path"])] == ["w", "w"]


# ----------------------------------------------------------------------------- property
STEP = st.one_of(
    st.tuples(st.just("insert"), st.integers(1, 6), st.booleans()),  # n rows, NULL ts?
    st.tuples(st.just("update"), st.integers(1, 3), st.booleans()),  # k rows, to NULL?
    st.tuples(st.just("open"), st.integers(1, 3), st.booleans()),  # held txn: insert, update?
    st.tuples(st.just("close"), st.booleans()),  # commit (True) or roll back the held txn
    # a run alone, or while a writer inserts (autocommit only, or also holding
    # short transactions open across the run's reads)
    st.tuples(st.just("run"), st.sampled_from(["alone", "quick", "holding"])),
    st.tuples(st.just("sleep"), st.sampled_from([0.05, 0.3, 0.7])),
)
SCENARIO = st.fixed_dictionaries(
    {
        "digits": st.sampled_from([0, 3, 6]),
        "aware": st.booleans(),
        "zone": st.sampled_from(sorted(ZONES)),
        "max_rows_per_file": st.sampled_from([None, 7]),
        "use_copy": st.booleans(),
        "fmt": st.sampled_from(["csv", "parquet"]),
        "steps": st.lists(STEP, min_size=3, max_size=10),
        "seed": st.integers(0, 2**16),
    }
)


def play(h: Harness, steps: list[tuple], seed: int) -> None:
    """Run the steps; every held transaction is closed (committed) before the end."""
    rng = random.Random(seed)
    held: list[Any] = []  # [connection context, connection, ids it locked]
    try:
        with h.table.session() as conn:
            for step in steps:
                kind = step[0]
                if kind == "insert":
                    h.table.insert(conn, step[1], null=step[2])
                    conn.commit()
                elif kind == "update":
                    locked = {i for _c, _x, ids in held for i in ids}
                    free = [i for i in h.table.ids() if i not in locked]
                    h.table.update(conn, rng.sample(free, min(step[1], len(free))), null=step[2])
                    conn.commit()
                elif kind == "open":
                    ctx = h.table.session()
                    other = ctx.__enter__()
                    ids: list[int] = []
                    h.table.insert(other, step[1])
                    if step[2]:
                        locked = {i for _c, _x, mine in held for i in mine}
                        free = [i for i in h.table.ids() if i not in locked]
                        ids = rng.sample(free, min(1, len(free)))
                        h.table.update(other, ids)
                    held.append([ctx, other, ids])
                elif kind == "close" and held:
                    ctx, other, _ids = held.pop(0)
                    (other.commit if step[1] else other.rollback)()
                    ctx.__exit__(None, None, None)
                elif kind == "run":
                    if step[1] != "alone":
                        seed_ = rng.randrange(2**16)
                        with writing(h.table, seed_, holds=step[1] == "holding", most=120):
                            h.run()
                    else:
                        h.run()
                elif kind == "sleep":
                    time.sleep(step[1])
    finally:
        for ctx, other, _ids in held:
            other.commit()
            ctx.__exit__(None, None, None)


def _property(db: SourceDb, save_block, scenario: dict) -> None:
    if currently_in_test_context():
        note(repr(scenario))
    # parquet on PostgreSQL with use_copy: the column-wise COPY -> Arrow path
    fields = {"use_copy": scenario["use_copy"], "output_format": scenario.get("fmt", "csv")}
    if scenario["max_rows_per_file"]:
        fields["max_rows_per_file"] = scenario["max_rows_per_file"]
    with harness(
        db, save_block, scenario["digits"], scenario["aware"], scenario["zone"], **fields
    ) as h:
        play(h, scenario["steps"], scenario["seed"])
        settle_and_finish(h)
        check_nothing_lost(h)


def test_found_example_mariadb_naive_datetime0_in_bogota(my_source: SourceDb, save_block):
    """The property test's shrunk failure on the old code: a naive DATETIME(0) stamped in
    America/Bogota, a run while a writer inserts (37 of 87 rows lost before)."""
    _property(
        my_source,
        save_block,
        {
            "aware": False,
            "seed": 4428,
            "steps": [("insert", 2, True), ("update", 1, True), ("close", False), ("run", "quick")],
            "zone": "America/Bogota",
            "use_copy": True,
            "digits": 0,
            "max_rows_per_file": None,
        },
    )


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)


@pytest.fixture(scope="module")
def my_tokyo_source() -> Iterator[SourceDb]:
    """A database on a throwaway mariadbd whose system time zone is Asia/Tokyo (the
    in-flight cap reads INNODB_TRX.trx_started in that zone)."""
    with (
        mariadb_server_in_tz("Asia/Tokyo") as (host, port, user),
        mariadb_database(host, port, user, "nltz") as db,
    ):
        yield db


@_SETTINGS
@given(scenario=SCENARIO)
def test_property_pg_nothing_lost(pg_source: SourceDb, save_block, scenario: dict) -> None:
    """PostgreSQL: the landed files, parsed, equal the table's rows (see module doc)."""
    _property(pg_source, save_block, scenario)


@_SETTINGS
@given(scenario=SCENARIO)
def test_property_mariadb_nothing_lost(my_source: SourceDb, save_block, scenario: dict) -> None:
    """MariaDB: the landed files, parsed, equal the table's rows (see module doc)."""
    _property(my_source, save_block, scenario)


@_SETTINGS
@given(scenario=SCENARIO)
def test_property_mariadb_tokyo_nothing_lost(
    my_tokyo_source: SourceDb, save_block, scenario: dict
) -> None:
    """MariaDB whose server runs in Asia/Tokyo (system time zone): same property."""
    _property(my_tokyo_source, save_block, scenario)


def test_warehouse_time_bound_is_a_value_every_precision_can_store() -> None:
    """Snowflake `TIMESTAMP_*(0..5)` / whole-second columns: the window's bound is cut to
    a whole second, so a row stamped after the bound in the same second (stored truncated
    or rounded to the column's precision) is not stored below it."""
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

    from blocks.warehouse.watermark import upper_bound

    now = datetime(2026, 7, 1, 12, 0, 5, 734_512, tzinfo=UTC)
    paris = ZoneInfo("Europe/Paris")
    assert upper_bound(now, 0, "timestamp", paris) == now.replace(microsecond=0)
    assert upper_bound(now, 1.5, "datetime", paris) == datetime(2026, 7, 1, 14, 0, 4)
    assert upper_bound(now, 0, "date", paris) == date(2026, 7, 1)


def test_mariadb_bound_stays_below_a_transaction_the_trx_view_missed(
    my_source: SourceDb, save_block
) -> None:
    """InnoDB serves INFORMATION_SCHEMA.INNODB_TRX from a cache refreshed at most every 0.1 s.
    A transaction that began just before the bound was read could be missing from it: the
    bound (the clock) went above its row, which was lost once committed. Found by the
    property test in CI (below: 1 of 176 rows lost, in ~40% of runs of that scenario)."""
    from zoneinfo import ZoneInfo

    with harness(my_source, save_block, 6, False, "Asia/Kolkata") as h:
        prep = h.source._prepare()
        with h.table.session() as held:
            with h.table.db.engine.connect() as peek:  # the view is fresh now...
                peek.execute(text("SELECT COUNT(*) FROM information_schema.INNODB_TRX")).all()
            h.table.insert(held, 1)  # ...and this transaction begins right after
            stamped = held.execute(text(f"SELECT MAX(ts) FROM {h.table.quoted}")).scalar()
            upper = h.source._timestamp_upper(prep)
            held.commit()
        stamped_utc = stamped.replace(tzinfo=ZoneInfo("Asia/Kolkata")).astimezone(UTC)
        assert upper <= stamped_utc, (upper, stamped_utc)


@pytest.mark.parametrize("attempt", range(3))
def test_found_example_mariadb_trx_view_cache(my_source: SourceDb, save_block, attempt) -> None:
    """The property test's failing example from CI (a run with a quick writer, then one with a
    writer holding short transactions): row 129 of 176 was lost in ~40% of runs."""
    _property(
        my_source,
        save_block,
        {
            "use_copy": True,
            "fmt": "parquet",
            "aware": False,
            "seed": 24718,
            "zone": "Asia/Kolkata",
            "max_rows_per_file": None,
            "digits": 6,
            "steps": [
                ("sleep", 0.7),
                ("run", "quick"),
                ("run", "holding"),
                ("insert", 4, True),
                ("close", True),
            ],
        },
    )
