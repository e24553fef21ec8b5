"""The local folder flow end to end on the Prefect test API, with SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL
from pydantic import ValidationError

from blocks import IngestionQueue, Ledger, LocalFolderSource, QueueConsumer
from blocks.core.errors import ConfigError, LedgerError
from blocks.core.source import Candidate, SourceBlock
from flows.local_folder import ingest_local_folder
from pipeline.engine import landed_files, run_source
from tests.landed_rows import run_flow
from tests.prefect_events import source_events

pytestmark = pytest.mark.usefixtures("prefect_api")
ROOT = Path(__file__).resolve().parents[1]


def run(save_block, ledger: Ledger, queue: IngestionQueue, source: LocalFolderSource, **params):
    return run_flow(ingest_local_folder, save_block, ledger, queue, source, **params)


def counts(state) -> dict:
    return state.result(raise_on_failure=False)


def write(path: Path, data: str | bytes, age: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if age is not None:
        past = time.time() - age
        os.utime(path, (past, past))
    return path


def test_each_landed_file_emits_its_event(save_block, sqlite_ledger, queue, inbox) -> None:
    """`event_per: item`: one `ingest.item.landed` per landed item, its own payload."""
    data = b"1,2\n"
    write(inbox / "a.csv", data)
    source = LocalFolderSource(source_id="evented", directory=str(inbox))
    queue.event_per = "item"
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 1
    (event,) = source_events("ingest.item.landed", "evented")
    payload = event["payload"]
    assert (payload["name"], payload["size"]) == ("a.csv", len(data))
    assert payload["sha256"] == hashlib.sha256(data).hexdigest()
    assert Path(payload["landed_path"]).read_bytes() == data
    assert event["resource"]["prefect.resource.name"] == "evented"


def test_each_file_of_a_batch_emits_its_event_with_the_run_context(
    save_block, sqlite_ledger, queue, inbox
) -> None:
    """`event_per: item`: items landed by land-batch tasks each get their event, with the
    related resources (flow run, task run) that emit_event attaches from the run context."""
    sid = "batched"
    for i in range(12):
        write(inbox / f"f{i:02d}.csv", f"{i}\n")
    source = LocalFolderSource(
        source_id=sid, directory=str(inbox), max_parallel=2, small_item_batch=6
    )
    queue.event_per = "item"
    state = run(save_block, sqlite_ledger, queue, source)
    assert counts(state)["landed"] == 12
    deadline = time.monotonic() + 30
    while len(found := source_events("ingest.item.landed", sid)) < 12:
        assert time.monotonic() < deadline, len(found)
        time.sleep(0.5)
    assert sorted(e["payload"]["name"] for e in found) == [f"f{i:02d}.csv" for i in range(12)]
    assert len({e["id"] for e in found}) == 12
    flow_run = f"prefect.flow-run.{state.state_details.flow_run_id}"
    for event in found:
        roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
        assert roles.get("flow-run") == flow_run, event["related"]
        assert roles.get("task-run", "").startswith("prefect.task-run."), event["related"]


def test_event_per_batch_emits_one_event_per_landing_batch(
    save_block, sqlite_ledger, queue, inbox
) -> None:
    """`event_per: batch`, the queue's default: one `ingest.items.landed` per land-batch
    (listing every item's payload), a big item a batch of one, and no per-item event."""
    sid = "batchevents"
    for i in range(12):
        write(inbox / f"f{i:02d}.csv", f"{i}\n")
    big = write(inbox / "zbig.bin", os.urandom(1024 * 1024 + 1))  # above SMALL_ITEM_BYTES
    source = LocalFolderSource(
        source_id=sid, directory=str(inbox), max_parallel=2, small_item_batch=6
    )
    assert queue.event_per == "batch"  # the default (the fixture's queue sets no event_per)
    state = run(save_block, sqlite_ledger, queue, source)
    assert counts(state)["landed"] == 13
    deadline = time.monotonic() + 30
    while sum(e["payload"]["count"] for e in source_events("ingest.items.landed", sid)) < 13:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    found = source_events("ingest.items.landed", sid)
    assert sorted(e["payload"]["count"] for e in found) == [1, 6, 6]
    items = [item for e in found for item in e["payload"]["items"]]
    assert sorted(i["name"] for i in items) == [f"f{i:02d}.csv" for i in range(12)] + ["zbig.bin"]
    for event in found:
        assert event["payload"]["count"] == len(event["payload"]["items"])
        roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
        assert roles.get("flow-run") == f"prefect.flow-run.{state.state_details.flow_run_id}"
    for item in items:  # each item's payload as its own event would carry it
        landed = Path(item["landed_path"])
        assert hashlib.sha256(landed.read_bytes()).hexdigest() == item["sha256"]
        assert item["size"] == landed.stat().st_size
    assert Path(next(i for i in items if i["name"] == "zbig.bin")["landed_path"]).read_bytes() == (
        big.read_bytes()
    )
    assert source_events("ingest.item.landed", sid, timeout=2) == []


def test_lands_new_files_once_and_rerun_lands_nothing(save_block, ledger, queue, inbox) -> None:
    write(inbox / "a.csv", "1,2\n")
    write(inbox / "b.csv", "3,4\n")
    write(inbox / "sub" / "c.csv", "5,6\n")
    write(inbox / "skip.txt", "not matched")
    write(inbox / ".hidden.csv", "hidden")
    source = LocalFolderSource(
        source_id="partner", directory=str(inbox), pattern="*.csv", recursive=True
    )

    state = run(save_block, ledger, queue, source)
    assert state.is_completed(), state.message
    first = counts(state)
    assert (first["listed"], first["landed"], first["skipped"], first["failed"]) == (3, 3, 0, 0)
    assert first["bytes"] == 12
    assert sorted(first["landed_names"]) == ["a.csv", "b.csv", "sub/c.csv"]
    assert first["landed_names_truncated"] is False
    day = first["partition_date"].replace("-", "/")
    landed = sorted(
        str(p.relative_to(queue.landing_root)) for p in landed_files(queue.landing_root)
    )
    assert landed == [f"partner/{day}/a.csv", f"partner/{day}/b.csv", f"partner/{day}/sub/c.csv"]
    assert (queue.landing_root / f"partner/{day}/sub/c.csv").read_text() == "5,6\n"
    assert QueueConsumer(ledger, "c").pending_count("partner") == 3
    assert not list(queue.staging_root.rglob("*.part"))

    again = counts(run(save_block, ledger, queue, source))
    assert (again["listed"], again["landed"], again["skipped"]) == (3, 0, 3)
    assert (again["landed_names"], again["landed_names_truncated"]) == ([], False)
    assert QueueConsumer(ledger, "c").pending_count("partner") == 3
    assert ledger.count_items("partner") == 3
    (last_run, previous_run) = ledger.recent_runs("partner", limit=2)
    assert (last_run["status"], last_run["skipped"], previous_run["landed"]) == ("completed", 3, 3)


def test_result_lists_landed_names_up_to_the_bound(
    save_block, sqlite_ledger, queue, inbox, monkeypatch
) -> None:
    """Past the bound the result keeps the first names and says it cut the list; the
    counts stay exact."""
    import pipeline.source_flow
    import pipeline.summary

    monkeypatch.setattr(pipeline.summary, "LANDED_NAMES_MAX", 2)
    monkeypatch.setattr(pipeline.source_flow, "LANDED_NAMES_MAX", 2)
    for name in ("a.csv", "b.csv", "c.csv"):
        write(inbox / name, name)
    source = LocalFolderSource(source_id="bounded", directory=str(inbox))
    result = counts(run(save_block, sqlite_ledger, queue, source))
    assert result["landed"] == 3
    assert len(result["landed_names"]) == 2
    assert set(result["landed_names"]) < {"a.csv", "b.csv", "c.csv"}
    assert result["landed_names_truncated"] is True


def test_summary_artifact_is_published(save_block, sqlite_ledger, queue, inbox, caplog) -> None:
    write(inbox / "a.csv", "x")
    source = LocalFolderSource(source_id="Art_Src", directory=str(inbox))
    caplog.set_level(logging.INFO, logger="prefect")
    state = run(save_block, sqlite_ledger, queue, source)
    assert state.is_completed()
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("landed=1" in m for m in info), info  # the run's INFO lines were captured
    # prefect-sqlalchemy says this at INFO each time a ledger block makes its engine
    assert not any("Created a new engine" in m for m in info), info

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["ingest-summary-art-src"])
                )
            )

    import asyncio

    artifacts = asyncio.run(read())
    assert artifacts and artifacts[0].type == "table"
    table = (
        artifacts[0].data if isinstance(artifacts[0].data, list) else json.loads(artifacts[0].data)
    )
    assert {"what": "landed", "value": 1} in table
    values = {row["what"]: row["value"] for row in table}
    seconds = values["seconds"]  # rounded, not 1.1817100899997968
    assert isinstance(seconds, (int, float)) and seconds == round(seconds, 2)
    assert "MB/s" in values and values["MB/s"] == round(values["MB/s"], 2)


