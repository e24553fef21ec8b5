"""Property: whatever the server's size, page cap and pagination style, the REST source
writes exactly the server's records (no loss, no duplicate, in order), or it fails with
PaginationError. Runs against the real HTTP server of tests/http_server.py.

INGEST_PROPERTY_EXAMPLES sets the number of examples (default 5, so CI stays fast).
"""

from __future__ import annotations

import io
import json
import os
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.source import DiscoverContext
from blocks.http.pagination import PaginationError
from blocks.http.rest_api import RestApiSource
from tests.http_server import ApiServer

EXAMPLES = int(os.environ.get("INGEST_PROPERTY_EXAMPLES", "5"))
DAY = date(2026, 1, 15)
STYLE = {
    "offset": ("offset", {}),
    "page": ("page", {"limit_param": "per_page"}),
    "cursor": ("cursor", {"cursor_path": "next"}),
    "link_header": ("link", {}),
    "next_url": ("nexturl", {"next_url_path": "next"}),
}


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        yield server


@st.composite
def scenarios(draw) -> dict:
    pagination = draw(st.sampled_from(sorted(STYLE)))
    s = {
        "pagination": pagination,
        "n": draw(st.integers(0, 250)),
        "page_size": draw(st.integers(1, 40)),  # what the client asks for
        "server_page": draw(st.integers(1, 40)),  # cursor/link/next_url page of the server
        "cap": draw(st.none() | st.integers(1, 40)),  # the most the server sends per page
        "use_total": draw(st.booleans()),
        "total_offset": draw(st.sampled_from([0, 0, 0, 3])),  # a server announcing too many
        "lossy_pages": pagination == "page" and draw(st.booleans()),
        "needs_q": draw(st.booleans()),  # a path with a query every request must carry
    }
    if s["lossy_pages"]:
        s["use_total"] = True  # without a total a skipping server is undetectable
    return s


def _expect_failure(s: dict) -> bool:
    lied = s["use_total"] and s["total_offset"] > 0
    cap = s["cap"]
    skipped = s["lossy_pages"] and cap is not None and cap < s["page_size"] and s["n"] > cap
    return lied or skipped


@settings(max_examples=EXAMPLES, deadline=None)
@given(s=scenarios())
def test_rest_pages_land_exactly_the_servers_records_or_fail(api, s):
    state = api.state
    state.n, state.page_size, state.cap = s["n"], s["server_page"], s["cap"]
    state.total_offset, state.lossy_pages = s["total_offset"], s["lossy_pages"]
    state.report_total, state.stuck = True, False
    state.requests.clear()
    kind, extra = STYLE[s["pagination"]]
    path = f"/needs-q/{kind}?q=python" if s["needs_q"] else f"/capped/{kind}"
    source = RestApiSource(
        source_id="rest",
        base_url=api.url,
        path=path,
        pagination=s["pagination"],
        page_size=s["page_size"],
        records_path="data",
        total_path="total" if s["use_total"] else None,
        backoff_seconds=0.01,
        **extra,
    )
    source.preflight()
    (cand,) = source.discover(DiscoverContext(partition_date=DAY))
    out = io.BytesIO()
    try:
        source.fetch(cand, out)
    except PaginationError:
        assert _expect_failure(s), f"failed although the server was consistent: {s}"
        return
    assert not _expect_failure(s), f"no failure although records were withheld: {s}"
    ids = [json.loads(line)["id"] for line in out.getvalue().decode().splitlines()]
    assert ids == list(range(s["n"]))


def test_examples_found_by_the_property_stay_fixed(api):
    """Regression: page mode, server cap 1 below the page size of 2, no total: page
    numbers step by the cap, so every record arrives (was: 1 of 5 landed)."""
    api.state.n, api.state.cap = 5, 1
    source = RestApiSource(
        source_id="rest",
        base_url=api.url,
        path="/capped/page",
        pagination="page",
        limit_param="per_page",
        page_size=2,
        records_path="data",
    )
    (cand,) = source.discover(DiscoverContext(partition_date=DAY))
    out = io.BytesIO()
    source.fetch(cand, out)
    assert [json.loads(line)["id"] for line in out.getvalue().decode().splitlines()] == [
        0,
        1,
        2,
        3,
        4,
    ]
