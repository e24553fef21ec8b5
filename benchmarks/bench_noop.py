"""Benchmark: a scheduled run that finds nothing new (1,000 known files), the flow vs an
empty Prefect flow and dlt's incremental filesystem no-op, side by side.

The flow is the deployed one (`ingest-local-folder`) with its source block saved in a
Prefect test API started here, the embedded SQLite ledger and landing folder. It lands
the files once, then runs `--runs` times with nothing new; each run is timed as the caller
sees it (`call`) and as Prefect records it (the flow run's start to end). dlt runs in its
own venv (created by `bench_small_files.py`'s set-up, `--dlt-venv`), never a project
dependency.

    python benchmarks/bench_noop.py [--files 1000 --runs 10] [--skip-dlt]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_small_files import ensure_dlt, loadavg, make_files  # noqa: E402
from child_rss import run_child  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import asyncio, json, sys, time
from prefect import flow
from prefect.client.orchestration import get_client
from blocks import LocalFolderSource
from flows.local_folder import ingest_local_folder

folder, runs = sys.argv[1], int(sys.argv[2])
LocalFolderSource(source_id="noop", directory=folder).save("noop", overwrite=True)

@flow(name="empty")
def empty():
    return 1

def recorded(state) -> float:
    async def read():
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            return (run.end_time - run.start_time).total_seconds()
    return asyncio.run(read())

first = ingest_local_folder(source_block="noop", return_state=True)
assert first.result()["landed"] > 0, first.result()
out = {"flow": [], "flow_recorded": [], "empty": [], "empty_recorded": []}
for _ in range(runs):
    calls = (
        ("flow", lambda: ingest_local_folder(source_block="noop", return_state=True)),
        ("empty", lambda: empty(return_state=True)),
    )
    for name, call in calls:
        started = time.perf_counter()
        state = call()
        out[name].append(time.perf_counter() - started)
        out[name + "_recorded"].append(recorded(state))
        if name == "flow":
            got = state.result()
            assert got["landed"] == 0 and got["skipped"] == got["listed"] > 0, got
print(json.dumps(out))
"""

# dlt's documented incremental load of a folder: the filesystem source with an incremental
# cursor on modification_date; the second and later runs find nothing new.
DLT_SCRIPT = r"""
import json, sys, time
import dlt
from dlt.sources.filesystem import filesystem

folder, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])

def once():
    files = filesystem(bucket_url="file://" + folder, file_glob="*")
    files.apply_hints(incremental=dlt.sources.incremental("modification_date"))
    pipe = dlt.pipeline(
        pipeline_name="bench_noop", pipelines_dir=work + "/.dlt",
        destination=dlt.destinations.filesystem(bucket_url="file://" + work + "/out"),
        dataset_name="d",
    )
    return pipe.run(files.with_name("listing"), loader_file_format="jsonl")

once()
times = []
for _ in range(runs):
    started = time.perf_counter()
    once()
    times.append(time.perf_counter() - started)
print(json.dumps({"dlt": times}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--dlt-venv", default="/tmp/bench-dlt-venv")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-noop-"))
    folder = scratch / "src"
    make_files(folder, args.files, 1024)
    os.environ.setdefault("PREFECT_HOME", str(scratch / "prefect"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    loads = [f"start {loadavg()}"]
    results: dict[str, list[float]] = {}
    rss: dict[str, int] = {}
    with prefect_test_harness(server_startup_timeout=300):
        env = dict(
            os.environ,
            PREFECT_API_URL=PREFECT_API_URL.value(),
            PYTHONPATH=str(ROOT),
            INGEST_HOME=str(scratch / "ingest"),
        )
        _, rss["flow"], out = run_child(
            [sys.executable, "-c", CHILD, str(folder), str(args.runs)], env
        )
        results.update(json.loads(out.strip().splitlines()[-1]))
    loads.append(f"after flow {loadavg()}")
    dlt_python = None if args.skip_dlt else ensure_dlt(Path(args.dlt_venv))
    if dlt_python:
        script = scratch / "bench_dlt_noop.py"
        script.write_text(DLT_SCRIPT)
        work = scratch / "dlt"
        work.mkdir()
        env = dict(os.environ, RUNTIME__LOG_LEVEL="WARNING")
        _, rss["dlt"], out = run_child(
            [str(dlt_python), str(script), str(folder), str(work), str(args.runs)], env
        )
        results.update(json.loads(out.strip().splitlines()[-1]))
        loads.append(f"after dlt {loadavg()}")

    print(f"\nno-op run, {args.files} known files, {args.runs} runs each (seconds)")
    print(f"{'what':<36} {'median':>8} {'min':>8} {'max':>8}")
    labels = {
        "flow": "ingest-local-folder, call",
        "flow_recorded": "ingest-local-folder, flow run",
        "empty": "empty flow, call",
        "empty_recorded": "empty flow, flow run",
        "dlt": "dlt incremental filesystem, run",
    }
    for key, label in labels.items():
        if key in results:
            got = results[key]
            print(f"{label:<36} {statistics.median(got):>8.3f} {min(got):>8.3f} {max(got):>8.3f}")
    flow_run = statistics.median(results["flow_recorded"])
    empty_run = statistics.median(results["empty_recorded"])
    print(f"\nratio flow run / empty flow run: {flow_run / empty_run:.1f}x")
    if "dlt" in results:
        dlt = statistics.median(results["dlt"])
        print(f"ratio dlt / flow run: {dlt / flow_run:.2f}x (>1: flow faster)")
    print(f"peak RSS MB: {rss}; load average (1/5/15 min): {'; '.join(loads)}")
    print(f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
