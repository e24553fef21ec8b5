"""Processor jobs end to end on a REAL `prefect server start` (throwaway PostgreSQL
database) with a REAL process worker standing in for the kubernetes cluster.

The deployments of `prefect.processor.yaml` (their parameters and triggers; only the work
pool is the process pool, the command a local script and the trigger's source the test's)
are deployed with local-folder sources:

- `process-items`, with the queue's default `event_per: batch`: landing seven files in
  batches of three starts the processor once per `ingest.items.landed` event, its `items`
  parameter the event's item payloads as a list (Prefect renders the trigger's
  `{{ event.payload['items'] }}` with `tojson`), one task run per item, each item processed
  once with its own landed path, sha256 and name; a rerun that lands nothing starts
  nothing; an event listing an item outside `landing_root` among good ones processes the
  good ones and fails the run naming the bad item's landed path;
- `process-item`, with `event_per: item`: three files start the processor once per item
  with the item's landed path; a rerun starts nothing; a path outside `landing_root`
  fails the run naming `landed_path`;
- last, the real file deploys both deployments (YAML anchors) on a kubernetes pool.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from blocks import IngestionQueue, Ledger, LocalFolderSource
from blocks.core.events import ITEM_LANDED, ITEMS_LANDED
from blocks.core.ingestion_queue import sha256_file
from flows.processor import PROCESSED_EVENT
from tests.conftest import server_missing, sqlite_connector, throwaway_database
from tests.test_ops_drain_e2e import LoadedEnv, create_process_pool
from tests.test_ops_e2e import (
    BIN,
    FINAL,
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


def processor_on_process_pool(
    out: Path, landing: Path, name: str = "process-item", source: str = SOURCE
) -> dict:
    """prefect.processor.yaml's deployment `name`, on the process pool standing in for k8s,
    its trigger matching `source`."""
    spec = yaml.safe_load((ROOT / "prefect.processor.yaml").read_text())
    (dep,) = [copy.deepcopy(d) for d in spec["deployments"] if d["name"] == name]
    main = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    dep["work_pool"] = copy.deepcopy(main["definitions"]["work_pools"]["process"])
    dep["parameters"].update(
        command=[sys.executable, "-c", PROCESSOR, "{path}", str(out), "{name}"],
        landing_root=str(landing),
    )
    (trigger,) = dep["triggers"]
    trigger["match"] = {"prefect.resource.id": f"ingest.source.{source}"}
    return dep


BATCH_SOURCE = "proc-batch"


def test_each_landing_batch_runs_process_items_once(env: Env):
    """The default queue (`event_per: batch`): one `process-items` run per batch event,
    every item processed exactly once as its own task run; a bad item in a batch fails
    the run naming it, after the good ones."""
    work = env.tmp / "batch"
    inbox, out, landing = work / "inbox", work / "out", work / "landing"
    for folder in (inbox, out):
        folder.mkdir(parents=True)
    files = {f"f{i}.csv": "x" * (i + 1) + "\n" for i in range(4)}
    files |= {"b&b's <1>.csv": "amp\n", 'q"uote.bin': "q\n", "sp ace.txt": "space\n"}
    for name, body in files.items():
        (inbox / name).write_text(body)
    ledger = Ledger(database=sqlite_connector(work / "ledger.db"))
    ledger.save("batch-ledger", overwrite=True)
    queue = IngestionQueue(landing_dir=str(landing), fsync=False)
    assert queue.event_per == "batch"  # the default
    queue.save("batch-landing", overwrite=True)
    LocalFolderSource(  # one worker, batches of three: 7 files land as 3 + 3 + 1
        source_id=BATCH_SOURCE, directory=str(inbox), max_parallel=1, small_item_batch=3
    ).save(BATCH_SOURCE, overwrite=True)
    params = {
        "source_block": BATCH_SOURCE,
        "ledger_block": "batch-ledger",
        "queue_block": "batch-landing",
    }
    deploy_test_copy(
        env,
        [
            _base(BATCH_SOURCE, "flows.local_folder:ingest_local_folder", parameters=params),
            processor_on_process_pool(out, landing, "process-items", BATCH_SOURCE),
        ],
    )
    resource = f"ingest.source.{BATCH_SOURCE}"
    with get_client(sync_client=True) as client:
        processor = client.read_deployment_by_name("process-items/process-items")
        source_run = run_deployment(f"ingest-local-folder/{BATCH_SOURCE}", timeout=0)
        assert wait_final(client, source_run.id, 240).state_name == "Completed", env.log("worker")
        landed = {r["name"]: r for r in ledger.recent_items(BATCH_SOURCE, 100)}
        assert set(landed) == set(files)
        events = _events_until(client, ITEMS_LANDED, resource, lambda found: sum(
            e.payload["count"] for e in found
        ) >= len(files))  # fmt: skip
        assert sorted(e.payload["count"] for e in events) == [1, 3, 3]
        assert client.read_events(_event_filter(ITEM_LANDED, resource), limit=50).events == []
        runs = _final_runs(env, client, processor.id, len(events))
        assert [r.state_name for r in runs] == ["Completed"] * len(events), [
            (r.state_name, r.state.message) for r in runs
        ]

        # One run per event, its `items` the event's items: a list of objects.
        by_paths = {tuple(sorted(i["landed_path"] for i in r.parameters["items"])): r for r in runs}
        assert len(by_paths) == len(events)
        for event in events:
            items = event.payload["items"]
            run = by_paths[tuple(sorted(i["landed_path"] for i in items))]
            assert isinstance(run.parameters["items"], list), type(run.parameters["items"])
            assert sorted(run.parameters["items"], key=json.dumps) == sorted(items, key=json.dumps)
            assert set(run.parameters) >= {"items", "command", "landing_root"}
            # Each item its own task run, named after it, Completed.
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            assert sorted((t.name, t.state_name) for t in tasks) == sorted(
                (f"process {i['name']}", "Completed") for i in items
            )
        # Every item processed exactly once, with its own landed path, sha256 and name.
        items = [i for r in runs for i in r.parameters["items"]]
        assert sorted(i["name"] for i in items) == sorted(files)
        for name, row in landed.items():
            (item,) = [i for i in items if i["name"] == name]
            assert (item["landed_path"], item["sha256"], item["source"]) == (
                row["landed_path"], row["sha256"], BATCH_SOURCE
            )  # fmt: skip
            assert Path(row["landed_path"]).is_relative_to(landing / BATCH_SOURCE)
            lines = (out / f"{name}.out").read_text().splitlines()
            assert lines == [f"{len(files[name])} {row['landed_path']}"], lines
        processed = _events_until(
            client, PROCESSED_EVENT, resource, lambda found: len(found) >= len(files)
        )
        assert sorted(e.payload["name"] for e in processed) == sorted(files)

        # A rerun lands nothing and so starts nothing.
        rerun = run_deployment(f"ingest-local-folder/{BATCH_SOURCE}", timeout=0)
        assert wait_final(client, rerun.id, 240).state_name == "Completed", env.log("worker")
        time.sleep(10)  # the trigger fires within a second of an event (measured)
        assert len(runs_of(client, processor.id)) == len(events)
        assert len(
            client.read_events(_event_filter(ITEMS_LANDED, resource), limit=50).events
        ) == len(events)
        for name in files:
            assert len((out / f"{name}.out").read_text().splitlines()) == 1

        # A batch event listing a file outside the landing area among good items: the
        # good ones are processed, the run fails naming the bad one's landed path.
        extra = landing / BATCH_SOURCE / "extra"
        extra.mkdir()
        good = []
        for name in ("g1.csv", "g2.csv"):
            (extra / name).write_text(name)
            good.append(_payload(extra / name, BATCH_SOURCE))
        secret = work / "outside.txt"
        secret.write_text("not landed\n")
        bad_items = [good[0], _payload(secret, BATCH_SOURCE), good[1]]
        _post_event(env, ITEMS_LANDED, resource, {"count": 3, "items": bad_items})
        (bad,) = _final_runs(env, client, processor.id, len(events) + 1)[len(events) :]
        assert bad.parameters["items"] == bad_items
        assert bad.state_name == "Failed", env.log("worker")
        message = bad.state.message
        assert f"1 of 3 items failed: outside.txt ({secret}): landed_path:" in message, message
        assert "not under landing_root" in message, message
        for name in ("g1.csv", "g2.csv"):
            assert (out / f"{name}.out").read_text() == f"{len(name)} {extra / name}\n"
        assert not (out / "outside.txt.out").exists()
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[bad.id]))
        )
        assert sorted((t.name, t.state_name) for t in tasks) == [
            ("process g1.csv", "Completed"),
            ("process g2.csv", "Completed"),
            ("process outside.txt", "Failed"),
        ]
    ledger.dispose()


def _payload(path: Path, source: str) -> dict:
    """An item payload as the queue's message carries it."""
    return {
        "message_id": uuid.uuid4().hex,
        "source": source,
        "name": path.name,
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "landed_path": str(path),
    }


