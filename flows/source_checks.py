"""Checks the health flow runs beyond the ledger: each source's connection, and freshness.

**Connection checks.** The source blocks are the ones the Prefect deployments run: every
deployment whose `source_block` parameter names a block and whose entrypoint is a source
flow of `blocks/registry.py` (its block type slug) gives `<slug>/<source_block>`, the same
reference `ingest-ops test-connection` takes (paused deployments are left out). Each
block's `test_connection()` runs in its own daemon thread, all at once, and each is bounded
by `timeout`: a server that accepts and never answers costs the health run `timeout`
seconds, not a hung run (the thread is left behind; it dies with the process). A failure
is one line naming the block and its source, with any secret of the block masked, and the
event `ingest.source.connection-failed`.

**Freshness.** `{source_id: hours}` ("*" for every source): a source with nothing newly
landed for that long is stale, counted from its last landed item, or from its first run when
it never landed anything; the event `ingest.source.stale`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from sqlalchemy import func, select

from blocks.core import ledger_schema as t
from blocks.core.errors import ConfigError
from blocks.core.events import emit_source_event
from blocks.core.ledger import Ledger
from blocks.core.naming import check_source_id

CONNECTION_FAILED_EVENT = "ingest.source.connection-failed"
STALE_EVENT = "ingest.source.stale"
MAX_HOURS = 24 * 365
ALL_SOURCES = "*"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- which blocks
def slug_of_entrypoint(entrypoint: str | None) -> str | None:
    """The source block type slug of a deployment entrypoint, or None when it is not a
    source flow of the registry. `flows.sql:ingest_sql` and `flows/sql.py:ingest_sql`
    both name the SQL flow."""
    from blocks.registry import SOURCES

    if not entrypoint or ":" not in entrypoint:
        return None
    path, _, func_name = entrypoint.rpartition(":")
    module = path.removesuffix(".py").replace("/", ".").lstrip(".")
    for source in SOURCES:
        if source.flow == f"{module}:{func_name}":
            return source.slug
    return None


def source_blocks_of_deployments() -> dict[str, list[str]] | None:
    """{"<slug>/<source_block>": [deployments running it]} from the Prefect API; None when
    the API cannot be read (health then reports from the ledger only). Paused deployments
    are left out: an operator who paused a source's runs does not want its alerts."""
    from prefect.client.orchestration import get_client

    found: dict[str, list[str]] = {}
    try:
        with get_client(sync_client=True) as client:
            flows = {f.id: f.name for f in client.read_flows()}
            offset = 0
            while True:
                page = client.read_deployments(offset=offset, limit=200)
                for dep in page:
                    name = (dep.parameters or {}).get("source_block")
                    slug = slug_of_entrypoint(dep.entrypoint)
                    if isinstance(name, str) and name and slug and not dep.paused:
                        deployment = f"{flows.get(dep.flow_id, '?')}/{dep.name}"
                        found.setdefault(f"{slug}/{name}", []).append(deployment)
                if len(page) < 200:
                    break
                offset += 200
    except Exception as exc:  # noqa: BLE001 (health must still report from the ledger)
        log.warning("cannot read deployments from the Prefect API (%s)", type(exc).__name__)
        return None
    return found


@dataclass
class LoadedSource:
    """One source block to check: its reference, and the block or why it did not load."""

    block: str  # "<slug>/<name>"
    deployments: list[str]
    source: Any = None  # the loaded SourceBlock
    error: str = ""  # why it could not be loaded

    @property
    def source_id(self) -> str | None:
        return getattr(self.source, "source_id", None)


