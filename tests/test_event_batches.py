"""`ingest.items.landed` payloads: split so no event nears Prefect's size limit."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.events import BATCH_EVENT_MAX_BYTES, batch_payloads


def item(name: str) -> dict:
    return {"name": name, "sha256": "0" * 64, "size": 1, "landed_path": f"/landing/{name}"}


def test_a_batch_within_the_limit_is_one_event() -> None:
    items = [item(f"f{i}") for i in range(1000)]
    (payload,) = batch_payloads(items)
    assert payload == {"count": 1000, "items": items}


def test_items_are_split_in_order_and_an_oversized_item_goes_alone() -> None:
    items = [item("a" * 400), item("b" * 400), item("c" * 2000), item("d")]
    payloads = list(batch_payloads(items, max_bytes=2200))
    assert [p["count"] for p in payloads] == [2, 1, 1]
    assert [i for p in payloads for i in p["items"]] == items


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.text(min_size=0, max_size=300), max_size=60),
    max_bytes=st.integers(min_value=100, max_value=5000),
)
def test_every_item_once_in_order_and_each_event_within_the_limit(
    names: list[str], max_bytes: int
) -> None:
    items = [item(n) for n in names]
    payloads = list(batch_payloads(items, max_bytes=max_bytes))
    assert [i for p in payloads for i in p["items"]] == items
    for p in payloads:
        assert p["count"] == len(p["items"]) >= 1
        if p["count"] > 1:  # only an item alone may exceed the limit
            assert len(json.dumps(p["items"])) <= max_bytes
    assert BATCH_EVENT_MAX_BYTES * 4 < 1_500_000  # Prefect's default maximum event size
