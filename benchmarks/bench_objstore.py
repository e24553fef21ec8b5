"""Benchmark: the S3 source flow vs boto3's own `download_file` loop, from a moto server.

Workloads (defaults from the issue): 2,000 small objects (1 KiB) and one 500 MB object,
served by moto's standalone server running in its own process on 127.0.0.1 (so its memory
is not counted). Each tool runs in its own child process; its peak RSS comes from wait4().
The flow runs against a Prefect test API started here (server start-up not counted), with
a SQLite ledger and the default fsync, as deployed.

    python benchmarks/bench_objstore.py [--small N] [--small-bytes B] [--big-mb MB]
                                        [--parallel N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_rss import run_child  # noqa: E402
from report import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET, REGION = "bench", "bench-secret", "us-east-1"

FLOW_CHILD = r"""
import json, sys, time
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_aws import AwsClientParameters, AwsCredentials
from blocks import IngestionQueue, Ledger
from blocks.object_store.s3 import S3Source
from pipeline.engine import run_source
from tests.conftest import sqlite_connector

endpoint, bucket, prefix, landing, ledger_path, parallel = sys.argv[1:7]

@flow(name="bench-objstore", task_runner=ThreadPoolTaskRunner(max_workers=64))
def bench():
    creds = AwsCredentials(
        aws_access_key_id="bench", aws_secret_access_key="bench-secret", region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
    )
    source = S3Source(source_id="bench", aws_credentials=creds, bucket=bucket, prefix=prefix,
                      max_parallel=int(parallel), retries=0)
    ledger = Ledger(database=sqlite_connector(ledger_path))
    return run_source(source, ledger, IngestionQueue(landing_dir=landing)).counts()

started = time.perf_counter()
counts = bench()
counts["process_seconds"] = time.perf_counter() - started
print(json.dumps(counts))
"""

REF_CHILD = r"""
import json, os, sys, time, boto3
endpoint, bucket, prefix, dest = sys.argv[1:5]
started = time.perf_counter()
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench-secret")
n = size = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for obj in page.get("Contents", ()):
        target = os.path.join(dest, obj["Key"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        s3.download_file(bucket, obj["Key"], target)
        n += 1
        size += obj["Size"]
print(json.dumps({"objects": n, "bytes": size, "seconds": time.perf_counter() - started}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's standalone server in its own process on 127.0.0.1."""
    port = free_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer; "
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); "
        "s.start(); time.sleep(10**6)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def upload(client, bucket: str, small: int, small_bytes: int, big_mb: int, scratch: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    client.create_bucket(Bucket=bucket)
    base = os.urandom(small_bytes)
    for i in range(small):
        body = base[:-8] + i.to_bytes(8, "big") if small_bytes >= 8 else base
        client.put_object(Bucket=bucket, Key=f"small/o{i:06d}.bin", Body=body)
    if big_mb:
        path = scratch / "big.bin"
        chunk = os.urandom(1 << 20)
        with open(path, "wb") as fh:
            for _ in range(big_mb):
                fh.write(chunk)
        cfg = TransferConfig(multipart_chunksize=64 << 20)
        client.upload_file(str(path), bucket, "big/one.bin", Config=cfg)
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--small-bytes", type=int, default=1024)
    parser.add_argument("--big-mb", type=int, default=500, help="MiB of the one big object")
    parser.add_argument("--parallel", type=int, default=4, help="the block's max_parallel")
    parser.add_argument("--quick", action="store_true", help="200 small and one 50 MiB")
    args = parser.parse_args()
    if args.quick:
        args.small, args.big_mb = 200, 50

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import boto3
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    scratch = Path(tempfile.mkdtemp(prefix="bench-objstore-"))
    moto, endpoint = start_moto()
    rows = []
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
        )
        upload(client, "bench", args.small, args.small_bytes, args.big_mb, scratch)
        with prefect_test_harness(server_startup_timeout=120):
            env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
            workloads = [
                (f"{args.small} x {args.small_bytes} B", "small/", args.small),
                (f"1 x {args.big_mb} MiB", "big/", 1 if args.big_mb else 0),
            ]
            for label, prefix, count in workloads:
                if not count:
                    continue
                work = scratch / prefix.strip("/")
                work.mkdir()
                _, ref_rss, out = run_child(
                    [sys.executable, "-c", REF_CHILD, endpoint, "bench", prefix, str(work / "ref")],
                    env,
                )
                ref = json.loads(out.strip().splitlines()[-1])
                argv = [
                    sys.executable,
                    "-c",
                    FLOW_CHILD,
                    endpoint,
                    "bench",
                    prefix,
                    str(work / "landing"),
                    str(work / "ledger.db"),
                    str(args.parallel),
                ]
                _, rss, out = run_child(argv, env)
                counts = json.loads(out.strip().splitlines()[-1])
                assert counts["landed"] == count == ref["objects"], (counts, ref)
                mb = ref["bytes"] / 1e6
                rows.append((label, "boto3 download_file loop", count, mb, ref["seconds"], ref_rss))
                rows.append((label, "flow (pipeline)", count, mb, counts["seconds"], rss))
                rows.append((label, "flow (process)", count, mb, counts["process_seconds"], rss))
                rows.append((label, "speed ratio flow/ref", ref["seconds"] / counts["seconds"]))
                shutil.rmtree(work)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)

    print_table(rows, unit="objects", rate="obj/s")
    print(
        f"\nflow: S3Source + pipeline, max_parallel={args.parallel}, SQLite ledger, fsync on; "
        "'pipeline' is discover to record, 'process' adds Python and Prefect start-up. "
        "Reference: one boto3 client, list + download_file per object, sequential (boto3 "
        "splits a big object into parallel ranged GETs itself). RSS: each child's peak (wait4)."
    )


if __name__ == "__main__":
    main()