def test_changed_file_follows_the_documented_rule(save_block, ledger, queue, inbox) -> None:
    f = write(inbox / "a.csv", "version 1", age=100)
    source = LocalFolderSource(source_id="chg", directory=str(inbox))
    assert counts(run(save_block, ledger, queue, source))["landed"] == 1

    # Same name, new content: a new version, beside the old one on the same day.
    write(f, "version 2 is longer", age=50)
    second = counts(run(save_block, ledger, queue, source))
    assert (second["landed"], second["skipped"]) == (1, 0)
    names = sorted(p.name for p in landed_files(queue.landing_root))
    assert names[0] == "a.csv" and names[1].startswith("a~") and len(names) == 2
    assert {p.read_text() for p in landed_files(queue.landing_root)} == {
        "version 1",
        "version 2 is longer",
    }

    # Touched but unchanged content: fetched, recognised by sha256, not landed again,
    # and remembered so the next run does not even fetch it.
    os.utime(f, None)
    third = counts(run(save_block, ledger, queue, source))
    assert (third["landed"], third["skipped"]) == (0, 1)
    assert ledger.count_items("chg") == 2
    assert ledger.known_items("chg", ["a.csv"])["a.csv"][-1].remote_version is not None
    fourth = counts(run(save_block, ledger, queue, source))
    assert (fourth["landed"], fourth["skipped"]) == (0, 1)

    # changed_items='ignore': dedupe by name only.
    write(f, "version 3")
    ignoring = source.model_copy(update={"changed_items": "ignore"})
    assert counts(run(save_block, ledger, queue, ignoring))["landed"] == 0


