"""The ingestion queue's consumer API: claims are exclusive, acks are final."""

from __future__ import annotations

import threading
import time

import pytest

from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.ledger import LandedRecord, Ledger
from blocks.core.queue_consumer import QueueConsumer


def _fill(ledger: Ledger, n: int) -> None:
    q = IngestionQueue(landing_dir="/tmp/unused")
    for i in range(n):
        rec = LandedRecord(
            source="src",
            name=f"f{i:04d}",
            sha256=f"{i:064d}",
            size=1,
            landed_path=f"/l/f{i:04d}",
            flow_run_id="r",
        )
        assert ledger.record_landed(rec, q.message_for(rec))


def test_two_concurrent_consumers_claim_each_message_once(ledger: Ledger) -> None:
    _fill(ledger, 200)
    got: dict[str, list[str]] = {"a": [], "b": []}

    def consume(name: str) -> None:
        consumer = QueueConsumer(ledger, consumer_id=name, lease_seconds=300)
        while True:
            batch = consumer.claim(limit=7)
            if not batch:
                return
            got[name] += [m.message_id for m in batch]
            time.sleep(0.001)
            assert consumer.ack([m.message_id for m in batch]) == len(batch)

    threads = [threading.Thread(target=consume, args=(n,)) for n in got]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    all_ids = got["a"] + got["b"]
    assert len(all_ids) == 200 and len(set(all_ids)) == 200
    assert got["a"] and got["b"], "both consumers should have worked"
    assert QueueConsumer(ledger, "x").pending_count() == 0


def test_lease_expiry_makes_a_message_claimable_again(ledger: Ledger) -> None:
    _fill(ledger, 1)
    first = QueueConsumer(ledger, "first", lease_seconds=0.2)
    (msg,) = first.claim()
    assert QueueConsumer(ledger, "second").claim() == []
    time.sleep(0.3)
    second = QueueConsumer(ledger, "second")
    (again,) = second.claim()
    assert again.message_id == msg.message_id and again.attempts == 2
    assert first.ack([msg.message_id]) == 0, "an expired claim cannot be acked by its old owner"
    assert second.ack([msg.message_id]) == 1


def test_release_returns_messages_and_payload_round_trips(ledger: Ledger) -> None:
    _fill(ledger, 3)
    c = QueueConsumer(ledger, "c")
    batch = c.claim(limit=10)
    assert [m.item_name for m in batch] == ["f0000", "f0001", "f0002"]
    assert batch[0].payload["landed_path"] == "/l/f0000"
    assert c.release([batch[0].message_id]) == 1
    assert [m.item_name for m in c.claim(limit=10)] == ["f0000"]


def test_bad_consumer_arguments() -> None:
    with pytest.raises(ValueError, match="consumer_id"):
        QueueConsumer(Ledger(), "")
    with pytest.raises(ValueError, match="lease_seconds"):
        QueueConsumer(Ledger(), "c", lease_seconds=0)
