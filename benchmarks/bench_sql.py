"""Benchmark: the ingest-sql flow vs `psql \\copy` (PostgreSQL) and the mariadb client.

    python benchmarks/bench_sql.py                      # 10 M PostgreSQL rows, 1 M MariaDB
    python benchmarks/bench_sql.py --pg-rows 1000000 --my-rows 100000   # quick run

A throwaway database with a table of mixed types (bigint, timestamptz, numeric, text,
boolean, int) is created, extracted to CSV by `psql -c "\\copy (select ...) to FILE csv"`
and by the flow (one full run, keyset COPY chunks, landing + ledger + queue included),
in one run, on the same machine. The flow runs in a child process so its peak RSS is its
own (the Prefect test API server runs in a separate process and is not counted). Landing
fsync is off on both sides (psql does not fsync). Databases are dropped at the end.

Also (issue 17): the same table to Parquet (COPY -> Arrow), with `--streams N` parallel
key ranges and with as many page (ctid) ranges, MariaDB with pymysql and with mysqlclient,
and dlt (connectorx / pyarrow backends) from its own venv that this script creates
(`--dlt-venv`, `--skip-dlt`); ratios at the end. `--extract-only` times SqlSource.fetch
without the Prefect flow.

    python benchmarks/bench_sql.py --pg-rows 2000000 --my-rows 200000 --repeat 1 --extract-only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG = dict(host="127.0.0.1", port=5432, user="postgres")
MY = dict(host="127.0.0.1", port=3306, user="root")
COLUMNS = "id, ts, amount, name, flag, qty"


def children_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def psql(db: str, sql: str) -> None:
    subprocess.run(
        ["psql", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"], "-d", db,
         "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
    )  # fmt: skip


def mariadb(sql: str, db: str | None = None, out: Path | None = None) -> None:
    cmd = ["mariadb", "-h", MY["host"], "-P", str(MY["port"]), "-u", MY["user"], "--batch"]
    if db:
        cmd += [db]
    with open(out, "wb") if out else open(os.devnull, "wb") as fh:
        subprocess.run(cmd + ["-e", sql], check=True, stdout=fh)


def make_pg(db: str, rows: int) -> None:
    psql("postgres", f'CREATE DATABASE "{db}"')
    psql(
        db,
        "CREATE TABLE bench (id bigint PRIMARY KEY, ts timestamptz NOT NULL, "
        "amount numeric(12,2), name text, flag boolean, qty int);"
        "INSERT INTO bench SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 s', "
        "(g % 100000) / 100.0, 'name-' || (g % 997), g % 2 = 0, g % 1000 "
        f"FROM generate_series(1, {rows}) g",
    )
    psql(db, "VACUUM ANALYZE bench")


def make_my(db: str, rows: int) -> None:
    mariadb(f"CREATE DATABASE `{db}`")
    mariadb(
        "CREATE TABLE bench (id bigint PRIMARY KEY, ts datetime(6) NOT NULL, "
        "amount decimal(12,2), name varchar(40), flag boolean, qty int);"
        "INSERT INTO bench SELECT seq, TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq SECOND, "
        "(seq % 100000) / 100.0, CONCAT('name-', seq % 997), seq % 2 = 0, seq % 1000 "
        f"FROM seq_1_to_{rows};"
        "ANALYZE TABLE bench;",
        db,
    )


def run_child(
    kind: str,
    db: str,
    workdir: Path,
    chunk: int,
    repeat: int,
    fields: dict | None = None,
    paired: bool = False,
) -> dict:
    """Run the flow in a child process; returns its timings and its own peak RSS.
    `fields`: extra SqlSource fields (output_format, parallel_streams, mysql_driver).
    `paired` (PostgreSQL): one psql \\copy right before each flow run, its seconds in
    `psql_runs`, so each run has a reference taken on the host as it was then."""
    if EXTRACT_ONLY:
        return run_extract(kind, db, workdir, chunk, repeat, fields or {})
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--db", db, "--workdir", str(workdir),
         "--chunk", str(chunk), "--repeat", str(repeat), "--fields", json.dumps(fields or {}),
         *(["--paired"] if paired else [])],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def psql_copy_seconds(db: str, target: Path) -> float:
    """One `psql \\copy` of the benchmark table to `target` (the reference), timed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    psql(db, f"\\copy (select {COLUMNS} from bench) to '{target}' csv header")
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def paired(ours: dict) -> list[float]:
    """Each flow run's ratio (flow run seconds) to the psql run right before it."""
    return [p / run[1] for p, run in zip(ours["psql_runs"], ours["all_runs"], strict=True)]