def _post_event(env: Env, name: str, resource_id: str, payload: dict) -> None:
    """An event sent straight to the server's events API (what emit_event does)."""
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource_id},
        "payload": payload,
    }
    httpx.post(f"{env.api}/events", json=[event], timeout=30).raise_for_status()


def _events_until(client, name: str, resource_id: str, done, seconds: float = 120) -> list:
    """The events `name` on `resource_id` once `done(events)` holds (the server stores
    events a few seconds after they arrive)."""
    deadline = time.monotonic() + seconds
    while True:
        found = client.read_events(_event_filter(name, resource_id), limit=50).events
        if done(found):
            return found
        assert time.monotonic() < deadline, [e.payload for e in found]
        time.sleep(1)


def _final_runs(env: Env, client, deployment_id, count: int, seconds: float = 300) -> list:
    """The deployment's `count` runs once all are final, oldest first."""
    deadline = time.monotonic() + seconds
    while True:
        runs = runs_of(client, deployment_id)
        final = [r for r in runs if r.state_type and r.state_type.value in FINAL]
        if len(final) >= count:
            assert len(runs) == count, [r.state_name for r in runs]
            return sorted(runs, key=lambda r: r.created)
        assert time.monotonic() < deadline, ([r.state_name for r in runs], env.log("worker"))
        time.sleep(2)


