"""Benchmark: the local folder flow vs `sha256sum` + `cp` over the same files.

Workloads (defaults from the spine issue): 10,000 small files (1 KiB) and 20 files of
100 MB. Each tool runs in its own child process; its peak RSS comes from wait4(). The flow
runs against a Prefect test API started here (so server start-up is not counted), with a
SQLite ledger and fsync on, as deployed by default.

    python benchmarks/bench_local_folder.py [--small N] [--big N] [--big-mb MB] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_rss import run_child  # noqa: E402
from report import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from blocks import IngestionQueue, Ledger, LocalFolderSource
from pipeline.engine import run_source
from tests.conftest import sqlite_connector

src, landing, ledger_path, parallel = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

@flow(name="bench-local-folder", task_runner=ThreadPoolTaskRunner(max_workers=64))
def bench():
    source = LocalFolderSource(source_id="bench", directory=src, max_parallel=parallel)
    ledger = Ledger(database=sqlite_connector(ledger_path))
    return run_source(source, ledger, IngestionQueue(landing_dir=landing)).counts()

started = time.perf_counter()
counts = bench()
counts["process_seconds"] = time.perf_counter() - started
print(json.dumps(counts))
"""


def make_files(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    chunk = os.urandom(min(size, 1 << 20))
    for i in range(count):
        with open(folder / f"f{i:06d}.bin", "wb") as fh:
            left = size
            while left:
                n = min(left, len(chunk))
                fh.write(chunk[:n] if i % 2 else bytes(reversed(chunk[:n])))
                left -= n
            fh.write(i.to_bytes(8, "big"))  # distinct content per file


def reference(folder: Path, dest: Path) -> tuple[float, int]:
    """sha256sum over the files, then cp into a fresh folder, as one shell command."""
    dest.mkdir(parents=True)
    script = (
        f'cd "{folder}" && find . -type f -print0 | xargs -0 sha256sum > /dev/null '
        f'&& cp -r . "{dest}"'
    )
    seconds, rss, _ = run_child(["bash", "-c", script], dict(os.environ))
    return seconds, rss


def flow_run(folder: Path, work: Path, env: dict[str, str], parallel: int) -> tuple[dict, int]:
    argv = [
        sys.executable,
        "-c",
        CHILD,
        str(folder),
        str(work / "landing"),
        str(work / "ledger.db"),
        str(parallel),
    ]
    _, rss, out = run_child(argv, env)
    return json.loads(out.strip().splitlines()[-1]), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--small-bytes", type=int, default=1024)
    parser.add_argument("--big", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1,000 small and 3 x 50 MB")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.small, args.big, args.big_mb = 1000, 3, 50

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench-local-"))
    rows = []
    try:
        with prefect_test_harness(server_startup_timeout=120):
            env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
            workloads = [
                (f"{args.small} x {args.small_bytes} B", args.small, args.small_bytes),
                (f"{args.big} x {args.big_mb} MB", args.big, args.big_mb * 1_000_000),
            ]
            for label, count, size in workloads:
                if not count:
                    continue
                folder = scratch / f"src-{count}-{size}"
                make_files(folder, count, size)
                total_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
                subprocess.run(["sync"], check=False)
                ref_s, ref_rss = reference(folder, scratch / f"ref-{count}")
                counts, rss = flow_run(folder, scratch / f"flow-{count}", env, args.parallel)
                assert counts["landed"] == count, counts
                for tool, seconds, peak in (
                    ("sha256sum + cp", ref_s, ref_rss),
                    ("flow (pipeline)", counts["seconds"], rss),
                    ("flow (process)", counts["process_seconds"], rss),
                ):
                    rows.append((label, tool, count, total_mb, seconds, peak))
                rows.append((label, "speed ratio flow/ref", ref_s / counts["seconds"]))
                shutil.rmtree(folder)
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)

    print_table(rows)
    print(
        "\n'pipeline' is the flow's own run time (discover to record); 'process' adds Python and "
        "Prefect start-up in the child. RSS is each child's peak (wait4)."
    )


if __name__ == "__main__":
    main()
