"""Benchmark: the SFTP source vs OpenSSH's `sftp -b` on the same files, in one run.

Starts a local sshd (tests/sftp_server.py, needs root and openssh-server), writes one big
file and many small ones, then downloads them with OpenSSH's client and with this
project, each in its own child process (peak RSS read with wait4, see child_rss.py):

- big file, alternated `--rounds` times and medians compared (two shared cores make
  single runs swing by +-20%): `sftp -b`, the source's download path (block.fetch into
  the pipeline's hashing writer, the code a land task runs) with each of
  `--connections`, and the whole ingest pipeline in a flow (list, dedupe, land task,
  ledger, hand-off) with the block's default connections (or `--flow-connections`);
- small files: `sftp -b` and the flow with its defaults (`event_per: batch`) and with
  `event_per: item`, alternated `--small-rounds` times, medians compared.

    python benchmarks/bench_sftp.py                             # 1 GiB + 5,000 files
    python benchmarks/bench_sftp.py --big-mb 128 --small 300    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from child_rss import run_child, wait_for_quiet_children  # noqa: E402
from report import print_table  # noqa: E402

from tests import sftp_server  # noqa: E402

# argv: host port user key_file host_key remote_dir work parallel connections mode(fetch|flow)
CHILD = r"""
import json, sys, time
from datetime import date
from pathlib import Path
host, port, user, key, host_key, remote, work, parallel, connections, mode = sys.argv[1:11]
from blocks.sftp.block import SftpSource
source = SftpSource(source_id="bench", host=host, port=int(port), username=user,
    private_key=Path(key).read_text(), host_key=host_key, remote_dir=remote,
    max_parallel=int(parallel), connections_per_file=int(connections))
work = Path(work)
import blocks.sftp.block
ranged = []  # each range worker's own peak RSS (it is a separate process)
real_parallel = blocks.sftp.block.parallel_download
def recording(*args, **kw):
    ranged.append(real_parallel(*args, **kw))
    return ranged[-1]
blocks.sftp.block.parallel_download = recording
workers_mb = lambda: max((sum(r.worker_peak_rss_kb) for r in ranged), default=0) / 1024
if mode == "fetch":
    from blocks.core.source import DiscoverContext
    from pipeline.engine import HashingWriter
    [cand] = list(source.discover(DiscoverContext(date.today())))
    with open(work / "fetched.bin", "wb") as fh:
        started = time.perf_counter()
        writer = HashingWriter(fh, work / "fetched.bin")
        source.fetch(cand, writer)
        writer.close()
        seconds = time.perf_counter() - started
    assert writer.size == cand.size, (writer.size, cand.size)
    source.close()
    print(json.dumps({"seconds": seconds, "workers_rss_mb": workers_mb()}))
else:
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner
    from blocks import IngestionQueue, Ledger
    from pipeline.engine import run_source
    from tests.conftest import sqlite_connector

    @flow(name="bench-sftp", task_runner=ThreadPoolTaskRunner(max_workers=64))
    def bench():
        ledger = Ledger(database=sqlite_connector(work / "ledger.db"))
        # big file: fsync off, as measured before; small files: fsync on (the default),
        # events per item or per batch (the default)
        queue = IngestionQueue(
            landing_dir=str(work / "landing"), fsync=mode != "flow",
            event_per="batch" if mode == "flow-small-batch" else "item",
        )
        return run_source(source, ledger, queue).counts()

    started = time.perf_counter()
    counts = bench()
    counts["process_seconds"] = time.perf_counter() - started
    counts["workers_rss_mb"] = workers_mb()
    print(json.dumps(counts))
