"""Backfill flow: range validation (unit) and a 3-day resumable run on the test API;
days that find nothing are reported `empty` and retried (property-tested)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from blocks import IngestionQueue, Ledger, LocalFolderSource
from blocks.core.errors import ConfigError
from flows.backfill import ingest_backfill, validate_range
from pipeline.summary import artifact_key
from tests.conftest import sqlite_connector
from tests.ops_flows import DatedFolderSource
from tests.prefect_events import source_events

PROPERTY_EXAMPLES = int(os.environ.get("INGEST_PROPERTY_EXAMPLES", "5"))

TODAY = dt.date(2026, 3, 10)


def test_range_is_inclusive():
    days = validate_range(dt.date(2026, 3, 1), dt.date(2026, 3, 3), 2, TODAY)
    assert days == [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)]


@pytest.mark.parametrize(
    ("start", "end", "parallel", "parameter", "words"),
    [
        (dt.date(2026, 3, 5), dt.date(2026, 3, 4), 1, "start_date", "after end_date"),
        (dt.date(2026, 3, 5), dt.date(2026, 3, 11), 1, "end_date", "in the future"),
        (dt.date(2024, 1, 1), dt.date(2026, 3, 1), 1, "end_date", "exceeds the maximum"),
        (dt.date(2026, 3, 1), dt.date(2026, 3, 2), 0, "max_parallel_days", "between 1"),
        (dt.date(2026, 3, 1), dt.date(2026, 3, 2), 17, "max_parallel_days", "between 1"),
    ],
)
def test_bad_range_names_the_parameter(start, end, parallel, parameter, words):
    with pytest.raises(ConfigError) as err:
        validate_range(start, end, parallel, TODAY)
    assert parameter in str(err.value) and words in str(err.value)


def test_today_is_allowed():
    assert validate_range(TODAY, TODAY, 1, TODAY) == [TODAY]


def _dated_inbox(inbox: Path, days: list[dt.date]) -> None:
    for day in days:
        (inbox / f"BANK_{day:%Y%m%d}.csv").write_text(f"bank file of {day}\n")


def test_backfill_three_days_then_rerun_lands_nothing(
    save_block, inbox, sqlite_ledger, queue, tmp_path
):
    days = [dt.date.today() - dt.timedelta(days=n) for n in (3, 2, 1)]
    _dated_inbox(inbox, days)
    (inbox / "OTHER.csv").write_text("not matched by the date pattern\n")
    src = save_block(
        DatedFolderSource(source_id="bank", directory=str(inbox), pattern="BANK_{date:%Y%m%d}.csv")
    )
    led = save_block(sqlite_ledger)
    q = save_block(queue)
    common = dict(
        start_date=days[0],
        end_date=days[-1],
        entrypoint="tests.ops_flows:ingest_dated_folder",
        source_block=src,
        ledger_block=led,
        queue_block=q,
        max_parallel_days=2,
    )
    first = ingest_backfill(**common)
    assert [(d["day"], d["status"], d["landed"]) for d in first["days"]] == [
        (d.isoformat(), "done", 1) for d in days
    ]
    for day in days:
        assert sqlite_ledger.count_items("bank", "landed", day) == 1
    landed = sorted(p.name for p in Path(queue.landing_dir).rglob("*.csv"))
    assert landed == sorted(f"BANK_{d:%Y%m%d}.csv" for d in days)

    again = ingest_backfill(**common)
    assert {d["status"] for d in again["days"]} == {"already-done"}
    assert again["totals"]["landed"] == 0

    forced = ingest_backfill(**common, force=True)
    assert [d["status"] for d in forced["days"]] == ["done"] * 3
    assert sqlite_ledger.count_items("bank", "landed") == 3  # forced re-land updates rows


def test_failed_day_is_recorded_and_retried(save_block, inbox, sqlite_ledger, queue):
    day = dt.date.today() - dt.timedelta(days=1)
    src = save_block(
        DatedFolderSource(
            source_id="gone", directory=str(inbox / "missing"), pattern="X_{date:%Y%m%d}"
        )
    )
    led = save_block(sqlite_ledger)
    q = save_block(queue)
    args = dict(
        start_date=day,
        end_date=day,
        entrypoint="tests.ops_flows:ingest_dated_folder",
        source_block=src,
        ledger_block=led,
        queue_block=q,
    )
    state = ingest_backfill(**args, return_state=True)
    assert state.is_failed()
    assert "1 day(s) failed" in str(state.message) or "failed" in str(state.message)
    saved = sqlite_ledger.get_state("ingest-backfill", f"ingest-dated-folder|{src}|{day}")
    assert saved["status"] == "failed" and "directory" in saved["error"]
    (inbox / "missing").mkdir()
    (inbox / "missing" / f"X_{day:%Y%m%d}").write_text("late\n")
    result = ingest_backfill(**args)  # the failed day is not "done": it runs again
    assert result["days"][0]["status"] == "done" and result["days"][0]["landed"] == 1


def test_backfill_needs_a_source(prefect_api):
    state = ingest_backfill(start_date=dt.date.today(), end_date=dt.date.today(), return_state=True)
    assert state.is_failed() and "deployment" in str(state.message)


# --------------------------------------------------------------------- empty (missing) days
LOCAL_FOLDER = "flows.local_folder:ingest_local_folder"


def _backfill_table(state, block_name: str) -> list[dict]:
    """The final table artifact of one backfill run."""
    import asyncio

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[artifact_key("ingest-backfill", block_name)]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                )
            )

    (artifact,) = asyncio.run(read())
    return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)


def test_missing_day_is_reported_empty_and_taken_when_it_arrives(
    save_block, inbox, sqlite_ledger, queue, caplog
):
    """3 days, the middle day's file is missing upstream: that day is `empty` (table,
    warning, event), the backfill does not end Completed, and once the file arrives the
    next backfill lands it."""
    days = [dt.date.today() - dt.timedelta(days=n) for n in (3, 2, 1)]
    _dated_inbox(inbox, [days[0], days[2]])
    source_id = f"bank{uuid.uuid4().hex[:6]}"
    src = save_block(
        LocalFolderSource(
            source_id=source_id, directory=str(inbox), pattern="BANK_{date:%Y%m%d}*.csv"
        )
    )
    common = dict(
        start_date=days[0],
        end_date=days[-1],
        entrypoint=LOCAL_FOLDER,
        source_block=src,
        ledger_block=save_block(sqlite_ledger),
        queue_block=save_block(queue),
    )
    with caplog.at_level(logging.WARNING):
        first = ingest_backfill(**common, return_state=True)
    middle = days[1].isoformat()
    assert first.is_failed(), "a backfill with a day that found nothing must not end Completed"
    assert "empty" in str(first.message) and middle in str(first.message)
    table = _backfill_table(first, src)
    assert [(r["day"], r["status"], r["landed"]) for r in table] == [
        (days[0].isoformat(), "done", 1),
        (middle, "empty", 0),
        (days[2].isoformat(), "done", 1),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(middle in w and "nothing" in w for w in warnings), warnings
    (event,) = source_events("ingest.backfill.day.empty", source_id)
    assert event["payload"]["day"] == middle
    key = f"ingest-local-folder|{src}|{middle}"
    assert sqlite_ledger.get_state("ingest-backfill", key)["status"] == "empty"

    # Days without files may be accepted on purpose: Completed, still reported and pending.
    allowed = ingest_backfill(**common, fail_on_empty_days=False)
    assert allowed["empty_days"] == [middle]
    assert [d["status"] for d in allowed["days"]] == ["already-done", "empty", "already-done"]

    _dated_inbox(inbox, [days[1]])  # the late file arrives
    last = ingest_backfill(**common)
    assert [(d["status"], d["landed"]) for d in last["days"]] == [
        ("already-done", 0),
        ("done", 1),
        ("already-done", 0),
    ]
    assert last["empty_days"] == []
    assert [sqlite_ledger.count_items(source_id, "landed", d) for d in days] == [1, 1, 1]
    landed = sorted(p.name for p in Path(queue.landing_dir).rglob("*.csv"))
    assert landed == sorted(f"BANK_{d:%Y%m%d}.csv" for d in days)


# Per day: the wave its files arrive in (0: before the first backfill, 1: before the
# second) or None (never), and how many files it gets.
_day_plan = st.tuples(st.sampled_from([0, 1, None]), st.integers(min_value=1, max_value=2))


@settings(
    max_examples=PROPERTY_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=st.lists(_day_plan, min_size=1, max_size=4),
    parallel=st.integers(min_value=1, max_value=3),
)
def test_property_every_file_landed_once_and_every_missing_day_empty(save_block, plan, parallel):
    """Random days with and without files and random late arrivals: after the final
    backfill every file present is landed exactly once and every day still without a
    file is reported empty (and the backfill is not Completed)."""
    days = [dt.date.today() - dt.timedelta(days=len(plan) - i) for i in range(len(plan))]
    arrival = {day: wave for day, (wave, _) in zip(days, plan, strict=True)}
    files = {day: count for day, (_, count) in zip(days, plan, strict=True)}
    with tempfile.TemporaryDirectory(prefix="backfill-prop-") as tmp:
        root = Path(tmp)
        inbox = root / "inbox"
        inbox.mkdir()
        ledger = Ledger(database=sqlite_connector(root / "ledger.db"))
        source_id = f"prop{uuid.uuid4().hex[:6]}"
        block = save_block(
            LocalFolderSource(
                source_id=source_id, directory=str(inbox), pattern="F_{date:%Y%m%d}_*.csv"
            )
        )
        common = dict(
            start_date=days[0],
            end_date=days[-1],
            entrypoint=LOCAL_FOLDER,
            source_block=block,
            ledger_block=save_block(ledger),
            queue_block=save_block(IngestionQueue(landing_dir=str(root / "landing"), fsync=False)),
            max_parallel_days=parallel,
        )
        try:
            for wave in (0, 1):  # wave 1: the late files have arrived
                for day in days:
                    if arrival[day] == wave:
                        for n in range(files[day]):
                            (inbox / f"F_{day:%Y%m%d}_{n}.csv").write_text(f"{day} {n}\n")
                state = ingest_backfill(**common, return_state=True)
                there = {d for d in days if arrival[d] is not None and arrival[d] <= wave}
                missing = sorted(d.isoformat() for d in days if d not in there)
                assert state.is_failed() == bool(missing), state.message
                table = _backfill_table(state, block)
                assert sorted(r["day"] for r in table if r["status"] == "empty") == missing
                for day in days:
                    saved = ledger.get_state(
                        "ingest-backfill", f"ingest-local-folder|{block}|{day}"
                    )
                    assert saved["status"] == ("done" if day in there else "empty")
            landed = sorted(p.name for p in (root / "landing").rglob("*.csv"))
            expected = sorted(
                f"F_{d:%Y%m%d}_{n}.csv"
                for d in days
                if arrival[d] is not None
                for n in range(files[d])
            )
            assert landed == expected  # every file present, each exactly once
            for day in days:
                want = files[day] if arrival[day] is not None else 0
                assert ledger.count_items(source_id, "landed", day) == want
        finally:
            ledger.dispose()
