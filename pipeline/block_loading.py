"""Loading the blocks a flow run names, with errors that say which parameter is wrong."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block
from pydantic import ValidationError

from blocks.core import block_lookup
from blocks.core.errors import ConfigError
from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.ledger import Ledger

B = TypeVar("B", bound=Block)


def load_named_block(cls: type[B], name: str, parameter: str) -> B:
    """`cls.load(name)`, or ConfigError naming the flow parameter and the block type.

    Installs the block lookup first (`blocks.core.block_lookup.install()`): every flow
    (each source flow, backfill, health) loads its blocks here, and without it the first
    load would import every installed Prefect collection (~170 MB) to resolve the saved
    block's type and the blocks nested in it.
    """
    block_lookup.install()
    if not name:
        raise ConfigError(parameter, f"name a saved {cls.get_block_type_name()!r} block")
    try:
        return cls.load(name)
    except RuntimeError as exc:
        # A saved block whose fields fail validation (Prefect wraps the ValidationError):
        # one line naming each field, not pydantic's multi-line dump.
        if not isinstance(exc.__cause__, ValidationError):
            raise
        raise ConfigError(
            parameter, f"block {name!r} is invalid: {one_line(exc.__cause__)}"
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            parameter,
            f"no {cls.get_block_type_name()!r} block named {name!r} could be loaded ({exc}); "
            f"create it in the UI or with {cls.__name__}(...).save({name!r})",
        ) from exc


def one_line(exc: ValidationError) -> str:
    """A pydantic ValidationError as one line: `field: message; ...` (no input values,
    which could hold a secret)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(message if not loc or "." in message.split(":")[0] else f"{loc}: {message}")
    return "; ".join(parts) or type(exc).__name__


def load_shared_blocks(
    ledger_block: str | None, queue_block: str | None
) -> tuple[Ledger, IngestionQueue]:
    """The named ledger and queue blocks; empty names mean the embedded defaults
    (SQLite ledger and landing area under $INGEST_HOME, default ~/.ingest)."""
    ledger = load_named_block(Ledger, ledger_block, "ledger_block") if ledger_block else Ledger()
    queue = (
        load_named_block(IngestionQueue, queue_block, "queue_block")
        if queue_block
        else IngestionQueue()
    )
    return ledger, queue