"""


def openssh_get(server, key: Path, remote: Path, dest: Path, glob: str) -> tuple[float, int]:
    """`sftp -b` download of remote/glob into dest: (seconds, peak RSS MB)."""
    dest.mkdir(parents=True, exist_ok=True)
    batch = dest.parent / f"batch-{dest.name}"
    batch.write_text(f"lcd {dest}\ncd {remote}\nget {glob}\n")
    cmd = [
        "sftp", "-q", "-b", str(batch), "-i", str(key), "-P", str(server.port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", f"{sftp_server.USER}@127.0.0.1",
    ]  # fmt: skip
    os.sync()  # start from clean page cache: the last run's dirty pages are not ours
    seconds, rss, _ = run_child(cmd, dict(os.environ))
    return seconds, rss


def ours(server, key: Path, remote: Path, work: Path, env, parallel: int, conns: int, mode: str):
    """The source in a child process: (result dict, peak RSS MB)."""
    work.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-c", CHILD, "127.0.0.1", str(server.port), sftp_server.USER,
        str(key), server.host_key_line, str(remote), str(work), str(parallel), str(conns),
        mode,
    ]  # fmt: skip
    os.sync()  # as for OpenSSH: no earlier run's writeback during this one
    _, rss, out = run_child(argv, env)
    return json.loads(out.strip().splitlines()[-1]), rss


def _rates(mb: float, seconds: Iterable[float]) -> str:
    return ", ".join(f"{mb / t:.0f}" for t in seconds)


def _add_big_rows(rows: list, label: str, results: list, key: str, mb: float, t_ref: float):
    """The median row of one big-file variant, its ratio to OpenSSH, and its rounds."""
    t = statistics.median(res[key] for res, _ in results)
    # RSS: the child's own peak plus its range workers' (separate processes)
    rss = max(r + res["workers_rss_mb"] for res, r in results)
    rows.append(("big", f"{label} (median)", 1, mb, t, rss))
    rows.append(("big", f"ratio {label}/openssh", t_ref / t))
    print(f"big-file rounds, MB/s: {label}", _rates(mb, (res[key] for res, _ in results)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mb", type=int, default=1024, help="big file size in MiB")
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--small-bytes", type=int, default=2048)
    ap.add_argument("--small-rounds", type=int, default=3, help="alternated small-file rounds")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument(
        "--rounds", type=int, default=5, help="alternated big-file rounds (0: small files only)"
    )
    ap.add_argument(
        "--connections",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="connections per file to compare on the big file, e.g. 1,2,4",
    )
    ap.add_argument(
        "--flow-connections",
        type=lambda v: [int(x) for x in v.split(",")],
        default=None,
        help="connections_per_file of the big-file flow rows, e.g. 1,2 (default: the block's)",
    )
    args = ap.parse_args()
    why = sftp_server.why_not_available()
    if why:
        sys.exit(f"cannot run: {why}")

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    server = sftp_server.start_server()
    work = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    rows: list[tuple] = []
    try:
        key = work / "id"
        key.write_text(server.client_key)
        key.chmod(0o600)
        big_dir, small_dir = server.folder("big"), server.folder("small")
        block = os.urandom(1024 * 1024)
        with open(big_dir / "big.bin", "wb") as fh:
            for _ in range(args.big_mb):
                fh.write(block)
        os.chown(big_dir / "big.bin", server.uid, server.gid)
        for i in range(args.small):
            server.put(small_dir, f"f{i:05d}.csv", os.urandom(args.small_bytes), time.time() - 60)
        big_mb = args.big_mb * 1024 * 1024 / 1e6
        small_mb = args.small * args.small_bytes / 1e6
        env = dict(os.environ, PYTHONPATH=str(ROOT))

        from blocks.sftp.block import SftpSource

        default_conns = SftpSource.model_fields["connections_per_file"].default
        flow_conns = args.flow_connections or [default_conns]
        with prefect_test_harness(server_startup_timeout=120):
            env["PREFECT_API_URL"] = PREFECT_API_URL.value()
            # alternated rounds: OpenSSH, the source's download with each connection count,
            # then the whole flow
            ssh_big: list[tuple[float, float]] = []
            fetch_big: dict[int, list[tuple[dict, float]]] = {c: [] for c in args.connections}
            flow_big: dict[int, list[tuple[dict, float]]] = {c: [] for c in flow_conns}
            for r in range(args.rounds):
                ssh_big.append(openssh_get(server, key, big_dir, work / f"ssh-big-{r}", "big.bin"))
                shutil.rmtree(work / f"ssh-big-{r}")
                for c in args.connections:
                    where = work / f"fetch-{r}-{c}"
                    fetch_big[c].append(ours(server, key, big_dir, where, env, 1, c, "fetch"))
                    shutil.rmtree(where)
                for c in flow_conns:
                    where = work / f"flow-big-{r}-{c}"
                    result = ours(server, key, big_dir, where, env, args.parallel, c, "flow")
                    shutil.rmtree(where)
                    assert result[0]["landed"] == 1, result[0]
                    flow_big[c].append(result)

            if args.rounds:  # --rounds 0: small files only
                t_ssh = statistics.median(s for s, _ in ssh_big)
                rows.append(("big", "openssh sftp -b (median)", 1, big_mb, t_ssh, ssh_big[0][1]))
                print("big-file rounds, MB/s: openssh", _rates(big_mb, (t for t, _ in ssh_big)))
                for c, results in fetch_big.items():
                    _add_big_rows(
                        rows, f"source fetch, {c} conn", results, "seconds", big_mb, t_ssh
                    )
                for c, results in flow_big.items():
                    _add_big_rows(
                        rows, f"flow, {c} conn (pipeline)", results, "seconds", big_mb, t_ssh
                    )
                    _add_big_rows(
                        rows, f"flow, {c} conn (process)", results, "process_seconds", big_mb, t_ssh
                    )

            # small files: alternated rounds, medians (OpenSSH alone swung 1.6-3.1 s here)
            modes = (
                ("flow-small", "flow, event_per item"),
                ("flow-small-batch", "flow, defaults (event_per batch)"),
            )
            ssh_small: list[tuple[float, int]] = []
            flow_small: dict[str, list[tuple[dict, int]]] = {m: [] for m, _ in modes}
            for r in range(args.small_rounds):
                ssh_small.append(openssh_get(server, key, small_dir, work / "ssh-small", "*"))
                shutil.rmtree(work / "ssh-small")
                for mode, _label in modes:
                    waited = wait_for_quiet_children()  # the last run's events stored first
                    print(f"  (waited {waited:.0f} s for the Prefect server to go idle)")
                    where = work / f"{mode}-{r}"
                    counts, rss = ours(
                        server, key, small_dir, where, env, args.parallel, default_conns, mode
                    )
                    shutil.rmtree(where)
                    assert counts["landed"] == args.small and counts["failed"] == 0, counts
                    flow_small[mode].append((counts, rss))
            t_ref = statistics.median(t for t, _ in ssh_small)
            rows.append(
                ("small", "openssh sftp -b (median)", args.small, small_mb, t_ref, ssh_small[0][1])
            )
            print("small-file rounds, s: openssh", [round(t, 2) for t, _ in ssh_small])
            for mode, label in modes:
                results = flow_small[mode]
                rss = max(r for _, r in results)
                for key_, what in (("seconds", "pipeline"), ("process_seconds", "process")):
                    secs = statistics.median(c[key_] for c, _ in results)
                    rows.append(
                        ("small", f"{label} ({what}, median)", args.small, small_mb, secs, rss)
                    )
                secs = statistics.median(c["seconds"] for c, _ in results)
                rows.append(("small", f"ratio {label} pipeline/openssh", t_ref / secs))
                print(
                    f"small-file rounds, s: {label}", [round(c["seconds"], 2) for c, _ in results]
                )
    finally:
        sftp_server.stop_server(server)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nsftp benchmark on 127.0.0.1, 2 shared cores, load avg {os.getloadavg()[0]:.1f}")
    print_table(rows)
    print(
        "\n'pipeline' is the flow's own run time (list to record); 'process' adds Python and "
        "Prefect start-up in the child. RSS is each child's peak (wait4)."
    )


if __name__ == "__main__":
    main()
