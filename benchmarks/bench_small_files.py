"""Benchmark: many small files from a local folder, the flow vs `sha256sum` + `cp`, rclone
and dlt, side by side (files/s, ratios, peak RSS, and the load average while it ran).

The flow runs against a Prefect test API started here (server start-up not counted), with
a SQLite ledger, fsync on and the source's default max_parallel (4) and small_item_batch
(200): once with one event per item (`event_per: item`) and once with `event_per: batch`
(the default);
`--variants` adds events off / fsync off / batches of 50 to show where the time goes.
rclone and dlt are set up by this script, never as project dependencies: rclone from the
Debian package (`apt-get install rclone`, only when run as root; otherwise skipped with the
reason), dlt in its own venv (`--dlt-venv`, default /tmp/bench-dlt-venv, `pip install
dlt[filesystem]`).

    python benchmarks/bench_small_files.py [--files 10000 --bytes 1024 --batch 200]
        [--parallel 4] [--variants] [--skip-dlt] [--skip-rclone]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_rss import run_child, wait_for_quiet_children  # noqa: E402
from report import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DLT_PACKAGES = ["dlt[filesystem]==1.31.0"]

CHILD = r"""
import json, sys, time
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from blocks import IngestionQueue, Ledger, LocalFolderSource
from pipeline.engine import run_source
from tests.conftest import sqlite_connector

src, landing, ledger_path = sys.argv[1:4]
parallel, batch, events, fsync = (int(a) for a in sys.argv[4:8])

@flow(name="bench-small-files", task_runner=ThreadPoolTaskRunner(max_workers=64))
def bench():
    source = LocalFolderSource(
        source_id="bench", directory=src, max_parallel=parallel, small_item_batch=batch
    )
    ledger = Ledger(database=sqlite_connector(ledger_path))
    queue = IngestionQueue(
        landing_dir=landing, emit_events=bool(events), fsync=bool(fsync),
        event_per="batch" if events == 2 else "item",
    )
    return run_source(source, ledger, queue).counts()

started = time.perf_counter()
counts = bench()
counts["process_seconds"] = time.perf_counter() - started
print(json.dumps(counts))
"""

# dlt's documented way to copy files: the filesystem source, a map step that downloads
# each file, and the listing loaded to a (local filesystem) destination.
DLT_SCRIPT = r"""
import os, sys, time, json
import dlt
from dlt.sources.filesystem import filesystem

src, dest, work = sys.argv[1:4]

def _copy(item):
    target = os.path.join(dest, item["file_name"])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    item.fsspec.download(item["file_url"], target)
    return item

started = time.perf_counter()
files = filesystem(bucket_url="file://" + src, file_glob="**").add_map(_copy)
pipe = dlt.pipeline(
    pipeline_name="bench_copy", pipelines_dir=work + "/.dlt",
    destination=dlt.destinations.filesystem(bucket_url="file://" + work + "/listing"),
    dataset_name="d",
)
pipe.run(files.with_name("listing"), write_disposition="replace", loader_file_format="jsonl")
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def make_files(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    block = os.urandom(size)
    for i in range(count):
        data = i.to_bytes(8, "big") + block[8:]  # distinct content per file
        (folder / f"f{i:06d}.bin").write_bytes(data[:size])
    old = os.stat(folder).st_mtime - 3600
    for path in folder.iterdir():
        os.utime(path, (old, old))


def reference(folder: Path, dest: Path) -> tuple[float, int]:
    """sha256sum over the files, then cp into a fresh folder, as one shell command."""
    dest.mkdir(parents=True)
    script = (
        f'cd "{folder}" && find . -type f -print0 | xargs -0 sha256sum > /dev/null '
        f'&& cp -r . "{dest}"'
    )
    seconds, rss, _ = run_child(["bash", "-c", script], dict(os.environ))
    return seconds, rss


def ensure_rclone() -> str | None:
    """rclone's path, installing the Debian package when missing; or None with a reason."""
    found = shutil.which("rclone")
    if found:
        return found
    if os.geteuid() != 0:
        print("rclone: skipped (not installed, and installing needs root: apt-get install rclone)")
        return None
    got = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "rclone"], capture_output=True
    )
    if got.returncode != 0 or not shutil.which("rclone"):
        print(f"rclone: skipped (apt-get install rclone failed: {got.stderr.decode()[-300:]})")
        return None
    return shutil.which("rclone")


def ensure_dlt(venv: Path) -> Path | None:
    """The dlt venv's python, created with DLT_PACKAGES on first use; or None with a reason."""
    python = venv / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import dlt, fsspec"]).returncode:
        print(f"creating the dlt venv {venv} (once): {' '.join(DLT_PACKAGES)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        got = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *DLT_PACKAGES], capture_output=True
        )
        if got.returncode != 0:
            print(f"dlt: skipped (pip install failed: {got.stderr.decode()[-300:]})")
            return None
    (venv / "bench_dlt_copy.py").write_text(DLT_SCRIPT)
    return python


