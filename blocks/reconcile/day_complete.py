"""Start a deployment once when every expected file of a day has landed, across sources.

A `DayCompleteRule` names the files a day needs (per source, a glob that may hold date
templates such as `BANK_{date:%Y%m%d}*.csv`) and the deployment to start with that day's
landed paths. It is evaluated for a (rule, day):

* at the end of every run of a source the rule names, for the run's partition date (one
  API call to list the rules, one ledger query per rule): the run that lands the last
  missing file, whichever source and whatever order, starts the day; a backfill too;
* by the `ingest-reconcile` flow (flows/reconcile.py) over the last days, on a schedule:
  it finishes a start that failed or crashed and reports bad rules.

Exactly once per (rule, day), even when runs of several sources evaluate at the same
moment, a source reruns or a file is re-landed with force: the evaluation that sees the
day complete first *claims* it with a unique insert into `ingest_state` (source
`ingest-reconcile`, key `<rule_id>|<date>`; the loser of a race writes nothing and starts
nothing), then starts the flow run with Prefect's idempotency key
`day-complete:<rule_id>:<date>`, then marks the claim `started` with the flow run id. A crash
between claim and start leaves the claim `claimed`: the next evaluation starts it with the
same key, so the Prefect server returns the run already created instead of a second one.
The landed paths are frozen in the claim, so a retry passes the same parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from fnmatch import fnmatchcase
from typing import Any, Protocol

import httpx
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from blocks.core import ledger_schema as t
from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError
from blocks.core.ledger import Ledger, utcnow
from blocks.core.logos import logo_url
from blocks.core.naming import SOURCE_ID_PATTERN, check_source_id

STATE_SOURCE = "ingest-reconcile"  # the claims' `source` in ingest_state
EVENT = "ingest.day.complete"
BLOCK_TYPE_SLUG = "day-complete-rule"
# Parameters the rule sets itself on the started run.
OWN_PARAMETERS = ("date", "landed_paths")
# Rows that mean "the file of that day is here" (a duplicate points at the same content).
_LANDED = ("landed", "duplicate")
_PROBE_DAY = date(2024, 2, 29)  # renders every strftime field a template may use


class ExpectedFile(BaseModel):
    """One file a day needs: a source and a glob on the item name."""

    source: str = Field(
        ...,
        description="Source id (the source block's `source_id`) the file lands from.",
    )
    name_glob: str = Field(
        ...,
        min_length=1,
        description=(
            "fnmatch glob on the item name (case-sensitive; `*` also matches '/'), with "
            "optional date templates: `BANK_{date:%Y%m%d}*.csv`, `{date-1:%Y-%m-%d}.json`."
        ),
    )

    @field_validator("source")
    @classmethod
    def _source_id(cls, value: str) -> str:
        return check_source_id(value)

    @field_validator("name_glob")
    @classmethod
    def _glob_renders(cls, value: str) -> str:
        render_date_template(value, _PROBE_DAY)  # ValueError naming the bad token
        return value

    def glob_for(self, day: date) -> str:
        return render_date_template(self.name_glob, day)


class DayCompleteRule(Block):
    """Start a deployment once per partition date when every expected file has landed.

    `expected` lists one entry per file the day needs (source + name glob, date templates
    allowed); the files may land in any order, from separate runs and sources, days late
    or through a backfill. The deployment is started once per date with the parameters
    `date` (ISO day) and `landed_paths` ({source: [landed paths of the matching files]}),
    plus `parameters`. Re-landing a file (force) or rerunning a source never starts the
    day again. Evaluated at the end of each run of a named source and by the
    `ingest-reconcile` flow.
    """

    _block_type_name = "Day Complete Rule"
    _block_type_slug = BLOCK_TYPE_SLUG
    _logo_url = logo_url(BLOCK_TYPE_SLUG)
    _description = (
        "Starts a deployment once per day when every expected file of that partition date "
        "has landed (across sources), with the day and all the landed paths."
    )
    _code_example = (
        "```python\nfrom blocks.reconcile.day_complete import DayCompleteRule, ExpectedFile\n\n"
        'DayCompleteRule(\n    rule_id="bank-recon",\n    expected=[\n'
        '        ExpectedFile(source="bank", name_glob="BANK_{date:%Y%m%d}*.csv"),\n'
        '        ExpectedFile(source="gateway", name_glob="GW_{date:%Y-%m-%d}.json"),\n'
        '    ],\n    deployment="reconcile/daily",\n).save("bank-recon")\n```\n'
    )

    rule_id: str = Field(
        ...,
        pattern=SOURCE_ID_PATTERN,
        description=(
            "Stable id of the rule: the exactly-once key per day is (rule_id, date). "
            "Changing it starts every complete day again."
        ),
    )
    expected: list[ExpectedFile] = Field(
        ...,
        min_length=1,
        description="Every file the day needs: source id and name glob (date templates allowed).",
    )
    deployment: str = Field(
        ...,
        description="Deployment to start, `<flow name>/<deployment name>`.",
        examples=["reconcile/daily"],
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Extra parameters of the started run, as JSON, e.g. "
            '{"tolerance": 0.01}. `date` and `landed_paths` are set by the rule.'
        ),
    )

    @field_validator("deployment")
    @classmethod
    def _flow_slash_deployment(cls, value: str) -> str:
        flow_name, _, name = value.partition("/")
        if not flow_name.strip() or not name.strip() or "/" in name:
            raise ValueError(f"{value!r} is not '<flow name>/<deployment name>'")
        return value

    @field_validator("parameters")
    @classmethod
    def _no_own_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(value) & set(OWN_PARAMETERS))
        if taken:
            raise ValueError(f"{', '.join(taken)} is set by the rule; remove it")
        json.dumps(value)  # stored in the claim and sent to the API: must be JSON
        return value

    @property
    def sources(self) -> list[str]:
        return sorted({e.source for e in self.expected})


# ----------------------------------------------------------------------------- matching
def landed_for(
    rule: DayCompleteRule, day: date, ledger: Ledger
) -> tuple[dict[str, list[str]], list[str]]:
    """({source: sorted landed paths matching the rule}, [expected entries still missing]).

    One query: the landed rows of the rule's sources for that partition date (served by
    the (source, partition_date) index).
    """
    c = t.items.c
    stmt = select(c.source, c.name, c.landed_path).where(
        c.source.in_(rule.sources),
        c.partition_date == day.isoformat(),
        c.status.in_(_LANDED),
    )
    with ledger.transaction() as conn:
        rows = conn.execute(stmt).all()
    paths: dict[str, set[str]] = {}
    missing: list[str] = []
    for entry in rule.expected:
        glob = entry.glob_for(day)
        hits = [r for r in rows if r.source == entry.source and fnmatchcase(r.name, glob)]
        if not hits:
            missing.append(f"{entry.source}:{glob}")
        for r in hits:
            paths.setdefault(entry.source, set()).add(r.landed_path or "")
    return {s: sorted(p) for s, p in sorted(paths.items())}, missing


# ----------------------------------------------------------------------------- starting
class Starter(Protocol):
    """Starts the rule's deployment; the Prefect API in production (`PrefectStarter`)."""

    def check(self, deployment: str) -> None:
        """ConfigError naming `DayCompleteRule.deployment` when it cannot be started."""

    def start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> str:
        """Create the flow run (the same key returns the same run) and return its id."""


