"""Day Complete Rules on the SQLite and PostgreSQL ledgers: a day starts once when its
last expected file lands, whatever the order, reruns, forced re-lands, late partners,
concurrent evaluations or a crash between the claim and the start.

The one stand-in is `FakeServer`, at the narrowest boundary: Prefect's
`create_flow_run_from_deployment`, which (like the real server, proven in
tests/test_day_complete_e2e.py) returns the same flow run for the same idempotency key.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from blocks.core.errors import ConfigError
from blocks.core.ledger import LandedRecord, Ledger
from blocks.reconcile.day_complete import (
    STATE_SOURCE,
    DayCompleteRule,
    ExpectedFile,
    claim_key,
    evaluate,
    evaluate_all,
    idempotency_key,
    landed_for,
)

EXAMPLES = int(os.environ.get("INGEST_PROPERTY_EXAMPLES", "5"))
DAY = dt.date(2026, 3, 2)


class FakeServer:
    """Prefect's create-flow-run-from-deployment: one run per idempotency key."""

    def __init__(self, failures: list[bool] | None = None) -> None:
        self.runs: dict[str, tuple[str, dict[str, Any]]] = {}
        self.calls = 0
        self.failures = list(failures or [])
        self.lock = threading.Lock()

    def check(self, deployment: str) -> None:
        if deployment != "recon/daily":
            raise ConfigError("DayCompleteRule.deployment", f"no deployment {deployment!r}")

    def start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> str:
        with self.lock:
            self.calls += 1
            if self.failures and self.failures.pop(0):
                raise ConnectionError("API unreachable")  # the claim is taken, no run yet
            run = self.runs.setdefault(idempotency_key, (uuid.uuid4().hex, parameters))
            return run[0]


def rule_for(a: str, b: str, rule_id: str = "recon", **kw: Any) -> DayCompleteRule:
    return DayCompleteRule(
        rule_id=rule_id,
        expected=[
            ExpectedFile(source=a, name_glob="A_{date:%Y%m%d}.csv"),
            ExpectedFile(source=b, name_glob="B_{date:%Y%m%d}*.csv"),
        ],
        deployment=kw.pop("deployment", "recon/daily"),
        **kw,
    )


def land(ledger: Ledger, source: str, name: str, day: dt.date, force: bool = False) -> str:
    path = f"/landing/{source}/{day:%Y/%m/%d}/{name}"
    ledger.record_landed(
        LandedRecord(
            source=source,
            name=name,
            sha256=f"{source}:{name}".encode().hex()[:64].ljust(64, "0"),
            size=1,
            landed_path=path,
            flow_run_id=None,
            partition_date=day,
        ),
        replace=force,
    )
    return path


def test_late_partner_starts_the_day_once_with_both_paths(ledger: Ledger):
    rule = rule_for("bank", "gw", parameters={"tolerance": 0.01})
    server = FakeServer()
    bank = land(ledger, "bank", f"A_{DAY:%Y%m%d}.csv", DAY)
    land(ledger, "gw", f"B_{DAY - dt.timedelta(days=1):%Y%m%d}.csv", DAY)  # yesterday's name
    out = evaluate(rule, DAY, ledger, server)
    assert (out.status, out.missing) == ("incomplete", [f"gw:B_{DAY:%Y%m%d}*.csv"])
    assert ledger.get_state(STATE_SOURCE, claim_key("recon", DAY)) is None
    # The partner lands two days late (a rerun or backfill of its day).
    gw = land(ledger, "gw", f"B_{DAY:%Y%m%d}_1.csv", DAY)
    out = evaluate(rule, DAY, ledger, server)
    assert out.status == "started"
    ((run_id, params),) = server.runs.values()
    assert out.flow_run_id == run_id
    assert params == {
        "tolerance": 0.01,
        "date": DAY.isoformat(),
        "landed_paths": {"bank": [bank], "gw": [gw]},
    }
    assert list(server.runs) == [idempotency_key("recon", DAY)]
    claim = ledger.get_state(STATE_SOURCE, claim_key("recon", DAY))
    assert (claim["status"], claim["flow_run_id"]) == ("started", run_id)
    # Reruns, a forced re-land, a second matching file: never a second start.
    land(ledger, "bank", f"A_{DAY:%Y%m%d}.csv", DAY, force=True)
    land(ledger, "gw", f"B_{DAY:%Y%m%d}_2.csv", DAY)
    for _ in range(2):
        assert evaluate(rule, DAY, ledger, server).status == "already-started"
    assert server.calls == 1 and len(server.runs) == 1


