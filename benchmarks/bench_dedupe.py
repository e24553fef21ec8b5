"""Benchmark: the dedupe step for a big listing against a big ledger (SQLite and PostgreSQL).

    python benchmarks/bench_dedupe.py                              # 100k listed vs 200k rows
    python benchmarks/bench_dedupe.py --ledger-rows 1000000        # the issue-17 workload
    python benchmarks/bench_dedupe.py --listed 1000000 --ledger-rows 1000000 --new 1000

A ledger (a SQLite file and a throwaway PostgreSQL database on 127.0.0.1:5432) is seeded
with N landed rows of one source; a listing of M candidates, of which K are new and the
rest known with the same fingerprint, is built in each child. Each figure comes from its
own child process (peak RSS is its own; the Prefect test API server runs apart and is not
counted; the listing itself is built in every child, so compare RSS across rows):

- query:  `Ledger.iter_names_to_fetch` (the dedupe decision the engine asks the database
  for) over the M (name, fingerprint) pairs, alone, no Prefect.
- known_rows: `Ledger.known_items` (every known row back to Python, the rule applied
  there: how the engine asked before), for comparison.
- plain:  the `dedupe` task called inside a flow with the listing as a plain list.
- quoted: the same with the listing wrapped in `prefect.utilities.annotations.quote`.
- run_source: `pipeline.engine.dedupe_listing` (how `run_source` dedupes the items an
  event names).
- discover: the `discover` task as a listing run calls it: the listing is streamed from
  the source (never a list) and deduped `LISTING_CHUNK` items at a time; its RSS shows
  whether memory stays flat as the listing grows.

Seconds are wall time of the call only (listing built and Prefect started beforehand).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sql import PG, psql  # noqa: E402 (the same PostgreSQL and psql)
from benchmarks.child_rss import run_child  # noqa: E402

SOURCE = "bench-dedupe"


def ledger_for(kind: str, where: str):
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    from blocks.core.ledger import Ledger

    if kind == "sqlite":
        info = ConnectionComponents(driver=SyncDriver.SQLITE_PYSQLITE, database=where)
    else:
        info = ConnectionComponents(
            driver=SyncDriver.POSTGRESQL_PSYCOPG2,
            host=PG["host"],
            port=PG["port"],
            username=PG["user"],
            database=where,
        )
    return Ledger(database=SqlAlchemyConnector(connection_info=info))


def seed(kind: str, where: str, rows: int) -> float:
    """Create the ledger tables with the code's schema, then insert `rows` landed rows."""
    started = time.perf_counter()
    ledger = ledger_for(kind, where)
    ledger.check()  # creates tables and indexes
    ledger.dispose()
    if kind == "sqlite":
        con = sqlite3.connect(where)
        con.execute(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?) "
            "INSERT INTO ingest_items (source, name, sha256, size, remote_version, landed_path,"
            " status, created_at, updated_at) "
            "SELECT ?, printf('in/f-%09d.csv', i), printf('%064d', i), 100, 'v1',"
            " printf('/land/f-%09d.csv', i), 'landed', '2026-11-01 00:00:00.000000',"
            " '2026-11-01 00:00:00.000000' FROM g",
            (rows, SOURCE),
        )
        con.commit()
        con.execute("ANALYZE")
        con.close()
    else:
        psql(
            where,
            "INSERT INTO ingest_items (source, name, sha256, size, remote_version, landed_path,"
            " status, created_at, updated_at) "
            f"SELECT '{SOURCE}', 'in/f-' || lpad(g::text, 9, '0') || '.csv',"
            " lpad(g::text, 64, '0'), 100, 'v1', '/land/f-' || lpad(g::text, 9, '0') || '.csv',"
            " 'landed', now(), now() "
            f"FROM generate_series(1, {rows}) g",
        )
        psql(where, "VACUUM ANALYZE ingest_items")
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- child
def child(kind: str, where: str, what: str, listed: int, new: int, ledger_rows: int) -> None:
    from blocks.core.source import Candidate
    from blocks.local_folder.block import LocalFolderSource

    known = listed - new
    if known > ledger_rows:
        raise SystemExit(f"--listed minus --new ({known}) is more than --ledger-rows")

    def listing() -> Iterator[Candidate]:
        for i in range(1, known + 1):
            yield Candidate(f"in/f-{i:09d}.csv", 100, None, "v1")
        for i in range(1, new + 1):
            yield Candidate(f"in/new-{i:09d}.csv", 100, None, "v1")

    # "discover" streams the listing as a source does; the other rows get it as a list
    candidates = [] if what == "discover" else list(listing())
    ledger = ledger_for(kind, where)
    ledger.check()
    source = LocalFolderSource(source_id=SOURCE, directory=tempfile.gettempdir())
    out: dict = {}
    if what == "known_rows":  # the previous way: every known row back to Python
        started = time.perf_counter()
        found = ledger.known_items(SOURCE, (c.name for c in candidates))
        out["seconds"] = time.perf_counter() - started
        out["fetch"], out["skip"] = listed - len(found), len(found)
    elif what == "query":
        started = time.perf_counter()
        fetch = 0
        for _n, to_fetch in ledger.iter_names_to_fetch(
            SOURCE, ((c.name, c.version) for c in candidates)
        ):
            fetch += len(to_fetch)
        out["seconds"] = time.perf_counter() - started
        out["fetch"], out["skip"] = fetch, listed - fetch
    else:
        from prefect import flow
        from prefect.utilities.annotations import quote

        from pipeline import engine

        class StreamedSource(LocalFolderSource):
            def discover(self, ctx):  # a listing made as it is read, like a real source
                return listing()

        @flow(name="bench-dedupe")
        def run() -> dict:
            started = time.perf_counter()
            if what == "discover":  # list + dedupe chunk by chunk, as run_source does
                from blocks.core.source import DiscoverContext

                streamed = StreamedSource(source_id=SOURCE, directory=tempfile.gettempdir())
                ctx = DiscoverContext(date.today(), None, False, ledger, SOURCE)
                got = engine.discover(streamed, ctx)
                seconds = time.perf_counter() - started
                return {"seconds": seconds, "fetch": len(got.to_fetch), "skip": got.already}
            if what == "plain":
                fetch, skip = engine.dedupe(ledger, source, candidates, False)
            elif what == "quoted":
                fetch, skip = engine.dedupe(ledger, source, quote(candidates), False)
            else:
                fetch, skip = engine.dedupe_listing(ledger, source, candidates, False)
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "fetch": len(fetch), "skip": skip_count(skip)}

        out = run()
    if out["fetch"] != new or out["skip"] != known:
        raise SystemExit(f"{what}: wrong answer {out}, expected fetch={new} skip={known}")
    print(json.dumps(out))


