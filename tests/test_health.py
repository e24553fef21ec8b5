"""Health flow on a real ledger and the test API: rates, backlog, missing-file event."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Completed, Crashed, Failed, Running, Scheduled
from sqlalchemy import update
from typer.testing import CliRunner

from blocks.core import ledger_schema as t
from blocks.core.ledger import LandedRecord
from flows.health import (
    HEALTH_ARTIFACT_KEY,
    ExpectedDaily,
    ingest_health,
    missing_message,
    source_health,
)

UTC = dt.UTC


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


def test_missing_file_fails_the_run_and_emits_an_event(save_block, sqlite_ledger, caplog):
    source = f"bank{uuid.uuid4().hex[:6]}"
    _run(sqlite_ledger, source, "completed")
    _run(sqlite_ledger, "gateway", "completed")
    led = save_block(sqlite_ledger)
    caplog.set_level(logging.INFO, logger="prefect")
    state = ingest_health(
        ledger_block=led,
        expected={source: {"pattern": "BANK_{date:%Y%m%d}.csv", "cutoff": "00:00"}},
        now=dt.datetime.now(UTC).replace(hour=23, minute=59),
        return_state=True,
    )
    assert state.is_failed() and "BANK_" in str(state.message)
    # An expected failure: the message once at ERROR, no traceback anywhere in the logs
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors if "no file matching" in r.getMessage()] == [
        str(state.message)
    ]
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text
    deadline = time.monotonic() + 30
    while not (found := _events("ingest.source.missing", source)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert found and "BANK_" in found[0]["payload"]["message"]

    ok = ingest_health(ledger_block=led)  # no expectations: all sources, Completed
    assert {r["source"] for r in ok} == {source, "gateway"}


# ----------------------------------------------------------------------------- crashed runs
ROOT = Path(__file__).resolve().parents[1]


def _start_hanging_flow(tmp_path: Path) -> subprocess.Popen:
    """tests/flow_subprocess.py against the test API, stuck in its first fetch."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("x" * 4096)
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "tests/flow_subprocess.py",
         f"sqlite+pysqlite:///{tmp_path / 'ledger.db'}", str(tmp_path / "landing"), str(src),
         "--hang-after-first-chunk"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "fetching").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"subprocess flow never started fetching: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    return proc


def _set_state(flow_run_id: str, state) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(flow_run_id), state, force=True)


def test_a_run_killed_with_its_process_counts_as_a_failure(save_block, sqlite_ledger, tmp_path):
    from ops.cli import app

    _run(sqlite_ledger, "race", "completed")
    proc = _start_hanging_flow(tmp_path)
    proc.send_signal(signal.SIGKILL)  # the worker host dies mid-fetch
    proc.wait(30)
    (open_run,) = sqlite_ledger.open_runs()
    flow_run_id = open_run["flow_run_id"]
    assert flow_run_id and open_run["source"] == "race"

    def cli_health() -> dict:
        result = CliRunner().invoke(app, ["--json", "health", "--ledger-block", led])
        assert result.exit_code == 0, result.output
        return next(r for r in json.loads(result.stdout) if r["source"] == "race")

    led = save_block(sqlite_ledger)
    # Prefect still shows the run Running (nothing reported the kill): the row stays open
    assert cli_health()["runs"] == 1 and sqlite_ledger.open_runs()
    # what the crash-unresponsive automation (ops/automations.py) does after the grace
    _set_state(flow_run_id, Crashed(message="no heartbeat for 240 s"))
    health = cli_health()
    assert (health["runs"], health["success_rate"], health["last_status"]) == (2, 0.5, "crashed")
    (row,) = [r for r in sqlite_ledger.recent_runs("race") if r["status"] == "crashed"]
    assert flow_run_id in row["error"] and "no heartbeat" in row["error"]
    assert row["finished_at"] is not None and not sqlite_ledger.open_runs()


@flow(name="health-reconcile-test")
def _noop() -> None:
    """Never run: its flow runs are created through the API and given final states."""


