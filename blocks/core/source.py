"""The source interface: how a source plugs into the one pipeline.

A source is a Prefect Block that subclasses `SourceBlock` and implements:

- `preflight()`: check configuration before any I/O; raise `ConfigError` naming the field.
- `discover(ctx)`: list candidates, once per run (paged inside if the source pages). Each
  `Candidate` has a safe relative `name`, and `size`/`mtime`/`version` when the source
  knows them. `version` is the cheap change fingerprint (ETag, size+mtime, ...) that lets
  the dedupe step skip an unchanged item without fetching it.
- `fetch(candidate, out)`: stream the item's bytes into the binary writer `out` (it hashes
  and counts as it writes; never hold the whole item in memory). It may return a mapping
  of state (e.g. a watermark) that the record step writes in the same transaction as the
  ledger row, and may raise `SkipItem` to skip an item (e.g. an empty increment).
- `prefetch(candidates)`: optional; called once at the start of a `land-batch` task with
  the small items it is about to fetch one after another on this thread, so a source
  with costly round trips can get them in bulk (bounded) for `fetch` to serve.
- `content_dedupe(candidate)`: optional; False when an item must be landed even if a
  landed item already has the same content (row/record windows). Default True (files).
- `after_landing(candidate)`: optional action at the source once the item is recorded
  (keep, delete, archive). A failure here is logged, never loses the landed item.
- `candidates_for(items, ctx)`: optional (`takes_named_items = True`); stat exactly the
  items an event names instead of listing (`pipeline/event_payloads.py`).
- Run hooks, all optional, called by the one flow builder (`pipeline/source_flow.py`):
  `apply_run_options(options)` takes the flow's generic `options` parameter (default: no
  option is known, any key is a ConfigError); `check_before_run` asks for a retried
  `test_connection` before the run; `run_session()` wraps the run (yield False: another run
  holds the source, nothing is done); `runs_again(ledger, summary, runs)` asks for one
  more pipeline pass (e.g. a split increment not yet caught up).

Everything else (dedupe, staging, checksums, landing, queue message, ledger, retries,
events, summary) is the pipeline's job: `pipeline/engine.py`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, BinaryIO, ClassVar, Literal
from zoneinfo import ZoneInfo

from prefect.blocks.core import Block
from pydantic import AliasChoices, Field, field_validator

from blocks.core.errors import ConfigError
from blocks.core.logos import code_example, logo_url
from blocks.core.naming import SOURCE_ID_PATTERN, check_source_id
from blocks.core.timezones import TimezoneName


def glob_key(key: str) -> dict[str, Any]:
    """`Field` arguments that show and save a glob attribute named `pattern` as `key`.

    Prefect's v2 UI (3.8, 3.9) validates a block form by posting the form *values* as the
    JSON schema to `/api/ui/schemas/validate`; `pattern` is a JSON-schema keyword, so a glob
    such as '*.csv' under that key is checked as a regex and the save fails with "Unknown
    error while validating block data.". The Python attribute stays `pattern`, and block
    documents saved before under `pattern` still load."""
    return {"alias": key, "validation_alias": AliasChoices(key, "pattern")}


@dataclass(frozen=True)
class Candidate:
    """One item a source offers: a file, an object, or an extraction window."""

    name: str
    size: int | None = None
    mtime: datetime | None = None
    version: str | None = None
    expected_sha256: str | None = None
    ref: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class NamedItem:
    """One item an event names (`pipeline/event_payloads.py`): the name as the source lists
    it, the bucket the event says it is in (None: not said), and where in the event it
    was (`trigger.Records[0].s3.object.key`) for error messages."""

    name: str
    bucket: str | None = None
    where: str = "trigger"


@dataclass(frozen=True)
class NotTaken:
    """A named item the source will not take (outside its prefix or pattern, in another
    bucket, not found): recorded as a failed item with `reason`, the others go on."""

    name: str
    reason: str


@dataclass(frozen=True)
class DiscoverContext:
    """What a run tells its source: the logical day (for date templates), the run id,
    whether the run is forced, and read access to the source's ledger state (watermarks,
    cursors), which `fetch` updates by returning a mapping."""

    partition_date: date
    flow_run_id: str | None = None
    force: bool = False
    ledger: Any = field(default=None, repr=False, compare=False)
    source_id: str = ""

    def get_state(self, key: str, default: Any = None) -> Any:
        if self.ledger is None:
            return default
        return self.ledger.get_state(self.source_id, key, default)


class SkipItem(Exception):
    """Raised by `fetch` to skip one item on purpose (counted as skipped, not failed).

    `state` (optional) is still written to the ledger, e.g. a watermark that moves although
    the increment was empty.
    """

    def __init__(self, reason: str = "", state: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.state = dict(state or {})


class ItemGone(SkipItem):
    """Raised by `fetch` when the item was deleted or renamed between the listing and the
    fetch: nothing is there to take (a renamed file is listed under its new name next
    time). Counted as skipped and logged as a warning, without a traceback."""

    def __init__(self, reason: str = "deleted or renamed since it was listed") -> None:
        super().__init__(reason)


class SourceBlock(Block):
    """Fields every source shares: identity in the ledger and how the pipeline treats it."""

    source_id: str = Field(
        ...,
        pattern=SOURCE_ID_PATTERN,
        description=(
            "Stable id of this source in the ledger and the landing path "
            "(letters, digits, '_', '.', '-'). Changing it makes every item look new."
        ),
    )
    min_age_seconds: float = Field(
        default=0,
        ge=0,
        description="Only take items whose modification time is at least this old.",
    )
    stability_seconds: float = Field(
        default=0,
        ge=0,
        description=(
            "If > 0, list twice this many seconds apart and only take items whose size "
            "and modification time did not change (files still being written are left)."
        ),
    )
    changed_items: Literal["land", "ignore"] = Field(
        default="land",
        description=(
            "An item seen before under the same name with new content: 'land' it as a new "
            "version, or 'ignore' it (dedupe by name only)."
        ),
    )
    dedupe_window_days: int | None = Field(
        default=None,
        ge=1,
        description="Only ledger rows from the last N days count as already ingested (empty: all).",
    )
    timezone: TimezoneName = Field(
        default="UTC",
        description="IANA time zone of the source's days (the default run date is today there).",
    )
    max_parallel: int = Field(default=4, ge=1, le=64, description="Items fetched at the same time.")
    small_item_batch: int = Field(
        default=200,
        ge=1,
        le=1000,
        description=(
            "Items of at most 1 MiB are landed up to this many per Prefect task (each task "
            "run costs Prefect ~20 ms); 1: one task per item."
        ),
    )
    retries: int = Field(
        default=3, ge=0, le=20, description="Retries per item, with exponential backoff."
    )
    retry_delay_seconds: float = Field(
        default=2, ge=0, description="Base of the per-item exponential retry backoff."
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Give each source block type its catalog logo and code example from its slug and
        class name, unless it sets its own (the nine sources share one usage)."""
        super().__pydantic_init_subclass__(**kwargs)
        slug = cls.__dict__.get("_block_type_slug")
        if slug is None:
            return
        if "_logo_url" not in cls.__dict__:
            cls._logo_url = logo_url(slug)
        if "_code_example" not in cls.__dict__:
            cls._code_example = code_example(
                cls.__name__, "source", "print(source.test_connection())"
            )

    # The shared tuning fields: the UI form shows them after the fields that say what the
    # source is (Prefect numbers form fields in definition order, base class first).
    _tuning_fields: ClassVar[tuple[str, ...]] = (
        "min_age_seconds",
        "stability_seconds",
        "changed_items",
        "dedupe_window_days",
        "timezone",
        "max_parallel",
        "small_item_batch",
        "retries",
        "retry_delay_seconds",
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Prefect's block schema with the form in the order an operator fills it in: the
        required fields (source id, then what identifies the source: folder, host, bucket,
        base URL, connection block), then the source's other fields, the shared tuning
        fields last. The UI orders the form by each property's `position`."""
        schema = super().model_json_schema(*args, **kwargs)
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        by_position = sorted(props, key=lambda key: props[key].get("position", len(props)))

        def rank(key: str) -> int:
            return 2 if key in cls._tuning_fields else 0 if key in required else 1

        ordered = sorted(by_position, key=rank)  # stable: definition order within a rank
        schema["properties"] = {k: {**props[k], "position": i} for i, k in enumerate(ordered)}
        return schema

    @field_validator("source_id")
    @classmethod
    def _source_id_is_safe(cls, value: str) -> str:
        return check_source_id(value)

    def today(self) -> date:
        """Today in the source's time zone: the default logical day of a run."""
        return datetime.now(ZoneInfo(self.timezone)).date()

    def preflight(self) -> None:
        """Check configuration before any I/O. Override to add checks."""

    @abstractmethod
    def discover(self, ctx: DiscoverContext) -> Iterable[Candidate]:
        """List the candidates of this run."""

    @abstractmethod
    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        """Stream one candidate's bytes into `out`."""

    def prefetch(self, candidates: list[Candidate]) -> None:  # noqa: B027 (optional hook)
        """Get ready to fetch `candidates`: the small items one `land-batch` task is about
        to fetch one after another on this thread (default: nothing).

        A source whose every item costs round trips may fetch them here in bulk and keep
        the bytes, bounded, for `fetch` to serve on this thread. It must not raise and
        must not change what `fetch` reports: an item it did not get, or got wrong, is
        left to `fetch`, which raises what it would have raised anyway.
        """

    def test_connection(self) -> dict[str, Any]:
        """Check the configuration, list the source once, and say what was found.

        Sources with a cheaper or richer check override this.
        """
        self.preflight()
        items = list(self.discover(DiscoverContext(partition_date=self.today())))
        return {
            "ok": True,
            "source_id": self.source_id,
            "items": len(items),
            "sample": [c.name for c in items[:10]],
        }

    def content_dedupe(self, candidate: Candidate) -> bool:
        """Whether the pipeline may drop this item because a landed item of this source
        already has the same content sha256 (default: yes).

        Right for files: the same bytes under another name are the same delivery. Wrong for
        row and record windows (SQL, warehouse queries, REST records): two windows can hold
        byte-identical files (e.g. columns without a key) and each is its own delivery, so
        those sources answer False and every window is landed and queued."""
        return True

    def after_landing(self, candidate: Candidate) -> None:  # noqa: B027 (optional hook)
        """Act on the source once the item is recorded (default: keep it)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections the block opened; called once at the end of every run."""

    # Run hooks (see the module docstring). Defaults: no options, no check, one pass.
    run_options: ClassVar[tuple[str, ...]] = ()
    check_before_run: ClassVar[bool] = False

    # Whether `candidates_for` is implemented (file and object sources): a run whose
    # trigger names items fails naming `trigger` before any I/O when it is not.
    takes_named_items: ClassVar[bool] = False

    def candidates_for(
        self, items: Sequence[NamedItem], ctx: DiscoverContext
    ) -> Iterable[Candidate | NotTaken]:
        """Stat exactly the named items, no listing: a `Candidate` (as `discover` would
        list it: same name, size, mtime, version) for each one the source holds and would
        list, a `NotTaken` with the reason for each other one (outside the prefix/pattern,
        another bucket, missing). Names reach it already checked safe."""
        raise no_named_items(self)

    def apply_run_options(self, options: Mapping[str, Any] | None) -> None:
        """Take the flow's `options` for this run, before any I/O. Sources that know
        options override this; a key they do not know fails naming `options.<key>`."""
        for key in options or {}:
            raise unknown_option(key, self.run_options)

    @contextmanager
    def run_session(self) -> Iterator[bool]:
        """Wrap one flow run; yield False when the run must not go on (source busy)."""
        yield True

    def runs_again(self, ledger: Any, summary: Any, runs: int) -> bool:
        """After `runs` pipeline passes with `summary` the last: run one more? (no)"""
        return False


def no_named_items(source: SourceBlock) -> ConfigError:
    """The error for a trigger naming items to a source that cannot stat named items."""
    return ConfigError(
        "trigger",
        f"{type(source).__name__} cannot take named items (it extracts windows or records, "
        "not named files); send a trigger without an item list",
    )


def unknown_option(key: str, known: Iterable[str]) -> ConfigError:
    """The error for a run option the source does not take."""
    names = ", ".join(known) or "none (this source takes no options)"
    return ConfigError(f"options.{key}", f"unknown option; known options: {names}")


def write_stream(chunks: Iterable[bytes], out: BinaryIO, close: Callable[[], object]) -> None:
    """Copy a remote stream's `chunks` into a fetch's writer `out`, then `close` the stream
    whatever happens, so a failed copy never leaves its connection checked out."""
    try:
        for chunk in chunks:
            out.write(chunk)
    finally:
        close()


def report_rows(out: BinaryIO, rows: int) -> None:
    """Tell the pipeline how many rows a fetch wrote into `out` (the run history and
    summary show them); a sink that does not count rows ignores it."""
    if hasattr(out, "rows"):
        out.rows = rows  # type: ignore[attr-defined]