def test_same_content_under_another_name_is_not_landed_twice(
    save_block, ledger, queue, inbox
) -> None:
    write(inbox / "a.csv", "same bytes")
    source = LocalFolderSource(source_id="dup", directory=str(inbox))
    assert counts(run(save_block, ledger, queue, source))["landed"] == 1
    write(inbox / "copy-of-a.csv", "same bytes")
    result = counts(run(save_block, ledger, queue, source))
    assert (result["landed"], result["skipped"]) == (0, 2)
    assert len(landed_files(queue.landing_root)) == 1
    # ... and the duplicate is remembered: the next listing skips it without fetching.
    assert "copy-of-a.csv" in ledger.known_items("dup", ["copy-of-a.csv"])


def test_force_relands_and_sends_a_new_message(save_block, ledger, queue, inbox) -> None:
    write(inbox / "a.csv", "x")
    source = LocalFolderSource(source_id="frc", directory=str(inbox))
    run(save_block, ledger, queue, source)
    forced = counts(run(save_block, ledger, queue, source, force=True))
    assert (forced["landed"], forced["skipped"]) == (1, 0)
    assert ledger.count_items("frc") == 1  # the row is updated, not duplicated
    assert QueueConsumer(ledger, "c").pending_count("frc") == 2
    assert len(landed_files(queue.landing_root)) == 1


