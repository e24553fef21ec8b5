"""End to end on a REAL `prefect server start` (its database a throwaway PostgreSQL one,
127.0.0.1, free port, temp PREFECT_HOME) with a REAL process worker, both started here and
shared by the module:

deploy from prefect.yaml (the real file, then a test copy with short intervals built from
it), overlap (CANCEL_NEW cancels, ENQUEUE queues), a manual run lands files, a 3-day
backfill lands each day's file once and a rerun lands nothing, the webhook receiver starts
a run, and SIGTERM to the worker during a run ends it cleanly (last test).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

from blocks import IngestionQueue, Ledger, LocalFolderSource
from blocks.core.webhook_endpoint import WebhookEndpoint
from ops.automations import CRASH_UNRESPONSIVE
from ops.webhook_receiver import signed_headers
from tests.conftest import PG_HOST, PG_PORT, PG_USER, server_missing, throwaway_database
from tests.ops_flows import DatedFolderSource

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The Prefect server runs from the project's venv; INGEST_PREFECT_SERVER_BIN can point it at
# another Python environment's bin folder. The overlap test's 4 s schedules prove that the
# server's scheduler creates runs on the installed SQLAlchemy (prefect 3.8.8's created none
# on SQLAlchemy 2.1: "Can't evaluate bulk DML statement"; prefect 3.9 fixed it).
SERVER_BIN = Path(os.environ.get("INGEST_PREFECT_SERVER_BIN") or BIN)
POOL = "ingest-process"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(420)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    # A process started from a backgrounded shell inherits SIGINT ignored, and Prefect turns
    # SIGTERM into SIGINT: restore the default so one SIGTERM stops the worker.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Env:
    def __init__(self, tmp: Path, database: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.procs: list[subprocess.Popen] = []
        self.vars = {
            **os.environ,
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "12",
            "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "4",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",  # the minimum
            "INGEST_HOME": str(tmp / "ingest-home"),
            "PYTHONPATH": str(ROOT),
        }

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=self.vars,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def prefect(self, *args: str, cwd: Path = ROOT) -> str:
        out = subprocess.run(
            [str(BIN / "prefect"), *args],
            cwd=cwd,
            env=self.vars,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def wait_http(url: str, seconds: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    # The server keeps its state in a throwaway PostgreSQL database, as a production server
    # would: on SQLite, a CI run on a loaded machine answered 503 ("database is locked")
    # for over a minute, past the client's own retries, and the module's tests failed.
    with throwaway_database("postgres", "prefect_e2e") as database:
        e = Env(tmp_path_factory.mktemp("ops-e2e"), database)
        server = e.start(
            "server", str(SERVER_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(e.port),
        )  # fmt: skip
        if not wait_http(f"{e.api}/health", 120, server):
            server_missing("prefect server start", e.log("server"))
        e.prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
        with temporary_settings({PREFECT_API_URL: e.api}):
            yield e
        for proc in reversed(e.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def worker(env: Env) -> subprocess.Popen:
    return env.start(
        "worker", str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"
    )


@pytest.fixture(scope="module")
def stores(env: Env) -> dict[str, str]:
    """Blocks on the real server: a SQLite ledger and a landing area in the temp dir."""
    ledger = Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.SQLITE_PYSQLITE, database=str(env.tmp / "ledger.db")
            )
        )
    )
    ledger.save("e2e-ledger", overwrite=True)
    IngestionQueue(landing_dir=str(env.tmp / "landing"), fsync=False).save(
        "e2e-landing", overwrite=True
    )
    return {"ledger_block": "e2e-ledger", "queue_block": "e2e-landing"}


def test_real_prefect_yaml_deploys(env: Env):
    """The shipped prefect.yaml deploys non-interactively, as CI would run it."""
    out = env.prefect("--no-prompt", "deploy", "--all")
    assert "local-folder-demo" in out
    with get_client(sync_client=True) as client:
        four = client.read_deployment_by_name("ingest-local-folder/local-folder-four-times-a-day")
        morning = client.read_deployment_by_name("ingest-local-folder/local-folder-weekday-morning")
        demo = client.read_deployment_by_name("ingest-local-folder/local-folder-demo")
        client.read_deployment_by_name("ingest-backfill/backfill")
        health = client.read_deployment_by_name("ingest-health/health")
        for dep in (four, morning, demo, health):  # keep the real schedules out of the other tests
            client.pause_deployment(dep.id)
    assert "FREQ=DAILY;BYHOUR=9,12,15,18;BYMINUTE=5" in four.schedules[0].schedule.rrule
    assert four.schedules[0].schedule.timezone == "America/New_York"
    assert morning.schedules[0].schedule.cron == "30 6 * * 1-5"
    assert morning.schedules[0].schedule.timezone == "Europe/Paris"
    assert morning.parameters["jitter_seconds"] == 120
    assert morning.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert demo.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert demo.global_concurrency_limit.limit == 1
    assert demo.schedules[0].schedule.interval == dt.timedelta(seconds=300)


def deploy_test_copy(env: Env, deployments: list[dict]) -> None:
    """A copy of prefect.yaml (same definitions and anchors' values) with test deployments."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    spec["deployments"] = deployments
    path = env.tmp / f"prefect-test-{len(list(env.tmp.glob('prefect-test-*')))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(path))


def _base(name: str, entrypoint: str, **extra) -> dict:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {
        "name": name,
        "entrypoint": entrypoint,
        "work_pool": copy.deepcopy(spec["definitions"]["work_pools"]["process"]),
        **extra,
    }


def runs_of(client, deployment_id: UUID) -> list:
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    )


