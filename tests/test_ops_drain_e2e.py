"""`ingest-ops drain` end to end on a REAL `prefect server start` (throwaway PostgreSQL
database) with a REAL process worker, both started here and shared by the module.

Bad input fails before the pool is touched; a drain with a long enough timeout waits for
the running flow run to complete while a 20 s schedule keeps adding runs that do not start,
and they start after `drain --resume`; a drain with a short timeout reports the run left
(exit 3) and does not kill it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import server_missing, throwaway_database
from tests.test_ops_e2e import (
    BIN,
    POOL,
    ROOT,
    SERVER_BIN,
    Env,
    _base,
    deploy_test_copy,
    runs_of,
    wait_final,
    wait_http,
)

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(1200)]  # loaded CI machines
WORKER = "drain-w1"


class LoadedEnv(Env):
    """`prefect` CLI calls get 10 minutes: on a loaded 2-core machine (load 20) a CLI call
    took 20 s to start and `prefect work-pool create` passed 180 s."""

    def prefect(self, *args: str, cwd: Path = ROOT) -> str:
        out = subprocess.run(
            [str(BIN / "prefect"), *args],
            cwd=cwd, env=self.vars, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout


def create_process_pool(env: Env) -> None:
    """The process pool, through the API (the CLI's start-up alone costs 20 s under load)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with temporary_settings({PREFECT_API_URL: env.api}), get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name=POOL, type="process", base_job_template=template), overwrite=True
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    with throwaway_database("postgres", "prefect_drain") as database:
        e = LoadedEnv(tmp_path_factory.mktemp("ops-drain"), database)
        server = e.start(
            "server", str(SERVER_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(e.port),
        )  # fmt: skip
        if not wait_http(f"{e.api}/health", 300, server):  # slow under load
            server_missing("prefect server start", e.log("server"))
        create_process_pool(e)
        e.start("worker", str(BIN / "prefect"), "worker", "start", "--pool", POOL,
                "--type", "process", "--name", WORKER)  # fmt: skip
        slow = _base("drain-slow", "tests.ops_flows:slow", parameters={"seconds": 20})
        tick = _base(
            "drain-tick",
            "tests.ops_flows:slow",
            parameters={"seconds": 1},
            # Few runs: each late one starts its own process after --resume.
            schedules=[{"interval": 20, "timezone": "UTC"}],
            paused=True,
        )
        deploy_test_copy(e, [slow, tick])
        with temporary_settings({PREFECT_API_URL: e.api}):
            yield e
        for proc in reversed(e.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def cli(env: Env, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "--json", *args],
        cwd=ROOT, env=env.vars, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def pool_paused(client) -> bool:
    return client.read_work_pool(POOL).is_paused


def start_running(env: Env, client, seconds: float):
    run = run_deployment("ops-slow/drain-slow", parameters={"seconds": seconds}, timeout=0)
    deadline = time.monotonic() + 150
    while client.read_flow_run(run.id).state_name != "Running":
        assert time.monotonic() < deadline, env.log("worker")
        time.sleep(0.5)
    return run


def test_bad_input_fails_before_touching_the_pool(env: Env):
    out = cli(env, "drain", "--pool", "no-such-pool", "--timeout", "5")
    assert out.returncode == 1, out
    assert "--pool: no work pool 'no-such-pool'" in out.stderr and POOL in out.stderr
    for bad in ("-5", "abc", "1e9"):
        out = cli(env, "drain", "--pool", POOL, "--timeout", bad)
        assert out.returncode == 2 and "--timeout" in out.stderr, (bad, out.stderr)
    out = cli(env, "drain", "--timeout", "5")
    assert out.returncode == 2 and "--pool" in out.stderr, out.stderr
    with get_client(sync_client=True) as client:
        assert not pool_paused(client)


def test_drain_waits_for_the_run_and_starts_nothing_new(env: Env):
    with get_client(sync_client=True) as client:
        # Long enough to outlast the drain command's start on a loaded machine (~10-30 s).
        run = start_running(env, client, 90)
        drain = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "--json", "drain", "--pool", POOL,
             "--timeout", "240"],
            cwd=ROOT, env=env.vars, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not pool_paused(client):
            assert time.monotonic() < deadline and drain.poll() is None, drain.communicate()
            time.sleep(0.5)
        assert client.read_flow_run(run.id).state_name == "Running", "ended before the drain"
        # While the drain waits, a 20 s schedule keeps adding runs to the paused pool.
        tick = client.read_deployment_by_name("ops-slow/drain-tick")
        client.resume_deployment(tick.id)
        try:
            stdout, stderr = drain.communicate(timeout=300)
            assert drain.returncode == 0, stderr
            report = json.loads(stdout)
            assert report["drained"] and report["paused"] and report["left"] == []
            assert [r["flow_run_id"] for r in report["finished"]] == [str(run.id)]
            assert report["finished"][0]["state"] == "Completed"
            assert report["finished"][0]["worker"] == WORKER
            assert client.read_flow_run(run.id).state_name == "Completed"
            ticks = runs_of(client, tick.id)
            assert ticks and report["scheduled_waiting"] >= 1, report
            assert all(t.state_type.value == "SCHEDULED" and t.start_time is None for t in ticks)
            assert any(t.expected_start_time.timestamp() < time.time() for t in ticks), (
                "no tick was due during the drain"
            )
            assert pool_paused(client)
            # Nothing lost: after --resume the runs that waited start.
            out = cli(env, "drain", "--pool", POOL, "--resume")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["paused"] is False and not pool_paused(client)
            client.pause_deployment(tick.id)  # no new ticks; the late ones still run
            deadline = time.monotonic() + 240
            while not any(t.state_name == "Completed" for t in runs_of(client, tick.id)):
                assert time.monotonic() < deadline, env.log("worker")
                time.sleep(1)
        finally:
            client.pause_deployment(tick.id)


def test_short_timeout_reports_the_run_left_and_keeps_it(env: Env):
    with get_client(sync_client=True) as client:
        if pool_paused(client):
            assert cli(env, "drain", "--pool", POOL, "--resume").returncode == 0
        # The schedule's late runs (the deployment is paused now) may still be queued:
        # let them finish so the slow run is the only one in flight.
        deadline = time.monotonic() + 150
        tick = client.read_deployment_by_name("ops-slow/drain-tick")
        while any(
            t.state_type.value in ("PENDING", "RUNNING")
            or (
                t.state_type.value == "SCHEDULED"
                and t.expected_start_time.timestamp() < time.time()
            )
            for t in runs_of(client, tick.id)
        ):
            assert time.monotonic() < deadline, env.log("worker")
            time.sleep(1)
        run = start_running(env, client, 90)  # outlasts two CLI calls on a loaded machine
        out = cli(env, "drain", "--pool", POOL, "--timeout", "3", "--worker", WORKER)
        assert out.returncode == 3, (out.stdout, out.stderr)
        report = json.loads(out.stdout)
        assert not report["drained"] and report["paused"]
        assert [(r["flow_run_id"], r["state"], r["worker"]) for r in report["left"]] == [
            (str(run.id), "Running", WORKER)
        ]
        assert "1 run(s) still in flight after 3s" in out.stderr and run.name in out.stderr
        assert pool_paused(client)
        # The drain neither cancelled nor killed it.
        assert client.read_flow_run(run.id).state_name == "Running"
        # Another worker's runs are not waited for: drained at once.
        other = cli(env, "drain", "--pool", POOL, "--timeout", "60", "--worker", "other-host")
        assert other.returncode == 0, other.stderr
        assert json.loads(other.stdout)["waited_seconds"] < 30
        assert cli(env, "drain", "--pool", POOL, "--resume").returncode == 0
        assert wait_final(client, UUID(str(run.id)), 180).state_name == "Completed"