def test_young_and_growing_files_wait_until_stable(save_block, sqlite_ledger, queue, inbox) -> None:
    young = write(inbox / "young.csv", "just written")
    # an hour, not a minute: a CI run once took over 60 s to reach discover (its Prefect
    # test server's SQLite was locked), and by then the "young" file was old enough
    source = LocalFolderSource(source_id="age", directory=str(inbox), min_age_seconds=3600)
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 0
    write(young, "just written", age=7200)
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 1

    growing = inbox / "growing.csv"
    stop = threading.Event()

    def writer() -> None:
        with open(growing, "ab") as fh:
            while not stop.is_set():
                fh.write(b"row\n")
                fh.flush()
                time.sleep(0.05)

    th = threading.Thread(target=writer)
    th.start()
    try:
        stable = LocalFolderSource(source_id="stab", directory=str(inbox), stability_seconds=1.0)
        while_growing = counts(run(save_block, sqlite_ledger, queue, stable))
        assert while_growing["landed"] == 1  # young.csv only: stable, and new for "stab"
        assert {p.name for p in landed_files(queue.landing_root / "stab")} == {"young.csv"}
    finally:
        stop.set()
        th.join()
    done = counts(run(save_block, sqlite_ledger, queue, stable))
    assert done["landed"] == 1
    assert (queue.landing_root / "stab").exists()
    landed = {p.name: p for p in landed_files(queue.landing_root / "stab")}
    assert landed["growing.csv"].read_bytes() == growing.read_bytes()


@pytest.mark.parametrize("action", ["delete", "archive"])
def test_after_landing_action(save_block, sqlite_ledger, queue, inbox, tmp_path, action) -> None:
    write(inbox / "a.csv", "x")
    archive = tmp_path / "archive"
    source = LocalFolderSource(
        source_id="act",
        directory=str(inbox),
        after_landing_action=action,
        archive_dir=str(archive) if action == "archive" else None,
    )
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 1
    assert not (inbox / "a.csv").exists()
    assert (archive / "a.csv").exists() == (action == "archive")


def test_bad_block_values_fail_before_any_io(save_block, queue, tmp_path) -> None:
    with pytest.raises(ValidationError, match="min_age_seconds"):
        LocalFolderSource(source_id="x", directory=str(tmp_path), min_age_seconds=-1)
    with pytest.raises(ValidationError, match="stability_seconds"):
        LocalFolderSource(source_id="x", directory=str(tmp_path), stability_seconds=-5)
    with pytest.raises(ValidationError, match="archive_dir"):
        LocalFolderSource(source_id="x", directory=str(tmp_path), after_landing_action="archive")
    with pytest.raises(ValidationError, match="source_id"):
        LocalFolderSource(source_id="../up", directory=str(tmp_path))
    with pytest.raises(ValidationError, match="timezone"):
        LocalFolderSource(source_id="x", directory=str(tmp_path), timezone="Mars/Base")

    ledger_path = tmp_path / "never" / "ledger.db"
    from tests.conftest import sqlite_connector

    ledger = Ledger(database=sqlite_connector(ledger_path))
    missing = LocalFolderSource(source_id="x", directory=str(tmp_path / "does-not-exist"))
    state = run(save_block, ledger, queue, missing)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=r"LocalFolderSource\.directory: folder .*does-not-exist"):
        state.result()
    assert not ledger_path.exists(), "the ledger must not be touched before the config is valid"
    assert not queue.landing_root.exists()

    unknown = ingest_local_folder(source_block="no-such-block", return_state=True)
    with pytest.raises(ConfigError, match="source_block: no 'Local Folder Source' block named"):
        unknown.result()