def wait_final(client, run_id: UUID, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state_type and run.state_type.value in FINAL:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} not final after {seconds}s: {run.state_name}")


def test_overlap_cancel_new_skips_and_enqueue_queues(env: Env, worker):
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    skip = spec["definitions"]["overlap"]["skip"]
    queue = spec["definitions"]["overlap"]["queue"]
    assert skip["collision_strategy"] == "CANCEL_NEW" and queue["collision_strategy"] == "ENQUEUE"
    slow = {"parameters": {"seconds": 12}, "schedules": [{"interval": 4, "timezone": "UTC"}]}
    deploy_test_copy(
        env,
        [
            _base("slow-skip", "tests.ops_flows:slow", concurrency_limit=skip, **slow),
            _base("slow-queue", "tests.ops_flows:slow", concurrency_limit=queue, **slow),
        ],
    )
    seen: dict[str, dict[UUID, set[str]]] = {"slow-skip": {}, "slow-queue": {}}
    queued_then_ran = False
    with get_client(sync_client=True) as client:
        deps = {n: client.read_deployment_by_name(f"ops-slow/{n}") for n in seen}
        try:
            # Both usually hold within a minute; on a loaded 2-core machine a flow-run
            # process took 30-40 s from submission to Running (measured), so allow more.
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                try:
                    for name, dep in deps.items():
                        for run in runs_of(client, dep.id):
                            seen[name].setdefault(run.id, set()).add(run.state_name)
                except PrefectHTTPStatusError:  # a busy server answers 503 at times
                    time.sleep(1)
                    continue
                skip_done = any("Completed" in s for s in seen["slow-skip"].values()) and any(
                    "Cancelled" in s for s in seen["slow-skip"].values()
                )
                queued_then_ran = any(
                    "AwaitingConcurrencySlot" in s and ("Running" in s or "Completed" in s)
                    for s in seen["slow-queue"].values()
                )
                if skip_done and queued_then_ran:
                    break
                time.sleep(1)
            if skip_done and queued_then_ran:
                skip_row = _sources_row("ops-slow/slow-skip")
                paused, waited, started_after = _pause_while_runs_wait(client, deps["slow-queue"])
        finally:  # whatever happened, stop the 4 s schedules before the next tests
            for dep in deps.values():
                client.pause_deployment(dep.id)
                for run in runs_of(client, dep.id):  # queued runs would still run: drop them
                    if run.state_type and run.state_type.value == "SCHEDULED":
                        client.set_flow_run_state(
                            run.id, Cancelled(message="test over"), force=True
                        )
        cancelled = [
            r for r in runs_of(client, deps["slow-skip"].id) if r.state_name == "Cancelled"
        ]
    assert "Can't evaluate bulk DML" not in env.log("server"), (
        "the Prefect server's scheduler fails on this SQLAlchemy (prefect < 3.9 with "
        "SQLAlchemy 2.1): upgrade prefect, or run the server from another venv "
        "(INGEST_PREFECT_SERVER_BIN)"
    )
    assert cancelled, f"no run cancelled under CANCEL_NEW: {seen['slow-skip']}\n{env.log('worker')}"
    assert any("concurrency" in (r.state.message or "").lower() for r in cancelled)
    assert any("Completed" in s for s in seen["slow-skip"].values()), seen["slow-skip"]
    assert not any("Cancelled" in s for s in seen["slow-queue"].values()), seen["slow-queue"]
    assert queued_then_ran, f"ENQUEUE: no run waited for the slot then ran: {seen['slow-queue']}"
    # ingest-ops sources: the runs the server cancelled under CANCEL_NEW are skips
    assert skip_row["skipped"] >= 1 and skip_row["success_rate"] == 1.0, skip_row
    # ingest-ops pause on the ENQUEUE deployment also removed the runs waiting for the slot
    assert waited, "no run was waiting for the concurrency slot when the test paused"
    assert paused["cancelled_waiting_runs"] >= 1, paused
    assert not started_after, f"runs started after pause: {started_after}"


