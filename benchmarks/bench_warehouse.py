"""Benchmark: export throughput of the Snowflake and BigQuery query sources.

Against the local emulators (fakesnow, bqemulator; build their venvs with
`bash tests/tools/setup_warehouse_emulators.sh`). For each warehouse and format it times the
block's `fetch` (query + chunked read + writing the file through the pipeline's hashing
writer) next to the reference measured in the same run: the raw client reading the same
rows in the same chunk size (login and query included on both sides) and discarding them.
The difference is the cost of rendering and writing the file. Prints rows/s for both,
the ratio, and the process's peak RSS.

    python benchmarks/bench_warehouse.py               # 100,000 rows, csv/jsonl/parquet
    python benchmarks/bench_warehouse.py --rows 20000 --formats csv   # quick run

Numbers are noisy on a shared 2-core machine: compare the columns of one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["SNOWFLAKE_DISABLE_PLATFORM_DETECTION"] = "true"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from blocks.core.source import DiscoverContext  # noqa: E402
from pipeline.engine import HashingWriter  # noqa: E402

TOOLS = Path(os.environ.get("INGEST_TOOLS_DIR", "/work/tools"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def export(source, day) -> tuple[int, float]:
    """(bytes, seconds) of one `fetch` into a temp file through the hashing writer."""
    (cand,) = source.discover(DiscoverContext(day))
    with tempfile.TemporaryFile() as fh:
        writer = HashingWriter(fh)
        started = time.perf_counter()
        source.fetch(cand, writer)
        return writer.size, time.perf_counter() - started


def report(name: str, rows: int, ref_s: float, fmt: str, size: int, secs: float) -> None:
    print(
        f"{name:10} {fmt:8} {rows:>9,} rows  block {rows / secs:>10,.0f} rows/s "
        f"({size / secs / 1e6:6.1f} MB/s, {size / 1e6:7.1f} MB)  "
        f"reference raw read {rows / ref_s:>10,.0f} rows/s  ratio {secs / ref_s:5.2f}x  "
        f"peak RSS {peak_rss_mb():6.0f} MB"
    )


# ----------------------------------------------------------------------------- Snowflake
def bench_snowflake(rows: int, chunk: int, formats: list[str]) -> None:
    from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials

    from blocks.warehouse.snowflake import SnowflakeQuerySource

    python = TOOLS / "fakesnow" / "bin" / "python"
    if not python.exists():
        print(f"snowflake: skipped, no fakesnow venv at {python.parent.parent}")
        return
    port = free_port()
    proc = subprocess.Popen(
        [str(python), str(ROOT / "tests/tools/fakesnow_server.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("READY"):
            print("snowflake: skipped, fakesnow did not start")
            return
        import snowflake.connector

        kwargs = dict(host="127.0.0.1", port=port, protocol="http")
        conn = snowflake.connector.connect(
            user="bench", password="x", account="fakesnow", database="BENCH", schema="S", **kwargs
        )
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS BENCH")
        cur.execute("CREATE SCHEMA IF NOT EXISTS BENCH.S")
        cur.execute("USE SCHEMA BENCH.S")
        cur.execute(
            "CREATE OR REPLACE TABLE BIG AS SELECT SEQ4() AS ID, 'name ' || SEQ4() AS NAME, "
            "SEQ4() * 1.25 AS AMOUNT, DATEADD(second, SEQ4(), '2026-01-01'::timestamp_ntz) AS TS "
            f"FROM TABLE(GENERATOR(ROWCOUNT => {rows}))"
        )
        conn.close()
        started = time.perf_counter()  # reference: log in, query, read in chunks
        conn = snowflake.connector.connect(
            user="bench", password="x", account="fakesnow", database="BENCH", schema="S", **kwargs
        )
        cur = conn.cursor()
        cur.execute("SELECT * FROM BIG")
        while cur.fetchmany(chunk):
            pass
        conn.close()
        ref = time.perf_counter() - started
        connector = SnowflakeConnector(
            credentials=SnowflakeCredentials(account="fakesnow", user="bench", password="x"),
            database="BENCH",
            warehouse="W",
            schema="S",
        )
        for fmt in formats:
            source = SnowflakeQuerySource(
                source_id="bench-sf",
                snowflake=connector,
                query="SELECT * FROM BIG",
                output_format=fmt,
                chunk_size=chunk,
                **kwargs,
            )
            size, secs = export(source, date.today())
            report("snowflake", rows, ref, fmt, size, secs)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ----------------------------------------------------------------------------- BigQuery
def bench_bigquery(rows: int, chunk: int, formats: list[str]) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery
    from prefect_gcp import GcpCredentials
    from prefect_gcp.bigquery import BigQueryWarehouse

    from blocks.warehouse.bigquery import BigQueryQuerySource

    exe = TOOLS / "bqemulator" / "bin" / "bqemulator"
    if not exe.exists():
        print(f"bigquery: skipped, no bqemulator venv at {exe.parent.parent}")
        return
    rest = free_port()
    proc = subprocess.Popen(
        [str(exe), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest)]
        + ["--grpc-host", "127.0.0.1", "--grpc-port", str(free_port())]
        + ["--project", "bench", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{rest}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/bigquery/v2/projects/bench/datasets", timeout=2)
                break
            except Exception:
                time.sleep(0.2)
        # The emulator checks no credentials: GcpCredentials hands out anonymous ones.
        GcpCredentials.get_credentials_from_service_account = lambda self: AnonymousCredentials()
        client = bigquery.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )
        dataset = "b_" + uuid.uuid4().hex[:6]
        client.create_dataset(dataset)
        client.query(
            f"CREATE TABLE {dataset}.big AS SELECT x AS id, CONCAT('name ', CAST(x AS STRING)) "
            "AS name, CAST(x AS NUMERIC) * 1.25 AS amount, "
            "TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL x SECOND) AS ts "
            f"FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS x"
        ).result()
        client.close()
        started = time.perf_counter()  # reference: new client, query, read page by page
        client = bigquery.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )
        for page in client.query(f"SELECT * FROM {dataset}.big").result(page_size=chunk).pages:
            for _ in page:
                pass
        client.close()
        ref = time.perf_counter() - started
        warehouse = BigQueryWarehouse(gcp_credentials=GcpCredentials(project="bench"))
        for fmt in formats:
            source = BigQueryQuerySource(
                source_id="bench-bq",
                bigquery=warehouse,
                api_endpoint=endpoint,
                query=f"SELECT * FROM {dataset}.big",
                output_format=fmt,
                chunk_size=chunk,
            )
            size, secs = export(source, date.today())
            report("bigquery", rows, ref, fmt, size, secs)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--formats", default="csv,jsonl,parquet")
    parser.add_argument("--only", choices=["snowflake", "bigquery"], default=None)
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.only in (None, "snowflake"):
        bench_snowflake(args.rows, args.chunk, formats)
    if args.only in (None, "bigquery"):
        bench_bigquery(args.rows, args.chunk, formats)


if __name__ == "__main__":
    main()
