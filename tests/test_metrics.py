"""`ingest-ops metrics`: the Prometheus endpoint scraped over HTTP on 127.0.0.1 after real
local-folder flow runs (Prefect test API, SQLite ledger), parsed with prometheus_client's
text parser. The skips counted from a real server's overlap policy are in test_ops_e2e."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blocks import IngestionQueue, Ledger, LocalFolderSource, QueueConsumer
from flows.local_folder import ingest_local_folder
from ops.metrics import DURATION_BUCKETS, serve
from tests.landed_rows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from one scrape."""
    resp = httpx.get(url, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def test_metrics_after_real_runs(save_block, sqlite_ledger: Ledger, queue: IngestionQueue, inbox):
    (inbox / "a.csv").write_text("1,2\n")
    (inbox / "b.csv").write_text("3,4,5\n")
    source = LocalFolderSource(source_id="metered", directory=str(inbox))
    assert run_flow(ingest_local_folder, save_block, sqlite_ledger, queue, source).is_completed()
    assert run_flow(ingest_local_folder, save_block, sqlite_ledger, queue, source).is_completed()
    consumer = QueueConsumer(sqlite_ledger, "metrics-test")
    (first,) = consumer.claim(1, "metered")
    assert consumer.ack([first.message_id]) == 1

    port = free_port()
    server, _thread = serve(sqlite_ledger, "127.0.0.1", port, prefect=True)
    try:
        got = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
    src = (("source", "metered"),)
    assert got[("ingest_runs_total", (("source", "metered"), ("state", "completed")))] == 2
    assert got[("ingest_items_landed_total", src)] == 2
    assert got[("ingest_items_skipped_total", src)] == 2  # the second run's
    assert got[("ingest_items_failed_total", src)] == 0
    assert got[("ingest_landed_bytes_total", src)] == len("1,2\n3,4,5\n")
    assert got[("ingest_queue_backlog", src)] == 1  # 2 landed, 1 acked
    assert got[("ingest_run_duration_seconds_count", src)] == 2
    assert got[("ingest_run_duration_seconds_sum", src)] > 0
    inf = ("ingest_run_duration_seconds_bucket", (("le", "+Inf"), ("source", "metered")))
    assert got[inf] == 2
    buckets = [
        got[("ingest_run_duration_seconds_bucket", (("le", str(float(b))), ("source", "metered")))]
        for b in DURATION_BUCKETS
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 2
    assert got[("ingest_last_success_timestamp_seconds", src)] > 1.7e9
    assert got[("ingest_prefect_api_up", ())] == 1


def test_metrics_without_prefect_api(tmp_path: Path):
    """An empty ledger serves valid, empty families; the Prefect part can be turned off."""
    from tests.conftest import sqlite_connector

    ledger = Ledger(database=sqlite_connector(tmp_path / "empty.db"))
    port = free_port()
    server, _thread = serve(ledger, "127.0.0.1", port, prefect=False)
    try:
        got = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        ledger.dispose()
    assert got == {}
