"""What the S3 and GCS sources share: prefix + key pattern selection, newest-only mode,
after-landing actions on objects. Each store only says how to list, read, copy, delete.

Candidate names are the full object keys, passed through unchanged: the pipeline refuses
keys that would escape the landing folder (`../x`, `/abs`, `a//b`) and records them as
failed, so that protection applies to object stores too.
"""

from __future__ import annotations

import fnmatch
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError
from blocks.core.source import (
    Candidate,
    DiscoverContext,
    NamedItem,
    NotTaken,
    glob_key,
)
from blocks.core.unpack import FileSourceBlock

CHUNK_BYTES = 1024 * 1024
AfterLanding = Literal["keep", "delete", "copy_to_archive", "move_to_archive"]


@dataclass(frozen=True)
class StoredObject:
    """One listed object: its key, size, time, change fingerprint and what fetch needs."""

    key: str
    size: int
    mtime: datetime | None
    version: str
    ref: Any = None


class ObjectStoreSource(FileSourceBlock):
    """Base of the bucket sources (not a block type of its own)."""

    bucket: str = Field(..., min_length=1, description="Bucket name (no 's3://' / 'gs://').")
    prefix: str = Field(
        default="",
        description=(
            "Only list keys starting with this prefix, e.g. 'exports/{date:%Y/%m/%d}/'. "
            "Date templates as in every file source: {date:FMT}, {date-1:FMT}."
        ),
    )
    pattern: str = Field(
        default="*",
        **glob_key("key_pattern"),
        description=(
            "Glob on the key after the prefix, e.g. 'AXIS_{date:%Y%m%d}*.csv' "
            "('*' also matches '/'). Date templates allowed."
        ),
    )
    mode: Literal["all_new", "newest"] = Field(
        default="all_new",
        description=(
            "'all_new': every matching object not yet ingested. 'newest': only the most "
            "recently modified matching object (landed once)."
        ),
    )
    after_landing_action: AfterLanding = Field(
        default="keep",
        description=(
            "What to do with the object once it is landed and recorded: keep it, delete it, "
            "copy it under archive_prefix, or move it there (copy, then delete)."
        ),
    )
    archive_prefix: str | None = Field(
        default=None,
        description=(
            "Key prefix that copy/move_to_archive writes to (archive key = prefix + key). "
            "Keys under it are never listed as candidates."
        ),
    )
    page_size: int = Field(
        default=1000, ge=1, le=1000, description="Objects per listing page (the API maximum)."
    )

    @field_validator("bucket")
    @classmethod
    def _plain_bucket(cls, value: str) -> str:
        if "://" in value or "/" in value:
            raise ValueError(f"bucket {value!r}: give the bare bucket name, without scheme or '/'")
        return value

    @model_validator(mode="after")
    def _archive_needs_prefix(self) -> ObjectStoreSource:
        if self.after_landing_action.endswith("_archive") and not self.archive_prefix:
            raise ValueError(
                f"archive_prefix: required when after_landing_action is "
                f"'{self.after_landing_action}'"
            )
        return self

    # -- what each store implements
    @abstractmethod
    def list_objects(self, prefix: str) -> Iterable[StoredObject]:
        """Every object under `prefix`, paging through the listing lazily."""

    @abstractmethod
    def stat_object(self, key: str) -> StoredObject | None:
        """The object `key` as the listing would give it (same version), None if absent."""

    @abstractmethod
    def copy_object(self, candidate: Candidate, new_key: str) -> None:
        """Server-side copy of exactly the listed version to `new_key`."""

    @abstractmethod
    def delete_object(self, candidate: Candidate) -> None:
        """Delete the object, only if it is still the listed version."""

    # -- shared behaviour
    def preflight(self) -> None:
        cls = type(self).__name__
        for field in ("prefix", "pattern"):
            try:
                render_date_template(getattr(self, field), date.today())
            except ValueError as exc:
                raise ConfigError(f"{cls}.{field}", str(exc)) from None
        if self.archive_prefix and self.prefix.startswith(self.archive_prefix):
            raise ConfigError(
                f"{cls}.archive_prefix",
                f"{self.archive_prefix!r} contains the listed prefix {self.prefix!r}: "
                "nothing could ever be listed",
            )

    def rendered(self, day: date) -> tuple[str, str]:
        """(prefix, pattern) for the run's logical day."""
        return render_date_template(self.prefix, day), render_date_template(self.pattern, day)

    def select(self, objects: Iterable[StoredObject], prefix: str, pattern: str) -> Iterator:
        """Matching objects; in 'newest' mode only the newest one (O(1) memory)."""
        newest: StoredObject | None = None
        for obj in objects:
            if obj.key.endswith("/") and obj.size == 0:
                continue  # a "folder" placeholder, not data
            if self.archive_prefix and obj.key.startswith(self.archive_prefix):
                continue
            if not fnmatch.fnmatchcase(obj.key[len(prefix) :], pattern):
                continue
            if self.mode == "all_new":
                yield obj
            elif newest is None or (obj.mtime, obj.key) > (newest.mtime, newest.key):
                newest = obj
        if newest is not None:
            yield newest

    def discover(self, ctx: DiscoverContext) -> Iterator[Candidate]:
        prefix, pattern = self.rendered(ctx.partition_date)
        for obj in self.select(self.list_objects(prefix), prefix, pattern):
            # the key goes through unchanged: the pipeline checks it is a safe name
            yield Candidate(
                name=obj.key, size=obj.size, mtime=obj.mtime, version=obj.version, ref=obj.ref
            )

    takes_named_items: ClassVar[bool] = True

    def not_selected(self, item: NamedItem, prefix: str, pattern: str) -> str | None:
        """Why the listing would not offer the named object (None: it would)."""
        if item.bucket is not None and item.bucket != self.bucket:
            return f"{item.where}: in bucket {item.bucket!r}, this source reads {self.bucket!r}"
        key = item.name
        if not key.startswith(prefix):
            return f"{item.where}: outside the source's prefix {prefix!r}"
        if self.archive_prefix and key.startswith(self.archive_prefix):
            return f"{item.where}: under the archive prefix {self.archive_prefix!r}"
        if key.endswith("/"):
            return f"{item.where}: a folder placeholder, not an object"
        if not fnmatch.fnmatchcase(key[len(prefix) :], pattern):
            return f"{item.where}: does not match the key pattern {pattern!r}"
        return None

    def candidates_for(
        self, items: Sequence[NamedItem], ctx: DiscoverContext
    ) -> Iterator[Candidate | NotTaken]:
        """Stat each named object (HEAD / get-metadata, `max_parallel` at once) that lies
        in this bucket under the run day's prefix and matches the pattern. `mode` is for
        listings: an event's objects are all taken."""
        prefix, pattern = self.rendered(ctx.partition_date)
        wanted: list[NamedItem] = []
        for item in items:
            why = self.not_selected(item, prefix, pattern)
            if why is None:
                wanted.append(item)
            else:
                yield NotTaken(item.name, why)
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            stats = pool.map(self.stat_object, [i.name for i in wanted])
            for item, obj in zip(wanted, stats, strict=True):
                if obj is None:
                    yield NotTaken(item.name, f"{item.where}: no such object in {self.bucket!r}")
                else:
                    yield Candidate(
                        name=obj.key,
                        size=obj.size,
                        mtime=obj.mtime,
                        version=obj.version,
                        ref=obj.ref,
                    )

    def after_landing(self, candidate: Candidate) -> None:
        action = self.after_landing_action
        if action in ("copy_to_archive", "move_to_archive"):
            self.copy_object(candidate, f"{self.archive_prefix}{candidate.name}")
        if action in ("delete", "move_to_archive"):
            self.delete_object(candidate)
