"""Backfill flow: range validation (unit) and a 3-day resumable run on the test API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from blocks.errors import ConfigError
from flows.backfill import ingest_backfill, validate_range
from tests.ops_flows import DatedFolderSource

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
