"""Prefect events about a source: one resource shape (`ingest.source.<id>`) for all of them,
so automations and deployment triggers match every event of a source the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

ITEM_LANDED = "ingest.item.landed"
ITEMS_LANDED = "ingest.items.landed"
# Prefect refuses an event over PREFECT_EVENTS_MAXIMUM_SIZE_BYTES (1.5 MB by default); a
# batch event stays well below it by splitting its item list.
BATCH_EVENT_MAX_BYTES = 256 * 1024


def emit_source_event(event: str, source_id: str, payload: dict[str, Any]) -> None:
    """Emit `event` on the resource `ingest.source.<source_id>` with `payload`."""
    from prefect.events import emit_event  # imported late: the blocks load without a client

    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"ingest.source.{source_id}",
            "prefect.resource.name": source_id,
        },
        payload=payload,
    )


def batch_payloads(
    items: list[dict[str, Any]], max_bytes: int = BATCH_EVENT_MAX_BYTES
) -> Iterator[dict[str, Any]]:
    """The payloads of `ingest.items.landed` events for `items` (each item's own
    `ingest.item.landed` payload): `{"count": n, "items": [...]}`, as few as fit in
    `max_bytes` of JSON each (an item too big alone still gets its own event)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, default=str)) + 2
        if chunk and size + item_size > max_bytes:
            yield {"count": len(chunk), "items": chunk}
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield {"count": len(chunk), "items": chunk}


def emit_items_landed(source_id: str, items: list[dict[str, Any]]) -> None:
    """Emit `ingest.items.landed` for a batch of landed items."""
    for payload in batch_payloads(items):
        emit_source_event(ITEMS_LANDED, source_id, payload)
