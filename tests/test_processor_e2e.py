"""Processor jobs end to end on a REAL `prefect server start` (throwaway PostgreSQL
database) with a REAL process worker standing in for the kubernetes cluster.

The `process-item` deployment of `prefect.processor.yaml` (its parameters and its trigger
on `ingest.item.landed`; only the work pool is the process pool, the command a local
script and the trigger's source the test's) is deployed with a local-folder source:
landing three files starts the processor once per item with the item's landed path; a
rerun of the source that lands nothing starts nothing; a path outside `landing_root`
fails the run naming `landed_path`.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

from blocks import IngestionQueue, Ledger, LocalFolderSource
from flows.processor import PROCESSED_EVENT
from tests.conftest import server_missing, throwaway_database
from tests.test_ops_drain_e2e import LoadedEnv, create_process_pool
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
SOURCE = "proc-src"
# The processor stand-in: appends "<size> <path>" to <out>/<name>.out, so a second run on
# the same item shows as a second line.
PROCESSOR = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
    "out = pathlib.Path(sys.argv[2]) / (sys.argv[3] + '.out'); "
    "out.open('a').write(f'{p.stat().st_size} {p}\\n'); print('processed', p.name)"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    with throwaway_database("postgres", "prefect_proc") as database:
        e = LoadedEnv(tmp_path_factory.mktemp("processor"), database)
        server = e.start(
            "server", str(SERVER_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(e.port),
        )  # fmt: skip
        if not wait_http(f"{e.api}/health", 300, server):  # slow under load
            server_missing("prefect server start", e.log("server"))
        create_process_pool(e)
        e.start("worker", str(BIN / "prefect"), "worker", "start", "--pool", POOL,
                "--type", "process")  # fmt: skip
        with temporary_settings({PREFECT_API_URL: e.api}):
            yield e
        for proc in reversed(e.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def processor_on_process_pool(out: Path, landing: Path) -> dict:
    """prefect.processor.yaml's process-item, on the process pool standing in for k8s."""
    spec = yaml.safe_load((ROOT / "prefect.processor.yaml").read_text())
    (dep,) = [copy.deepcopy(d) for d in spec["deployments"] if d["name"] == "process-item"]
    main = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    dep["work_pool"] = copy.deepcopy(main["definitions"]["work_pools"]["process"])
    dep["parameters"].update(
        command=[sys.executable, "-c", PROCESSOR, "{path}", str(out), "{name}"],
        landing_root=str(landing),
    )
    (trigger,) = dep["triggers"]
    trigger["match"] = {"prefect.resource.id": f"ingest.source.{SOURCE}"}
    return dep


def test_each_landed_item_runs_the_processor_once(env: Env):
    inbox, out, landing = env.tmp / "inbox", env.tmp / "out", env.tmp / "landing"
    for folder in (inbox, out):
        folder.mkdir()
    files = {"a.csv": "a\n", "b b.csv": "bb\n", "c.bin": "ccc\n"}
    for name, body in files.items():
        (inbox / name).write_text(body)
    ledger = Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.SQLITE_PYSQLITE, database=str(env.tmp / "ledger.db")
            )
        )
    )
    ledger.save("proc-ledger", overwrite=True)
    IngestionQueue(landing_dir=str(landing), fsync=False).save("proc-landing", overwrite=True)
    LocalFolderSource(source_id=SOURCE, directory=str(inbox)).save(SOURCE, overwrite=True)
    params = {"source_block": SOURCE, "ledger_block": "proc-ledger", "queue_block": "proc-landing"}
    deploy_test_copy(
        env,
        [
            _base("proc-src", "flows.local_folder:ingest_local_folder", parameters=params),
            processor_on_process_pool(out, landing),
        ],
    )
    with get_client(sync_client=True) as client:
        processor = client.read_deployment_by_name("process-item/process-item")
        source_run = run_deployment("ingest-local-folder/proc-src", timeout=0)
        assert wait_final(client, source_run.id, 240).state_name == "Completed", env.log("worker")
        deadline = time.monotonic() + 300
        while True:
            runs = runs_of(client, processor.id)
            done = [r for r in runs if r.state_type and r.state_type.value in {"COMPLETED"}]
            failed = [r for r in runs if r.state_name in ("Failed", "Crashed")]
            assert not failed, ([r.state.message for r in failed], env.log("worker"))
            if len(done) >= len(files):
                break
            assert time.monotonic() < deadline, ([r.state_name for r in runs], env.log("worker"))
            time.sleep(2)
        landed = {r["name"]: r for r in ledger.recent_items(SOURCE, 100)}
        assert set(landed) == set(files)
        by_path = {r.parameters["landed_path"]: r for r in done}
        assert set(by_path) == {r["landed_path"] for r in landed.values()}
        for name, row in landed.items():
            run = by_path[row["landed_path"]]
            assert run.parameters["sha256"] == row["sha256"] and run.parameters["name"] == name
            assert run.parameters["source"] == SOURCE
            assert Path(row["landed_path"]).is_relative_to(landing / SOURCE)
            lines = (out / f"{name}.out").read_text().splitlines()
            assert lines == [f"{len(files[name])} {row['landed_path']}"], lines

        # A rerun lands nothing and so starts nothing; still one run per item.
        rerun = run_deployment("ingest-local-folder/proc-src", timeout=0)
        assert wait_final(client, rerun.id, 240).state_name == "Completed", env.log("worker")
        time.sleep(10)  # the trigger fires within a second of an event (measured)
        assert len(runs_of(client, processor.id)) == len(files)
        for name in files:
            assert len((out / f"{name}.out").read_text().splitlines()) == 1

        deadline = time.monotonic() + 60
        event_filter = _event_filter(PROCESSED_EVENT, f"ingest.source.{SOURCE}")
        while len(processed := client.read_events(event_filter, limit=50).events) < len(files):
            assert time.monotonic() < deadline, processed
            time.sleep(1)
        assert sorted(e.payload["name"] for e in processed) == sorted(files)

        # An event (or a hand-made run) naming a file outside the landing area: refused.
        secret = env.tmp / "outside.txt"
        secret.write_text("not landed\n")
        bad = run_deployment(
            "process-item/process-item", parameters={"landed_path": str(secret)}, timeout=0
        )
        bad = wait_final(client, bad.id, 240)
        assert bad.state_name == "Failed", env.log("worker")
        assert "landed_path" in bad.state.message and "not under landing_root" in (
            bad.state.message
        )
        assert not (out / "outside.txt.out").exists()
    ledger.dispose()


def _event_filter(name: str, resource_id: str):
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    return EventFilter(
        event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])
    )