class PrefectStarter:
    """Creates the flow run through the Prefect API with an idempotency key."""

    def __init__(self) -> None:
        self._ids: dict[str, Any] = {}

    def _deployment(self, client: Any, name: str) -> Any:
        from prefect.exceptions import ObjectNotFound

        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(
                "DayCompleteRule.deployment",
                f"no deployment {name!r} on the Prefect server; deploy it first "
                "(prefect deploy) or fix the name ('<flow name>/<deployment name>')",
            ) from None

    def check(self, deployment: str) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            dep = self._deployment(client, deployment)
        props = (dep.parameter_openapi_schema or {}).get("properties") or {}
        lacking = [p for p in OWN_PARAMETERS if p not in props]
        if props and lacking:
            raise ConfigError(
                "DayCompleteRule.deployment",
                f"deployment {deployment!r} has no parameter {' or '.join(lacking)}; "
                "its flow must take date and landed_paths",
            )
        self._ids[deployment] = dep.id

    def start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> str:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            dep_id = self._ids.get(deployment) or self._deployment(client, deployment).id
            run = client.create_flow_run_from_deployment(
                dep_id,
                parameters=parameters,
                idempotency_key=idempotency_key,
                tags=["day-complete"],
            )
        return str(run.id)


@dataclass
class Outcome:
    """What one evaluation of (rule, date) found or did."""

    rule: str
    date: str
    status: str  # incomplete | started | already-started | claimed (by another) | failed
    missing: list[str] = field(default_factory=list)
    flow_run_id: str | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)


