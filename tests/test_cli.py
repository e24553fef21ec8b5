"""`ingest-ops` CLI on the test API: --json output of each command and its errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.schedules import CronSchedule, RRuleSchedule
from typer.testing import CliRunner

from blocks import LocalFolderSource
from blocks.core.ledger import LandedRecord
from ops.cli import app

runner = CliRunner()


def cli(*args: str):
    result = runner.invoke(app, ["--json", *args])
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


@pytest.fixture
def deployment(prefect_api) -> str:
    name = f"d-{uuid.uuid4().hex[:8]}"

    async def make():
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("ops-cli-test")
            await client.create_deployment(
                flow_id=flow_id,
                name=name,
                entrypoint="tests.ops_flows:slow",
                schedules=[
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron="5 9 * * *", timezone="Europe/Paris")
                    )
                ],
                tags=["ingest"],
            )

    asyncio.run(make())
    return f"ops-cli-test/{name}"


def test_sources_pause_resume_and_run(deployment):
    _, rows = cli("sources", "--tag", "ingest")
    row = next(r for r in rows if r["deployment"] == deployment)
    assert row["schedules"] == "cron '5 9 * * *' Europe/Paris"
    assert row["paused"] is False and row["last_run_state"] is None

    paused = cli("pause", deployment)[1]
    assert (paused["deployment"], paused["paused"]) == (deployment, True)
    _, rows = cli("sources")
    assert next(r for r in rows if r["deployment"] == deployment)["paused"] is True
    cli("resume", deployment)
    _, rows = cli("sources")
    assert next(r for r in rows if r["deployment"] == deployment)["paused"] is False

    result, started = cli("run", deployment, "--param", "seconds=0.1", "--date", "2026-03-01")
    assert result.exit_code == 0, result.output
    assert started["parameters"] == {"seconds": 0.1, "date": "2026-03-01"}
    uuid.UUID(started["flow_run_id"])


def test_unknown_deployment_is_a_clear_error(prefect_api):
    result, _ = cli("pause", "nope/nothing")
    assert result.exit_code == 1 and "no deployment 'nope/nothing'" in result.stderr
    result, _ = cli("run", "no-slash")
    assert result.exit_code == 1 and "<flow name>/<deployment name>" in result.stderr


def test_ledger_and_health(save_block, sqlite_ledger):
    run = sqlite_ledger.start_run("bank", None, dt.date(2026, 3, 1))
    sqlite_ledger.finish_run(run, "completed", {"listed": 1, "landed": 1}, None)
    sqlite_ledger.record_landed(
        LandedRecord("bank", "a.csv", "a" * 64, 3, "/l/a.csv", None, partition_date=None)
    )
    sqlite_ledger.record_failure("bank", "b.csv", None, "boom")
    led = save_block(sqlite_ledger)
    result, rows = cli("ledger", "--ledger-block", led, "--source", "bank")
    assert result.exit_code == 0, result.output
    assert [(r["name"], r["status"]) for r in rows] == [("b.csv", "failed"), ("a.csv", "landed")]
    _, health = cli("health", "--ledger-block", led)
    assert health == [
        {
            "source": "bank",
            "runs": 1,
            "success_rate": 1.0,
            "last_success": health[0]["last_success"],
            "last_status": "completed",
            "backlog": 1,
            "missing": "",
            "last_run": health[0]["last_run"],
            "next_run": None,
            "connection": "",  # the CLI reads the ledger only: no connection check
            "stale": "",  # and no freshness rule
        }
    ]
    assert health[0]["last_run"] and health[0]["last_success"]
    result, _ = cli("ledger", "--ledger-block", "no-such-ledger")
    assert result.exit_code == 1 and "--ledger-block" in result.stderr


def test_test_connection(save_block, inbox):
    (inbox / "x.csv").write_text("1\n")
    name = save_block(LocalFolderSource(source_id="box", directory=str(inbox)))
    result, out = cli("test-connection", f"local-folder-source/{name}")
    assert result.exit_code == 0, result.output
    assert out["ok"] is True and out["items"] == 1 and out["sample"] == ["x.csv"]
    gone = save_block(LocalFolderSource(source_id="box", directory=str(inbox / "gone")))
    result, _ = cli("test-connection", f"local-folder-source/{gone}")
    assert result.exit_code == 1 and "LocalFolderSource.directory" in result.stderr


def test_backfill_validates_before_starting(prefect_api):
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    result, _ = cli("backfill", "a/b", "2026-01-01", tomorrow)
    assert result.exit_code == 1 and "end_date" in result.stderr
    result, _ = cli("backfill", "a/b", "2026-01-05", "2026-01-01")
    assert result.exit_code == 1 and "start_date" in result.stderr


def test_install_automations_is_idempotent(prefect_api):
    from prefect.automations import Automation

    from ops.automations import CRASH_UNRESPONSIVE

    try:
        for grace in (200, 90):
            result, data = cli("install-automations", "--grace-seconds", str(grace))
            assert result.exit_code == 0, result.output
            assert list(data) == [CRASH_UNRESPONSIVE]
        with get_client(sync_client=True) as client:
            found = client.read_automations_by_name(CRASH_UNRESPONSIVE)
        assert len(found) == 1  # reinstalling replaced, not duplicated
        automation = Automation.read(name=CRASH_UNRESPONSIVE)
        assert automation.trigger.within.total_seconds() == 90
        assert automation.actions[0].state.value == "CRASHED"
        result, _ = cli("install-automations", "--grace-seconds", "10")
        assert result.exit_code == 1 and "grace_seconds" in result.stderr
    finally:
        # Left installed, it watches every later flow run on this session's test server
        # and tries to crash each one 90 s after it ends: the SQLite load made a later
        # run reach its discover step over 60 s late in one CI run.
        with get_client(sync_client=True) as client:
            for automation in client.read_automations_by_name(CRASH_UNRESPONSIVE):
                client.delete_automation(automation.id)


def _deploy(client, flow_name: str, **extra):
    flow_id = client.create_flow_from_name(flow_name)
    name = f"d-{uuid.uuid4().hex[:8]}"
    dep_id = client.create_deployment(
        flow_id=flow_id, name=name, entrypoint="tests.ops_flows:slow", **extra
    )
    return dep_id, f"{flow_name}/{name}"


def test_sources_rrule_on_one_line_and_overlap_cancelled_runs_are_skipped(prefect_api):
    from prefect.states import Cancelled, Completed

    with get_client(sync_client=True) as client:
        dep_id, deployment = _deploy(
            client,
            "ops-cli-rrule",
            schedules=[
                DeploymentScheduleCreate(
                    schedule=RRuleSchedule(
                        rrule="DTSTART:20260101T060000\nRRULE:FREQ=DAILY;BYHOUR=6",
                        timezone="Europe/Paris",
                    ),
                    active=False,
                )
            ],
        )
        for state in (
            Completed(),
            # what the server sets on a run refused under CANCEL_NEW (core_policy.py)
            Cancelled(message="Deployment concurrency limit reached."),
            Cancelled(message="Deployment concurrency limit reached."),
        ):
            run = client.create_flow_run_from_deployment(dep_id)
            client.set_flow_run_state(run.id, state, force=True)
    _, rows = cli("sources")
    row = next(r for r in rows if r["deployment"] == deployment)
    assert row["schedules"] == "rrule 'FREQ=DAILY;BYHOUR=6' Europe/Paris (inactive)"
    assert (row["success_rate"], row["runs_considered"], row["skipped"]) == (1.0, 1, 2)
    assert row["last_run_state"] == "Completed"
    text = runner.invoke(app, ["sources"]).stdout.splitlines()
    line = next(x for x in text if x.startswith(deployment))  # the whole row on one line
    assert "rrule 'FREQ=DAILY;BYHOUR=6' Europe/Paris" in line and "1.00" in line
    assert not any(x.startswith("RRULE") or x.startswith("DTSTART") for x in text)


def test_pause_cancels_runs_that_have_not_started(prefect_api):
    from prefect.states import Scheduled

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with get_client(sync_client=True) as client:
        dep_id, deployment = _deploy(client, "ops-cli-pause")
        waiting = [
            client.create_flow_run_from_deployment(dep_id, state=state).id
            for state in (
                Scheduled(scheduled_time=later),
                # what the server sets on a run held under ENQUEUE (core_policy.py)
                Scheduled(scheduled_time=later, name="AwaitingConcurrencySlot"),
            )
        ]
    result, out = cli("pause", deployment)
    assert result.exit_code == 0, result.output
    assert out == {"deployment": deployment, "paused": True, "cancelled_waiting_runs": 2}
    with get_client(sync_client=True) as client:
        for run_id in waiting:
            run = client.read_flow_run(run_id)
            assert run.state_type.value == "CANCELLED" and "pause" in run.state.message
    _, rows = cli("sources")
    row = next(r for r in rows if r["deployment"] == deployment)
    assert (row["paused"], row["skipped"], row["success_rate"]) == (True, 2, None)


def test_runs_shows_counts_duration_and_trigger(save_block, sqlite_ledger):
    import httpx
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL

    from ops.cli import OVERRIDE_TAG

    @flow(name="ops-cli-runs-local")
    def local_flow() -> None:
        """Never run: a flow run created through the API."""

    @task(name="run-day")
    def day_task() -> None:
        """Never run: stands for the backfill's task that starts a day's subflow."""

    with get_client(sync_client=True) as client:
        dep_id, _ = _deploy(
            client,
            "ops-cli-runs",
            schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="0 * * * *"))],
        )
        resp = httpx.post(
            f"{PREFECT_API_URL.value()}/deployments/{dep_id}/schedule",
            json={"min_runs": 1, "max_runs": 1},
            timeout=30,
        )  # the scheduler's own call: auto-scheduled runs
        resp.raise_for_status()
        (scheduled,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep_id]))
        )
        manual = client.create_flow_run_from_deployment(dep_id)
        hook = client.create_flow_run_from_deployment(dep_id, parameters={"trigger": {"f": 1}})
        parent = client.create_flow_run(flow=local_flow)
        task_run = client.create_task_run(day_task, parent.id, dynamic_key="0")
        sub = client.create_flow_run(flow=local_flow, parent_task_run_id=task_run.id)
        local = client.create_flow_run(flow=local_flow)
        override = client.create_flow_run(flow=local_flow, tags=[OVERRIDE_TAG, "deployment:x/y"])
    src = f"runs{uuid.uuid4().hex[:6]}"
    expected = {}
    for kind, run in [
        ("schedule", scheduled),
        ("manual", manual),
        ("webhook", hook),
        ("backfill", sub),
        ("local", local),
        ("override", override),
    ]:
        row = sqlite_ledger.start_run(src, str(run.id), dt.date(2026, 3, 1))
        counts = {
            "listed": 3, "landed": 2, "skipped": 1, "bytes": 2_500_000, "rows": 40, "seconds": 1.5
        }  # fmt: skip
        sqlite_ledger.finish_run(row, "completed", counts, None)
        expected[str(run.id)] = kind
    sqlite_ledger.start_run("other-source", None, None)
    led = save_block(sqlite_ledger)
    result, rows = cli("runs", "--source", src, "--ledger-block", led)
    assert result.exit_code == 0, result.output
    assert {r["flow_run_id"]: r["trigger"] for r in rows} == expected
    first = rows[0]
    assert (first["listed"], first["landed"], first["bytes"], first["rows"], first["seconds"]) == (
        3,
        2,
        2_500_000,
        40,
        1.5,
    )
    assert first["source"] == src and first["status"] == "completed" and first["flow_run"]
    text = runner.invoke(app, ["runs", "--source", src, "--ledger-block", led]).stdout
    header, *lines = text.splitlines()
    assert header.split() == [
        "started_at", "source", "date", "status", "trigger", "items", "skipped", "failed",
        "rows", "MB", "seconds", "flow_run",
    ]  # fmt: skip
    assert len(lines) == 6 and all(" 2/3 " in x and " 2.50 " in x and "1.50" in x for x in lines)
    _, everything = cli("runs", "--ledger-block", led, "--limit", "100")
    assert {r["source"] for r in everything} == {src, "other-source"}
    # What the run recorded itself wins (Prefect may have deleted the flow run by then).
    recorded = sqlite_ledger.start_run(src, str(local.id), None, trigger="webhook")
    sqlite_ledger.finish_run(recorded, "completed", {"landed": 0}, None)
    _, rows = cli("runs", "--source", src, "--ledger-block", led, "--limit", "1")
    assert rows[0]["trigger"] == "webhook"


def test_cli_does_not_log_engine_creation(prefect_api, tmp_path):
    """A real `ingest-ops health` process at Prefect's default INFO level: prefect-sqlalchemy
    said 'Created a new engine.' on stderr each time the CLI opened the ledger."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "INGEST_HOME": str(tmp_path),  # the default SQLite ledger, created here
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "ops.cli", "health"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ledger.db").exists() or list(tmp_path.rglob("*.db")), out.stdout
    assert "Created a new engine" not in out.stderr + out.stdout