class _ListedNames(SourceBlock):
    """Test source that lists whatever names it is given."""

    _block_type_slug = "test-listed-names"
    names: list[str]

    def discover(self, ctx):
        return [Candidate(name=n, size=3, version="v") for n in self.names]

    def fetch(self, candidate, out):
        out.write(b"abc" if candidate.name == "ok.csv" else b"evil")
        return None


@flow
def _run_listed(source, ledger, queue):
    return run_source(source, ledger, queue, fail_on_item_error=False).counts()


def test_names_escaping_the_landing_folder_are_refused(sqlite_ledger, queue, tmp_path) -> None:
    names = ["../escape.csv", "/etc/evil", "a/../../b", "nul\x00.csv", "ok.csv", "..\\win.csv"]
    result = _run_listed(_ListedNames(source_id="names", names=names), sqlite_ledger, queue)
    assert (result["listed"], result["landed"], result["failed"]) == (6, 1, 5)
    every_file = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert all(
        queue.landing_root in p.parents or p.name.startswith("ledger.db") for p in every_file
    )
    assert [p.name for p in landed_files(queue.landing_root)] == ["ok.csv"]
    failed = sqlite_ledger.recent_items("names")
    assert sum(r["status"] == "failed" for r in failed) == 5


def test_crash_between_fetch_and_hand_off_leaves_no_partial_file(
    save_block, ledger, queue, inbox, monkeypatch
) -> None:
    write(inbox / "a.csv", "payload")
    source = LocalFolderSource(source_id="crash", directory=str(inbox), retries=0)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash before hand-off")

    monkeypatch.setattr(IngestionQueue, "place", boom)
    state = run(save_block, ledger, queue, source)
    assert state.is_failed()
    assert counts(state)["failed"] == 1 if isinstance(counts(state), dict) else True
    assert landed_files(queue.landing_root) == []
    assert not list(queue.staging_root.rglob("*.part"))
    assert ledger.count_items("crash") == 0

    monkeypatch.undo()
    result = counts(run(save_block, ledger, queue, source))
    assert result["landed"] == 1
    assert counts(run(save_block, ledger, queue, source))["landed"] == 0
    assert len(landed_files(queue.landing_root)) == 1
    assert QueueConsumer(ledger, "c").pending_count("crash") == 1


def test_retries_recover_a_flaky_item(save_block, sqlite_ledger, queue, inbox, monkeypatch) -> None:
    write(inbox / "a.csv", "payload")
    calls = {"n": 0}
    real_fetch = LocalFolderSource.fetch

    def flaky(self, candidate, out):
        calls["n"] += 1
        if calls["n"] < 3:
            out.write(b"partial")
            raise ConnectionError("link dropped")
        return real_fetch(self, candidate, out)

    monkeypatch.setattr(LocalFolderSource, "fetch", flaky)
    source = LocalFolderSource(
        source_id="flaky", directory=str(inbox), retries=3, retry_delay_seconds=0.01
    )
    result = counts(run(save_block, sqlite_ledger, queue, source))
    assert (result["landed"], result["failed"], calls["n"]) == (1, 0, 3)
    assert [p.read_text() for p in landed_files(queue.landing_root)] == ["payload"]