def paired_ratios(ours: dict) -> str:
    """Each flow run against the psql run right before it, and their median."""
    ratios = paired(ours)
    psql_runs = [round(p, 2) for p in ours["psql_runs"]]
    return (
        f"paired with a psql run right before each: psql {psql_runs}, ratios (flow run) "
        f"{[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}x"
    )


def recorded_seconds(state) -> float:
    """The flow run's own duration as Prefect records it (Running -> final state).

    The call around it also creates the run and tears the engine down; in Prefect 3.8 the
    teardown joins the heartbeat thread, which sleeps in 1 s steps (~0.5-1 s per call
    after the run is already Completed).
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    return (run.end_time - run.start_time).total_seconds()


EXTRACT_ONLY = False  # --extract-only


def run_extract(kind: str, db: str, workdir: Path, chunk: int, repeat: int, fields: dict) -> dict:
    """The best of `repeat` extractions (child_extract), each in its own child for its
    own peak RSS; shaped like run_child's result so the same report prints it."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.child_rss import run_child as run_measured

    best: dict | None = None
    for _ in range(repeat):
        _, rss, stdout = run_measured(
            [sys.executable, __file__, "--child", kind, "--extract-only", "--db", db,
             "--workdir", str(workdir), "--chunk", str(chunk), "--fields", json.dumps(fields)],
            dict(os.environ),
        )  # fmt: skip
        got = json.loads(stdout.strip().splitlines()[-1])
        got["maxrss_mb"] = float(rss)
        if best is None or got["seconds"] < best["seconds"]:
            best = got
    assert best is not None
    sec = best["seconds"]
    best.update(run_seconds=sec, fetch_seconds=sec, all_runs=[(sec, sec, sec)], single_runs=[])
    best.update(baseline_mb=0.0, before_load_mb=0.0, load_seconds=0.0)
    print(f"  ({kind} {fields or ''}: extraction path {best['path']}, driver {best['driver']})")
    return best


def child_extract(kind: str, db: str, workdir: Path, chunk: int, fields: dict) -> None:
    """`--extract-only`: the block's own extraction of the whole table (SqlSource.fetch into
    a file), no Prefect flow around it: what the extraction paths cost, apart from the
    flow's fixed costs (server, block loads, ledger, summary)."""
    sys.path.insert(0, str(ROOT))
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    from blocks.core.source import Candidate
    from blocks.sql.block import SqlSource, Window

    conf = PG if kind == "pg" else MY
    driver = SyncDriver.POSTGRESQL_PSYCOPG2 if kind == "pg" else SyncDriver.MYSQL_PYMYSQL
    source = SqlSource(
        source_id=f"bench-{kind}",
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=driver, host=conf["host"], port=conf["port"], username=conf["user"],
                database=db,
            )
        ),
        table="bench", columns=[c.strip() for c in COLUMNS.split(",")], primary_key=["id"],
        chunk_size=chunk, copy_chunk_rows=max(chunk, 1_000_000), **fields,
    )  # fmt: skip
    prep = source._prepare()
    path = source._extraction_path(prep)
    if getattr(prep.lines, "line", None) is not None:
        path = "server-rendered CSV lines"  # MySQL: blocks/sql/mysql_csv.py
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / f"out.{source.output_format}"
    started = time.perf_counter()
    with open(target, "wb") as out:
        source.fetch(Candidate(name="bench", ref=Window("full")), out)
    seconds = time.perf_counter() - started
    if source.output_format == "parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(target).metadata.num_rows
    else:
        with open(target, "rb") as fh:
            rows = sum(c.count(b"\n") for c in iter(lambda: fh.read(1 << 20), b"")) - 1
    print(json.dumps({"seconds": seconds, "rows": rows, "bytes": target.stat().st_size,
                      "path": path, "driver": prep.engine.dialect.driver}))  # fmt: skip


