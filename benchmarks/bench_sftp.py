"""Benchmark: the ingest-sftp flow vs OpenSSH's `sftp -b` on the same files, one run.

Starts a local sshd (tests/sftp_server.py, needs root and openssh-server), writes one big
file and many small ones, then downloads them with OpenSSH's client and with the flow
(real Prefect test harness, SQLite ledger). Prints MB/s, files/s, the ratio, peak RSS.

    python benchmarks/bench_sftp.py                      # 1 GB + 5,000 files
    python benchmarks/bench_sftp.py --big-mb 128 --small 300   # quick
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import sftp_server  # noqa: E402


def openssh_get(server, key: Path, remote: Path, dest: Path, glob: str) -> float:
    batch = dest.parent / f"batch-{dest.name}"
    batch.write_text(f"lcd {dest}\ncd {remote}\nget {glob}\n")
    cmd = [
        "sftp", "-q", "-b", str(batch), "-i", str(key), "-P", str(server.port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", f"{sftp_server.USER}@127.0.0.1",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def flow_get(server, remote: Path, work: Path, tag: str, parallel: int) -> float:
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    from blocks.handoff import IngestionQueue
    from blocks.ledger import Ledger
    from blocks.sftp import SftpSource
    from flows.sftp import ingest_sftp

    source = SftpSource(
        source_id=f"bench-{tag}",
        host="127.0.0.1",
        port=server.port,
        username=sftp_server.USER,
        private_key=server.client_key,
        host_key=server.host_key_line,
        remote_dir=str(remote),
        max_parallel=parallel,
    )
    ledger = Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.SQLITE_PYSQLITE, database=str(work / f"ledger-{tag}.db")
            )
        )
    )
    queue = IngestionQueue(landing_dir=str(work / f"landing-{tag}"), fsync=False)
    names = {}
    for label, block in (("s", source), ("l", ledger), ("q", queue)):
        names[label] = f"bench-{tag}-{label}"
        block.save(names[label], overwrite=True)
    t0 = time.perf_counter()
    counts = ingest_sftp(source_block=names["s"], ledger_block=names["l"], queue_block=names["q"])
    elapsed = time.perf_counter() - t0
    assert counts["failed"] == 0, counts
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--small-bytes", type=int, default=2048)
    ap.add_argument("--parallel", type=int, default=4)
    args = ap.parse_args()
    why = sftp_server.why_not_available()
    if why:
        sys.exit(f"cannot run: {why}")

    from prefect.testing.utilities import prefect_test_harness

    server = sftp_server.start_server()
    work = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    try:
        key = work / "id"
        key.write_text(server.client_key)
        key.chmod(0o600)
        big_dir = server.folder("big")
        small_dir = server.folder("small")
        block = os.urandom(1024 * 1024)
        with open(big_dir / "big.bin", "wb") as fh:
            for _ in range(args.big_mb):
                fh.write(block)
        os.chown(big_dir / "big.bin", server.uid, server.gid)
        for i in range(args.small):
            server.put(small_dir, f"f{i:05d}.csv", os.urandom(args.small_bytes), time.time() - 60)
        big_mb = args.big_mb * 1024 * 1024 / 1e6
        rows = []
        for what, remote, glob in (("big", big_dir, "big.bin"), ("small", small_dir, "*")):
            dest = work / f"openssh-{what}"
            dest.mkdir()
            t_ssh = openssh_get(server, key, remote, dest, glob)
            rows.append((what, t_ssh))
        ssh_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with prefect_test_harness(server_startup_timeout=120):
            flow_times = {
                "big": flow_get(server, big_dir, work, "big", args.parallel),
                "small": flow_get(server, small_dir, work, "small", args.parallel),
            }
        # the download path alone (block.fetch, no Prefect orchestration), same file
        from blocks.sftp import SftpSource
        from blocks.source import DiscoverContext

        raw = SftpSource(
            source_id="raw",
            host="127.0.0.1",
            port=server.port,
            username=sftp_server.USER,
            private_key=server.client_key,
            host_key=server.host_key_line,
            remote_dir=str(big_dir),
        )
        [cand] = list(raw.discover(DiscoverContext(date.today())))
        with open(work / "raw.bin", "wb") as out:
            t0 = time.perf_counter()
            raw.fetch(cand, out)
            t_raw = time.perf_counter() - t0
        raw.close()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"sftp benchmark on 127.0.0.1 (load avg {os.getloadavg()[0]:.1f}, 2 cores shared)")
        for what, t_ssh in rows:
            t_flow = flow_times[what]
            if what == "big":
                a, b = big_mb / t_flow, big_mb / t_ssh
                print(
                    f"big file {args.big_mb} MiB: flow {a:8.1f} MB/s  openssh sftp -b "
                    f"{b:8.1f} MB/s  ratio {a / b:.2f}x"
                )
                print(
                    f"big file, download path only (block.fetch): {big_mb / t_raw:8.1f} MB/s  "
                    f"ratio {t_ssh / t_raw:.2f}x"
                )
            else:
                a, b = args.small / t_flow, args.small / t_ssh
                print(
                    f"{args.small} small files: flow {a:8.1f} files/s  openssh sftp -b "
                    f"{b:8.1f} files/s  ratio {a / b:.2f}x"
                )
        print(
            f"peak RSS: this process (flow + Prefect harness) {rss:.0f} MB; "
            f"openssh client {ssh_rss:.0f} MB"
        )
    finally:
        sftp_server.stop_server(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