def load_sources(refs: dict[str, list[str]]) -> list[LoadedSource]:
    """Load each referenced block (a block that cannot be loaded is a failed check)."""
    from prefect.blocks.core import Block
    from pydantic import ValidationError

    from blocks.core import block_lookup
    from pipeline.block_loading import one_line

    block_lookup.install()
    loaded = []
    for ref, deployments in sorted(refs.items()):
        item = LoadedSource(ref, sorted(deployments))
        try:
            item.source = Block.load(ref)
        except Exception as exc:  # noqa: BLE001 (one failed check, not a failed health run)
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                item.error = f"block is invalid: {one_line(cause)}"
            else:
                item.error = f"cannot load the block: {_first_line(exc)}"
        loaded.append(item)
    return loaded


# --------------------------------------------------------------------------- connections
@dataclass
class ConnectionCheck:
    """The outcome of one block's `test_connection` (ok, or the one-line reason)."""

    block: str
    source_id: str | None
    deployments: list[str]
    ok: bool
    seconds: float
    error: str = ""

    def line(self) -> str:
        who = f"{self.block} (source {self.source_id})" if self.source_id else self.block
        return f"{who}: {self.error}"

    @property
    def resource(self) -> str:
        """The source id the event is about (the block name when the block did not load)."""
        return self.source_id or self.block.rpartition("/")[2]


@dataclass
class _Slot:
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    seconds: float = 0.0
    error: str = ""


class ConnectionChecks:
    """`test_connection` of every loaded source, started at once (one daemon thread each);
    `collect()` waits at most `timeout` seconds from the start for each."""

    def __init__(self, sources: list[LoadedSource], timeout: float) -> None:
        self.timeout = timeout
        self.slots: list[tuple[LoadedSource, _Slot]] = []
        for item in sources:
            slot = _Slot()
            if item.source is None:
                slot.error = item.error
                slot.done.set()
            else:
                threading.Thread(
                    target=self._run,
                    args=(item.source, slot),
                    name=f"test-connection {item.block}",
                    daemon=True,  # a hung check must not keep the process alive
                ).start()
            self.slots.append((item, slot))

    @staticmethod
    def _run(source: Any, slot: _Slot) -> None:
        try:
            source.test_connection()
        except BaseException as exc:  # noqa: BLE001 (reported as the check's failure)
            message = mask_secrets(source, _first_line(exc))
            slot.error = f"connection check failed: {type(exc).__name__}: {message}"
        finally:
            slot.seconds = time.monotonic() - slot.started
            slot.done.set()

    def collect(self) -> list[ConnectionCheck]:
        results = []
        for item, slot in self.slots:
            left = slot.started + self.timeout - time.monotonic()
            finished = slot.done.wait(max(left, 0))
            if finished:
                error, seconds = slot.error, slot.seconds
            else:
                error = f"connection check timed out after {self.timeout:g} s (no answer)"
                seconds = self.timeout
            results.append(
                ConnectionCheck(
                    block=item.block,
                    source_id=item.source_id,
                    deployments=item.deployments,
                    ok=not error,
                    seconds=round(seconds, 2),
                    error=error,
                )
            )
        return results


def emit_connection_failed(check: ConnectionCheck) -> None:
    """`ingest.source.connection-failed` on `ingest.source.<source id>`."""
    emit_source_event(
        CONNECTION_FAILED_EVENT,
        check.resource,
        {
            "message": check.line(),
            "block": check.block,
            "deployments": check.deployments,
            "seconds": check.seconds,
        },
    )


def mask_secrets(block: Any, text: str) -> str:
    """`text` with every secret value of `block` (and of the blocks nested in it) masked:
    our sources never put a secret in an error, a third-party library might."""
    for secret in sorted(_secrets(block, set()), key=len, reverse=True):
        text = text.replace(secret, "**********")
    return text


