"""Retention flow: prune acked queue messages, old run rows and landed files, per source.

What it deletes, for each source, older than that source's `days`:

- `ingest_queue` messages handed off before the cutoff: `acked` by a consumer of the queue
  table (`acked_at`), or published to a broker by the outbox relay (`published_at`; from
  then on the broker holds the message and its consumers ack there);
- `ingest_runs` rows that are finished (not `running`) and started before the cutoff;
- landed files: only paths the ledger records on a `landed` item row of that source whose
  row was last (re)landed (`updated_at`) before the cutoff, after resolving the path
  (symlinks too) and checking it lies under `{landing_dir}/{source}/`. A path outside is
  refused and reported, never touched. Items landed into a bucket (`s3://`, `gs://`, the
  queue's `landing_bucket`) are deleted as objects, only under
  `{bucket_folder}/{source}/` of that bucket; any other URI is refused and reported.

What it never deletes: messages neither acked nor published; the file such a message
points to (its consumer still needs it); `ingest_items` rows (dedupe: a rerun of the source
must not land the pruned items again); `ingest_state` (watermarks and cursors).

A pruned file's item row keeps `status='landed'` (so dedupe still works) and gets the
marker `error='landed file pruned by ingest-retention <time>'`. No new column: the ledger
tables are created with `create_all`, which never adds a column to an existing table, so a
new column would need a migration on every deployed ledger; `error` is unused on landed
rows (a forced re-land clears it: `Ledger.record_landed`).

Deletes go in batches (`batch_size` rows per query and transaction), so memory stays
bounded whatever the backlog. Order per file batch: delete the files, then mark their
rows; a crash in between leaves rows whose file is gone, which the next run marks
(`already gone`). Nothing the ledger needs for dedupe is lost either way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Failed
from sqlalchemy import and_, bindparam, delete, func, or_, select, update

from blocks.core import ledger_schema as t
from blocks.core.errors import ConfigError, IngestError
from blocks.core.landing_store import LandingStore, is_object_uri
from blocks.core.ledger import Ledger
from blocks.core.naming import check_source_id
from pipeline.block_loading import load_shared_blocks

RETENTION_ARTIFACT_KEY = "ingest-retention"
PRUNED_MARKER = "landed file pruned by ingest-retention"
MAX_DAYS = 36500
DEFAULT_BATCH = 500
FIRST_NAMES = 5  # names shown per kind in a dry run's table


class RetentionRefused(IngestError):
    """Raised (as the run's Failed message) when some landed paths were refused or could
    not be deleted; everything else was pruned."""

    retryable = False


@dataclass
class SourceRetention:
    """What retention did (or, in a dry run, would do) for one source."""

    source: str
    days: int
    cutoff: str
    dry_run: bool
    messages: int = 0
    runs: int = 0
    files: int = 0
    files_gone: int = 0  # recorded as landed, already missing on disk: only marked
    refused: int = 0
    failed: int = 0
    first_messages: list[str] = field(default_factory=list)
    first_runs: list[str] = field(default_factory=list)
    first_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if not k.startswith("first_")}
        row["problems"] = "; ".join(self.problems[:5])
        if self.dry_run:
            for kind in ("messages", "runs", "files"):
                row[f"first_{kind}"] = ", ".join(getattr(self, f"first_{kind}"))
        return row

    def log_line(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{self.source}: {verb} {self.messages} acked message(s), {self.runs} run row(s), "
            f"{self.files} landed file(s) older than {self.days} day(s) (before "
            f"{self.cutoff}); already gone {self.files_gone}, refused {self.refused}, "
            f"failed {self.failed}"
        )


# ----------------------------------------------------------------------------- parameters
def _check_days(value: Any, parameter: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(parameter, f"{value!r} is not a whole number of days")
    if not 1 <= value <= MAX_DAYS:
        raise ConfigError(
            parameter,
            f"{value} is not between 1 and {MAX_DAYS} days (0 or less would "
            "prune what was just landed or acked)",
        )
    return value


def known_sources(ledger: Ledger) -> set[str]:
    """Sources with any item, run or queue message in the ledger."""
    with ledger.transaction() as conn:
        found: set[str] = set()
        for table in (t.items, t.runs, t.queue):
            found.update(conn.execute(select(table.c.source).distinct()).scalars())
    return found


def resolve_days(
    days: int | None, source_days: dict[str, int] | None, known: set[str]
) -> dict[str, int]:
    """{source: days}: `days` for every known source, `source_days` overriding it.

    ConfigError naming the parameter for a bad number, an invalid or unknown source id,
    or nothing to do; raised before anything is deleted.
    """
    overrides = dict(source_days or {})
    if days is not None:
        _check_days(days, "days")
    for source, value in overrides.items():
        try:
            check_source_id(source)
        except ValueError as exc:
            raise ConfigError(f"source_days.{source}", str(exc)) from exc
        _check_days(value, f"source_days.{source}")
        if source not in known:
            raise ConfigError(
                f"source_days.{source}",
                f"no source {source!r} in the ledger (known: {', '.join(sorted(known)) or 'none'})",
            )
    if days is None and not overrides:
        raise ConfigError("days", "give days, or per-source days in source_days")
    plan = {s: days for s in known} if days is not None else {}
    plan.update(overrides)
    return dict(sorted(plan.items()))


# ----------------------------------------------------------------------------- pruning
def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def prune_source(
    ledger: Ledger,
    landing_root: Path,
    source: str,
    days: int,
    now: dt.datetime,
    dry_run: bool,
    batch_size: int = DEFAULT_BATCH,
    store: LandingStore | None = None,
) -> SourceRetention:
    """Prune one source (see the module doc); in a dry run count and name, delete nothing.

    `store`: the queue's landing bucket (`IngestionQueue.landing_store()`), for items
    landed as objects."""
    cutoff = now - dt.timedelta(days=days)
    result = SourceRetention(source, days, cutoff.isoformat(timespec="seconds"), dry_run)
    _prune_messages(ledger, source, cutoff, dry_run, batch_size, result)
    _prune_runs(ledger, source, cutoff, dry_run, batch_size, result)
    _prune_files(ledger, landing_root, source, cutoff, now, dry_run, batch_size, result, store)
    return result


def _delete_in_batches(ledger: Ledger, key: Any, old: tuple[Any, ...], batch_size: int) -> int:
    """Delete the rows of `key`'s table matching `old`, `batch_size` at a time, each batch
    its own transaction (bounded memory and lock time). The conditions are applied again
    in the DELETE: a row changed since it was read (a message re-queued) stays."""
    deleted = 0
    while True:
        with ledger.transaction() as conn:
            ids = list(conn.execute(select(key).where(*old).limit(batch_size)).scalars())
            if not ids:
                return deleted
            deleted += conn.execute(delete(key.table).where(key.in_(ids), *old)).rowcount


def _prune_messages(ledger, source, cutoff, dry_run, batch_size, result) -> None:
    q = t.queue.c
    acked = and_(q.status == "acked", q.acked_at.is_not(None), q.acked_at < cutoff)
    published = and_(q.published_at.is_not(None), q.published_at < cutoff)
    old = (q.source == source, or_(acked, published))
    if dry_run:
        with ledger.transaction() as conn:
            result.messages = conn.execute(select(func.count()).where(*old)).scalar() or 0
            result.first_messages = list(
                conn.execute(
                    select(q.item_name).where(*old).order_by(q.acked_at).limit(FIRST_NAMES)
                ).scalars()
            )
        return
    result.messages += _delete_in_batches(ledger, q.message_id, old, batch_size)


def _prune_runs(ledger, source, cutoff, dry_run, batch_size, result) -> None:
    r = t.runs.c
    old = (r.source == source, r.status != "running", r.started_at < cutoff)
    if dry_run:
        with ledger.transaction() as conn:
            result.runs = conn.execute(select(func.count()).where(*old)).scalar() or 0
            result.first_runs = [
                f"{row.id} {row.started_at:%Y-%m-%d} {row.status}"
                for row in conn.execute(
                    select(r.id, r.started_at, r.status)
                    .where(*old)
                    .order_by(r.started_at, r.id)
                    .limit(FIRST_NAMES)
                )
            ]
        return
    result.runs += _delete_in_batches(ledger, r.id, old, batch_size)


def _prune_files(
    ledger, landing_root, source, cutoff, now, dry_run, batch_size, result, store=None
) -> None:
    i, q = t.items.c, t.queue.c
    not_pruned = or_(i.error.is_(None), ~i.error.startswith(PRUNED_MARKER, autoescape=True))
    old = (
        i.source == source,
        i.status == "landed",
        i.landed_path.is_not(None),
        i.landed_path != "",
        i.updated_at < cutoff,
        not_pruned,
    )
    try:
        folder = (landing_root / source).resolve()
    except OSError as exc:
        raise ConfigError("queue_block", f"cannot resolve the landing folder: {exc}") from exc
    marker = f"{PRUNED_MARKER} {now.isoformat(timespec='seconds')} (older than {result.days} days)"
    last_id = 0
    while True:
        with ledger.transaction() as conn:
            rows = conn.execute(
                select(i.id, i.name, i.landed_path)
                .where(*old, i.id > last_id)
                .order_by(i.id)
                .limit(batch_size)
            ).all()
            if not rows:
                return
            last_id = rows[-1].id
            paths = [row.landed_path for row in rows]
            # the file of a message not yet handed off (acked or published) stays: its
            # consumer still needs it
            in_use = set(
                conn.execute(
                    select(q.landed_path).where(
                        q.status != "acked",
                        q.published_at.is_(None),
                        q.landed_path.in_(bindparam("p", expanding=True)),
                    ),
                    {"p": paths},
                ).scalars()
            )
            # ... and so does a path another, newer landed row records
            ids = [row.id for row in rows]
            in_use.update(
                conn.execute(
                    select(i.landed_path).where(
                        i.status == "landed",
                        i.landed_path.in_(bindparam("p", expanding=True)),
                        i.id.not_in(bindparam("ids", expanding=True)),
                        i.updated_at >= cutoff,
                    ),
                    {"p": paths, "ids": ids},
                ).scalars()
            )
        done: list[int] = []
        for row in rows:
            if row.landed_path in in_use:
                continue
            if is_object_uri(row.landed_path):
                if _prune_object(store, source, row, dry_run, result):
                    done.append(row.id)
                continue
            try:
                target = Path(row.landed_path).resolve()
            except (OSError, RuntimeError) as exc:  # a symlink loop
                result.failed += 1
                result.problems.append(f"{row.name}: cannot resolve {row.landed_path}: {exc}")
                continue
            if (
                not Path(row.landed_path).is_absolute()
                or not _inside(target, folder)
                or (target == folder)
            ):
                result.refused += 1
                result.problems.append(
                    f"{row.name}: refused {row.landed_path} (resolves to {target}, outside "
                    f"{folder})"
                )
                continue
            if target.is_dir():
                result.refused += 1
                result.problems.append(f"{row.name}: refused {row.landed_path}: is a folder")
                continue
            exists = target.exists()
            if dry_run:
                if exists:
                    result.files += 1
                    if len(result.first_files) < FIRST_NAMES:
                        result.first_files.append(row.name)
                else:
                    result.files_gone += 1
                continue
            try:
                target.unlink()
                result.files += 1
            except FileNotFoundError:
                result.files_gone += 1
            except OSError as exc:
                result.failed += 1
                result.problems.append(
                    f"{row.name}: cannot delete {target}: {exc.strerror or type(exc).__name__}"
                )
                continue
            done.append(row.id)
        if done:
            with ledger.transaction() as conn:
                conn.execute(
                    update(t.items).where(i.id.in_(done)).values(error=marker, updated_at=now)
                )


def _prune_object(store, source: str, row, dry_run: bool, result: SourceRetention) -> bool:
    """Delete one landed object (`s3://`, `gs://`): only under the queue's landing bucket
    folder `{bucket_folder}/{source}/`, else refused and reported. True: row to mark."""
    key = store.key_of(row.landed_path) if store is not None else None
    if key is None or not key.startswith(store.key(f"{source}/")):
        result.refused += 1
        where = f"{store.uri(store.key(source))}/" if store else "no landing_bucket on the queue"
        result.problems.append(f"{row.name}: refused {row.landed_path} (outside {where})")
        return False
    if dry_run:
        if store.exists(key):
            result.files += 1
            if len(result.first_files) < FIRST_NAMES:
                result.first_files.append(row.name)
        else:
            result.files_gone += 1
        return False
    try:
        gone = not store.delete(key)
    except IngestError as exc:
        result.failed += 1
        result.problems.append(f"{row.name}: cannot delete {row.landed_path}: {exc}")
        return False
    if gone:
        result.files_gone += 1
    else:
        result.files += 1
    return True


# ----------------------------------------------------------------------------- flow
@flow(name="ingest-retention", description="Prune old acked messages, run rows, landed files.")
def ingest_retention(
    ledger_block: str | None = None,
    queue_block: str | None = None,
    days: int | None = 30,
    source_days: dict[str, int] | None = None,
    dry_run: bool = True,
    batch_size: int = DEFAULT_BATCH,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]] | Failed:
    """Prune acked queue messages, finished run rows and landed files older than N days.

    Never deletes unacked messages (nor the files they point to), ledger item rows (the
    dedupe record) or watermark state. A dry run (the default) deletes nothing and lists
    counts and the first names per source in the `ingest-retention` table artifact.

    Args:
        ledger_block: Ingest Ledger block (empty: the default SQLite ledger).
        queue_block: Ingestion Queue block whose landing_dir holds the files (empty: the
            default landing area). Only paths under `<landing_dir>/<source>/` are deleted.
        days: Retention in days (1..36500) for every source in the ledger; empty: only
            the sources in `source_days`.
        source_days: Per source id, its own retention in days, e.g. {"bank": 90}. A
            source the ledger does not know fails the run before anything is deleted.
        dry_run: True (default): report only. Set false to delete.
        batch_size: Rows per delete query and transaction (10..10000).
        now: Evaluation time (tests; default: now).
    """
    if not 10 <= batch_size <= 10000:
        raise ConfigError("batch_size", "must be between 10 and 10000")
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ConfigError("now", "must carry a time zone")
    if days is not None:
        _check_days(days, "days")  # before any block is loaded
    logger = get_run_logger()
    ledger, queue = load_shared_blocks(ledger_block, queue_block)
    try:
        plan = resolve_days(days, source_days, known_sources(ledger))
        store = queue.landing_store()  # items landed into a bucket are objects to delete
        results = [
            prune_source(ledger, queue.landing_root, source, n, now, dry_run, batch_size, store)
            for source, n in plan.items()
        ]
    finally:
        ledger.dispose()
    for result in results:
        logger.info(result.log_line())
        for problem in result.problems[:20]:
            logger.error(problem)
    rows = [r.row() for r in results]
    mode = "dry run: nothing deleted" if dry_run else "deleted"
    create_table_artifact(
        key=RETENTION_ARTIFACT_KEY,
        table=rows or [{"source": "(no sources)"}],
        description=f"Ingest retention at {now.isoformat(timespec='seconds')} ({mode})",
    )
    bad = [r for r in results if r.refused or r.failed]
    if bad:
        message = "; ".join(
            f"{r.source}: {r.refused} path(s) refused, {r.failed} not deleted ({r.problems[0]})"
            for r in bad
        )
        return Failed(message=str(RetentionRefused(message)))
    return rows
