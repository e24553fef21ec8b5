"""The hand-off block: landing directory, staging, queue message shape, downstream trigger."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO, Literal

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from blocks.core.defaults import default_landing_dir
from blocks.core.errors import ConfigError, IngestError
from blocks.core.events import ITEM_LANDED, emit_items_landed, emit_source_event
from blocks.core.landing_store import LandingStore, is_object_uri, load_landing_store
from blocks.core.ledger import LandedRecord, QueueMessage
from blocks.core.logos import code_example, logo_url
from blocks.core.naming import check_source_id, landing_path, safe_relative_name, versioned_name

_CHUNK = 1024 * 1024


def message_id_for(source: str, name: str, sha256: str, generation: str = "") -> str:
    """Deterministic queue message id: the same item never makes two messages.

    `generation` is empty for normal runs; a forced re-land passes its flow run id, so a
    deliberate re-delivery gets one new message (and a retried task still not two).
    """
    key = "\0".join((source, name, sha256, generation))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class IngestionQueue(Block):
    """Ingestion queue hand-off: lands files and announces each one.

    A landed item is moved (atomic rename from a staging `*.part` file on the same file
    system) to `{landing_dir}/{source}/{YYYY}/{MM}/{DD}/{name}`, and one message with a
    deterministic id goes into the `ingest_queue` table of the ledger database, in the same
    transaction as the ledger row. Consumers claim messages with `blocks.QueueConsumer`.
    Optionally each landed item also starts a downstream Prefect deployment.
    """

    _block_type_name = "Ingestion Queue"
    _block_type_slug = "ingestion-queue"
    _logo_url = logo_url("ingestion-queue")
    _code_example = code_example("IngestionQueue", "queue", "print(queue.landing_dir)")
    _description = (
        "Landing directory plus a queue table in the ledger database; optionally triggers "
        "a downstream deployment per landed item."
    )

    landing_dir: str = Field(
        default_factory=default_landing_dir,
        validate_default=True,  # a relative $INGEST_LANDING_DIR fails too
        description="Root of the landing area; items land under {source}/{YYYY}/{MM}/{DD}/.",
    )
    staging_dir: str | None = Field(
        default=None,
        description=(
            "Where partial downloads (*.part) are written; must be on the same file system "
            "as the landing directory. Empty: '<landing_dir>.staging' beside it."
        ),
    )
    quarantine_dir: str | None = Field(
        default=None,
        description=(
            "Where items failing verification (e.g. a checksum sidecar mismatch) are kept. "
            "Empty: '<landing_dir>.quarantine'."
        ),
    )
    downstream_deployment: str | None = Field(
        default=None,
        description=(
            "Optional '<flow name>/<deployment name>' to start once per landed item "
            "(run_deployment with timeout 0)."
        ),
    )
    downstream_parameter: str = Field(
        default="item",
        description="Name of the downstream flow's parameter that receives the item message.",
    )
    landing_bucket: str | None = Field(
        default=None,
        description=(
            "Land into a bucket instead of landing_dir: a saved prefect-aws S3 Bucket "
            "('s3-bucket/<name>') or prefect-gcp GCS Bucket ('gcs-bucket/<name>') block. "
            "Items land under its bucket_folder as {source}/{YYYY}/{MM}/{DD}/{name}; "
            "messages carry s3:// or gs:// URIs. landing_dir then only holds staging."
        ),
    )
    relay_block: str | None = Field(
        default=None,
        description=(
            "Optional name of a saved 'Broker Relay' block: at the end of each run the "
            "run's queue messages are published to that broker (Redis Streams, RabbitMQ, "
            "NATS JetStream, SQS); `ingest-ops relay` publishes any left over."
        ),
    )

    # tuning last on the form (Prefect numbers fields in definition order)
    fsync: bool = Field(
        default=True,
        description="fsync each landed file and its folder before recording it (durability).",
    )
    emit_events: bool = Field(
        default=True,
        description=(
            "Emit Prefect events for landed items ('ingest.items.landed' per batch or, with "
            "event_per 'item', 'ingest.item.landed' per item)."
        ),
    )
    event_per: Literal["item", "batch"] = Field(
        default="batch",
        description=(
            "'batch' (default): one 'ingest.items.landed' event per landing batch (up to "
            "the source's small_item_batch items; a big item is a batch of one), payload "
            "{count, items: [each item's payload]}; the process-items deployment "
            "(prefect.processor.yaml) triggers on it, one run per batch, one task run per "
            "item. 'item': one 'ingest.item.landed' event per landed item (payload "
            "landed_path, sha256, source, name, ...); the process-item deployment triggers "
            "on it, one run per item. Batch is the default because a Prefect server spends "
            "~2.4 ms of CPU on each event: per-item events capped a 10,000-small-file run "
            "at ~1,394 files/s on 2 cores, batch events reached 2,665 files/s. Per-item "
            "downstream_deployment runs are the same in both modes."
        ),
    )

    _store: Any = PrivateAttr(default=None)  # the loaded landing bucket, if any

    @field_validator("landing_dir", "staging_dir", "quarantine_dir")
    @classmethod
    def _absolute_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A relative (or empty: ".") path resolves against the working directory, which
        # under a process worker is a temporary folder deleted after the run: the file
        # would vanish while the ledger and queue say it landed.
        where = f"IngestionQueue.{info.field_name}"
        if value is None or (not value.strip() and info.field_name != "landing_dir"):
            return None  # staging/quarantine: empty means beside the landing directory
        if not value.strip():
            raise ConfigError(where, "is empty; give an absolute directory path")
        if not Path(value).expanduser().is_absolute():
            raise ConfigError(where, f"{value!r} is relative; give an absolute directory path")
        return value

    @field_validator("landing_bucket")
    @classmethod
    def _bucket_ref_shape(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value and value.partition("/")[0] not in ("s3-bucket", "gcs-bucket"):
            raise ConfigError(
                "IngestionQueue.landing_bucket",
                f"{value!r}: give a saved bucket block as 's3-bucket/<name>' or "
                "'gcs-bucket/<name>'",
            )
        return value

    @field_validator("downstream_deployment")
    @classmethod
    def _deployment_name_shape(cls, value: str | None) -> str | None:
        if value and value.count("/") != 1:
            raise ValueError("must look like '<flow name>/<deployment name>'")
        return value or None

    # ----------------------------------------------------------------- paths
    @property
    def landing_root(self) -> Path:
        return Path(self.landing_dir).expanduser().absolute()

    @property
    def staging_root(self) -> Path:
        if self.staging_dir:
            return Path(self.staging_dir).expanduser().absolute()
        return self.landing_root.with_name(self.landing_root.name + ".staging")

    @property
    def quarantine_root(self) -> Path:
        if self.quarantine_dir:
            return Path(self.quarantine_dir).expanduser().absolute()
        return self.landing_root.with_name(self.landing_root.name + ".quarantine")

    def landing_store(self) -> LandingStore | None:
        """The bucket items land into (`landing_bucket`), loaded once; None: landing_dir."""
        if not self.landing_bucket:
            return None
        if self._store is None:
            self._store = load_landing_store(self.landing_bucket)
        return self._store

    def preflight(self) -> None:
        """Create the folders and check staging and landing share a file system; with a
        landing bucket, check it exists and the credentials may use it."""
        store = self.landing_store()
        if store is not None:
            store.check()
        for field, path in (
            ("landing_dir", self.landing_root),
            ("staging_dir", self.staging_root),
        ):
            if store is not None and field == "landing_dir":
                continue  # only staging is local
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"IngestionQueue.{field}", f"cannot create {path}: {exc.strerror}"
                ) from exc
        if store is None and os.stat(self.landing_root).st_dev != os.stat(self.staging_root).st_dev:
            raise ConfigError(
                "IngestionQueue.staging_dir",
                f"{self.staging_root} is not on the same file system as {self.landing_root}; "
                "the atomic rename into the landing area needs that",
            )

    def landing_path(self, source: str, day: date, name: str) -> Path:
        return landing_path(self.landing_root, source, day, name)

    def new_staging_file(self, source: str) -> Path:
        folder = self.staging_root / check_source_id(source)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.part"

    def quarantine(self, staged: Path, source: str, name: str) -> Path:
        """Move a staged file that failed verification aside, keeping it for inspection."""
        target = self.quarantine_root / source / safe_relative_name(name)
        target = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        return target

    def place(
        self, staged: Path, target: Path, sha256: str, known_sha_at, sync_dir: bool = True
    ) -> Path | str:
        """Move a staged file to its landing path without ever overwriting other content.

        A hard link refuses to replace an existing file, so two runs cannot clobber each
        other. If the path already holds the same content (a rerun, or a crash after the
        move but before the record) that file is used. If it holds other content, the item
        lands beside it as `name~<sha12>.ext`. `known_sha_at(path)` asks the ledger first,
        to avoid re-hashing recorded files.

        With a landing bucket, the same relative path becomes the object key and the
        result is the object's URI (see `blocks/core/landing_store.py`).
        """
        store = self.landing_store()
        if store is not None:
            relative = target.relative_to(self.landing_root.resolve()).as_posix()
            return store.place(staged, relative, sha256, known_sha_at)
        target.parent.mkdir(parents=True, exist_ok=True)
        for path in (target, versioned_name(target, sha256)):
            if _link_no_clobber(staged, path):
                staged.unlink()
                if self.fsync and sync_dir:  # False: the caller syncs a whole batch
                    _fsync_dir(path.parent)
                return path
            existing = known_sha_at(str(path)) or sha256_file(path)
            if existing == sha256:
                staged.unlink()
                return path
        raise IngestError(
            f"cannot land {target.name}: {target} and its versioned name hold other content"
        )

    def clean_stale_objects(self, source_id: str, older_than: float) -> int:
        """Remove what killed uploads into the landing bucket left (0 without a bucket)."""
        store = self.landing_store()
        return store.clean_stale(check_source_id(source_id), older_than) if store else 0

    def open_landed(self, landed_path: str) -> BinaryIO:
        """A binary reader of a landed item: its local file, or its object in the bucket."""
        if not is_object_uri(landed_path):
            return open(landed_path, "rb")  # noqa: SIM115 (the caller closes it)
        store = self.landing_store()
        key = store.key_of(landed_path) if store else None
        if key is None:
            raise ConfigError(
                "IngestionQueue.landing_bucket",
                f"{landed_path} is not in this queue's landing bucket ({self.landing_bucket})",
            )
        return store.open(key)

    # ----------------------------------------------------------------- announce
    def message_for(self, record: LandedRecord, generation: str = "") -> QueueMessage:
        mid = message_id_for(record.source, record.name, record.sha256, generation)
        payload: dict[str, Any] = {
            "message_id": mid,
            "source": record.source,
            "name": record.name,
            "sha256": record.sha256,
            "size": record.size,
            "landed_path": record.landed_path,
            "remote_mtime": record.remote_mtime.isoformat() if record.remote_mtime else None,
            "flow_run_id": record.flow_run_id,
            "partition_date": record.partition_date.isoformat() if record.partition_date else None,
        }
        return QueueMessage(
            message_id=mid,
            source=record.source,
            item_name=record.name,
            sha256=record.sha256,
            size=record.size,
            landed_path=record.landed_path,
            payload=payload,
        )

    @property
    def events_per_batch(self) -> bool:
        """True if landed items are announced by one event per batch (`event_per`)."""
        return self.emit_events and self.event_per == "batch"

    def announce(self, message: QueueMessage, batched: bool = False) -> None:
        """Emit the landed event and start the downstream deployment, if configured.

        `batched=True`: the caller also hands this message to `announce_batch` with the rest
        of its batch, which emits the one event of `event_per` 'batch'; with 'item' the
        message's own event is emitted here either way."""
        if self.events_per_batch:
            if not batched:
                self.announce_batch([message])
        elif self.emit_events:
            emit_source_event(ITEM_LANDED, message.source, message.payload)
        if self.downstream_deployment:
            from prefect.deployments import run_deployment

            run_deployment(
                self.downstream_deployment,
                parameters={self.downstream_parameter: message.payload},
                timeout=0,
                as_subflow=False,
                # Same message, same key: a retried hand-off starts no second run.
                idempotency_key=f"ingest-{message.message_id}",
            )

    def announce_batch(self, messages: list[QueueMessage]) -> None:
        """Emit the `ingest.items.landed` event(s) of a landing batch (`event_per` 'batch');
        each message was `announce`d with `batched=True`."""
        if self.events_per_batch and messages:
            emit_items_landed(messages[0].source, [m.payload for m in messages])


def _link_no_clobber(src: Path, dst: Path) -> bool:
    """Atomically create dst from src; False if dst exists."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    # File systems without hard links: a rename is still atomic, only the no-clobber
    # guarantee against a concurrent run weakens to check-then-rename.
    if dst.exists():
        return False
    os.replace(src, dst)
    src.touch()  # the caller unlinks src after a successful placement
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
