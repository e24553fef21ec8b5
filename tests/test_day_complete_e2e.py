"""Day Complete Rule end to end on a REAL `prefect server start` (throwaway PostgreSQL
database) with a REAL process worker: two local-folder sources land a day's files in
separate deployment runs (one of them late, after a run that found nothing), and the
recon deployment runs once with both landed paths; forced re-lands, concurrent runs of
both sources and the `ingest-reconcile` sweep never start a day twice; bad rules fail the
sweep naming the field."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from blocks.reconcile.day_complete import STATE_SOURCE, DayCompleteRule, ExpectedFile
from tests.conftest import server_missing, throwaway_database
from tests.ops_flows import DatedFolderSource
from tests.test_ops_e2e import (
    BIN,
    POOL,
    SERVER_BIN,
    Env,
    _ledger,
    runs_of,
    wait_final,
    wait_http,
)

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]

RECON = "e2e-recon/recon"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    with throwaway_database("postgres", "prefect_dc") as database:
        e = Env(tmp_path_factory.mktemp("day-complete"), database)
        server = e.start(
            "server", str(SERVER_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(e.port),
        )  # fmt: skip
        # 300 s: on a loaded 2-core CI machine the server took over 120 s to answer.
        if not wait_http(f"{e.api}/health", 300, server):
            server_missing("prefect server start", e.log("server"))
        with temporary_settings({PREFECT_API_URL: e.api}):
            # Through the API, not the CLI: under load a `prefect` command took over 180 s.
            from prefect.client.schemas.actions import WorkPoolCreate

            with get_client(sync_client=True) as client:
                client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            yield e
        for proc in reversed(e.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def setup(env: Env) -> dict:
    """Blocks (SQLite ledger, landing area, two dated folder sources, the rule) and the
    deployments: both sources, the recon flow and ingest-reconcile."""
    from blocks.core.ingestion_queue import IngestionQueue

    _ledger(env).save("dc-ledger", overwrite=True)
    IngestionQueue(landing_dir=str(env.tmp / "landing"), fsync=False).save(
        "dc-landing", overwrite=True
    )
    stores = {"ledger_block": "dc-ledger", "queue_block": "dc-landing"}
    inbox = {s: env.tmp / f"inbox-{s}" for s in ("bank", "gw")}
    for source, folder in inbox.items():
        folder.mkdir()
        prefix = source.upper()
        DatedFolderSource(
            source_id=f"dc-{source}", directory=str(folder), pattern=prefix + "_{date:%Y%m%d}.csv"
        ).save(f"dc-{source}", overwrite=True)
    out = env.tmp / "recon-out"
    out.mkdir()
    DayCompleteRule(
        rule_id="dc-recon",
        expected=[
            ExpectedFile(source="dc-bank", name_glob="BANK_{date:%Y%m%d}.csv"),
            ExpectedFile(source="dc-gw", name_glob="GW_{date:%Y%m%d}.csv"),
        ],
        deployment=RECON,
        parameters={"out_dir": str(out)},
    ).save("dc-recon", overwrite=True)
    # Deployments through the API (module entrypoints, as prefect.yaml names them).
    from prefect.deployments.runner import EntrypointType

    from flows.reconcile import ingest_reconcile
    from tests.day_complete_flows import recon
    from tests.ops_flows import ingest_dated_folder

    specs = [
        ("tests.ops_flows:ingest_dated_folder", "dc-bank", {"source_block": "dc-bank", **stores}),
        ("tests.ops_flows:ingest_dated_folder", "dc-gw", {"source_block": "dc-gw", **stores}),
        ("tests.day_complete_flows:recon", "recon", {}),
        ("flows.reconcile:ingest_reconcile", "ingest-reconcile", {"ledger_block": "dc-ledger"}),
    ]
    flows = {
        "tests.ops_flows:ingest_dated_folder": ingest_dated_folder,
        "tests.day_complete_flows:recon": recon,
        "flows.reconcile:ingest_reconcile": ingest_reconcile,
    }
    for entrypoint, name, params in specs:
        deployment = flows[entrypoint].to_deployment(
            name, parameters=params, entrypoint_type=EntrypointType.MODULE_PATH
        )
        # `module:attribute`, as prefect.yaml names them (a flow built by source_flow()
        # has pipeline.source_flow as its module).
        deployment.entrypoint = entrypoint
        deployment.apply(work_pool_name=POOL)
    return {"inbox": inbox, "out": out}


def run_source(client, source: str, day: dt.date, **params) -> UUID:
    run = run_deployment(
        f"ingest-dated-folder/dc-{source}",
        parameters={"date": day.isoformat(), **params},
        timeout=0,
    )
    return run.id


def recon_runs(client, day: dt.date, settle: float = 8.0) -> list:
    """The recon flow runs of `day`, once final; waits `settle` s more for a second one."""
    dep = client.read_deployment_by_name(RECON)
    deadline = time.monotonic() + 120
    mine: list = []
    while time.monotonic() < deadline:
        mine = [r for r in runs_of(client, dep.id) if r.parameters.get("date") == day.isoformat()]
        if mine and all(
            r.state_type and r.state_type.value in {"COMPLETED", "FAILED"} for r in mine
        ):
            break
        time.sleep(1)
    time.sleep(settle)
    return [r for r in runs_of(client, dep.id) if r.parameters.get("date") == day.isoformat()]


def test_late_partner_completes_the_day_once(env: Env, worker_proc, setup):
    day = dt.date.today() - dt.timedelta(days=1)
    stamp = f"{day:%Y%m%d}"
    (setup["inbox"]["bank"] / f"BANK_{stamp}.csv").write_text("bank\n")
    ledger = _ledger(env)
    with get_client(sync_client=True) as client:
        # Bank lands; the gateway runs and finds nothing yet: no recon.
        for source in ("bank", "gw"):
            run = wait_final(client, run_source(client, source, day), 180)
            assert run.state_name == "Completed", env.log("worker")
        assert recon_runs(client, day, settle=3) == []
        # The gateway file arrives late; its next run completes the day.
        (setup["inbox"]["gw"] / f"GW_{stamp}.csv").write_text("gw\n")
        run = wait_final(client, run_source(client, "gw", day), 180)
        assert run.state_name == "Completed", env.log("worker")
        (recon,) = recon_runs(client, day)
        assert recon.state_name == "Completed", env.log("worker")
        assert recon.idempotency_key == f"day-complete:dc-recon:{day}"
        (record,) = [json.loads(p.read_text()) for p in setup["out"].glob(f"{day}-*.json")]
        assert record["exist"] is True
        assert {
            s: [p.rsplit("/", 1)[1] for p in ps] for s, ps in record["landed_paths"].items()
        } == {
            "dc-bank": [f"BANK_{stamp}.csv"],
            "dc-gw": [f"GW_{stamp}.csv"],
        }
        # A forced re-land of the bank file and the sweep: still that one recon run.
        run = wait_final(client, run_source(client, "bank", day, force=True), 180)
        assert run.state_name == "Completed", env.log("worker")
        sweep = run_deployment("ingest-reconcile/ingest-reconcile", timeout=0)
        sweep = wait_final(client, sweep.id, 180)
        assert sweep.state_name == "Completed", env.log("worker")
        assert [r.id for r in recon_runs(client, day, settle=3)] == [recon.id]
    claim = ledger.get_state(STATE_SOURCE, f"dc-recon|{day}")
    assert (claim["status"], claim["flow_run_id"]) == ("started", str(recon.id))
    ledger.dispose()


def test_concurrent_runs_of_both_sources_start_the_day_once(env: Env, worker_proc, setup):
    day = dt.date.today() - dt.timedelta(days=2)
    stamp = f"{day:%Y%m%d}"
    (setup["inbox"]["bank"] / f"BANK_{stamp}.csv").write_text("bank2\n")
    (setup["inbox"]["gw"] / f"GW_{stamp}.csv").write_text("gw2\n")
    with get_client(sync_client=True) as client:
        ids = [run_source(client, s, day) for s in ("bank", "gw", "bank", "gw")]
        for run_id in ids:
            assert wait_final(client, run_id, 240).state_name == "Completed", env.log("worker")
        (recon,) = recon_runs(client, day)
        assert recon.state_name == "Completed"


def test_bad_rules_fail_the_sweep_naming_the_field(env: Env, worker_proc, setup):
    day = dt.date.today() - dt.timedelta(days=1)
    DayCompleteRule(
        rule_id="dc-unknown-source",
        expected=[ExpectedFile(source="dc-bank", name_glob="BANK_*"),
                  ExpectedFile(source="dc-nowhere", name_glob="X_*")],
        deployment=RECON,
    ).save("dc-unknown-source", overwrite=True)  # fmt: skip
    DayCompleteRule(
        rule_id="dc-unknown-deployment",
        expected=[ExpectedFile(source="dc-bank", name_glob="BANK_{date:%Y%m%d}.csv")],
        deployment="e2e-recon/missing",
    ).save("dc-unknown-deployment", overwrite=True)
    with get_client(sync_client=True) as client:
        sweep = run_deployment(
            "ingest-reconcile/ingest-reconcile",
            parameters={"rules": ["dc-unknown-source", "dc-unknown-deployment", "dc-missing"],
                        "date": day.isoformat()},
            timeout=0,
        )  # fmt: skip
        sweep = wait_final(client, sweep.id, 180)
    assert sweep.state_name == "Failed"
    message = sweep.state.message
    assert (
        "DayCompleteRule dc-unknown-source: expected[1].source: unknown source 'dc-nowhere'"
        in message
    )
    assert "DayCompleteRule.deployment: no deployment 'e2e-recon/missing'" in message
    assert "rules: no day-complete-rule block named 'dc-missing'" in message
    # Nothing was claimed for them: fixing a rule and sweeping again starts its day.
    ledger = _ledger(env)
    assert ledger.get_state(STATE_SOURCE, f"dc-unknown-deployment|{day}") is None
    ledger.dispose()


@pytest.fixture(scope="module")
def worker_proc(env: Env):
    return env.start(
        "worker", str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"
    )