def test_each_landed_item_runs_the_processor_once(env: Env):
    inbox, out, landing = env.tmp / "inbox", env.tmp / "out", env.tmp / "landing"
    for folder in (inbox, out):
        folder.mkdir()
    files = {"a.csv": "a\n", "b b.csv": "bb\n", "c.bin": "ccc\n"}
    for name, body in files.items():
        (inbox / name).write_text(body)
    ledger = Ledger(database=sqlite_connector(env.tmp / "ledger.db"))
    ledger.save("proc-ledger", overwrite=True)
    queue = IngestionQueue(landing_dir=str(landing), fsync=False, event_per="item")
    queue.save("proc-landing", overwrite=True)
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


def test_the_real_file_deploys_both_processor_deployments(env: Env):
    """prefect.processor.yaml as it is (YAML anchors, kubernetes pool, both triggers) is
    accepted by `prefect deploy`: the server checks the job variables against the pool's
    template. Last in the module: it replaces the process-pool copies above."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect_kubernetes.worker import KubernetesWorker

    spec = yaml.safe_load((ROOT / "prefect.processor.yaml").read_text())
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name="ingest-k8s",
                type="kubernetes",
                base_job_template=KubernetesWorker.get_default_base_job_template(),
            ),
            overwrite=True,
        )
        env.prefect(
            "--no-prompt", "deploy", "--prefect-file", "prefect.processor.yaml",
            "--name", "process-items", "--name", "process-item",
        )  # fmt: skip
        for dep in spec["deployments"]:
            name = dep["name"]
            deployment = client.read_deployment_by_name(f"{name}/{name}")
            assert deployment.work_pool_name == "ingest-k8s"
            assert deployment.job_variables == dep["work_pool"]["job_variables"], name
            assert deployment.parameters == dep["parameters"], name
            (automation,) = client.read_resource_related_automations(
                f"prefect.deployment.{deployment.id}"
            )
            assert automation.trigger.expect == set(dep["triggers"][0]["expect"]), name
            (action,) = automation.actions
            assert action.parameters == dep["triggers"][0]["parameters"], name
