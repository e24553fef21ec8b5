"""Prefect events about a source: one resource shape (`ingest.source.<id>`) for all of them,
so automations and deployment triggers match every event of a source the same way."""

from __future__ import annotations

from typing import Any


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