def _sources_row(deployment: str) -> dict:
    from typer.testing import CliRunner

    from ops.cli import app

    result = CliRunner().invoke(app, ["--json", "sources"])
    assert result.exit_code == 0, result.output
    return next(r for r in json.loads(result.stdout) if r["deployment"] == deployment)


def _pause_while_runs_wait(client, dep) -> tuple[dict, list, list]:
    """`ingest-ops pause` on the deployment; returns (its output, the runs that waited for
    a slot just before, the runs that started in the 15 s after the pause)."""
    from typer.testing import CliRunner

    from ops.cli import app

    waited = [r.id for r in runs_of(client, dep.id) if r.state_name == "AwaitingConcurrencySlot"]
    result = CliRunner().invoke(app, ["--json", "pause", f"ops-slow/{dep.name}"])
    assert result.exit_code == 0, result.output
    active = {"PENDING", "RUNNING", "COMPLETED", "FAILED", "CRASHED"}
    before = {r.id for r in runs_of(client, dep.id) if r.state_type.value in active}
    assert not [r for r in runs_of(client, dep.id) if r.state_type.value == "SCHEDULED"]
    time.sleep(15)  # > 3 slot re-checks (PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS)
    after = {r.id for r in runs_of(client, dep.id) if r.state_type.value in active}
    return json.loads(result.stdout), waited, sorted(after - before)


@pytest.fixture(scope="module")
def folder(env: Env, stores) -> dict:
    inbox = env.tmp / "inbox"
    inbox.mkdir()
    for name in ("a.csv", "b.csv"):
        (inbox / name).write_text(f"{name}\n")
    LocalFolderSource(source_id="e2e-folder", directory=str(inbox)).save(
        "e2e-folder", overwrite=True
    )
    deploy_test_copy(
        env,
        [
            _base(
                "e2e-folder",
                "flows.local_folder:ingest_local_folder",
                parameters={"source_block": "e2e-folder", **stores},
                concurrency_limit={"limit": 1, "collision_strategy": "ENQUEUE"},
            )
        ],
    )
    return {"inbox": inbox, "deployment": "ingest-local-folder/e2e-folder"}


