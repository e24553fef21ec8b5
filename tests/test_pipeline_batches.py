"""Small items share land-batch tasks; failures inside a batch keep their own retries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from blocks import LocalFolderSource
from blocks.core.errors import ChecksumMismatch
from blocks.core.source import Candidate
from flows.local_folder import ingest_local_folder
from pipeline.engine import SMALL_ITEM_BYTES, landed_files, plan_batches
from tests.landed_rows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_api")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def cand(name: str, size: int | None) -> Candidate:
    return Candidate(name=name, size=size, mtime=NOW)


def test_plan_batches_keeps_order_and_big_items_alone(tmp_path) -> None:
    source = LocalFolderSource(
        source_id="p", directory=str(tmp_path), max_parallel=2, small_item_batch=3
    )
    items = [
        cand("a", 10),
        cand("big", SMALL_ITEM_BYTES + 1),
        cand("b", 10),
        cand("c", SMALL_ITEM_BYTES),
        cand("unknown", None),
        cand("d", 0),
        cand("e", 5),
        cand("f", 5),
        cand("g", 5),
    ]
    units = [[c.name for c in unit] for unit in plan_batches(items, source)]
    assert units == [["big"], ["a", "b", "c"], ["unknown"], ["d", "e", "f"], ["g"]]
    # few small items: spread over max_parallel units, not one big batch
    source.max_parallel = 4
    few = [cand(f"s{i}", 1) for i in range(6)]
    assert [len(u) for u in plan_batches(few, source)] == [2, 2, 2]
    source.small_item_batch = 1
    assert [len(u) for u in plan_batches(few, source)] == [1] * 6


def run(save_block, ledger, queue, source):
    return run_flow(
        ingest_local_folder, save_block, ledger, queue, source, fail_on_item_error=False
    )


def task_names(state) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return sorted(r.name.rsplit("-", 1)[0] for r in runs)


def test_many_small_files_land_in_batches(save_block, sqlite_ledger, queue, inbox) -> None:
    for i in range(120):
        (inbox / f"f{i:03d}.csv").write_text(f"row {i}\n")
    source = LocalFolderSource(
        source_id="many", directory=str(inbox), max_parallel=4, small_item_batch=50
    )
    state = run(save_block, sqlite_ledger, queue, source)
    result = state.result()
    assert (result["landed"], result["failed"]) == (120, 0)
    assert len(landed_files(queue.landing_root)) == 120
    assert task_names(state).count("land-batch") == 4  # 4 x 30, not 120 task runs
    assert "land-item" not in task_names(state)
    assert run(save_block, sqlite_ledger, queue, source).result()["landed"] == 0


def test_item_failing_in_a_batch_is_retried_alone_then_fails_alone(
    save_block, sqlite_ledger, queue, inbox, monkeypatch
) -> None:
    for i in range(8):
        (inbox / f"f{i}.csv").write_text(f"row {i}\n")
    attempts: dict[str, int] = {}
    real_fetch = LocalFolderSource.fetch

    def flaky(self, candidate, out):
        attempts[candidate.name] = attempts.get(candidate.name, 0) + 1
        if candidate.name == "f2.csv" and attempts[candidate.name] == 1:
            raise ConnectionError("link dropped")  # transient: lands on its retry
        if candidate.name == "f5.csv":
            raise PermissionError("f5.csv: permission denied")  # fails every attempt
        if candidate.name == "f6.csv":
            raise ChecksumMismatch("f6.csv: not what was announced")  # final: no retry
        return real_fetch(self, candidate, out)

    monkeypatch.setattr(LocalFolderSource, "fetch", flaky)
    source = LocalFolderSource(
        source_id="flaky",
        directory=str(inbox),
        max_parallel=2,
        retries=2,
        retry_delay_seconds=0.01,
    )
    state = run(save_block, sqlite_ledger, queue, source)
    result = state.result()
    assert (result["landed"], result["failed"]) == (6, 2), result
    assert attempts["f2.csv"] == 2
    assert attempts["f5.csv"] == 3, "1 + retries attempts in all, as for a land-item task"
    assert attempts["f6.csv"] == 1
    assert all(attempts[f"f{i}.csv"] == 1 for i in (0, 1, 3, 4, 7))
    names = task_names(state)
    assert names.count("land-batch") == 2 and names.count("land-item") == 2
    failed = {r["name"] for r in sqlite_ledger.recent_items("flaky") if r["status"] == "failed"}
    assert failed == {"f5.csv", "f6.csv"}


def test_dedupe_keeps_listing_order_and_prefect_does_not_walk_the_listing(
    tmp_path, sqlite_ledger
) -> None:
    from prefect import flow
    from prefect.states import Failed

    from blocks.core.ledger import LandedRecord
    from pipeline.engine import dedupe_listing

    source = LocalFolderSource(source_id="dd", directory=str(tmp_path))
    for name in ("b.csv", "d.csv"):
        sqlite_ledger.record_landed(
            LandedRecord("dd", name, name[0] * 64, 1, f"/l/{name}", None, remote_version="v1")
        )
    # A failed state inside an item: had Prefect walked the listing, it would have
    # refused to start the task (upstream failed).
    names = ["a.csv", "b.csv", "c.csv", "a.csv", "d.csv", "e.csv"]
    listing = [Candidate(n, 1, NOW, "v1", ref=Failed()) for n in names]

    @flow
    def run():
        return dedupe_listing(sqlite_ledger, source, listing, False)

    fetch, skipped = run()
    assert [c.name for c in fetch] == ["a.csv", "c.csv", "a.csv", "e.csv"]
    assert skipped == 2  # b.csv, d.csv


def test_content_dedupe_in_batches_asks_the_ledger_once_per_batch(
    save_block, sqlite_ledger, queue, inbox, monkeypatch
) -> None:
    """Batched items are checked against landed content in ONE query per batch, with the
    outcomes of the one-by-one path: a known content under another name is a duplicate, a
    new version of a name with unchanged content is skipped, and two items of one batch
    with the same content land once."""
    from blocks.core.ledger import Ledger

    (inbox / "first.csv").write_text("shared\n")
    (inbox / "same.csv").write_text("same\n")
    source = LocalFolderSource(
        source_id="cd", directory=str(inbox), max_parallel=1, small_item_batch=50
    )
    assert run(save_block, sqlite_ledger, queue, source).result()["landed"] == 2

    (inbox / "copy-of-first.csv").write_text("shared\n")  # known content, other name
    (inbox / "same.csv").write_text("same\n")  # new mtime, unchanged content
    (inbox / "twin-a.csv").write_text("twin\n")  # two new items, one content
    (inbox / "twin-b.csv").write_text("twin\n")
    for i in range(6):
        (inbox / f"new{i}.csv").write_text(f"new {i}\n")
    asked: list[int] = []
    one_by_one: list[str] = []
    real_many, real_one = Ledger.landed_by_sha_many, Ledger.landed_by_sha

    def many(self, source_id, shas):
        asked.append(len(shas))
        return real_many(self, source_id, shas)

    def one(self, source_id, sha):
        one_by_one.append(sha)
        return real_one(self, source_id, sha)

    monkeypatch.setattr(Ledger, "landed_by_sha_many", many)
    monkeypatch.setattr(Ledger, "landed_by_sha", one)
    result = run(save_block, sqlite_ledger, queue, source).result()
    # skipped: first.csv (known name and version), same.csv, copy-of-first.csv, twin-b.csv
    assert (result["landed"], result["skipped"], result["failed"]) == (7, 4, 0), result
    # listing order: the 9 items before twin-b in one query; twin-b's twin was pending,
    # so the batch was flushed and twin-b asked alone (it is the batch's last item)
    assert asked == [9] and len(one_by_one) == 1, (asked, one_by_one)
    rows = {(r["name"], r["status"]) for r in sqlite_ledger.recent_items("cd", limit=100)}
    assert ("copy-of-first.csv", "duplicate") in rows
    assert ("twin-b.csv", "duplicate") in rows and ("twin-a.csv", "landed") in rows
    assert sum(1 for name, _ in rows if name == "same.csv") == 1
    landed = [p.name for p in landed_files(queue.landing_root)]
    assert sorted(landed) == sorted(
        ["first.csv", "same.csv", "twin-a.csv"] + [f"new{i}.csv" for i in range(6)]
    )


def test_listing_is_deduped_chunk_by_chunk_never_held_whole(
    save_block, sqlite_ledger, queue, inbox, monkeypatch
) -> None:
    """The discover step hands the ledger LISTING_CHUNK items at a time and keeps only
    the new ones: listed, skipped and landed counts stay those of one whole listing."""
    import pipeline.engine as engine
    from blocks.core.ledger import Ledger

    for i in range(10):
        (inbox / f"f{i:03d}.csv").write_text(f"row {i}\n")
    source = LocalFolderSource(source_id="chunked", directory=str(inbox), max_parallel=2)
    assert run(save_block, sqlite_ledger, queue, source).result()["landed"] == 10
    for i in range(10, 30):
        (inbox / f"f{i:03d}.csv").write_text(f"row {i}\n")
    (inbox / "bad\x01name.csv").write_text("refused")
    chunks: list[int] = []
    real = Ledger.iter_names_to_fetch

    def counted(self, source_id, listing, *args, **kwargs):
        pairs = list(listing)
        chunks.append(len(pairs))
        yield from real(self, source_id, pairs, *args, **kwargs)

    monkeypatch.setattr(engine, "LISTING_CHUNK", 7)
    monkeypatch.setattr(Ledger, "iter_names_to_fetch", counted)
    result = run(save_block, sqlite_ledger, queue, source).result()
    assert (result["listed"], result["skipped"], result["landed"]) == (31, 10, 20), result
    assert result["failed"] == 1  # the unsafe name, refused before the ledger is asked
    assert chunks == [7, 7, 7, 7, 2], chunks
    assert len(landed_files(queue.landing_root)) == 30