def child(
    kind: str, db: str, workdir: Path, chunk: int, repeat: int, fields: dict, paired: bool
) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["PREFECT_HOME"] = str(workdir / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from prefect.testing.utilities import prefect_test_harness
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    from blocks.core import block_lookup
    from blocks.core.ingestion_queue import IngestionQueue
    from blocks.core.ledger import Ledger
    from blocks.sql.block import SqlSource
    from flows.sql import ingest_sql

    conf = PG if kind == "pg" else MY
    driver = SyncDriver.POSTGRESQL_PSYCOPG2 if kind == "pg" else SyncDriver.MYSQL_PYMYSQL
    source = SqlSource(
        source_id=f"bench-{kind}",
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=driver, host=conf["host"], port=conf["port"], username=conf["user"],
                database=db,
            )
        ),
        table="bench",
        columns=[c.strip() for c in COLUMNS.split(",")],
        primary_key=["id"],
        chunk_size=chunk,
        copy_chunk_rows=max(chunk, 1_000_000),
        **fields,
    )  # fmt: skip
    ledger = Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.SQLITE_PYSQLITE, database=str(workdir / "ledger.db")
            )
        )
    )
    queue = IngestionQueue(landing_dir=str(workdir / "landing"), fsync=False)
    with prefect_test_harness(server_startup_timeout=600):  # a loaded host starts slowly
        names = {}
        for label, block in (("s", source), ("l", ledger), ("q", queue)):
            names[label] = f"bench-{label}-{uuid.uuid4().hex[:8]}"
            block.save(names[label], overwrite=True)
        before_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # The first Block.load (nested blocks resolved; blocks/core/block_lookup.py keeps it
        # from importing every installed Prefect collection): measured apart. A flow installs
        # the lookup in its loader; this direct load installs it as the flow would.
        block_lookup.install()
        t = time.perf_counter()
        SqlSource.load(names["s"])
        load_seconds = time.perf_counter() - t
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        runs, psql_runs = [], []
        for i in range(repeat):
            if paired:
                psql_runs.append(psql_copy_seconds(db, workdir / "paired-psql.csv"))
            started = time.perf_counter()
            state = ingest_sql(
                source_block=names["s"],
                ledger_block=names["l"],
                queue_block=names["q"],
                force=i > 0,  # repeats re-extract and re-land the same table
                return_state=True,
            )
            whole = time.perf_counter() - started
            runs.append((whole, recorded_seconds(state), state.result()["seconds"]))
        single_runs = []
        if kind == "pg" and not fields:
            single = source.model_copy(update={"single_transaction": True})
            single.save(names["s"] + "-1tx", overwrite=True)
            for _ in range(repeat):
                started = time.perf_counter()
                state = ingest_sql(
                    source_block=names["s"] + "-1tx",
                    ledger_block=names["l"],
                    queue_block=names["q"],
                    force=True,
                    return_state=True,
                )
                whole = time.perf_counter() - started
                single_runs.append((whole, recorded_seconds(state), state.result()["seconds"]))
    files = [p for p in (workdir / "landing").rglob("*.csv")]
    size = sum(p.stat().st_size for p in files)
    rows = 0
    for path in files:
        with open(path, "rb") as fh:
            rows += (
                sum(chunk.count(b"\n") for chunk in iter(lambda fh=fh: fh.read(1 << 20), b"")) - 1
            )
    import pyarrow.parquet as pq

    for path in (workdir / "landing").rglob("*.parquet"):
        size += path.stat().st_size
        rows += pq.ParquetFile(path).metadata.num_rows
    print(
        json.dumps(
            {
                "seconds": min(r[0] for r in runs),
                "run_seconds": min(r[1] for r in runs),
                "fetch_seconds": min(r[2] for r in runs),
                "all_runs": runs,
                "single_runs": single_runs,
                "psql_runs": psql_runs,
                "rows": rows,
                "bytes": size,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "baseline_mb": baseline,
                "before_load_mb": before_load,
                "load_seconds": load_seconds,
            }
        )
    )


