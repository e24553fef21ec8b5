"""Retention flow: what it prunes and what it never touches, on SQLite and real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import insert, select

from blocks import IngestionQueue, Ledger, LocalFolderSource
from blocks.core import ledger_schema as t
from blocks.core.errors import ConfigError
from flows.local_folder import ingest_local_folder
from flows.retention import (
    PRUNED_MARKER,
    RETENTION_ARTIFACT_KEY,
    ingest_retention,
    known_sources,
    prune_source,
    resolve_days,
)
from tests.landed_rows import run_flow

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


def _empty(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        for table in (t.queue, t.items, t.runs, t.state):
            conn.execute(table.delete())


def add_item(
    ledger: Ledger,
    root: Path,
    source: str,
    name: str,
    age: dt.timedelta,
    message: str | None = "acked",
    acked_age: dt.timedelta | None = None,
    landed_path: str | None = None,
) -> Path:
    """A landed file, its item row (updated `age` ago) and its queue message."""
    when = NOW - age
    path = Path(landed_path) if landed_path else root / source / "2026" / "06" / "01" / name
    if landed_path is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    sha = uuid.uuid4().hex * 2
    with ledger.transaction() as conn:
        conn.execute(
            insert(t.items).values(
                source=source,
                name=name,
                sha256=sha,
                size=len(name),
                landed_path=str(path),
                status="landed",
                created_at=when,
                updated_at=when,
            )
        )
        if message:
            acked = message == "acked"
            conn.execute(
                insert(t.queue).values(
                    message_id=uuid.uuid4().hex,
                    source=source,
                    item_name=name,
                    sha256=sha,
                    size=len(name),
                    landed_path=str(path),
                    payload="{}",
                    status=message,
                    attempts=1 if message != "ready" else 0,
                    claimed_by="c1" if message == "claimed" else None,
                    created_at=when,
                    acked_at=(NOW - (age if acked_age is None else acked_age)) if acked else None,
                )
            )
    return path


def add_run(ledger: Ledger, source: str, age: dt.timedelta, status: str = "completed") -> int:
    with ledger.transaction() as conn:
        return int(
            conn.execute(
                insert(t.runs).values(
                    source=source,
                    status=status,
                    listed=0,
                    skipped=0,
                    landed=0,
                    failed=0,
                    bytes=0,
                    started_at=NOW - age,
                )
            ).inserted_primary_key[0]
        )


def table_rows(ledger: Ledger, table) -> list[dict]:
    with ledger.transaction() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table))]


DAY = dt.timedelta(days=1)


# ----------------------------------------------------------------------------- core, both DBs
def test_dry_run_deletes_nothing_then_apply_deletes_only_the_old(ledger, tmp_path) -> None:
    root = tmp_path / "landing"
    old = add_item(ledger, root, "bank", "old.csv", 40 * DAY)
    new = add_item(ledger, root, "bank", "new.csv", 2 * DAY)
    add_run(ledger, "bank", 40 * DAY)
    add_run(ledger, "bank", 2 * DAY)
    open_id = add_run(ledger, "bank", 40 * DAY, status="running")
    with ledger.transaction() as conn:
        conn.execute(insert(t.state).values(source="bank", key="wm", value="1", updated_at=NOW))
    before = {tb.name: table_rows(ledger, tb) for tb in (t.items, t.queue, t.runs, t.state)}

    dry = prune_source(ledger, root, "bank", 30, NOW, dry_run=True)
    assert (dry.messages, dry.runs, dry.files, dry.refused) == (1, 1, 1, 0)
    assert dry.first_files == ["old.csv"] and dry.first_messages == ["old.csv"]
    assert {tb.name: table_rows(ledger, tb) for tb in (t.items, t.queue, t.runs, t.state)} == before
    assert old.exists() and new.exists()

    real = prune_source(ledger, root, "bank", 30, NOW, dry_run=False, batch_size=10)
    assert (real.messages, real.runs, real.files, real.refused, real.failed) == (1, 1, 1, 0, 0)
    assert not old.exists() and new.exists()
    assert [m["item_name"] for m in table_rows(ledger, t.queue)] == ["new.csv"]
    runs = table_rows(ledger, t.runs)
    assert len(runs) == 2 and open_id in {r["id"] for r in runs}  # an open run stays
    items = {r["name"]: r for r in table_rows(ledger, t.items)}
    assert set(items) == {"old.csv", "new.csv"}  # item rows (dedupe) survive
    assert items["old.csv"]["status"] == "landed"
    assert items["old.csv"]["error"].startswith(PRUNED_MARKER)
    assert items["new.csv"]["error"] is None
    assert table_rows(ledger, t.state) == before["ingest_state"]
    # a second run finds nothing more
    again = prune_source(ledger, root, "bank", 30, NOW, dry_run=False)
    assert (again.messages, again.runs, again.files, again.files_gone) == (0, 0, 0, 0)


def test_unacked_messages_and_their_files_survive(ledger, tmp_path) -> None:
    root = tmp_path / "landing"
    ready = add_item(ledger, root, "bank", "ready.csv", 90 * DAY, message="ready")
    claimed = add_item(ledger, root, "bank", "claimed.csv", 90 * DAY, message="claimed")
    none = add_item(ledger, root, "bank", "nomsg.csv", 90 * DAY, message=None)
    result = prune_source(ledger, root, "bank", 1, NOW, dry_run=False)
    assert (result.messages, result.files) == (0, 1)
    assert ready.exists() and claimed.exists() and not none.exists()
    assert sorted(m["status"] for m in table_rows(ledger, t.queue)) == ["claimed", "ready"]


def test_messages_published_to_a_broker_count_as_handed_off(ledger, tmp_path) -> None:
    """With an outbox relay nobody acks the queue table: a message published to the broker
    before the cutoff is pruned; one published recently, or never, stays. Files go by their
    item's age once their message is handed off (as for acked ones), never while unsent."""
    root = tmp_path / "landing"
    old = add_item(ledger, root, "bank", "old.csv", 90 * DAY, message="ready")
    recent = add_item(ledger, root, "bank", "recent.csv", 90 * DAY, message="ready")
    unsent = add_item(ledger, root, "bank", "unsent.csv", 90 * DAY, message="ready")
    with ledger.transaction() as conn:
        for name, age in (("old.csv", 40 * DAY), ("recent.csv", 2 * DAY)):
            conn.execute(
                t.queue.update()
                .where(t.queue.c.item_name == name)
                .values(published_at=NOW - age, publish_attempts=1)
            )
    dry = prune_source(ledger, root, "bank", 30, NOW, dry_run=True)
    assert (dry.messages, dry.first_messages) == (1, ["old.csv"])
    result = prune_source(ledger, root, "bank", 30, NOW, dry_run=False)
    assert (result.messages, result.files) == (1, 2)
    assert not old.exists() and not recent.exists() and unsent.exists()
    left = sorted(m["item_name"] for m in table_rows(ledger, t.queue))
    assert left == ["recent.csv", "unsent.csv"]