def test_other_days_and_sources_do_not_count(ledger: Ledger):
    rule = rule_for("bank", "gw")
    land(ledger, "bank", f"A_{DAY:%Y%m%d}.csv", DAY)
    land(ledger, "gw", f"B_{DAY:%Y%m%d}.csv", DAY + dt.timedelta(days=1))  # other partition
    land(ledger, "other", f"B_{DAY:%Y%m%d}.csv", DAY)  # right name, wrong source
    ledger.record_failure("gw", f"B_{DAY:%Y%m%d}.csv", None, "boom", partition_date=DAY)
    paths, missing = landed_for(rule, DAY, ledger)
    assert list(paths) == ["bank"] and missing == [f"gw:B_{DAY:%Y%m%d}*.csv"]


def test_crash_between_claim_and_start_is_retried_without_a_second_run(ledger: Ledger):
    rule = rule_for("bank", "gw")
    land(ledger, "bank", f"A_{DAY:%Y%m%d}.csv", DAY)
    land(ledger, "gw", f"B_{DAY:%Y%m%d}.csv", DAY)
    server = FakeServer(failures=[True])
    (out,) = evaluate_all([rule], [DAY], ledger, server)
    assert out.status == "failed" and "API unreachable" in out.error
    claim = ledger.get_state(STATE_SOURCE, claim_key("recon", DAY))
    assert claim["status"] == "claimed" and set(claim["landed_paths"]) == {"bank", "gw"}
    assert server.runs == {}
    # A file landing meanwhile does not change what the day was claimed with.
    land(ledger, "gw", f"B_{DAY:%Y%m%d}_late.csv", DAY)
    (out,) = evaluate_all([rule], [DAY], ledger, server)
    assert out.status == "started"
    ((_, params),) = server.runs.values()
    assert params["landed_paths"] == claim["landed_paths"]
    # Started but the 'started' mark was lost (crash after the API call): the key returns
    # the same run, so the retry adds none.
    ledger.set_state(STATE_SOURCE, claim_key("recon", DAY), claim)
    assert evaluate(rule, DAY, ledger, server).flow_run_id == out.flow_run_id
    assert len(server.runs) == 1


def test_unknown_deployment_fails_naming_the_field_and_claims_nothing(ledger: Ledger):
    rule = rule_for("bank", "gw", deployment="recon/nope")
    land(ledger, "bank", f"A_{DAY:%Y%m%d}.csv", DAY)
    land(ledger, "gw", f"B_{DAY:%Y%m%d}.csv", DAY)
    with pytest.raises(ConfigError, match=r"^DayCompleteRule\.deployment: no deployment"):
        evaluate(rule, DAY, ledger, FakeServer())
    assert ledger.get_state(STATE_SOURCE, claim_key("recon", DAY)) is None
    # Fixed: the complete day starts.
    assert evaluate(rule_for("bank", "gw"), DAY, ledger, FakeServer()).status == "started"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"expected": [{"source": "../bank", "name_glob": "x"}]}, "expected.0.source"),
        ({"expected": [{"source": "bank", "name_glob": "A_{date:%Y"}]}, "expected.0.name_glob"),
        ({"expected": [{"source": "bank", "name_glob": ""}]}, "expected.0.name_glob"),
        ({"expected": []}, "expected"),
        ({"deployment": "no-slash"}, "deployment"),
        ({"deployment": "a/b/c"}, "deployment"),
        ({"parameters": {"date": "2026-01-01"}}, "parameters"),
        ({"rule_id": "bad id"}, "rule_id"),
    ],
)
def test_bad_rule_fields_are_named(fields: dict[str, Any], where: str):
    base = {
        "rule_id": "r",
        "expected": [{"source": "bank", "name_glob": "A_{date:%Y%m%d}.csv"}],
        "deployment": "recon/daily",
    }
    with pytest.raises(ValidationError) as info:
        DayCompleteRule(**{**base, **fields})
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert where in locs, locs


