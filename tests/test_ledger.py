"""The ledger on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

from blocks.core.errors import LedgerError
from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.ledger import LandedRecord, Ledger


def _record(name: str, sha: str = "a" * 64, **kw) -> LandedRecord:
    base = dict(
        source="src", name=name, sha256=sha, size=3, landed_path=f"/l/{name}", flow_run_id="r1"
    )
    base.update(kw)
    return LandedRecord(**base)


def test_record_is_idempotent_per_source_name_sha(ledger: Ledger) -> None:
    q = IngestionQueue(landing_dir="/tmp/unused")
    rec = _record("a.csv")
    assert ledger.record_landed(rec, q.message_for(rec)) is True
    assert ledger.record_landed(rec, q.message_for(rec)) is False
    assert ledger.count_items("src") == 1
    # same name, new content is a new row
    assert ledger.record_landed(_record("a.csv", sha="b" * 64)) is True
    assert ledger.count_items("src") == 2


def test_replace_updates_the_row_and_adds_a_new_message(ledger: Ledger) -> None:
    q = IngestionQueue(landing_dir="/tmp/unused")
    rec = _record("a.csv")
    ledger.record_landed(rec, q.message_for(rec))
    again = _record("a.csv", landed_path="/l/2/a.csv", flow_run_id="r2")
    assert ledger.record_landed(again, q.message_for(again, generation="r2"), replace=True)
    rows = ledger.recent_items("src")
    assert len(rows) == 1 and rows[0]["landed_path"] == "/l/2/a.csv"
    from blocks.core.queue_consumer import QueueConsumer

    assert QueueConsumer(ledger, "c").pending_count("src") == 2


def test_known_items_is_set_based_and_chunks_large_listings(ledger: Ledger) -> None:
    for i in range(0, 12000, 1000):
        ledger.record_landed(_record(f"f{i}.csv", sha=f"{i:064d}", remote_version=f"v{i}"))
    names = [f"f{i}.csv" for i in range(12000)]  # > 2 chunks of 5,000
    known = ledger.known_items("src", names)
    assert sorted(known) == sorted(f"f{i}.csv" for i in range(0, 12000, 1000))
    assert known["f3000.csv"][0].remote_version == "v3000"
    assert ledger.known_items("other", names) == {}


def test_iter_known_items_streams_chunks_and_keeps_odd_names(ledger: Ledger) -> None:
    # names travel as one array/JSON parameter per chunk: quoting must survive
    odd = ["it's.csv", 'say "hi".csv', "back\\slash.csv", "{a,b}.csv", "ünï 名.csv", "%_.csv"]
    for i, name in enumerate(odd):
        ledger.record_landed(_record(name, sha=f"{i:064d}"))
    ledger.record_landed(_record("f44999.csv", sha="e" * 64))
    names = [f"f{i}.csv" for i in range(45000)] + odd + odd  # > 2 chunks on every backend
    chunks = list(ledger.iter_known_items("src", names))
    assert len(chunks) >= 3
    asked = [n for chunk, _known in chunks for n in chunk]
    assert len(asked) == len(set(asked)) == 45000 + len(odd)  # duplicates asked once
    found = {n: rows for _chunk, known in chunks for n, rows in known.items()}
    assert sorted(found) == sorted([*odd, "f44999.csv"])
    assert all(set(known) <= set(chunk) for chunk, known in chunks)
    later = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    assert ledger.known_items("src", odd, since=later) == {}


def test_failed_rows_do_not_count_as_ingested(ledger: Ledger) -> None:
    ledger.record_failure("src", "bad.csv", "r1", "boom")
    ledger.record_failure("src", "bad.csv", "r2", "boom again")
    assert ledger.known_items("src", ["bad.csv"]) == {}
    assert len(ledger.failed_since("src", since=__import__("datetime").timedelta(hours=1))) == 2


def test_state_round_trip_and_runs(ledger: Ledger) -> None:
    assert ledger.get_state("src", "watermark") is None
    ledger.set_state("src", "watermark", {"ts": "2025-01-01T00:00:00+00:00", "pk": [1]})
    ledger.set_state("src", "watermark", {"ts": "2025-01-02T00:00:00+00:00", "pk": [2]})
    assert ledger.get_state("src", "watermark")["pk"] == [2]
    run = ledger.start_run("src", "r1", date(2025, 1, 10))
    ledger.finish_run(
        run,
        "completed",
        {"listed": 3, "landed": 2, "skipped": 1, "failed": 0, "bytes": 9, "seconds": 1.5},
    )
    (row,) = ledger.recent_runs("src")
    assert (row["status"], row["listed"], row["landed"], row["partition_date"]) == (
        "completed",
        3,
        2,
        "2025-01-10",
    )
    assert row["started_at"].tzinfo is not None


def test_state_is_written_with_the_item_in_one_transaction(ledger: Ledger) -> None:
    rec = _record("chunk-1.csv")
    assert ledger.record_landed(rec, None, {"watermark": 10})
    assert ledger.get_state("src", "watermark") == 10
    # A rejected record (already there) must not move the state either.
    assert not ledger.record_landed(rec, None, {"watermark": 99})
    assert ledger.get_state("src", "watermark") == 10


def test_concurrent_records_of_one_item_make_one_row(ledger: Ledger) -> None:
    q = IngestionQueue(landing_dir="/tmp/unused")
    rec = _record("race.csv")
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        results.append(ledger.record_landed(rec, q.message_for(rec)))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [False] * 5 + [True]
    assert ledger.count_items("src") == 1


def test_timestamps_come_back_aware_utc(ledger: Ledger) -> None:
    mtime = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    ledger.record_landed(_record("t.csv", remote_mtime=mtime))
    (row,) = ledger.recent_items("src")
    assert row["remote_mtime"] == mtime and row["created_at"].tzinfo is not None


def test_unreachable_ledger_fails_fast_with_ledger_error() -> None:
    bad = Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.POSTGRESQL_PSYCOPG2,
                host="127.0.0.1",
                port=1,
                username="nobody",
                password="s3cr3t-value",
                database="none",
            )
        )
    )
    with pytest.raises(LedgerError) as info:
        bad.check()
    assert "s3cr3t-value" not in str(info.value)


def test_close_run_only_closes_a_run_still_running(ledger):
    """Health closes a crashed run; a run that finished meanwhile keeps its outcome."""
    done = ledger.start_run("src", "fr-1", None)
    left = ledger.start_run("src", "fr-2", None)
    ledger.finish_run(done, "completed", {"listed": 2, "landed": 2})
    assert [r["id"] for r in ledger.open_runs()] == [left]
    assert ledger.close_run(done, "crashed", "late") is False
    assert ledger.close_run(left, "crashed", "flow run fr-2 ended Crashed") is True
    assert ledger.close_run(left, "abandoned", "again") is False
    runs = {r["id"]: r for r in ledger.recent_runs("src")}
    assert runs[done]["status"] == "completed" and runs[done]["landed"] == 2
    assert runs[left]["status"] == "crashed" and runs[left]["finished_at"] is not None
    assert ledger.open_runs() == []