def claim_key(rule_id: str, day: date) -> str:
    return f"{rule_id}|{day.isoformat()}"


def idempotency_key(rule_id: str, day: date) -> str:
    return f"day-complete:{rule_id}:{day.isoformat()}"


def _claim(ledger: Ledger, key: str, value: dict[str, Any]) -> bool:
    """Insert the claim if absent, in one transaction; False when someone holds it."""
    try:
        with ledger.transaction() as conn:
            conn.execute(
                insert(t.state).values(
                    source=STATE_SOURCE,
                    key=key,
                    value=json.dumps(value, sort_keys=True),
                    updated_at=utcnow(),
                )
            )
    except IntegrityError:
        return False
    return True


def evaluate(rule: DayCompleteRule, day: date, ledger: Ledger, starter: Starter) -> Outcome:
    """Start `rule`'s deployment for `day` if every expected file has landed and the day
    was not started yet. Raises ConfigError (deployment unknown or unfit) before claiming."""
    key = claim_key(rule.rule_id, day)
    out = Outcome(rule.rule_id, day.isoformat(), "incomplete")
    claim = ledger.get_state(STATE_SOURCE, key)
    if claim is None:
        paths, out.missing = landed_for(rule, day, ledger)
        if out.missing:
            return out
        starter.check(rule.deployment)  # a bad deployment fails before the day is claimed
        mine = {"status": "claimed", "landed_paths": paths, "claimed_at": utcnow().isoformat()}
        if not _claim(ledger, key, mine):
            # A concurrent evaluation claimed it first: it starts the day, not us.
            out.status = "claimed"
            return out
        claim = mine
    if claim.get("status") == "started":
        out.status, out.flow_run_id = "already-started", claim.get("flow_run_id")
        return out
    # Claimed and not (known to be) started: ours just now, or one whose start failed or
    # crashed. The idempotency key makes a repeated start return the same flow run.
    parameters = {
        **rule.parameters,
        "date": day.isoformat(),
        "landed_paths": claim["landed_paths"],
    }
    run_id = starter.start(rule.deployment, parameters, idempotency_key(rule.rule_id, day))
    ledger.set_state(
        STATE_SOURCE,
        key,
        {**claim, "status": "started", "flow_run_id": run_id, "started_at": utcnow().isoformat()},
    )
    out.status, out.flow_run_id = "started", run_id
    _emit(rule, day, run_id, claim["landed_paths"])
    return out


def _emit(rule: DayCompleteRule, day: date, run_id: str, paths: dict[str, list[str]]) -> None:
    try:
        from prefect.events import emit_event

        emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": f"ingest.day-complete.{rule.rule_id}",
                "prefect.resource.name": rule.rule_id,
            },
            related=[
                {
                    "prefect.resource.id": f"prefect.flow-run.{run_id}",
                    "prefect.resource.role": "flow-run",
                }
            ],  # fmt: skip
            payload={
                "date": day.isoformat(),
                "deployment": rule.deployment,
                "flow_run_id": run_id,
                "files": sum(len(p) for p in paths.values()),
            },
        )
    except Exception:  # the event is informative; the claim row is the record
        pass


