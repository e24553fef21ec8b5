"""Benchmark the REST API source: N pages x M records from a local HTTP server.

Prints records/s and peak RSS of RestApiSource.fetch (page-number pagination, JSON
records -> JSONL file) next to a reference: a bare httpx loop writing the same JSONL.
Each side runs in its own process so peak RSS is its own; the server runs in a third.

    python benchmarks/bench_http.py               # 200 pages x 1,000 records
    python benchmarks/bench_http.py --pages 20    # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(pages: int) -> None:
    from tests.http_server import ApiServer, ApiState

    with ApiServer(ApiState(n=pages)) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_source(url: str, per_page: int, out_path: str) -> dict:
    from blocks.core.source import DiscoverContext
    from blocks.http.rest_api import RestApiSource

    source = RestApiSource(
        source_id="bench",
        base_url=url,
        path="/bench",
        pagination="page",
        page_param="page",
        limit_param="per_page",
        page_size=per_page,
        records_path="data",
    )
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    (cand,) = source.discover(DiscoverContext(partition_date=date.today()))
    with open(out_path, "wb") as out:
        source.fetch(cand, out)
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": rss0}


def run_reference(url: str, per_page: int, out_path: str) -> dict:
    import httpx

    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    with httpx.Client(trust_env=False) as client, open(out_path, "wb") as out:
        page = 1
        while True:
            r = client.get(f"{url}/bench", params={"page": page, "per_page": per_page})
            r.raise_for_status()
            recs = r.json()["data"]
            for rec in recs:
                out.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
            if len(recs) < per_page:
                break
            page += 1
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": rss0}


def worker(kind: str, url: str, per_page: int) -> None:
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    try:
        fn = run_source if kind == "source" else run_reference
        result = fn(url, per_page, path)
        with open(path, "rb") as fh:
            result["records"] = sum(1 for _ in fh)
        result["bytes"] = os.path.getsize(path)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
    finally:
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--per-page", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each side")
    ap.add_argument("--worker", choices=["source", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.pages)
    if args.worker:
        return worker(args.worker, args.url, args.per_page)

    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", "--pages", str(args.pages)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        print(f"{args.pages} pages x {args.per_page} records from {url} (2-core shared machine)")
        head = f"{'side':<28}{'records':>10}{'MB':>8}{'seconds':>9}{'records/s':>12}"
        print(head + f"{'peak RSS MB':>13}")
        for _ in range(args.rounds):
            for kind, label in (
                ("reference", "reference: bare httpx loop"),
                ("source", "RestApiSource.fetch"),
            ):
                out = subprocess.run(
                    [*me, "--worker", kind, "--url", url, "--per-page", str(args.per_page)],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                r = json.loads(out.strip().splitlines()[-1])
                print(
                    f"{label:<28}{r['records']:>10,}{r['bytes'] / 1e6:>8.1f}{r['seconds']:>9.2f}"
                    f"{r['records'] / r['seconds']:>12,.0f}{r['peak_rss_mb']:>13.1f}"
                    f"  (after imports {r['rss_before_mb']:.1f})"
                )
    finally:
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
