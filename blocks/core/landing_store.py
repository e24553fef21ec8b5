"""Landing into a bucket: what every object-store landing target shares.

The Ingestion Queue lands into a local folder by default. With `landing_bucket` set to a
saved prefect-aws `S3Bucket` (`s3-bucket/<name>`) or prefect-gcp `GcsBucket`
(`gcs-bucket/<name>`) it lands into that bucket instead, under its `bucket_folder`, with
the same relative layout `{source}/{YYYY}/{MM}/{DD}/{name}`, and the ledger row and the
queue message carry the object's URI (`s3://bucket/key`, `gs://bucket/key`).

The item is still fetched into a local staging file first (the pipeline hashes and
verifies it there); `place()` then uploads it. The promises of the local landing hold:

- no partial object at a final key: the bytes are staged where no reader sees them (an
  S3 multipart upload is invisible until completed; GCS: a `.staging/` object), and the
  final key is created by one conditional request that fails if the key exists
  (S3 `If-None-Match: *` on PutObject / CompleteMultipartUpload; GCS rewrite with
  `ifGenerationMatch=0`), so other content is never overwritten, even by a racing run;
- the final key already holding the same content (a rerun after a crash between upload
  and record) is taken as landed; other content: the item lands beside it as
  `name~<sha12>.ext`, as in a folder;
- what a killed upload leaves (an S3 multipart upload, a GCS staging object) is invisible
  at final keys and removed by later runs after 6 h (`clean_stale`).

This module is core (no cloud package); the stores live in
`blocks/object_store/landing_s3.py` and `landing_gcs.py`, imported only when a bucket is
configured.
"""

from __future__ import annotations

import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from blocks.core.errors import ConfigError, IngestError

FIELD = "IngestionQueue.landing_bucket"
STAGING_FOLDER = ".staging"
SHA_METADATA = "ingest-sha256"  # user metadata written on every landed object
PART_BYTES = 8 * 1024 * 1024
_KINDS = {"s3-bucket": "prefect-aws (pip install 'prefect-ingest[aws]')",
          "gcs-bucket": "prefect-gcp (pip install 'prefect-ingest[gcp]')"}  # fmt: skip


def is_object_uri(path: str | None) -> bool:
    """True for `s3://...` and `gs://...` landed paths."""
    return bool(path) and str(path).startswith(("s3://", "gs://"))


def split_uri(uri: str) -> tuple[str, str, str]:
    """`s3://bucket/key` -> ("s3", "bucket", "key")."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme not in ("s3", "gs") or not bucket or not key:
        raise ValueError(f"{uri!r} is not an s3:// or gs:// object URI")
    return scheme, bucket, key


def versioned_key(key: str, sha256: str) -> str:
    """`a/report.csv` -> `a/report~<sha12>.csv` (the folder rule, on a key)."""
    path = PurePosixPath(key)
    suffix = "".join(path.suffixes[-1:])
    stem = path.name[: -len(suffix)] if suffix else path.name
    return str(path.with_name(f"{stem}~{sha256[:12]}{suffix}"))


class LandingStore(ABC):
    """A bucket (and folder in it) items land into. Subclasses speak one store's API."""

    scheme: str = ""

    def __init__(self, block_ref: str, bucket: str, folder: str) -> None:
        self.block_ref = block_ref  # 's3-bucket/<name>': named in every error
        self.bucket = bucket
        self.folder = folder.strip("/")

    # -- what each store implements
    @abstractmethod
    def check(self) -> None:
        """One cheap call proving the bucket exists and the credentials may use it."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def create_if_absent(self, staged: Path, key: str, sha256: str, size: int) -> bool:
        """Create `key` from the staged file in one conditional step; False if it exists."""

    @abstractmethod
    def stored_sha256(self, key: str) -> str:
        """sha256 of the object at `key` (its metadata, else by streaming it)."""

    @abstractmethod
    def clean_stale(self, source_id: str, older_than: float) -> int:
        """Remove what killed uploads of this source left, older than `older_than` s."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A streaming reader of the object."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete the object; False if it was already gone."""

    # -- shared
    def key(self, relative: str) -> str:
        return f"{self.folder}/{relative}" if self.folder else relative

    def staging_prefix(self, source_id: str) -> str:
        return self.key(f"{STAGING_FOLDER}/{source_id}/")

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def key_of(self, uri: str) -> str | None:
        """The key of `uri` if it is an object of this bucket, else None."""
        try:
            scheme, bucket, key = split_uri(uri)
        except ValueError:
            return None
        return key if (scheme, bucket) == (self.scheme, self.bucket) else None

    def place(
        self,
        staged: Path,
        relative: str,
        sha256: str,
        known_sha_at: Callable[[str], str | None],
    ) -> str:
        """Land the staged file at `relative` (or its versioned name); returns the URI.

        Never overwrites: the key is created only if absent. A key already holding the
        same content is the item's landing (a rerun); other content sends the item to
        `name~<sha12>.ext`; both taken by other content is an error.
        """
        size = staged.stat().st_size
        base = self.key(relative)
        for key in (base, versioned_key(base, sha256)):
            # a HEAD first: a large file is not uploaded only to be refused at the end
            if not self.exists(key) and self.create_if_absent(staged, key, sha256, size):
                return self.uri(key)
            existing = known_sha_at(self.uri(key)) or self.stored_sha256(key)
            if existing == sha256:
                return self.uri(key)
        raise IngestError(
            f"cannot land {relative}: {self.uri(base)} and its versioned name hold other content",
            retryable=False,
        )


def sha256_stream(reader: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := reader.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def load_landing_store(ref: str) -> LandingStore:
    """The store of a saved `s3-bucket/<name>` or `gcs-bucket/<name>` block."""
    kind, _, name = ref.partition("/")
    if kind not in _KINDS or not name:
        raise ConfigError(
            FIELD,
            f"{ref!r}: give a saved bucket block as 's3-bucket/<name>' or 'gcs-bucket/<name>'",
        )
    module = "landing_s3" if kind == "s3-bucket" else "landing_gcs"
    try:
        store_module = importlib.import_module(f"blocks.object_store.{module}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("blocks"):
            raise
        raise ConfigError(FIELD, f"{ref!r} needs {_KINDS[kind]}: {exc}") from None
    return store_module.store_for(name)