class Rows(list):
    """Table rows, each also printed at once (a long run shows its progress)."""

    def append(self, row: tuple) -> None:
        super().append(row)
        if len(row) == 6:
            print(
                f"  {row[1]}: {row[4]:.2f} s, {row[2] / row[4]:.0f} files/s, "
                f"{row[5]} MB RSS (load {loadavg()})",
                flush=True,
            )


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--bytes", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=200, help="small_item_batch (its default)")
    parser.add_argument("--parallel", type=int, default=4, help="max_parallel (its default)")
    parser.add_argument(
        "--variants", action="store_true", help="also events off / fsync off / batch 50"
    )
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--skip-rclone", action="store_true")
    parser.add_argument("--dlt-venv", default="/tmp/bench-dlt-venv")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()

    rclone = None if args.skip_rclone else ensure_rclone()
    dlt_python = None if args.skip_dlt else ensure_dlt(Path(args.dlt_venv))
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench-small-"))
    label = f"{args.files} x {args.bytes} B"
    rows: list[tuple] = Rows()
    loads: list[str] = [f"start {loadavg()}"]
    try:
        folder = scratch / "src"
        make_files(folder, args.files, args.bytes)
        mb = args.files * args.bytes / 1e6
        subprocess.run(["sync"], check=False)
        ref_s, ref_rss = reference(folder, scratch / "ref")
        rows.append((label, "sha256sum + cp", args.files, mb, ref_s, ref_rss))
        loads.append(f"after cp {loadavg()}")
        others: list[tuple[str, float]] = []
        if rclone:
            secs, rss, _ = run_child(
                [rclone, "copy", str(folder), str(scratch / "rclone"), "--transfers", "8"],
                dict(os.environ),
            )
            rows.append((label, "rclone copy", args.files, mb, secs, rss))
            others.append(("rclone", secs))
            loads.append(f"after rclone {loadavg()}")
        if dlt_python:
            work = scratch / "dlt"
            (work / "out").mkdir(parents=True)
            script = str(Path(args.dlt_venv) / "bench_dlt_copy.py")
            env = dict(os.environ, RUNTIME__LOG_LEVEL="WARNING")
            secs, rss, out = run_child(
                [str(dlt_python), script, str(folder), str(work / "out"), str(work)], env
            )
            copied = sum(1 for p in (work / "out").rglob("*") if p.is_file())
            assert copied == args.files, f"dlt copied {copied} files"
            rows.append((label, "dlt filesystem copy", args.files, mb, secs, rss))
            others.append(("dlt", secs))
            loads.append(f"after dlt {loadavg()}")

        # (name, events: 0 off / 1 per item / 2 per batch, fsync, small_item_batch)
        variants = [
            ("flow, event_per item", 1, 1, args.batch),
            ("flow, defaults (event_per batch)", 2, 1, args.batch),
        ]
        if args.variants:
            variants += [
                ("flow, events off", 0, 1, args.batch),
                ("flow, event_per item, fsync off", 1, 0, args.batch),
                ("flow, event_per batch, batch 50", 2, 1, 50),
            ]
        flow_s: dict[str, float] = {}
        with prefect_test_harness(server_startup_timeout=300):
            env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
            for name, events, fsync, batch in variants:
                work = scratch / re.sub(r"[^a-z0-9]+", "-", name).strip("-")
                work.mkdir()
                argv = [sys.executable, "-c", CHILD, str(folder), str(work / "landing")]
                argv += [str(work / "ledger.db"), str(args.parallel), str(batch)]
                argv += [str(events), str(fsync)]
                waited = wait_for_quiet_children()  # the last variant's events stored
                print(f"  (waited {waited:.0f} s for the Prefect server to go idle)", flush=True)
                _, rss, out = run_child(argv, env)
                counts = json.loads(out.strip().splitlines()[-1])
                assert counts["landed"] == args.files, counts
                rows.append((label, f"{name} (pipeline)", args.files, mb, counts["seconds"], rss))
                rows.append(
                    (label, f"{name} (process)", args.files, mb, counts["process_seconds"], rss)
                )
                loads.append(f"after {name} {loadavg()}")
                flow_s[name] = counts["seconds"]
        for name in ("flow, event_per item", "flow, defaults (event_per batch)"):
            rows.append((label, f"speed ratio {name} / sha256sum+cp", ref_s / flow_s[name]))
            for other, secs in others:
                rows.append((label, f"speed ratio {name} / {other}", secs / flow_s[name]))
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)

    print_table(rows)
    print(
        "\n'pipeline' is the flow's own run time (discover to record); 'process' adds Python "
        "and Prefect start-up in the child. RSS is each child's peak (wait4). Ratios above "
        "1 mean the flow is faster.\nload average (1/5/15 min): "
        + "; ".join(loads)
        + f" on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