# ----------------------------------------------------------------------------- property
_landing = st.tuples(
    st.sampled_from(["a", "b"]),  # source
    st.integers(min_value=0, max_value=2),  # day index
    st.integers(min_value=0, max_value=1),  # which file of the day (B has several)
    st.booleans(),  # forced re-land
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    landings=st.lists(_landing, max_size=10),
    threads=st.integers(min_value=1, max_value=4),
    failures=st.lists(st.booleans(), max_size=6),
)
def test_property_exactly_one_start_per_complete_day(
    ledger: Ledger, landings: list, threads: int, failures: list[bool]
):
    """Random arrival orders, reruns, forced re-lands and API failures, landed and
    evaluated by up to 4 threads at once (each thread: land, then evaluate its day, as a
    source run does): after a final sweep every complete day has exactly one run, with
    a path per expected source, and an incomplete day none."""
    tag = uuid.uuid4().hex[:8]  # the ledger fixture is shared by the examples
    a, b = f"a-{tag}", f"b-{tag}"
    rule = rule_for(a, b, rule_id=f"r-{tag}")
    days = [DAY + dt.timedelta(days=n) for n in range(3)]
    server = FakeServer(failures)
    errors: list[BaseException] = []

    def one(landing: tuple) -> None:
        src, d, variant, force = landing
        day = days[d]
        name = f"A_{day:%Y%m%d}.csv" if src == "a" else f"B_{day:%Y%m%d}_{variant}.csv"
        try:
            land(ledger, a if src == "a" else b, name, day, force)
            for o in evaluate_all([rule], [day], ledger, server):
                assert o.status != "failed" or "API unreachable" in (o.error or ""), o
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    for i in range(0, len(landings), threads):
        batch = [threading.Thread(target=one, args=(x,)) for x in landings[i : i + threads]]
        for th in batch:
            th.start()
        for th in batch:
            th.join()
    assert not errors, errors
    server.failures = []
    evaluate_all([rule], days, ledger, server)  # the ingest-reconcile sweep

    for n, day in enumerate(days):
        complete = {s for s, d, _, _ in landings if d == n} == {"a", "b"}
        key = idempotency_key(rule.rule_id, day)
        claim = ledger.get_state(STATE_SOURCE, claim_key(rule.rule_id, day))
        if not complete:
            assert key not in server.runs and claim is None
            continue
        run_id, params = server.runs[key]
        assert (claim["status"], claim["flow_run_id"]) == ("started", run_id)
        assert params["date"] == day.isoformat()
        assert set(params["landed_paths"]) == {a, b}
    assert len(server.runs) == sum(
        {s for s, d, _, _ in landings if d == n} == {"a", "b"} for n in range(3)
    )


def test_no_rule_type_registered_means_no_rules_not_an_error(monkeypatch, prefect_api):
    """A server where the Day Complete Rule type was never registered answers 404 to the
    listing; the sync client raises that as an HTTP error, not ObjectNotFound. Every source
    run on such a server used to log an ERROR for it."""
    import httpx
    from prefect.client.orchestration._blocks_types.client import BlocksTypeClient

    from blocks.reconcile import day_complete

    def not_registered(self, slug, *args, **kwargs):
        request = httpx.Request("GET", f"http://127.0.0.1/api/block_types/slug/{slug}")
        raise httpx.HTTPStatusError(
            "404", request=request, response=httpx.Response(404, request=request)
        )

    monkeypatch.setattr(BlocksTypeClient, "read_block_documents_by_type", not_registered)
    assert day_complete.load_rules() == ([], [])

    def server_error(self, slug, *args, **kwargs):
        request = httpx.Request("GET", f"http://127.0.0.1/api/block_types/slug/{slug}")
        raise httpx.HTTPStatusError(
            "500", request=request, response=httpx.Response(500, request=request)
        )

    monkeypatch.setattr(BlocksTypeClient, "read_block_documents_by_type", server_error)
    with pytest.raises(httpx.HTTPStatusError):  # other errors still surface
        day_complete.load_rules()
