"""Landing into Google Cloud Storage through a saved prefect-gcp `GcsBucket`.

The staging file is uploaded to `<bucket_folder>/.staging/<source>/<uuid>` (resumable, in
`PART_BYTES` chunks: bounded memory; the client checks crc32c), then rewritten to the
final key with `ifGenerationMatch=0`: GCS creates the key only if no live object has it,
in one request, so a reader never sees a partial object and other content is never
overwritten. The staging object is deleted after; one a killed run left behind is
removed by a later run after 6 h.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from prefect_gcp.cloud_storage import GcsBucket

from blocks.core.errors import ConfigError, CredentialsError, IngestError, is_retryable
from blocks.core.landing_store import (
    FIELD,
    PART_BYTES,
    SHA_METADATA,
    LandingStore,
    sha256_stream,
)


def store_for(name: str) -> GcsLandingStore:
    """The landing store of the saved GCS Bucket block `name`."""
    try:
        block = GcsBucket.load(name)
    except ValueError as exc:
        raise ConfigError(FIELD, f"no saved GCS Bucket block named {name!r}: {exc}") from None
    return GcsLandingStore(block, name)


class GcsLandingStore(LandingStore):
    scheme = "gs"

    def __init__(self, block: GcsBucket, name: str | None = None) -> None:
        super().__init__(
            f"gcs-bucket/{name or getattr(block, '_block_document_name', None) or '?'}",
            block.bucket,
            block.bucket_folder,
        )
        self._block = block
        self._client: Any = None

    def _bucket(self) -> Any:
        if self._client is None:
            with self._errors("creating the storage client"):
                self._client = self._block.gcp_credentials.get_cloud_storage_client()
        return self._client.bucket(self.bucket)

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Google errors as ours, naming the field and the block (never a secret)."""
        where = f"{FIELD} ({self.block_ref})"
        try:
            yield
        except gexc.NotFound as exc:
            if "/o/" in str(exc) and doing != "checking the bucket":
                raise  # an object, not the bucket: the caller decides
            raise ConfigError(where, f"bucket {self.bucket!r} does not exist ({doing})") from None
        except (gexc.Unauthorized, gexc.Forbidden) as exc:
            raise CredentialsError(
                where,
                f"GCS refused the credentials while {doing} in bucket {self.bucket!r}: "
                f"{exc.code} {type(exc).__name__}",
            ) from None
        except (auth_exc.RefreshError, auth_exc.DefaultCredentialsError) as exc:
            first = str(exc.args[0]) if exc.args else type(exc).__name__
            raise CredentialsError(
                where, f"could not get a Google access token while {doing}: {first}"
            ) from None
        except gexc.PreconditionFailed:
            raise
        except gexc.GoogleAPIError as exc:
            raise IngestError(
                f"{where}: GCS error while {doing}: {exc}", retryable=is_retryable(exc)
            ) from exc

    def check(self) -> None:
        with self._errors("checking the bucket"):
            if not self._bucket().exists():
                raise gexc.NotFound(f"bucket {self.bucket}")

    def exists(self, key: str) -> bool:
        with self._errors(f"looking at {key!r}"):
            return bool(self._bucket().blob(key).exists())

    def create_if_absent(self, staged: Path, key: str, sha256: str, size: int) -> bool:
        bucket = self._bucket()
        source_id = key[len(self.key("")) :].split("/", 1)[0]
        staging = bucket.blob(f"{self.staging_prefix(source_id)}{uuid.uuid4().hex}")
        staging.chunk_size = PART_BYTES  # resumable above it: one chunk in memory
        staging.metadata = {SHA_METADATA: sha256}
        try:
            with self._errors(f"uploading {key!r}"):
                staging.upload_from_filename(str(staged), if_generation_match=0)
                final = bucket.blob(key)
                try:
                    token, _, _ = final.rewrite(staging, if_generation_match=0)
                    while token is not None:  # large objects may take several calls
                        token, _, _ = final.rewrite(staging, token=token, if_generation_match=0)
                except gexc.PreconditionFailed:
                    return False  # created by someone else since our look: not overwritten
            return True
        finally:
            try:
                staging.delete()
            except Exception:
                pass  # never uploaded, or gone: clean_stale removes leftovers

    def stored_sha256(self, key: str) -> str:
        with self._errors(f"reading {key!r}"):
            blob = self._bucket().get_blob(key)
            if blob is None:
                raise IngestError(f"{self.uri(key)} went away while it was being compared")
            known = (blob.metadata or {}).get(SHA_METADATA)
            if known:
                return known
            with blob.open("rb") as reader:
                return sha256_stream(reader)

    def clean_stale(self, source_id: str, older_than: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        removed = 0
        with self._errors("cleaning stale staging objects"):
            for blob in self._bucket().list_blobs(prefix=self.staging_prefix(source_id)):
                if blob.time_created is not None and blob.time_created < cutoff:
                    try:
                        blob.delete(if_generation_match=blob.generation)
                        removed += 1
                    except (gexc.NotFound, gexc.PreconditionFailed):
                        pass
        return removed

    def open(self, key: str) -> BinaryIO:
        with self._errors(f"reading {key!r}"):
            return self._bucket().blob(key).open("rb")

    def delete(self, key: str) -> bool:
        with self._errors(f"deleting {key!r}"):
            try:
                self._bucket().blob(key).delete()
                return True
            except gexc.NotFound:
                return False
