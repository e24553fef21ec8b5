"""kill -9 at random points while land-batch tasks land small files (fsync on, so the
batch's syncfs barriers run), then a rerun: every file landed exactly once, with one ledger
row and one queue message each, and at every kill point no row without its landed file.

Examples: INGEST_KILL_EXAMPLES (default 3; each costs a few flow-run subprocesses).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from blocks import Ledger
from blocks.core import ledger_schema as t
from pipeline.engine import landed_files
from tests.conftest import sqlite_connector

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("INGEST_KILL_EXAMPLES", "3"))
FILES = 120
BATCH = 20


def content(i: int) -> bytes:
    return (f"row {i}\n".encode() * 200)[:1024]


def spawn(work: Path, event_per: str = "item") -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    argv = [sys.executable, str(ROOT / "tests/small_files_subprocess.py")]
    argv += [str(work / "ledger.db"), str(work / "landing"), str(work / "inbox"), str(BATCH)]
    argv += [event_per]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def landed_count(work: Path) -> int:
    root = work / "landing"
    return sum(len(files) for _dir, _sub, files in os.walk(root)) if root.exists() else 0


def ledger_state(work: Path) -> tuple[list[dict], list[dict]]:
    if not (work / "ledger.db").exists():
        return [], []
    ledger = Ledger(database=sqlite_connector(work / "ledger.db"))
    try:
        with ledger.transaction() as conn:
            i = t.items.c
            rows = [
                dict(r._mapping)
                for r in conn.execute(select(i.name, i.status, i.sha256, i.landed_path))
            ]
            msgs = [
                json.loads(r.payload) if isinstance(r.payload, str) else r.payload
                for r in conn.execute(select(t.queue.c.payload))
            ]
        return rows, msgs
    except Exception:  # killed before the first run created the tables
        return [], []
    finally:
        ledger.dispose()


def check_rows_have_files(work: Path) -> None:
    """Never a ledger row without its (complete) landed file, nor two messages for one."""
    rows, msgs = ledger_state(work)
    for row in rows:
        assert row["status"] == "landed", row
        data = Path(row["landed_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], row
    assert sorted(m["name"] for m in msgs) == sorted(r["name"] for r in rows)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kills=st.lists(st.tuples(st.integers(0, FILES), st.floats(0, 0.3)), min_size=1, max_size=2),
    event_per=st.sampled_from(["item", "batch"]),  # the queue's events: same guarantees
)
def test_killed_batches_land_each_small_file_once(
    prefect_api, tmp_path_factory, kills, event_per
) -> None:
    work = tmp_path_factory.mktemp("smallkill")
    inbox = work / "inbox"
    inbox.mkdir()
    expected = {f"f{i:04d}.txt": content(i) for i in range(FILES)}
    for name, data in expected.items():
        (inbox / name).write_bytes(data)
    old = time.time() - 3600  # past min_age/stability checks
    for name in expected:
        os.utime(inbox / name, (old, old))

    for at_files, extra in kills:  # kill once the landing folder holds `at_files` files
        proc = spawn(work, event_per)
        try:
            deadline = time.time() + 300
            while proc.poll() is None and landed_count(work) < at_files:
                assert time.time() < deadline, "the run never got that far"
                time.sleep(0.005)
            time.sleep(extra * random.random())
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        check_rows_have_files(work)
        print(f"killed at {landed_count(work)} landed files", file=sys.stderr, flush=True)

    proc = spawn(work, event_per)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    final = json.loads(out.decode().strip().splitlines()[-1])
    assert final["failed"] == 0, final

    rows, msgs = ledger_state(work)
    assert sorted(r["name"] for r in rows) == sorted(expected)  # one row each
    assert all(r["status"] == "landed" for r in rows)
    assert sorted(m["name"] for m in msgs) == sorted(expected)  # one message each
    files = landed_files(work / "landing")
    assert sorted(p.name for p in files) == sorted(expected)  # one file each, no name~sha
    for path in files:
        assert path.read_bytes() == expected[path.name]
    check_rows_have_files(work)