def test_one_failed_item_does_not_stop_the_others(
    save_block, sqlite_ledger, queue, inbox, monkeypatch
) -> None:
    for i in range(5):
        write(inbox / f"f{i}.csv", f"row {i}")
    real_fetch = LocalFolderSource.fetch

    def fail_one(self, candidate, out):
        if candidate.name == "f2.csv":
            raise PermissionError("f2.csv: permission denied")
        return real_fetch(self, candidate, out)

    monkeypatch.setattr(LocalFolderSource, "fetch", fail_one)
    source = LocalFolderSource(
        source_id="one", directory=str(inbox), retries=1, retry_delay_seconds=0.01
    )
    state = run(save_block, sqlite_ledger, queue, source)
    assert state.is_failed() and "f2.csv" in state.message
    assert len(landed_files(queue.landing_root)) == 4
    partial = counts(run(save_block, sqlite_ledger, queue, source, fail_on_item_error=False))
    assert partial["failed"] == 1 and partial["skipped"] == 4
    (last,) = sqlite_ledger.recent_runs("one", limit=1)
    assert last["status"] == "partial"


@pytest.mark.parametrize("batch", [1, 2], ids=["one-by-one", "batched"])
def test_ledger_failure_fails_the_run_fast(
    save_block, sqlite_ledger, queue, inbox, monkeypatch, batch
) -> None:
    for i in range(6):
        write(inbox / f"f{i}.csv", f"row {i}")
    fetched: list[str] = []
    real_fetch = LocalFolderSource.fetch

    def counting(self, candidate, out):
        fetched.append(candidate.name)
        return real_fetch(self, candidate, out)

    def ledger_down(*args, **kwargs):
        raise LedgerError("ledger database error: server closed the connection")

    monkeypatch.setattr(LocalFolderSource, "fetch", counting)
    monkeypatch.setattr(Ledger, "record_landed", ledger_down)
    monkeypatch.setattr(Ledger, "record_landed_many", ledger_down)  # a batch's one transaction
    source = LocalFolderSource(
        source_id="ldown", directory=str(inbox), max_parallel=1, retries=3, small_item_batch=batch
    )
    state = run(save_block, sqlite_ledger, queue, source)
    assert state.is_failed()
    with pytest.raises(LedgerError):
        state.result()
    # no retries and no further unit of work once the ledger fails (a batch's items are
    # fetched before its one ledger transaction)
    assert len(fetched) == batch, fetched


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    env["PYTHONPATH"] = str(ROOT)
    return env


def _ledger_url(ledger: Ledger) -> str:
    return ledger.engine.url.render_as_string(hide_password=False)


def test_killed_run_leaves_no_partial_file_and_next_run_lands_once(
    save_block, ledger, queue, inbox
) -> None:
    write(inbox / "big.csv", os.urandom(256 * 1024))
    hang = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/flow_subprocess.py"),
            _ledger_url(ledger),
            str(queue.landing_root),
            str(inbox),
            "--hang-after-first-chunk",
        ],
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while not (inbox.parent / "fetching").exists():
            assert hang.poll() is None, hang.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the subprocess never started fetching"
            time.sleep(0.1)
        assert list(queue.staging_root.rglob("*.part")), "a partial file should be staging"
    finally:
        hang.send_signal(signal.SIGKILL)
        hang.wait(30)
    assert not queue.landing_root.exists() or landed_files(queue.landing_root) == []

    source = LocalFolderSource(source_id="race", directory=str(inbox))
    assert counts(run(save_block, ledger, queue, source))["landed"] == 1
    assert counts(run(save_block, ledger, queue, source))["landed"] == 0
    (landed,) = landed_files(queue.landing_root)
    assert landed.read_bytes() == (inbox / "big.csv").read_bytes()
    assert QueueConsumer(ledger, "c").pending_count("race") == 1


def test_two_runs_at_once_never_land_an_item_twice(ledger, queue, inbox) -> None:
    for i in range(40):
        write(inbox / f"f{i:02d}.csv", f"row {i}\n" * 50)
    args = [
        sys.executable,
        str(ROOT / "tests/flow_subprocess.py"),
        _ledger_url(ledger),
        str(queue.landing_root),
        str(inbox),
    ]
    env = _subprocess_env()
    env["INGEST_TEST_START_AT"] = str(time.time() + 20)  # both list at the same moment
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
        outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert sum(o["landed"] for o in outs) == 40, outs
    assert all(o["failed"] == 0 for o in outs)
    assert ledger.count_items("race") == 40
    assert QueueConsumer(ledger, "c").pending_count("race") == 40
    assert len(landed_files(queue.landing_root)) == 40


