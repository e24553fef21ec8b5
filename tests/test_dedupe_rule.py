"""The dedupe decision the database makes (`Ledger.iter_names_to_fetch`) equals the rule
written in Python (`plan_fetches`), on SQLite and the real PostgreSQL, for any listing and
ledger: names listed twice, NULL fingerprints, changed fingerprints, failed and duplicate
rows, other sources, the `since` window and `changed_items='ignore'`."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.core import ledger_schema as schema
from blocks.core.ledger import Ledger
from blocks.core.source import Candidate
from pipeline.engine import plan_fetches

EXAMPLES = int(os.environ.get("INGEST_DEDUPE_EXAMPLES", "25"))
NAMES = ["a.csv", "b.csv", "dir/c.csv", "é ü.csv", "quote'.csv", "x" * 300]
VERSIONS = [None, "v1", "v2"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

rows = st.lists(
    st.tuples(
        st.sampled_from(["src", "other"]),
        st.sampled_from(NAMES),
        st.sampled_from(VERSIONS),
        st.sampled_from(["landed", "duplicate", "failed", "unpacked"]),
        st.integers(0, 10),  # created day
    ),
    max_size=12,
)
listing = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VERSIONS)), max_size=12)


def _fill(ledger: Ledger, ledger_rows) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(schema.items.delete())
        for i, (source, name, version, status, day) in enumerate(ledger_rows):
            created = T0 + timedelta(days=day)
            conn.execute(
                schema.items.insert().values(
                    source=source, name=name, sha256=None if status == "failed" else f"{i:064d}",
                    remote_version=version, status=status, created_at=created,
                    updated_at=created,
                )
            )  # fmt: skip


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ledger_rows=rows, listed=listing, since_day=st.none() | st.integers(0, 11),
       ignore=st.booleans())  # fmt: skip
def test_database_decision_equals_plan_fetches(ledger, ledger_rows, listed, since_day, ignore):
    _fill(ledger, ledger_rows)
    since = None if since_day is None else T0 + timedelta(days=since_day)
    candidates = [Candidate(name, 1, None, version) for name, version in listed]
    known = ledger.known_items("src", [c.name for c in candidates], since)
    expected, _ = plan_fetches(candidates, known, False, "ignore" if ignore else "land")
    wanted: set = set()
    for _n, chunk in ledger.iter_names_to_fetch(
        "src", ((c.name, c.version) for c in candidates), since, any_version=ignore
    ):
        wanted |= chunk
    got = [c for c in candidates if (c.name, c.version) in wanted]
    assert [(c.name, c.version) for c in got] == [(c.name, c.version) for c in expected]


def test_big_listing_is_chunked_and_only_new_pairs_come_back(ledger) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(schema.items.delete())
        conn.execute(
            schema.items.insert(),
            [
                {"source": "src", "name": f"f{i}", "sha256": f"{i:064d}", "remote_version": "v1",
                 "status": "landed", "created_at": T0, "updated_at": T0}
                for i in range(0, 30000, 3)
            ],
        )  # fmt: skip
    chunks = list(ledger.iter_names_to_fetch("src", ((f"f{i}", "v1") for i in range(30000))))
    assert sum(n for n, _ in chunks) == 30000
    assert len(chunks) > 1 or ledger.dialect == "postgresql"  # chunks of 20k on SQLite
    fetched = set().union(*(c for _, c in chunks))
    assert len(fetched) == 20000 and ("f3", "v1") not in fetched and ("f4", "v1") in fetched