def test_paths_outside_the_landing_folder_are_refused(ledger, tmp_path) -> None:
    root = tmp_path / "landing"
    outside = tmp_path / "precious.csv"
    outside.write_text("keep me")
    other_source = root / "other" / "x.csv"
    other_source.parent.mkdir(parents=True)
    other_source.write_text("other source")
    link = root / "bank" / "2026" / "link.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    add_item(ledger, root, "bank", "abs.csv", 90 * DAY, landed_path=str(outside))
    add_item(
        ledger, root, "bank", "dots.csv", 90 * DAY, landed_path=f"{root}/bank/../../precious.csv"
    )
    add_item(ledger, root, "bank", "other.csv", 90 * DAY, landed_path=str(other_source))
    add_item(ledger, root, "bank", "link.csv", 90 * DAY, landed_path=str(link))
    add_item(ledger, root, "bank", "rel.csv", 90 * DAY, landed_path="bank/rel.csv")
    fine = add_item(ledger, root, "bank", "fine.csv", 90 * DAY)

    dry = prune_source(ledger, root, "bank", 1, NOW, dry_run=True)
    assert (dry.files, dry.refused) == (1, 5)
    result = prune_source(ledger, root, "bank", 1, NOW, dry_run=False)
    assert (result.files, result.refused) == (1, 5)
    assert outside.read_text() == "keep me" and other_source.exists() and link.is_symlink()
    assert not fine.exists()
    text = "; ".join(result.problems)
    for name in ("abs.csv", "dots.csv", "other.csv", "link.csv", "rel.csv"):
        assert f"{name}: refused" in text
    marked = {r["name"] for r in table_rows(ledger, t.items) if r["error"]}
    assert marked == {"fine.csv"}  # refused rows are not marked pruned


def test_file_already_gone_is_marked_and_a_forced_reland_clears_the_marker(
    ledger, tmp_path
) -> None:
    from blocks.core.ledger import LandedRecord

    root = tmp_path / "landing"
    gone = add_item(ledger, root, "bank", "gone.csv", 90 * DAY)
    gone.unlink()
    result = prune_source(ledger, root, "bank", 1, NOW, dry_run=False)
    assert (result.files, result.files_gone, result.failed) == (0, 1, 0)
    (row,) = table_rows(ledger, t.items)
    assert row["error"].startswith(PRUNED_MARKER)
    record = LandedRecord(
        source="bank",
        name="gone.csv",
        sha256=row["sha256"],
        size=1,
        landed_path=str(gone),
        flow_run_id=None,
    )
    assert ledger.record_landed(record, replace=True)
    (row,) = table_rows(ledger, t.items)
    assert row["error"] is None and row["status"] == "landed"