# dlt, the comparison, in its OWN venv created here (never a project dependency).
DLT_PACKAGES = [
    "dlt[sql_database,parquet]==1.31.0", "connectorx==0.4.6", "sqlalchemy>=2,<3",
    "psycopg2-binary", "pymysql", "pyarrow",
]  # fmt: skip
DLT_SCRIPT = r"""
import glob, gzip, json, sys, time
import dlt
from dlt.sources.sql_database import sql_table
url, cx_url, table, backend, fmt, out = sys.argv[1:7]
kw = {"backend_kwargs": {"conn": cx_url}} if backend == "connectorx" else {}
source = sql_table(credentials=url, table=table, backend=backend, **kw)
pipe = dlt.pipeline(
    pipeline_name="bench_" + backend,
    destination=dlt.destinations.filesystem(bucket_url="file://" + out),
    dataset_name="d", pipelines_dir=out + "/.dlt",
)
t = time.perf_counter()
pipe.run(source, loader_file_format=fmt)
seconds = time.perf_counter() - t
rows = 0
for path in glob.glob(out + "/d/" + table + "/*"):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        rows += pq.ParquetFile(path).metadata.num_rows
    elif ".csv" in path:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as fh:
            rows += sum(1 for _ in fh) - 1
print(json.dumps({"seconds": seconds, "rows": rows}))
"""