def test_health_flow_closes_cancelled_failed_and_abandoned_runs(save_block, sqlite_ledger):
    """Final states close the row at once; unknown flow runs only after the bound."""
    with get_client(sync_client=True) as client:
        ids = {
            final: str(client.create_flow_run(flow=_noop, name=f"r-{final}").id)
            for final in ("cancelled", "failed", "running")
        }
    _set_state(ids["cancelled"], Cancelled(message="cancelled by operator"))
    _set_state(ids["failed"], Failed(message="boom"))
    _set_state(ids["running"], Running())
    src = f"rc{uuid.uuid4().hex[:6]}"
    for key in ("cancelled", "failed", "running"):
        sqlite_ledger.start_run(src, ids[key], None)
    old_unknown = sqlite_ledger.start_run(src, str(uuid.uuid4()), None)
    new_unknown = sqlite_ledger.start_run(src, str(uuid.uuid4()), None)
    no_id = sqlite_ledger.start_run(src, None, None)
    with sqlite_ledger.transaction() as conn:
        conn.execute(
            update(t.runs)
            .where(t.runs.c.id.in_([old_unknown, no_id]))
            .values(started_at=dt.datetime.now(UTC) - dt.timedelta(hours=30))
        )
    rows = ingest_health(sources=[src], ledger_block=save_block(sqlite_ledger))
    statuses = {r["flow_run_id"] or "none": r["status"] for r in sqlite_ledger.recent_runs(src)}
    assert statuses[ids["cancelled"]] == "cancelled" and statuses[ids["failed"]] == "failed"
    assert statuses[ids["running"]] == "running"  # still running in Prefect: left open
    by_id = {r["id"]: r["status"] for r in sqlite_ledger.recent_runs(src)}
    assert by_id[old_unknown] == "abandoned" and by_id[no_id] == "abandoned"
    assert by_id[new_unknown] == "running"  # unknown but young: may be on its way
    assert rows[0]["runs"] == 4 and rows[0]["success_rate"] == 0.0
    # a shorter bound closes the young unknown one too
    ingest_health(sources=[src], ledger_block=save_block(sqlite_ledger), abandon_after_hours=1e-6)
    assert {r["id"]: r["status"] for r in sqlite_ledger.recent_runs(src)}[new_unknown] == (
        "abandoned"
    )


def _health_artifact(flow_run_id) -> list[dict]:
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[HEALTH_ARTIFACT_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)


def test_sources_dashboard_table_and_one_log_line_per_source(save_block, sqlite_ledger, caplog):
    """Two sources: one run by a deployment with a run scheduled in 2 h, one never
    deployed. The table under the stable key has last run/state, rate, last success,
    backlog and next run for each; the run logs one line per source."""
    when = (dt.datetime.now(UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("health-dashboard-test")
        dep_id = client.create_deployment(
            flow_id=flow_id, name=f"d-{uuid.uuid4().hex[:8]}", entrypoint="tests.ops_flows:slow"
        )
        done = client.create_flow_run_from_deployment(dep_id)
        client.create_flow_run_from_deployment(dep_id, state=Scheduled(scheduled_time=when))
    _set_state(str(done.id), Completed())
    deployed, other = f"dash{uuid.uuid4().hex[:6]}", f"dash{uuid.uuid4().hex[:6]}"
    run = sqlite_ledger.start_run(deployed, str(done.id), None)
    sqlite_ledger.finish_run(run, "completed", {"listed": 1, "landed": 1}, None)
    _run(sqlite_ledger, other, "failed")
    sqlite_ledger.record_failure(other, "x.csv", None, "boom")
    caplog.set_level(logging.INFO, logger="prefect")
    state = ingest_health(
        sources=[deployed, other], ledger_block=save_block(sqlite_ledger), return_state=True
    )
    assert state.is_completed()
    table = _health_artifact(state.state_details.flow_run_id)
    by_source = {row["source"]: row for row in table}
    assert list(by_source) == [deployed, other]
    assert dt.datetime.fromisoformat(by_source[deployed]["next_run"]) == when
    assert by_source[other]["next_run"] is None
    assert (by_source[deployed]["last_status"], by_source[deployed]["success_rate"]) == (
        "completed",
        1.0,
    )
    assert by_source[deployed]["last_run"] and by_source[deployed]["last_success"]
    assert (by_source[other]["last_status"], by_source[other]["backlog"]) == ("failed", 1)
    assert by_source[other]["last_run"] and by_source[other]["last_success"] is None
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    mine = [m for m in lines if m.startswith((f"{deployed}:", f"{other}:"))]
    assert len(mine) == 2, lines
    assert "next run " + when.isoformat() in mine[0] and "backlog 1" in mine[1]