def test_jitter_is_bounded_and_trigger_is_accepted(save_block, sqlite_ledger, queue, inbox) -> None:
    write(inbox / "a.csv", "x")
    source = LocalFolderSource(source_id="jit", directory=str(inbox))
    bad = run(save_block, sqlite_ledger, queue, source, jitter_seconds=-1)
    assert bad.is_failed()
    with pytest.raises(ConfigError, match="jitter_seconds"):
        bad.result()
    ok = run(save_block, sqlite_ledger, queue, source, jitter_seconds=0.2, trigger={"from": "test"})
    assert counts(ok)["landed"] == 1
    (row,) = sqlite_ledger.recent_items("jit")
    assert row["partition_date"] == counts(ok)["partition_date"]


def test_test_connection_reports_what_it_found(inbox, tmp_path) -> None:
    write(inbox / "a.csv", "x")
    write(inbox / "b.txt", "y")
    report = LocalFolderSource(
        source_id="tc", directory=str(inbox), pattern="*.csv"
    ).test_connection()
    assert report == {"ok": True, "source_id": "tc", "items": 1, "sample": ["a.csv"]}
    with pytest.raises(ConfigError, match="LocalFolderSource.directory"):
        LocalFolderSource(source_id="tc", directory=str(tmp_path / "nope")).test_connection()


@flow(name="downstream-consumer")
def _downstream(item: dict) -> str:
    return item["landed_path"]


def test_downstream_deployment_is_started_once_per_landed_item(
    save_block, sqlite_ledger, inbox, tmp_path
) -> None:
    import asyncio

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment_id = _downstream.to_deployment(name="on-landed").apply()
    queue = IngestionQueue(
        landing_dir=str(tmp_path / "landing"),
        fsync=False,
        downstream_deployment="downstream-consumer/on-landed",
    )
    write(inbox / "a.csv", "x")
    write(inbox / "b.csv", "y")
    source = LocalFolderSource(source_id="down", directory=str(inbox))
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 2
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 0

    async def runs():
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )

    started = asyncio.run(runs())
    assert sorted(Path(r.parameters["item"]["landed_path"]).name for r in started) == [
        "a.csv",
        "b.csv",
    ]
    assert all(r.parameters["item"]["source"] == "down" for r in started)
    assert all(r.parameters["item"]["partition_date"] for r in started)


# ----------------------------------------------------------------- date templates, newest
def test_date_templated_pattern_lands_only_that_days_files(save_block, sqlite_ledger, queue, inbox):
    for name in (
        "DATA_20260309_a.csv",
        "DATA_20260310_a.csv",
        "DATA_20260310_b.csv",
        "DATA_20260311.csv",
        "DATA_20260310.txt",
        "OTHER.csv",
    ):
        write(inbox / name, name)
    source = LocalFolderSource(
        source_id="dated", directory=str(inbox), pattern="DATA_{date:%Y%m%d}*.csv"
    )
    first = counts(run(save_block, sqlite_ledger, queue, source, date="2026-03-10"))
    assert (first["listed"], first["landed"], first["failed"]) == (2, 2, 0)
    landed = sorted(p.name for p in landed_files(queue.landing_root))
    assert landed == ["DATA_20260310_a.csv", "DATA_20260310_b.csv"]
    previous = LocalFolderSource(
        source_id="dated", directory=str(inbox), pattern="DATA_{date-1:%Y%m%d}*.csv"
    )
    before = counts(run(save_block, sqlite_ledger, queue, previous, date="2026-03-10"))
    assert before["landed"] == 1
    assert sqlite_ledger.count_items("dated", "landed") == 3