def ensure_dlt(venv: Path) -> Path:
    """The dlt venv's python, created (and DLT_PACKAGES installed) on first use."""
    python = venv / "bin" / "python"
    ok = (
        python.exists()
        and subprocess.run(
            [str(python), "-c", "import dlt, connectorx, sqlalchemy, psycopg2, pymysql"],
            capture_output=True,
        ).returncode
        == 0
    )
    if not ok:
        print(f"creating the dlt venv {venv} (once): {' '.join(DLT_PACKAGES)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *DLT_PACKAGES], check=True)
    (venv / "bench_dlt.py").write_text(DLT_SCRIPT)
    return python


def run_dlt(python: Path, kind: str, db: str, backend: str, fmt: str, out: Path) -> dict:
    """One dlt pipeline run (sql_table -> local filesystem) in a child; its peak RSS."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.child_rss import run_child as run_measured

    if kind == "pg":
        url = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{db}"
        cx = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{db}"
    else:
        url = f"mysql+pymysql://{MY['user']}@{MY['host']}:{MY['port']}/{db}"
        cx = f"mysql://{MY['user']}@{MY['host']}:{MY['port']}/{db}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["RUNTIME__LOG_LEVEL"] = "ERROR"
    _, rss, stdout = run_measured(
        [str(python), str(python.parent.parent / "bench_dlt.py"), url, cx, "bench", backend,
         fmt, str(out)],
        env,
    )  # fmt: skip
    result = json.loads(stdout.strip().splitlines()[-1])
    result["maxrss_mb"] = float(rss)
    return result


def line(label: str, rows: int, seconds: float, rss: float | str) -> str:
    rss_text = f"{rss:.0f} MB" if isinstance(rss, float) else rss
    return f"  {label:<34} {seconds:8.2f} s  {rows / seconds:>12,.0f} rows/s  peak RSS {rss_text}"


def timed_runs(runs: list) -> str:
    """Each run's (whole call, flow run, extraction) seconds, rounded for printing."""
    return str([tuple(round(x, 2) for x in run) for run in runs])


def report(label: str, rows: int, ours: dict, ref_s: float, ref_name: str, goal: str) -> None:
    """Print one flow's three timings and RSS against the reference; `goal`: its target."""
    print(line(label + ", whole call", rows, ours["seconds"], ours["maxrss_mb"]))
    print(line(label + ", flow run", rows, ours["run_seconds"], ours["maxrss_mb"]))
    print(line(label + ", extraction", rows, ours["fetch_seconds"], ours["maxrss_mb"]))
    print(
        f"  ratio vs {ref_name}: {ref_s / ours['run_seconds']:.2f}x flow run as Prefect records "
        f"it (Running -> Completed: block loads, connection test, lock, extraction, summary), "
        f"{ref_s / ours['fetch_seconds']:.2f}x extraction (discover -> land -> ledger/queue "
        f"record), {ref_s / ours['seconds']:.2f}x whole call (adds run creation and Prefect's "
        f"engine teardown); {goal}\n"
        f"  peak RSS {ours['maxrss_mb']:.0f} MB = Prefect + project imports "
        f"{ours['before_load_mb']:.0f} MB, + first Block.load "
        f"{ours['baseline_mb'] - ours['before_load_mb']:.0f} MB "
        f"({ours['load_seconds']:.1f} s, done before timing), + the run "
        f"{ours['maxrss_mb'] - ours['baseline_mb']:.0f} MB; target < 300 MB"
    )


def print_summary(summary: list[tuple[str, float]]) -> None:
    print("\nratios (>1 means the first is faster for 'vs', slower for 's / s'):")
    for label, ratio in summary:
        print(f"  {label:<48} {ratio:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg-rows", type=int, default=10_000_000)
    parser.add_argument("--my-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each side; the best is compared"
    )
    parser.add_argument("--chunk", type=int, default=20_000, help="SqlSource.chunk_size")
    parser.add_argument("--skip-mariadb", action="store_true")
    parser.add_argument("--child", choices=["pg", "my"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--fields", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--streams", type=int, default=2, help="parallel_streams of the parallel CSV run"
    )
    parser.add_argument(
        "--dlt-venv",
        default="/tmp/ingest-bench-dlt",
        help="venv the benchmark creates for dlt (never a project dependency)",
    )
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument(
        "--extract-only",
        action="store_true",
        help="time SqlSource.fetch alone (no Prefect flow): for a host too loaded to start "
        "a Prefect server in time",
    )
    args = parser.parse_args()
    if args.child and args.extract_only:
        child_extract(args.child, args.db, Path(args.workdir), args.chunk, json.loads(args.fields))
        return
    if args.child:
        child(
            args.child, args.db, Path(args.workdir), args.chunk, args.repeat,
            json.loads(args.fields), args.paired,
        )  # fmt: skip
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-sql-"))
    try:
        measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ~0.6 GB of landed CSV per run


def measure(args: argparse.Namespace, tmp: Path) -> None:
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start")
    summary: list[tuple[str, float]] = []
    global EXTRACT_ONLY
    EXTRACT_ONLY = args.extract_only
    if EXTRACT_ONLY:
        print("--extract-only: SqlSource.fetch alone, no Prefect flow ('flow run' lines below)")
    dlt_python = None if args.skip_dlt else ensure_dlt(Path(args.dlt_venv))
    pg_db = f"bench_sql_{uuid.uuid4().hex[:8]}"
    try:
        t = time.perf_counter()
        make_pg(pg_db, args.pg_rows)
        print(f"PostgreSQL: {args.pg_rows:,} rows created in {time.perf_counter() - t:.1f} s")
        ref_file = tmp / "psql.csv"
        before = children_maxrss_mb()
        ref_runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            psql(pg_db, f"\\copy (select {COLUMNS} from bench) to '{ref_file}' csv header")
            ref_runs.append(time.perf_counter() - t)
        ref_s = min(ref_runs)
        ref_rss = children_maxrss_mb()
        ref_rss_text = f"{ref_rss:.0f} MB" if ref_rss > before else "<= " + f"{before:.0f} MB"
        ours = run_child("pg", pg_db, tmp / "pg", args.chunk, args.repeat)
        print(f"  best of {args.repeat}; psql runs {[round(x, 2) for x in ref_runs]}")
        print("  flow runs (whole call, flow run, extraction) " + timed_runs(ours["all_runs"]))
        assert ours["rows"] == args.pg_rows, ours
        print(line("psql \\copy (reference)", args.pg_rows, ref_s, ref_rss_text))
        report("ingest-sql flow (COPY chunks)", args.pg_rows, ours, ref_s, "psql",
               "goal (one stream) >= 0.8x flow run")  # fmt: skip
        print(f"  file {ours['bytes'] / 1e6:.0f} MB vs psql {ref_file.stat().st_size / 1e6:.0f} MB")
        one = ours["single_runs"] or [(0.0, ref_s, 0.0)]
        print(
            "  single_transaction=True (one COPY, seq scan, one long transaction): best "
            f"flow run {min(r[1] for r in one):.2f} s, extraction {min(r[2] for r in one):.2f} s "
            f"-> {ref_s / min(r[1] for r in one):.2f}x psql (flow run); runs " + timed_runs(one)
        )
        ref_file.unlink()
        shutil.rmtree(tmp / "pg", ignore_errors=True)
        n = args.pg_rows
        par = run_child("pg", pg_db, tmp / "pgpar", args.chunk, args.repeat,
                        {"parallel_streams": args.streams}, paired=True)  # fmt: skip
        assert par["rows"] == n, par
        shutil.rmtree(tmp / "pgpar", ignore_errors=True)
        print(
            f"  parallel_streams={args.streams} runs (whole call, flow run, extraction) "
            + timed_runs(par["all_runs"])
        )
        report(f"flow, parallel_streams={args.streams}", n, par, ref_s, "psql",
               "issue 17 goal >= 1.3x flow run, RSS < 300 MB")  # fmt: skip
        print("  " + paired_ratios(par))
        physical = {"parallel_streams": args.streams, "parallel_split": "physical"}
        phys = run_child("pg", pg_db, tmp / "pgphys", args.chunk, args.repeat, physical, True)
        assert phys["rows"] == n, phys
        shutil.rmtree(tmp / "pgphys", ignore_errors=True)
        print(
            "  parallel_split=physical runs (whole call, flow run, extraction) "
            + timed_runs(phys["all_runs"])
        )
        report(f"flow, {args.streams} page (ctid) ranges", n, phys, ref_s, "psql",
               "issue 17 goal >= 1.3x flow run, RSS < 300 MB")  # fmt: skip
        print("  " + paired_ratios(phys))
        pq_run = run_child("pg", pg_db, tmp / "pgpq", args.chunk, args.repeat,
                           {"output_format": "parquet"})  # fmt: skip
        assert pq_run["rows"] == n, pq_run
        shutil.rmtree(tmp / "pgpq", ignore_errors=True)
        print(line("flow -> Parquet (COPY -> Arrow)", n, pq_run["run_seconds"],
                   pq_run["maxrss_mb"]))  # fmt: skip
        print(
            f"  Parquet flow run / CSV flow run: {pq_run['run_seconds'] / ours['run_seconds']:.2f}"
            f"x (target <= 1.5x); extraction {pq_run['fetch_seconds']:.2f} s vs CSV "
            f"{ours['fetch_seconds']:.2f} s"
        )
        summary.append(
            ("PG Parquet / own CSV (flow run)", pq_run["run_seconds"] / ours["run_seconds"])
        )
        summary.append(("PG CSV flow vs psql", ref_s / ours["run_seconds"]))
        summary.append((f"PG CSV {args.streams} streams vs psql", ref_s / par["run_seconds"]))
        summary.append((f"PG CSV {args.streams} page ranges vs psql", ref_s / phys["run_seconds"]))
        for label, got in ((f"{args.streams} streams", par), (f"{args.streams} page ranges", phys)):
            summary.append(
                (f"PG CSV {label} vs psql, paired median", statistics.median(paired(got)))
            )
        if dlt_python is not None:
            for backend, fmt in (("connectorx", "parquet"), ("pyarrow", "parquet"),
                                 ("connectorx", "csv")):  # fmt: skip
                out = tmp / f"dlt-{backend}-{fmt}"
                got = run_dlt(dlt_python, "pg", pg_db, backend, fmt, out)
                shutil.rmtree(out, ignore_errors=True)
                print(line(f"dlt {backend} -> {fmt} (pipeline.run)", n, got["seconds"],
                           got["maxrss_mb"]) + f"  rows {got['rows']:,}")  # fmt: skip
                ours_s = pq_run["run_seconds"] if fmt == "parquet" else ours["run_seconds"]
                summary.append((f"PG {fmt}: dlt {backend} s / ours s", got["seconds"] / ours_s))
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')

    if args.skip_mariadb:
        print_summary(summary)
        return
    my_db = f"bench_sql_{uuid.uuid4().hex[:8]}"
    try:
        t = time.perf_counter()
        make_my(my_db, args.my_rows)
        print(f"MariaDB: {args.my_rows:,} rows created in {time.perf_counter() - t:.1f} s")
        ref_runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            mariadb(f"SELECT {COLUMNS} FROM bench", my_db, tmp / "mariadb.tsv")
            ref_runs.append(time.perf_counter() - t)
        ref_s = min(ref_runs)
        print(f"  best of {args.repeat}; mariadb runs {[round(x, 3) for x in ref_runs]}")
        print(line("mariadb --batch (reference, TSV)", args.my_rows, ref_s, "n/a"))
        for driver in ("pymysql", "auto"):
            ours = run_child("my", my_db, tmp / f"my-{driver}", args.chunk, args.repeat,
                             {"mysql_driver": driver})  # fmt: skip
            assert ours["rows"] == args.my_rows, ours
            shutil.rmtree(tmp / f"my-{driver}", ignore_errors=True)
            name = "mysqlclient if installed" if driver == "auto" else driver
            goal = "issue 17 goal >= 0.5x (rows/s of the extraction)"
            report(f"ingest-sql flow ({name}, keyset)", args.my_rows, ours, ref_s,
                   "mariadb client", goal)  # fmt: skip
            summary.append((f"MariaDB CSV {name} vs mariadb --batch", ref_s / ours["run_seconds"]))
            summary.append((f"MariaDB CSV {name} vs mariadb --batch, extraction",
                            ref_s / ours["fetch_seconds"]))  # fmt: skip
        if dlt_python is not None:
            out = tmp / "dlt-my"
            got = run_dlt(dlt_python, "my", my_db, "connectorx", "csv", out)
            shutil.rmtree(out, ignore_errors=True)
            print(line("dlt connectorx -> csv (pipeline.run)", args.my_rows, got["seconds"],
                       got["maxrss_mb"]) + f"  rows {got['rows']:,}")  # fmt: skip
            summary.append(("MariaDB CSV: dlt connectorx s / ours s",
                            got["seconds"] / ours["run_seconds"]))  # fmt: skip
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{my_db}`")
    print_summary(summary)
    print(f"load average {os.getloadavg()[0]:.2f} at end (other helpers share the 2 cores)")


if __name__ == "__main__":
    main()
