"""Health beyond the ledger (flows/source_checks.py) on the Prefect test API: connection
checks of the deployed source blocks (parallel, bounded, a hung server included, secrets
masked, one event per failure) and freshness rules (validated, unknown sources refused,
the stale rule as a property)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from blocks import LocalFolderSource, RestApiSource
from blocks.core.errors import ConfigError
from flows.health import ingest_health
from flows.source_checks import (
    CONNECTION_FAILED_EVENT,
    STALE_EVENT,
    mask_secrets,
    parse_freshness,
    slug_of_entrypoint,
    stale_message,
)
from tests.prefect_events import source_events

EXAMPLES = int(os.environ.get("INGEST_PROPERTY_EXAMPLES", "10"))
UTC = dt.UTC
SECRET = "tok-9f8e7d6c5b4a-secret"


# ------------------------------------------------------------------------------ freshness
@pytest.mark.parametrize(
    ("rules", "where"),
    [
        ({"bank": 0}, "freshness.bank"),
        ({"bank": -3}, "freshness.bank"),
        ({"bank": "soon"}, "freshness.bank"),
        ({"bank": float("nan")}, "freshness.bank"),
        ({"bank": 9000}, "freshness.bank"),
        ({"bank": True}, "freshness.bank"),
        ({"bank": None}, "freshness.bank"),
        ({"../x": 2}, "freshness.../x"),
        (["bank"], "freshness"),
    ],
)
def test_bad_freshness_rule_names_the_field(rules, where):
    with pytest.raises(ConfigError) as info:
        parse_freshness(rules)
    assert info.value.where == where


def test_freshness_rules_parse():
    assert parse_freshness({"bank": "2.5", "*": 26}) == {"bank": 2.5, "*": 26.0}
    assert parse_freshness(None) == {}


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    hours=st.floats(min_value=0.001, max_value=24 * 365),
    age_hours=st.one_of(st.none(), st.floats(min_value=0, max_value=24 * 400)),
    first_run_age=st.one_of(st.none(), st.floats(min_value=0, max_value=24 * 400)),
)
def test_stale_iff_nothing_landed_within_the_limit(hours, age_hours, first_run_age):
    now = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
    landed = None if age_hours is None else now - dt.timedelta(hours=age_hours)
    first = None if first_run_age is None else now - dt.timedelta(hours=first_run_age)
    message = stale_message("crm", hours, now, landed, first)
    limit = dt.timedelta(hours=hours)
    if landed is not None:
        expect_stale = now - landed > limit
    else:  # never landed: the limit counts from the first run (no run: stale)
        expect_stale = first is None or now - first > limit
    assert (message is not None) == expect_stale
    if message:
        assert message.startswith("crm: nothing") and f"{hours:g} h" in message


def test_unknown_freshness_source_is_refused_before_the_ledger_changes(save_block, sqlite_ledger):
    source = f"known{uuid.uuid4().hex[:6]}"
    sqlite_ledger.start_run(source, "not-a-prefect-id", None)  # left running, 'abandoned' later
    led = save_block(sqlite_ledger)
    with pytest.raises(ConfigError, match=r"freshness\.typo-source: unknown source 'typo-source'"):
        ingest_health(ledger_block=led, freshness={"typo-source": 2}, abandon_after_hours=1e-6)
    with pytest.raises(ConfigError, match="freshness.crm: hours must be more than 0"):
        ingest_health(ledger_block=led, freshness={"crm": 0}, abandon_after_hours=1e-6)
    with pytest.raises(ConfigError, match="connection_timeout_seconds"):
        ingest_health(ledger_block=led, connection_timeout_seconds=0)
    assert [r["source"] for r in sqlite_ledger.open_runs()] == [source]  # nothing closed


def test_stale_source_fails_health_with_an_event(save_block, sqlite_ledger):
    source = f"crm{uuid.uuid4().hex[:6]}"
    run = sqlite_ledger.start_run(source, None, None)
    sqlite_ledger.finish_run(run, "completed", {"listed": 0}, None)
    led = save_block(sqlite_ledger)
    later = dt.datetime.now(UTC) + dt.timedelta(hours=3)
    state = ingest_health(
        ledger_block=led, sources=[source], freshness={"*": 2}, now=later, return_state=True
    )
    assert state.is_failed()
    assert f"{source}: nothing landed since its first run" in str(state.message)
    fresh = ingest_health(ledger_block=led, sources=[source], freshness={source: 4}, now=later)
    assert fresh[0]["stale"] == ""
    found = source_events(STALE_EVENT, source)
    assert found and found[0]["payload"]["hours"] == 2.0


# ------------------------------------------------------------------------------ connections
def test_entrypoints_map_to_source_block_types():
    assert slug_of_entrypoint("flows.sql:ingest_sql") == "sql-source"
    assert slug_of_entrypoint("flows/rest_api.py:ingest_rest") == "rest-api-source"
    assert slug_of_entrypoint("tests.ops_flows:slow") is None
    assert slug_of_entrypoint(None) is None


def test_mask_secrets_masks_nested_secret_values():
    block = RestApiSource(
        source_id="api", base_url="http://127.0.0.1:9", auth="bearer", token=SecretStr(SECRET)
    )
    assert mask_secrets(block, f"401 for {SECRET}!") == "401 for **********!"


@pytest.fixture
def hung_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def deploy(prefect_api) -> Iterator:
    """Create deployments (entrypoint, source_block) on the test API; deleted afterwards so
    that later health runs in the session do not check these blocks."""
    created = []

    def _deploy(flow_name: str, entrypoint: str, source_block: str, paused: bool = False) -> None:
        with get_client(sync_client=True) as client:
            flow_id = client.create_flow_from_name(flow_name)
            created.append(
                client.create_deployment(
                    flow_id=flow_id,
                    name=f"d-{uuid.uuid4().hex[:8]}",
                    entrypoint=entrypoint,
                    parameters={"source_block": source_block},
                    paused=paused,
                )
            )

    yield _deploy
    with get_client(sync_client=True) as client:
        for dep_id in created:
            client.delete_deployment(dep_id)


def test_connection_checks_parallel_bounded_named_and_masked(
    save_block, sqlite_ledger, deploy, hung_server, tmp_path, caplog
):
    """Five deployed blocks: one ok folder, one missing folder, one refused port, and two
    REST sources on a server that accepts and never answers (and a missing folder whose
    only deployment is paused: not checked). With a 2 s bound the health run reports the
    four failures (one line each, naming the block and its source, never the token) and
    emits one event each."""
    tag = uuid.uuid4().hex[:6]
    (tmp_path / "in").mkdir()
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    closed_port = refused.getsockname()[1]
    refused.close()
    specs = {
        f"ok-{tag}": LocalFolderSource(source_id=f"ok-{tag}", directory=str(tmp_path / "in")),
        f"gone-{tag}": LocalFolderSource(source_id=f"gone-{tag}", directory=str(tmp_path / "no")),
        f"refused-{tag}": RestApiSource(
            source_id=f"refused-{tag}", base_url=f"http://127.0.0.1:{closed_port}",
            auth="bearer", token=SecretStr(SECRET), http_tries=1,
        ),
        f"hung1-{tag}": RestApiSource(
            source_id=f"hung1-{tag}", base_url=f"http://127.0.0.1:{hung_server}",
            auth="bearer", token=SecretStr(SECRET),
        ),
        f"hung2-{tag}": RestApiSource(
            source_id=f"hung2-{tag}", base_url=f"http://127.0.0.1:{hung_server}",
            auth="bearer", token=SecretStr(SECRET),
        ),
    }  # fmt: skip
    names = {}
    for source_id, block in specs.items():
        names[source_id] = save_block(block, prefix=source_id)
        folder = isinstance(block, LocalFolderSource)
        entry = "flows.local_folder:ingest_local_folder" if folder else "flows.rest_api:ingest_rest"
        deploy("ingest-local-folder" if folder else "ingest-rest", entry, names[source_id])
    paused = save_block(
        LocalFolderSource(source_id=f"paused-{tag}", directory=str(tmp_path / "no")), "paused"
    )
    deploy("ingest-local-folder", "flows.local_folder:ingest_local_folder", paused, paused=True)
    led = save_block(sqlite_ledger)
    caplog.set_level("INFO", logger="prefect")
    started = time.monotonic()
    state = ingest_health(
        ledger_block=led,
        sources=[*specs, f"paused-{tag}"],
        connection_timeout_seconds=2,
        return_state=True,
    )
    elapsed = time.monotonic() - started
    assert state.is_failed()
    message = str(state.message)
    slug = {"ok": "local-folder-source", "gone": "local-folder-source"}
    for failing in ("gone", "refused", "hung1", "hung2"):
        source_id = f"{failing}-{tag}"
        ref = f"{slug.get(failing, 'rest-api-source')}/{names[source_id]}"
        assert f"{ref} (source {source_id}): connection check" in message
    assert message.count("timed out after 2 s") == 2
    assert f"ok-{tag}" not in message and paused not in message
    # The REST block's own timeout is 30 s: only the 2 s bound ends a hung check sooner.
    assert elapsed < 25, f"health run took {elapsed:.1f} s"
    assert SECRET not in message and SECRET not in caplog.text
    for failing in ("gone", "refused", "hung1", "hung2"):
        found = source_events(CONNECTION_FAILED_EVENT, f"{failing}-{tag}")
        assert len(found) == 1 and names[f"{failing}-{tag}"] in found[0]["payload"]["block"]
        assert SECRET not in str(found[0])
    assert source_events(CONNECTION_FAILED_EVENT, f"ok-{tag}", timeout=1) == []

    # Off: the same run reports from the ledger only.
    assert ingest_health(ledger_block=led, sources=list(specs), check_connections=False)


def test_hung_checks_run_in_parallel_each_bounded(hung_server):
    """Three blocks on a server that never answers, bounded at 1.5 s: 1.5 s together, not
    4.5 (the blocks' own request timeout is 30 s)."""
    from flows.source_checks import ConnectionChecks, LoadedSource

    blocks = [
        LoadedSource(
            f"rest-api-source/h{n}",
            [],
            RestApiSource(source_id=f"h{n}", base_url=f"http://127.0.0.1:{hung_server}"),
        )
        for n in range(3)
    ]
    started = time.monotonic()
    results = ConnectionChecks(blocks, timeout=1.5).collect()
    elapsed = time.monotonic() - started
    assert [r.line() for r in results] == [
        f"rest-api-source/h{n} (source h{n}): connection check timed out after 1.5 s (no answer)"
        for n in range(3)
    ]
    assert 1.4 < elapsed < 3.0, f"{elapsed:.2f} s"