def test_newest_mode_lands_only_the_most_recent_match(save_block, sqlite_ledger, queue, inbox):
    write(inbox / "a.csv", "a", age=300)
    write(inbox / "b.csv", "b", age=100)
    write(inbox / "c.csv", "c", age=200)
    write(inbox / "z.txt", "not matched", age=10)
    source = LocalFolderSource(
        source_id="newest", directory=str(inbox), pattern="*.csv", mode="newest"
    )
    first = counts(run(save_block, sqlite_ledger, queue, source))
    assert (first["listed"], first["landed"]) == (1, 1)
    assert [p.name for p in landed_files(queue.landing_root)] == ["b.csv"]
    again = counts(run(save_block, sqlite_ledger, queue, source))
    assert (again["listed"], again["landed"], again["skipped"]) == (1, 0, 1)
    write(inbox / "d.csv", "d", age=50)
    third = counts(run(save_block, sqlite_ledger, queue, source))
    assert third["landed"] == 1
    assert sorted(p.name for p in landed_files(queue.landing_root)) == ["b.csv", "d.csv"]


def test_newest_mode_with_a_date_template(save_block, sqlite_ledger, queue, inbox):
    write(inbox / "R_20260310_1.csv", "1", age=300)
    write(inbox / "R_20260310_2.csv", "2", age=200)
    write(inbox / "R_20260311_1.csv", "next day, newer", age=10)
    source = LocalFolderSource(
        source_id="newest-dated",
        directory=str(inbox),
        pattern="R_{date:%Y%m%d}_*.csv",
        mode="newest",
    )
    assert counts(run(save_block, sqlite_ledger, queue, source, date="2026-03-10"))["landed"] == 1
    assert [p.name for p in landed_files(queue.landing_root)] == ["R_20260310_2.csv"]


def test_bad_date_template_fails_in_preflight_naming_the_field(save_block, queue, tmp_path):
    from tests.conftest import sqlite_connector

    ledger_path = tmp_path / "never" / "ledger.db"
    ledger = Ledger(database=sqlite_connector(ledger_path))
    bad = LocalFolderSource(source_id="x", directory=str(tmp_path), pattern="DATA_{date:%Y%m%d")
    with pytest.raises(ConfigError, match=r"LocalFolderSource\.pattern: malformed date template"):
        bad.preflight()
    state = run(save_block, ledger, queue, bad)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=r"LocalFolderSource\.pattern"):
        state.result()
    assert not ledger_path.exists(), "the ledger must not be touched before the config is valid"


def test_a_file_deleted_between_listing_and_fetch_is_skipped_with_a_warning(
    save_block, sqlite_ledger, queue, inbox, monkeypatch, caplog
) -> None:
    """The partner removed (or renamed) a file after the listing: nothing is there to
    take, so it is skipped with one warning, no traceback, and the run stays Completed."""
    write(inbox / "a.csv", "1\n")
    gone = write(inbox / "b.csv", "2\n")
    listing = LocalFolderSource.discover

    def list_then_delete(self, ctx):
        found = list(listing(self, ctx))
        gone.unlink()
        return found

    monkeypatch.setattr(LocalFolderSource, "discover", list_then_delete)
    caplog.set_level(logging.INFO, logger="prefect")
    source = LocalFolderSource(source_id="vanish", directory=str(inbox))
    state = run(save_block, sqlite_ledger, queue, source)
    assert state.is_completed(), state.message
    result = counts(state)
    assert (result["listed"], result["landed"], result["skipped"], result["failed"]) == (2, 1, 1, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("b.csv: deleted or renamed since it was listed" in m for m in warnings), warnings
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text
    write(inbox / "b.csv", "2\n")  # back again: the next run takes it
    monkeypatch.setattr(LocalFolderSource, "discover", listing)
    assert counts(run(save_block, sqlite_ledger, queue, source))["landed"] == 1
