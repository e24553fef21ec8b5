"""Health flow on a real ledger and the test API: rates, backlog, missing-file event."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from blocks.ledger import LandedRecord
from flows.health import ExpectedDaily, ingest_health, missing_message, source_health

UTC = dt.timezone.utc


def _run(ledger, source, status, day=None):
    run = ledger.start_run(source, None, day)
    ledger.finish_run(run, status, {"listed": 1}, None)


def _land(ledger, source, name, day):
    ledger.record_landed(
        LandedRecord(
            source=source,
            name=name,
            sha256=uuid.uuid4().hex * 2,
            size=1,
            landed_path=f"/l/{name}",
            flow_run_id=None,
            partition_date=day,
        )
    )


def test_success_rate_last_success_and_backlog(ledger):
    for status in ("completed", "failed", "completed", "partial"):
        _run(ledger, "bank", status)
    ledger.record_failure("bank", "a.csv", None, "boom")
    ledger.record_failure("bank", "b.csv", None, "boom")
    _land(ledger, "bank", "b.csv", None)  # b landed after its failure: not backlog
    health = source_health(ledger, "bank", last_n_runs=3)
    assert health.runs == 3 and health.success_rate == pytest.approx(1 / 3)
    assert health.last_status == "partial" and health.last_success is not None
    assert health.backlog == 1
    assert source_health(ledger, "nothing", 5).success_rate is None


def test_missing_only_after_cutoff_plus_grace(sqlite_ledger):
    rule = ExpectedDaily(
        pattern="BANK_{date:%Y%m%d}*.csv", cutoff="07:00", grace_minutes=30, timezone="Europe/Paris"
    )
    day = dt.date(2026, 3, 10)
    before = dt.datetime(2026, 3, 10, 6, 20, tzinfo=UTC)  # 07:20 Paris: within grace
    after = dt.datetime(2026, 3, 10, 6, 40, tzinfo=UTC)  # 07:40 Paris
    assert missing_message(sqlite_ledger, "bank", rule, before) is None
    message = missing_message(sqlite_ledger, "bank", rule, after)
    assert message and "BANK_20260310*.csv" in message and "07:30" in message
    _land(sqlite_ledger, "bank", "BANK_20260309.csv", day - dt.timedelta(days=1))
    assert missing_message(sqlite_ledger, "bank", rule, after) is not None  # wrong day
    _land(sqlite_ledger, "bank", "BANK_20260310_1.csv", day)
    assert missing_message(sqlite_ledger, "bank", rule, after) is None


def test_bad_expected_rule_is_named():
    with pytest.raises(ValueError, match="timezone"):
        ExpectedDaily(pattern="x", cutoff="07:00", timezone="Mars/Base")


def _events(name: str, source: str) -> list[dict]:
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [f"ingest.source.{source}"]}}}
    resp = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10)
    resp.raise_for_status()
    return resp.json()["events"]


def test_missing_file_fails_the_run_and_emits_an_event(save_block, sqlite_ledger):
    source = f"bank{uuid.uuid4().hex[:6]}"
    _run(sqlite_ledger, source, "completed")
    _run(sqlite_ledger, "gateway", "completed")
    led = save_block(sqlite_ledger)
    state = ingest_health(
        ledger_block=led,
        expected={source: {"pattern": "BANK_{date:%Y%m%d}.csv", "cutoff": "00:00"}},
        now=dt.datetime.now(UTC).replace(hour=23, minute=59),
        return_state=True,
    )
    assert state.is_failed() and "BANK_" in str(state.message)
    deadline = time.monotonic() + 30
    while not (found := _events("ingest.source.missing", source)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert found and "BANK_" in found[0]["payload"]["message"]

    ok = ingest_health(ledger_block=led)  # no expectations: all sources, Completed
    assert {r["source"] for r in ok} == {source, "gateway"}