def test_bad_thresholds_fail_naming_the_parameter(sqlite_ledger, tmp_path) -> None:
    add_item(sqlite_ledger, tmp_path / "landing", "bank", "a.csv", 90 * DAY)
    known = known_sources(sqlite_ledger)
    assert known == {"bank"}
    cases = [
        ({"days": 0}, "days"),
        ({"days": -3}, "days"),
        ({"days": True}, "days"),
        ({"days": 30, "source_days": {"bank": 0}}, "source_days.bank"),
        ({"days": 30, "source_days": {"nosuch": 5}}, "source_days.nosuch"),
        ({"days": 30, "source_days": {"../x": 5}}, "source_days.../x"),
        ({"days": None, "source_days": {}}, "days"),
    ]
    for kwargs, where in cases:
        with pytest.raises(ConfigError) as info:
            resolve_days(kwargs["days"], kwargs.get("source_days"), known)
        assert info.value.where == where, kwargs
    assert resolve_days(None, {"bank": 7}, known) == {"bank": 7}
    assert resolve_days(30, {"bank": 7}, known | {"x"}) == {"bank": 7, "x": 30}


# ----------------------------------------------------------------------------- property
STATUSES = ("ready", "claimed", "acked", None)
# Ages as hours around the cutoff: often exactly on it or an hour either side (the
# boundary is 'older than', strictly), else anywhere in +-20 days.
OFFSET = st.one_of(st.integers(-1, 1), st.integers(-20 * 24, 20 * 24))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]),
            OFFSET,  # item age, hours from the source's cutoff
            st.sampled_from(STATUSES),
            OFFSET,  # acked age, hours from the source's cutoff
        ),
        max_size=25,
    ),
    runs=st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]),
            OFFSET,
            st.sampled_from(["completed", "failed", "running"]),
        ),
        max_size=10,
    ),
    days=st.tuples(st.integers(1, 15), st.integers(1, 15)),
    batch=st.integers(10, 12),
)
def test_property_deleted_set_is_exactly_the_expected_set(
    ledger, tmp_path, items, runs, days, batch
) -> None:
    _empty(ledger)
    root = tmp_path / uuid.uuid4().hex
    limit = {"s1": days[0], "s2": days[1]}
    hours = dt.timedelta(hours=1)
    files, want_files, want_msgs, want_runs = {}, set(), set(), set()
    for n, (source, age, status, acked_age) in enumerate(items):
        name = f"f{n}.csv"
        age = max(0, limit[source] * 24 + age)
        acked_age = max(0, limit[source] * 24 + acked_age)
        files[name] = add_item(ledger, root, source, name, age * hours, status, acked_age * hours)
        old = dt.timedelta(hours=age) > dt.timedelta(days=limit[source])
        if old and status in ("acked", None):
            want_files.add(name)
        if status == "acked" and dt.timedelta(hours=acked_age) > dt.timedelta(days=limit[source]):
            want_msgs.add(name)
    run_ids = {}
    for source, age, status in runs:
        age = max(0, limit[source] * 24 + age)
        rid = add_run(ledger, source, age * hours, status)
        run_ids[rid] = (source, age)
        if status != "running" and dt.timedelta(hours=age) > dt.timedelta(days=limit[source]):
            want_runs.add(rid)

    known = known_sources(ledger)
    plan = resolve_days(None, {s: limit[s] for s in known}, known) if known else {}
    for source, n in plan.items():
        prune_source(ledger, root, source, n, NOW, dry_run=False, batch_size=batch)

    deleted_files = {name for name, path in files.items() if not path.exists()}
    remaining_msgs = {m["item_name"] for m in table_rows(ledger, t.queue)}
    all_msgs = {f"f{n}.csv" for n, it in enumerate(items) if it[2] is not None}
    remaining_runs = {r["id"] for r in table_rows(ledger, t.runs)}
    assert deleted_files == want_files
    assert all_msgs - remaining_msgs == want_msgs
    assert set(run_ids) - remaining_runs == want_runs
    item_rows = table_rows(ledger, t.items)
    assert len(item_rows) == len(items)  # never an item row
    assert {r["name"] for r in item_rows if r["error"]} == want_files


# ----------------------------------------------------------------------------- the flow
async def _artifact_rows(key: str) -> list[dict]:
    async with get_client() as client:
        (artifact,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            limit=1,
            sort="CREATED_DESC",
        )
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


