"""`ingest-ops` CLI on the test API: --json output of each command and its errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule
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

    assert cli("pause", deployment)[1] == {"deployment": deployment, "paused": True}
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
        }
    ]
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