def skip_count(skip) -> int:
    return skip if isinstance(skip, int) else len(skip)


# ----------------------------------------------------------------------------- parent
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listed", type=int, default=100_000)
    parser.add_argument("--ledger-rows", type=int, default=200_000)
    parser.add_argument("--new", type=int, default=1_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--what", default="known_rows,query,plain,quoted,run_source,discover")
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "WHERE", "WHAT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.listed, args.new, args.ledger_rows)
        return

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from pipeline import engine

    whats = [
        w for w in args.what.split(",") if w != "run_source" or hasattr(engine, "dedupe_listing")
    ]
    print(f"load average before: {os.getloadavg()}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-dedupe-"))
    pg_db = f"bench_dedupe_{uuid.uuid4().hex[:8]}"
    rows: list[tuple] = []
    try:
        with prefect_test_harness(server_startup_timeout=120):
            env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
            for kind in args.backends.split(","):
                if kind == "sqlite":
                    where = str(scratch / "ledger.db")
                else:
                    psql("postgres", f'CREATE DATABASE "{pg_db}"')
                    where = pg_db
                seeded = seed(kind, where, args.ledger_rows)
                print(f"{kind}: seeded {args.ledger_rows} rows in {seeded:.1f} s", flush=True)
                for what in whats:
                    argv = [
                        sys.executable, __file__, "--listed", str(args.listed),
                        "--ledger-rows", str(args.ledger_rows), "--new", str(args.new),
                        "--child", kind, where, what,
                    ]  # fmt: skip
                    _, rss, stdout = run_child(argv, env)
                    out = json.loads(stdout.strip().splitlines()[-1])
                    rows.append((kind, what, out["seconds"], rss))
                    print(f"  {kind:<8} {what:<10} {out['seconds']:7.2f} s {rss:6d} MB", flush=True)
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{pg_db}"')
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()

    print(
        f"\n{args.listed} listed ({args.new} new) vs {args.ledger_rows} ledger rows; "
        f"load average after: {os.getloadavg()}"
    )
    print(f"{'backend':<9} {'step':<11} {'s':>8} {'RSS MB':>7}")
    for kind, what, seconds, rss in rows:
        print(f"{kind:<9} {what:<11} {seconds:>8.2f} {rss:>7}")


if __name__ == "__main__":
    main()