@pytest.mark.usefixtures("prefect_api")
def test_flow_dry_run_table_then_apply_and_a_rerun_lands_nothing(
    save_block, ledger, queue, inbox
) -> None:
    from prefect.utilities.asyncutils import run_coro_as_sync

    for name in ("a.csv", "b.csv"):
        (inbox / name).write_text(name)
    source = LocalFolderSource(source_id=f"ret{uuid.uuid4().hex[:6]}", directory=str(inbox))
    state = run_flow(ingest_local_folder, save_block, ledger, queue, source)
    assert state.result()["landed"] == 2
    landed = [Path(r["landed_path"]) for r in table_rows(ledger, t.items)]
    assert all(p.exists() for p in landed)
    # age everything 40 days and ack the messages
    old = dt.datetime.now(dt.UTC) - 40 * DAY
    with ledger.transaction() as conn:
        conn.execute(t.items.update().values(created_at=old, updated_at=old))
        conn.execute(t.runs.update().values(started_at=old))
        conn.execute(t.queue.update().values(status="acked", acked_at=old))
    led, que = save_block(ledger, "ledger"), save_block(queue, "queue")

    rows = ingest_retention(ledger_block=led, queue_block=que, days=30)  # dry run default
    (row,) = rows
    assert (row["messages"], row["runs"], row["files"], row["dry_run"]) == (2, 1, 2, True)
    assert all(p.exists() for p in landed)
    table = run_coro_as_sync(_artifact_rows(RETENTION_ARTIFACT_KEY))
    assert sorted(table[0]["first_files"].split(", ")) == ["a.csv", "b.csv"]
    assert table[0]["files"] == 2

    with pytest.raises(ConfigError, match="source_days.nosuch"):
        ingest_retention(ledger_block=led, queue_block=que, source_days={"nosuch": 3})
    assert all(p.exists() for p in landed)

    (row,) = ingest_retention(ledger_block=led, queue_block=que, days=30, dry_run=False)
    assert (row["messages"], row["runs"], row["files"]) == (2, 1, 2)
    assert not any(p.exists() for p in landed)
    assert "first_files" not in run_coro_as_sync(_artifact_rows(RETENTION_ARTIFACT_KEY))[0]
    assert len(table_rows(ledger, t.items)) == 2

    again = run_flow(ingest_local_folder, save_block, ledger, queue, source)
    assert again.result()["landed"] == 0  # the item rows still dedupe
    assert not any(p.exists() for p in landed)
    assert table_rows(ledger, t.queue) == []


@pytest.mark.usefixtures("prefect_api")
def test_flow_fails_naming_a_refused_path_and_prunes_the_rest(
    save_block, sqlite_ledger, tmp_path
) -> None:
    root = tmp_path / "landing"
    queue = IngestionQueue(landing_dir=str(root), fsync=False)
    outside = tmp_path / "etc-passwd"
    outside.write_text("keep")
    add_item(sqlite_ledger, root, "bank", "evil.csv", 90 * DAY, landed_path=str(outside))
    fine = add_item(sqlite_ledger, root, "bank", "fine.csv", 90 * DAY)
    state = ingest_retention(
        ledger_block=save_block(sqlite_ledger, "ledger"),
        queue_block=save_block(queue, "queue"),
        days=1,
        dry_run=False,
        now=NOW,
        return_state=True,
    )
    assert state.is_failed()
    assert "1 path(s) refused" in state.message and str(outside) in state.message
    assert outside.read_text() == "keep" and not fine.exists()
    assert os.path.exists(root / "bank")


# ----------------------------------------------------------------------------- the CLI
@pytest.mark.usefixtures("prefect_api")
def test_cli_dry_run_then_apply_and_bad_days(save_block, sqlite_ledger, tmp_path) -> None:
    from typer.testing import CliRunner

    from ops.cli import app

    root = tmp_path / "landing"
    queue = IngestionQueue(landing_dir=str(root), fsync=False)
    # ages relative to the real clock: the CLI has no --now
    real_now = dt.datetime.now(dt.UTC)
    path = add_item(sqlite_ledger, root, "bank", "a.csv", (real_now - NOW) + 90 * DAY)
    led, que = save_block(sqlite_ledger, "ledger"), save_block(queue, "queue")
    base = ["--json", "retention", "--ledger-block", led, "--queue-block", que]
    runner = CliRunner()

    bad = runner.invoke(app, [*base, "--days", "0"])
    assert bad.exit_code == 1 and "--days: 0 is not between" in bad.stderr
    bad = runner.invoke(app, [*base, "--days", "5", "--source-days", "nosuch=3"])
    assert bad.exit_code == 1 and "--source-days nosuch: no source" in bad.stderr
    dry = runner.invoke(app, [*base, "--days", "30"])
    assert dry.exit_code == 0, dry.stderr
    (row,) = json.loads(dry.stdout)
    assert (row["files"], row["messages"], row["dry_run"]) == (1, 1, True) and path.exists()
    done = runner.invoke(app, [*base, "--source-days", "bank=30", "--apply"])
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)[0]["files"] == 1 and not path.exists()