# ----------------------------------------------------------------------------- rules
def load_rules(names: Iterable[str] | None = None) -> tuple[list[DayCompleteRule], list[Outcome]]:
    """The saved rules (all, or those block names), and one `failed` Outcome per saved
    rule that does not validate or name that is not saved (the field in its error)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    wanted = set(names) if names else None
    with get_client(sync_client=True) as client:
        try:
            docs = client.read_block_documents_by_type(BLOCK_TYPE_SLUG)
        except ObjectNotFound:  # block type never registered: no rule saved
            docs = []
        except httpx.HTTPStatusError as exc:  # the sync client does not map a 404
            if exc.response.status_code != 404:
                raise
            docs = []
    rules: list[DayCompleteRule] = []
    bad: list[Outcome] = []
    for doc in docs:
        if wanted is not None and doc.name not in wanted:
            continue
        try:
            rule = DayCompleteRule.model_validate(doc.data)
        except ValidationError as exc:
            from pipeline.block_loading import one_line

            where = f"{BLOCK_TYPE_SLUG}/{doc.name}"
            bad.append(Outcome(doc.name or "?", "", "failed", error=f"{where}: {one_line(exc)}"))
            continue
        rules.append(rule)
    for name in sorted((wanted or set()) - {d.name for d in docs}):
        bad.append(
            Outcome(name, "", "failed", error=f"rules: no {BLOCK_TYPE_SLUG} block named {name!r}")
        )
    return rules, bad


def known_sources(ledger: Ledger, sources: Iterable[str]) -> set[str]:
    """Those of `sources` that ever ran (a row in ingest_runs) or have a saved block whose
    `source_id` is it."""
    wanted = set(sources)
    with ledger.transaction() as conn:
        found = set(
            conn.execute(
                select(t.runs.c.source).where(t.runs.c.source.in_(wanted)).distinct()
            ).scalars()
        )
    if wanted - found:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            docs = client.read_block_documents(include_secrets=False)
        found |= {d.data.get("source_id") for d in docs if isinstance(d.data, dict)} & wanted
    return found


def check_sources(rule: DayCompleteRule, ledger: Ledger) -> None:
    """ConfigError naming `expected[i].source` for a source nothing knows."""
    known = known_sources(ledger, rule.sources)
    for i, entry in enumerate(rule.expected):
        if entry.source not in known:
            raise ConfigError(
                f"DayCompleteRule {rule.rule_id}: expected[{i}].source",
                f"unknown source {entry.source!r}: no run in the ledger and no saved "
                "source block with that source_id",
            )


def evaluate_all(
    rules: Iterable[DayCompleteRule],
    days: Iterable[date],
    ledger: Ledger,
    starter: Starter,
    check_unknown_sources: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Evaluate every rule for every day; one rule's bad configuration is a `failed`
    outcome naming the field and never stops the others."""
    outcomes: list[Outcome] = []
    days = list(days)
    for rule in rules:
        try:
            if check_unknown_sources:
                check_sources(rule, ledger)
        except ConfigError as exc:
            outcomes.append(Outcome(rule.rule_id, "", "failed", error=str(exc)))
            continue
        for day in days:
            try:
                outcome = evaluate(rule, day, ledger, starter)
            except ConfigError as exc:  # the same for every day: report it once
                outcomes.append(Outcome(rule.rule_id, day.isoformat(), "failed", error=str(exc)))
                break
            except Exception as exc:  # API or database down: the claim (if any) is kept
                error = f"{type(exc).__name__}: {exc}"
                outcomes.append(Outcome(rule.rule_id, day.isoformat(), "failed", error=error))
                continue
            outcomes.append(outcome)
            if log and outcome.status == "started":
                log(
                    f"day complete: {rule.rule_id} {day} -> started {rule.deployment} "
                    f"(flow run {outcome.flow_run_id})"
                )
    return outcomes


def after_source_run(source_id: str, day: date, ledger: Ledger, log: Any) -> list[Outcome]:
    """The end-of-run evaluation of a source flow: every saved rule naming `source_id`, for
    the run's partition date. Never raises: a failure is logged as an error (the landed
    files are kept; the `ingest-reconcile` flow or the next run evaluates the day again)."""
    try:
        rules, _ = load_rules()
        mine = [r for r in rules if source_id in r.sources]
        if not mine:
            return []
        outcomes = evaluate_all(mine, [day], ledger, PrefectStarter(), log=log.info)
    except Exception as exc:
        log.error("day-complete rules not evaluated for %s %s: %s", source_id, day, exc)
        return []
    for o in outcomes:
        if o.status == "failed":
            log.error("day-complete rule %s not evaluated for %s: %s", o.rule, day, o.error)
    return outcomes
