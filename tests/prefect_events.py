"""Read Prefect events back from the test API (events arrive asynchronously)."""

from __future__ import annotations

import time

import httpx
from prefect.settings import PREFECT_API_URL


def source_events(name: str, source: str, timeout: float = 30) -> list[dict]:
    """Events `name` on resource ingest.source.<source>, waiting for them to arrive."""
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [f"ingest.source.{source}"]}}}
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10)
        resp.raise_for_status()
        found = resp.json()["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
