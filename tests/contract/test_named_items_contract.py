"""Contract "named items": every file source takes exactly the items an event names.

Per kit (`tests/contract/kits/`), against its real local server, through the one pipeline
(`run_source(..., items=...)`): the named items are landed, nothing else is; a named
item that does not exist and one with an unsafe name fail with their reason while the
others land; naming them again lands nothing (the ledger dedupes, as for a listing); a
listing run afterwards takes only the item never named (the stat'd fingerprint equals the
listed one). Row sources (SQL, REST, warehouse) refuse named items naming `trigger`.
"""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow

from blocks import ConfigError
from blocks.core.source import DiscoverContext, NamedItem, SourceBlock
from pipeline.engine import run_source
from tests.contract.kits import SourceKit
from tests.contract.kits.base import uid
from tests.landed_rows import landed

pytestmark = pytest.mark.usefixtures("prefect_api")


@flow(validate_parameters=False)
def named_run(source: SourceBlock, ledger: Any, queue: Any, items: list[NamedItem] | None) -> dict:
    """One pipeline run taking `items` (None: the listing); item failures counted."""
    return run_source(source, ledger, queue, fail_on_item_error=False, items=items).counts()


def run(source: SourceBlock, ledger: Any, queue: Any, items: list[NamedItem] | None) -> dict:
    state = named_run(source, ledger, queue, items, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def test_named_items_are_taken_exactly(kit: SourceKit, sqlite_ledger, queue) -> None:
    source = kit.block()
    if kit.kind != "files":
        assert not source.takes_named_items
        ctx = DiscoverContext(partition_date=source.today(), source_id=source.source_id)
        with pytest.raises(ConfigError) as err:
            list(source.candidates_for([NamedItem("x.csv")], ctx))
        assert err.value.where == "trigger" and type(source).__name__ in str(err.value)
        return
    assert source.takes_named_items
    items = kit.put(3)
    first, second, never = sorted(items)
    missing = f"missing-{uid()}.csv"
    asked = [NamedItem(first), NamedItem(second), NamedItem(missing), NamedItem("../evil.csv")]

    result = run(source, sqlite_ledger, queue, asked)
    assert (result["listed"], result["landed"], result["failed"]) == (4, 2, 2), result
    rows = landed(sqlite_ledger, kit.source_id)
    assert sorted(r["name"] for r in rows) == [first, second]
    for row in rows:
        with open(row["landed_path"], "rb") as fh:
            assert fh.read() == items[row["name"]]
    failures = {
        r["name"]: r["error"]
        for r in sqlite_ledger.recent_items(kit.source_id)
        if r["status"] == "failed"
    }
    assert set(failures) == {missing, "../evil.csv"}, failures
    assert "no such" in failures[missing] or "not found" in failures[missing]

    again = run(kit.block(), sqlite_ledger, queue, [NamedItem(first), NamedItem(second)])
    assert (again["landed"], again["skipped"], again["failed"]) == (0, 2, 0), again

    listing = run(kit.block(), sqlite_ledger, queue, None)
    assert (listing["landed"], listing["failed"]) == (1, 0), listing
    everything = sorted(r["name"] for r in landed(sqlite_ledger, kit.source_id))
    assert everything == sorted([first, second, never])