def _secrets(value: Any, seen: set[int]) -> set[str]:
    found: set[str] = set()
    if id(value) in seen:
        return found
    seen.add(id(value))
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return {secret} if len(secret) >= 4 else found  # masking "a" would shred the line
    if isinstance(value, SecretBytes):
        return _secrets(SecretStr(value.get_secret_value().decode(errors="replace")), seen)
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found |= _secrets(getattr(value, name, None), seen)
    elif hasattr(value, "get_secret_value"):  # prefect's SecretDict, pydantic's Secret[...]
        found |= _secrets(value.get_secret_value(), seen)
    elif isinstance(value, dict):
        for item in value.values():
            found |= _secrets(item, seen)
    elif isinstance(value, list | tuple | set):
        for item in value:
            found |= _secrets(item, seen)
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


# --------------------------------------------------------------------------- freshness
def parse_freshness(value: dict[str, Any] | None) -> dict[str, float]:
    """{source id or "*": hours}, each a number of hours in (0, 8760]; ConfigError naming
    `freshness.<key>` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("freshness", 'expected {"<source id>": hours, "*": hours}')
    rules: dict[str, float] = {}
    for key, hours in value.items():
        where = f"freshness.{key}"
        if key != ALL_SOURCES:
            try:
                check_source_id(str(key))
            except ValueError as exc:
                raise ConfigError(where, f"not a source id ({exc})") from None
        if isinstance(hours, bool) or not isinstance(hours, int | float | str):
            raise ConfigError(where, f"hours must be a number, not {type(hours).__name__}")
        try:
            number = float(hours)
        except ValueError:
            raise ConfigError(where, f"hours must be a number, not {hours!r}") from None
        if not math.isfinite(number) or not 0 < number <= MAX_HOURS:
            raise ConfigError(where, f"hours must be more than 0 and at most {MAX_HOURS}")
        rules[str(key)] = number
    return rules


def check_freshness_sources(rules: dict[str, float], known: set[str]) -> None:
    """ConfigError naming the first rule whose source nothing knows (a typo would
    otherwise watch a source that does not exist)."""
    for key in rules:
        if key != ALL_SOURCES and key not in known:
            listed = ", ".join(sorted(known)[:20]) or "none"
            raise ConfigError(
                f"freshness.{key}",
                f"unknown source {key!r}: no run in the ledger, no deployment's source block "
                f"and no `sources`/`expected` entry has this source id (known: {listed})",
            )


def last_landed(ledger: Ledger, source: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(newest landed item's time, first run's start) of a source in the ledger."""
    i, r = t.items.c, t.runs.c
    with ledger.transaction() as conn:
        landed = conn.execute(
            select(func.max(i.created_at)).where(i.source == source, i.status == "landed")
        ).scalar()
        first_run = conn.execute(select(func.min(r.started_at)).where(r.source == source)).scalar()
    return _aware(landed), _aware(first_run)


def stale_message(
    source: str,
    hours: float,
    now: dt.datetime,
    landed_at: dt.datetime | None,
    first_run: dt.datetime | None,
) -> str | None:
    """Why the source is stale (nothing newly landed for `hours`), or None."""
    limit = dt.timedelta(hours=hours)
    if landed_at is not None:
        if now - landed_at <= limit:
            return None
        return (
            f"{source}: nothing new landed for {_age(now - landed_at)} (last item landed "
            f"{landed_at.isoformat(timespec='seconds')}; freshness limit {hours:g} h)"
        )
    if first_run is not None and now - first_run <= limit:
        return None  # a new source gets its limit from its first run
    since = (
        f"since its first run {first_run.isoformat(timespec='seconds')}"
        if first_run
        else "ever (no run in the ledger)"
    )
    return f"{source}: nothing landed {since} (freshness limit {hours:g} h)"


def emit_stale(source: str, message: str, hours: float, landed_at: dt.datetime | None) -> None:
    """`ingest.source.stale` on `ingest.source.<source>`."""
    emit_source_event(
        STALE_EVENT,
        source,
        {
            "message": message,
            "hours": hours,
            "last_landed": landed_at.isoformat(timespec="seconds") if landed_at else None,
        },
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _age(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{delta.total_seconds() / 60:.0f} min"