def _ledger(env: Env) -> Ledger:
    return Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.SQLITE_PYSQLITE, database=str(env.tmp / "ledger.db")
            )
        )
    )


def test_manual_run_lands_files(env: Env, worker, folder):
    out = subprocess.run(
        [sys.executable, "-m", "ops.cli", "--json", "run", folder["deployment"]],
        cwd=ROOT,
        env=env.vars,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    run_id = UUID(json.loads(out.stdout)["flow_run_id"])
    with get_client(sync_client=True) as client:
        run = wait_final(client, run_id)
    assert run.state_name == "Completed", env.log("worker")
    landed = sorted(p.name for p in (env.tmp / "landing" / "e2e-folder").rglob("*.csv"))
    assert landed == ["a.csv", "b.csv"]


def test_webhook_starts_a_run(env: Env, worker, folder):
    secret = "e2e-webhook-secret-0123"
    WebhookEndpoint(source="e2e-folder", deployment=folder["deployment"], secret=secret).save(
        "e2e-folder", overwrite=True
    )
    (folder["inbox"] / "c.csv").write_text("c\n")
    port = free_port()
    receiver = env.start(
        "webhook",
        sys.executable,
        "-m",
        "ops.webhook_receiver",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    assert wait_http(f"http://127.0.0.1:{port}/", 60, receiver), env.log("webhook")
    body = json.dumps({"event": "file-dropped", "name": "c.csv"}).encode()
    url = f"http://127.0.0.1:{port}/webhooks/e2e-folder"
    bad = httpx.post(url, content=body, headers={"X-Ingest-Signature": "sha256=00"})
    assert bad.status_code == 401
    headers = signed_headers(secret, body)
    resp = httpx.post(url, content=body, headers=headers, timeout=30)
    assert resp.status_code == 202, resp.text
    # A replay of the same signed request gets the run already started, not a new one.
    replay = httpx.post(url, content=body, headers=headers, timeout=30)
    assert replay.status_code == 202 and replay.json() == resp.json()
    with get_client(sync_client=True) as client:
        run = wait_final(client, UUID(resp.json()["flow_run_id"]))
    assert run.state_name == "Completed", env.log("worker")
    assert run.parameters["trigger"] == {"event": "file-dropped", "name": "c.csv"}
    assert secret not in env.log("webhook")
    assert _ledger(env).count_items("e2e-folder", "landed") == 3


def test_backfill_three_days_once_then_nothing(env: Env, worker, stores):
    days = [dt.date.today() - dt.timedelta(days=n) for n in (3, 2, 1)]
    inbox = env.tmp / "dated"
    inbox.mkdir()
    for day in days:
        (inbox / f"BANK_{day:%Y%m%d}.csv").write_text(f"{day}\n")
    DatedFolderSource(
        source_id="e2e-bank", directory=str(inbox), pattern="BANK_{date:%Y%m%d}.csv"
    ).save("e2e-bank", overwrite=True)
    deploy_test_copy(
        env,
        [
            _base(
                "e2e-bank",
                "tests.ops_flows:ingest_dated_folder",
                parameters={"source_block": "e2e-bank", **stores},
            ),
            _base("backfill", "flows.backfill:ingest_backfill"),
        ],
    )
    params = {
        "deployment": "ingest-dated-folder/e2e-bank",
        "start_date": days[0].isoformat(),
        "end_date": days[-1].isoformat(),
        "max_parallel_days": 2,
    }
    from prefect.deployments import run_deployment

    ledger = _ledger(env)
    with get_client(sync_client=True) as client:
        for attempt in (1, 2):
            run = run_deployment("ingest-backfill/backfill", parameters=params, timeout=0)
            run = wait_final(client, run.id, 180)
            assert run.state_name == "Completed", env.log("worker")
            counts = [ledger.count_items("e2e-bank", "landed", d) for d in days]
            assert counts == [1, 1, 1], f"attempt {attempt}: {counts}"
            states = [
                ledger.get_state("ingest-backfill", f"ingest-dated-folder|e2e-bank|{d}")["status"]
                for d in days
            ]
            assert states == ["done"] * 3
        # The rerun started no subflows: only the first backfill's 3 day runs exist.
        source_dep = client.read_deployment_by_name("ingest-dated-folder/e2e-bank")
        assert runs_of(client, source_dep.id) == []  # subflows, not deployment runs
    landed = sorted(p.name for p in (env.tmp / "landing" / "e2e-bank").rglob("*.csv"))
    assert landed == sorted(f"BANK_{d:%Y%m%d}.csv" for d in days)
    rows = ledger.recent_items("e2e-bank", 100)
    assert len(rows) == 3
    ledger.dispose()


def _cli(env: Env, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "--json", *args],
        cwd=ROOT, env=env.vars, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_ignore_overlap_limit_runs_beside_the_slot_holder(env: Env, worker, stores):
    """`run --ignore-overlap-limit` runs while another run holds the CANCEL_NEW slot; a
    normal run before and after it is still skipped (the override took and freed no slot),
    the override is in the run's logs, tags and an event; `ingest-ops metrics` counts the
    skips per deployment."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.events.filters import EventFilter, EventNameFilter
    from prometheus_client.parser import text_string_to_metric_families

    from ops.cli import OVERRIDE_EVENT, OVERRIDE_TAG

    skip = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["overlap"]["skip"]
    hold = _base("slow-hold", "tests.ops_flows:slow", concurrency_limit=skip,
                 parameters={"seconds": 60})  # fmt: skip
    deploy_test_copy(env, [hold])
    name = "ops-slow/slow-hold"

    def normal_run_is_skipped() -> None:
        out = _cli(env, "run", name, "--param", "seconds=1")
        assert out.returncode == 0, out.stderr
        run = wait_final(client, UUID(json.loads(out.stdout)["flow_run_id"]))
        assert run.state_name == "Cancelled", (run.state, env.log("worker"))
        assert "concurrency limit" in (run.state.message or "")

    with get_client(sync_client=True) as client:
        holder = run_deployment(name, timeout=0)
        deadline = time.monotonic() + 120
        while client.read_flow_run(holder.id).state_name != "Running":
            assert time.monotonic() < deadline, env.log("worker")
            time.sleep(0.5)
        normal_run_is_skipped()
        out = _cli(env, "run", name, "--ignore-overlap-limit", "--param", "seconds=2",
                   "--by", "alice", "--reason", "late partner file")  # fmt: skip
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert (got["state"], got["result"], got["overlap_limit_ignored_by"]) == (
            "Completed",
            2.0,
            "alice",
        )
        assert "ignored on request of alice" in out.stderr
        assert client.read_flow_run(holder.id).state_name == "Running"
        override = client.read_flow_run(UUID(got["flow_run_id"]))
        assert override.state_name == "Completed" and override.deployment_id is None
        assert {OVERRIDE_TAG, f"deployment:{name}"} <= set(override.tags)
        deadline = time.monotonic() + 30
        while True:  # the run's logs reach the API in batches
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[override.id])), limit=200
            )
            if any(
                "ignored on request of alice" in r.message and "late partner file" in r.message
                for r in logs
            ):
                break
            assert time.monotonic() < deadline, ([r.message for r in logs], out.stderr)
            time.sleep(1)
        deadline = time.monotonic() + 30
        while not (
            events := client.read_events(
                EventFilter(event=EventNameFilter(name=[OVERRIDE_EVENT])), limit=50
            )
        ).events:
            assert time.monotonic() < deadline, "no override event"
            time.sleep(1)
        (event,) = events.events
        assert event.payload["by"] == "alice"
        assert event.resource["prefect.resource.name"] == name
        assert str(override.id) in event.payload["flow_run_id"]
        normal_run_is_skipped()  # the holder still holds the slot
        assert client.read_flow_run(holder.id).state_name == "Running"
        assert wait_final(client, holder.id, 120).state_name == "Completed"

    port = free_port()
    metrics = env.start(
        "metrics", sys.executable, "-m", "ops.cli", "metrics", "--host", "127.0.0.1",
        "--port", str(port), "--ledger-block", "e2e-ledger",
    )  # fmt: skip
    assert wait_http(f"http://127.0.0.1:{port}/metrics", 60, metrics), env.log("metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=60).text
        )
        for s in family.samples
    }
    key = (("deployment", name), ("reason", "overlap"), ("source_block", ""))
    assert samples[("ingest_runs_skipped_total", key)] == 2, samples
    assert samples[("ingest_prefect_api_up", ())] == 1
    metrics.send_signal(signal.SIGTERM)
    assert metrics.wait(30) == 0, env.log("metrics")


def test_sigterm_to_worker_during_a_run_ends_cleanly(env: Env, worker):
    """Last: stops the module's worker. The interrupted run ends Crashed, not Running."""
    from prefect.deployments import run_deployment

    grace = 40  # > the 30 s heartbeat set for this module's worker
    out = subprocess.run(
        [sys.executable, "-m", "ops.cli", "--json", "install-automations",
         "--grace-seconds", str(grace)],
        env=env.vars, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert CRASH_UNRESPONSIVE in json.loads(out.stdout)
    slow = _base("slow-once", "tests.ops_flows:slow", parameters={"seconds": 90})
    slow["work_pool"]["job_variables"] = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}}
    # A run that ends at once: its Running, first heartbeat and Completed events arrive
    # together and in any order, and the automation must not fire for it.
    quick = _base("quick-once", "tests.ops_flows:slow", parameters={"seconds": 1})
    quick["work_pool"]["job_variables"] = slow["work_pool"]["job_variables"]
    deploy_test_copy(env, [slow, quick])
    with get_client(sync_client=True) as client:
        done = run_deployment("ops-slow/quick-once", timeout=0)
        assert wait_final(client, done.id).state_name == "Completed", env.log("worker")
        run = run_deployment("ops-slow/slow-once", timeout=0)
        deadline = time.monotonic() + 90
        while client.read_flow_run(run.id).state_name != "Running":
            assert time.monotonic() < deadline, env.log("worker")
            time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail("worker did not stop within 60 s of one SIGTERM:\n" + env.log("worker"))
        assert code == 0, f"worker exit code {code}:\n{env.log('worker')}"
        assert "stopped!" in env.log("worker")
        # The worker takes its flow-run process down with it: no orphan keeps running.
        assert _processes_of(run.id) == [], "flow-run process outlived its worker"
        # Nothing reports the end of that process; the heartbeat automation does.
        deadline = time.monotonic() + grace + 60
        while (after := client.read_flow_run(run.id)).state_name == "Running":
            assert time.monotonic() < deadline, "run still Running after the grace period"
            time.sleep(2)
        assert after.state_name == "Crashed", after.state
        assert "heartbeat" in (after.state.message or "")
        # The automation's action targeted the killed run, and only it: the quick run's
        # window closed before the killed run's, so by now it would have fired for it too.
        deadline = time.monotonic() + 30
        while not (fired := _automation_actions_on(client, run.id)):
            assert time.monotonic() < deadline, "no automation action event for the run"
            time.sleep(1)
        assert fired == ["prefect.automation.action.executed"], fired
        assert _automation_actions_on(client, done.id) == []
        assert client.read_flow_run(done.id).state_name == "Completed"


def _automation_actions_on(client, run_id: UUID) -> list[str]:
    """Names of the automation action events whose target is the flow run."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    page = client.read_events(
        EventFilter(
            event=EventNameFilter(prefix=["prefect.automation.action."]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
        ),
        limit=50,  # the API's maximum
    )
    return sorted(e.event for e in page.events if e.event != "prefect.automation.action.triggered")


def _processes_of(run_id: UUID) -> list[int]:
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids
