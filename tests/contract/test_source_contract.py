"""The source contract: every source type, against its real local server, through the
one pipeline (`pipeline.engine.run_source` inside a flow).

Each test runs once per kit (`tests/contract/kits/<source>.py`): discover lists new items; a run
lands each once with the source's content; a rerun lands nothing; `force` lands again;
unsafe names are refused and recorded failed; bad configuration fails in `preflight`
naming the field before any I/O; a wrong secret fails the run and shows up in no error
and no log line; `close` leaves no connection open; `test_connection` says ok or raises
a clear error. Per-source test files keep only what is specific to their source.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from blocks import ConfigError, IngestError, QueueConsumer
from blocks.core.source import DiscoverContext, SourceBlock
from pipeline.engine import landed_files, run_source
from tests.contract.kits import SourceKit, wait_for
from tests.landed_rows import landed, read_rows

pytestmark = pytest.mark.usefixtures("prefect_api")
N = 3  # items per test: the suite checks behaviour, not volume

# Loggers whose DEBUG records could carry a secret (client libraries log requests).
WATCHED_LOGGERS = (
    "prefect",
    "prefect.flow_runs",
    "prefect.task_runs",
    "httpx",
    "httpcore",
    "paramiko",
    "botocore",
    "boto3",
    "urllib3",
    "requests",
    "msal",
    "google",
    "snowflake",
    "sqlalchemy",
    "ingest",
    "blocks",
    "flows",
)


@flow(validate_parameters=False)
def contract_run(source: SourceBlock, ledger: Any, queue: Any, force: bool = False) -> dict:
    """One pipeline run of `source` (item failures counted, not raised)."""
    return run_source(source, ledger, queue, force=force, fail_on_item_error=False).counts()


def run(source: SourceBlock, ledger: Any, queue: Any, force: bool = False) -> dict:
    state = contract_run(source, ledger, queue, force, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def check_landed(kit: SourceKit, items: dict, ledger: Any, queue: Any) -> None:
    """Every item landed exactly once, with the content the source holds."""
    rows = landed(ledger, kit.source_id)
    if kit.kind == "files":
        names = [r["name"] for r in rows]
        assert sorted(names) == sorted(items), names
        for row in rows:
            assert Path(row["landed_path"]).read_bytes() == items[row["name"]], row["name"]
        assert len(landed_files(queue.landing_root)) == len(items)
        return
    key, value = kit.columns
    seen = [r for row in rows for r in read_rows(row["landed_path"])]
    ids = Counter(int(r[key]) for r in seen)
    assert set(ids) == set(items) and set(ids.values()) == {1}, ids
    assert {int(r[key]): str(r[value]) for r in seen} == items


# ----------------------------------------------------------------------------- 1. discover
def test_discover_lists_the_new_items(kit: SourceKit) -> None:
    items = kit.put(N)
    source = kit.block()
    source.preflight()
    try:
        ctx = DiscoverContext(partition_date=source.today(), source_id=source.source_id)
        found = list(source.discover(ctx))
    finally:
        source.close()
    if kit.kind == "files":
        assert sorted(c.name for c in found) == sorted(items)
    else:  # one window of records per run
        assert len(found) >= 1


# ----------------------------------------------------------------------------- 2-4. runs
def test_run_lands_each_item_once_with_its_content(kit, sqlite_ledger, queue) -> None:
    items = kit.put(N)
    result = run(kit.block(), sqlite_ledger, queue)
    assert result["failed"] == 0, result
    assert result["landed"] == (N if kit.kind == "files" else 1), result
    check_landed(kit, items, sqlite_ledger, queue)
    # one queue message per landed item, none for anything else
    assert QueueConsumer(sqlite_ledger, "c").pending_count(kit.source_id) == result["landed"]


def test_rerun_lands_nothing(kit, sqlite_ledger, queue) -> None:
    items = kit.put(N)
    first = run(kit.block(), sqlite_ledger, queue)
    assert first["landed"] >= 1 and first["failed"] == 0, first
    again = run(kit.block(), sqlite_ledger, queue)
    assert (again["landed"], again["failed"]) == (0, 0), again
    check_landed(kit, items, sqlite_ledger, queue)


def test_force_lands_again(kit, sqlite_ledger, queue) -> None:
    items = kit.put(N)
    first = run(kit.block(), sqlite_ledger, queue)
    assert first["landed"] >= 1, first
    forced = run(kit.block(), sqlite_ledger, queue, force=True)
    assert (forced["landed"], forced["failed"]) == (first["landed"], 0), forced
    check_landed(kit, items, sqlite_ledger, queue)


# ----------------------------------------------------------------------------- 5. unsafe names
def test_unsafe_names_are_refused_and_recorded_failed(kit, sqlite_ledger, queue, tmp_path):
    if kit.no_unsafe_names:
        pytest.skip(f"{kit.name} cannot hold an unsafe name: {kit.no_unsafe_names}")
    items = kit.put(N)
    unsafe = kit.put_unsafe()
    before = {p for p in tmp_path.rglob("*") if p.is_file()}  # e.g. a kit's credentials file
    result = run(kit.block(), sqlite_ledger, queue)
    assert (result["landed"], result["failed"]) == (N, len(unsafe)), result
    failed = {
        r["name"] for r in sqlite_ledger.recent_items(kit.source_id) if r["status"] == "failed"
    }
    assert failed == set(unsafe)
    check_landed(kit, items, sqlite_ledger, queue)
    # nothing written anywhere but the landing and staging folders and the ledger
    stray = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file()
        and p not in before
        and queue.landing_root not in p.parents
        and queue.staging_root not in p.parents
        and not p.name.startswith("ledger.db")
    ]
    assert stray == []
    assert not list(queue.staging_root.rglob("*")) or all(
        p.is_dir() for p in queue.staging_root.rglob("*")
    )


# ----------------------------------------------------------------------------- 6. bad config
@contextmanager
def no_network() -> Iterator[list[tuple]]:
    """Refuse (and record) every connection and name lookup made inside the block.

    The narrowest seam that makes "before any I/O" observable for every source, also
    for servers that keep no request log; restored before Prefect talks to its API."""
    attempts: list[tuple] = []
    real = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("contract test: no network in preflight")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.getaddrinfo = refuse  # type: ignore[assignment]
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real


def test_bad_config_fails_in_preflight_naming_the_field(kit, sqlite_ledger, queue) -> None:
    source, field = kit.bad_config()
    before = kit.requests_seen()
    with no_network() as attempts, pytest.raises(ConfigError) as err:
        source.preflight()
    assert attempts == [], "preflight reached for the network"
    assert err.value.where == field and str(err.value).startswith(field + ":")
    assert "\n" not in str(err.value)

    state = contract_run(source, sqlite_ledger, queue, return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ConfigError) and exc.where == field, exc
    assert sqlite_ledger.recent_runs(kit.source_id, limit=5) == []  # no run row either
    assert not queue.landing_root.exists() or landed_files(queue.landing_root) == []
    if before is not None:
        assert kit.requests_seen() == before, "a request reached the server"


# ----------------------------------------------------------------------------- 7. secrets
@contextmanager
def capture_everything(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """caplog at DEBUG on the root and on every watched logger, also those that do not
    propagate to the root (Prefect's)."""
    caplog.set_level(logging.DEBUG)
    for name in WATCHED_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    attached = [logging.getLogger(n) for n in WATCHED_LOGGERS if not logging.getLogger(n).propagate]
    for logger in attached:
        logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        for logger in attached:
            logger.removeHandler(caplog.handler)


def error_texts(exc: BaseException | None) -> list[str]:
    """str and repr of an exception and of everything it was raised from."""
    out: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out += [str(exc), repr(exc), repr(getattr(exc, "args", ""))]
        exc = exc.__cause__ or exc.__context__
    return out


def test_wrong_secret_fails_and_the_secret_is_nowhere(kit, sqlite_ledger, queue, caplog):
    kit.put(1)  # before: a wrong-secret set-up may lock the test's own client out too
    found = kit.wrong_secret()
    if found is None:
        pytest.skip(f"{kit.name} has no secret")
    source, secret = found
    texts: list[str] = []
    with capture_everything(caplog):
        with pytest.raises(IngestError) as err:
            source.test_connection()
        texts += error_texts(err.value)
        source.close()
        state = contract_run(source, sqlite_ledger, queue, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        texts += error_texts(result)
    else:
        assert result["failed"] >= 1 and result["landed"] == 0, result
        texts += [str(f) for f in result.get("failures", [])]
    assert state.is_failed() or not isinstance(result, BaseException)
    texts.append(str(state.message))
    texts += [str(r) for r in sqlite_ledger.recent_runs(kit.source_id, limit=5)]
    texts += [str(r) for r in sqlite_ledger.recent_items(kit.source_id)]
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    assert caplog.records, "nothing was logged: the capture is not working"
    leaks = [t for t in texts if secret in t]
    assert leaks == [], "the secret is shown"


def test_a_good_run_shows_its_secret_nowhere(kit, sqlite_ledger, queue, caplog) -> None:
    secret = kit.good_secret()
    if secret is None:
        pytest.skip(f"{kit.name}: the valid block holds no secret")
    kit.put(N)
    with capture_everything(caplog):
        source = kit.block()
        report = source.test_connection()
        source.close()
        result = run(kit.block(), sqlite_ledger, queue)
    assert result["landed"] >= 1
    texts = [str(report), str(result)]
    for record in caplog.records:
        texts.append(record.getMessage())
    assert caplog.records, "nothing was logged: the capture is not working"
    assert [t for t in texts if secret in t] == [], "the secret is shown"


# ----------------------------------------------------------------------------- 8. close
def test_close_leaves_no_connection_open(kit, sqlite_ledger, queue) -> None:
    if kit.open_connections() is None:
        pytest.skip(f"{kit.name}: open connections are not observable at its server")
    kit.put(N)
    assert wait_for(kit.open_connections) == 0, "connections open before the test"
    assert run(kit.block(), sqlite_ledger, queue)["landed"] >= 1
    assert wait_for(kit.open_connections) == 0, "the run left connections open"

    source = kit.block()
    source.test_connection()
    source.close()
    assert wait_for(kit.open_connections) == 0, "test_connection + close left connections"

    source = kit.block()
    list(source.discover(DiscoverContext(partition_date=source.today())))
    source.close()
    assert wait_for(kit.open_connections) == 0, "discover + close left connections"


# ----------------------------------------------------------------------------- 9. test_connection
def test_test_connection_says_ok_for_a_good_block(kit) -> None:
    kit.put(1)
    good = kit.block()
    try:
        report = good.test_connection()
    finally:
        good.close()
    assert isinstance(report, dict) and report.get("ok") is True, report


def test_test_connection_raises_a_clear_error_for_a_bad_block(kit) -> None:
    kit.put(1)
    bad = kit.unreachable()
    with pytest.raises(IngestError) as err:
        bad.test_connection()
    bad.close()
    message = str(err.value)
    assert type(bad).__name__ in message and "\n" not in message.strip(), message
