"""Google Cloud Storage source, on prefect-gcp's `GcpCredentials` storage client."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from typing import Any, BinaryIO

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from prefect_gcp import GcpCredentials
from pydantic import Field, PrivateAttr

from blocks.core.errors import ConfigError, CredentialsError, IngestError, is_retryable
from blocks.core.source import Candidate, ItemGone
from blocks.object_store.base import ObjectStoreSource, StoredObject


class GcsSource(ObjectStoreSource):
    """Objects from a Google Cloud Storage bucket, each new one landed once.

    Lists `prefix` page by page, keeps keys matching `pattern` (date templates allowed),
    in 'newest' mode only the newest of them, and streams each new object into the
    pipeline pinned to the listed generation (checksum verified by the client). The
    ledger remembers key + generation + md5, so an unchanged object is never fetched
    again and the same key with new content is. Authentication is the nested prefect-gcp
    `GcpCredentials` block (service account or the worker's application default
    credentials); `STORAGE_EMULATOR_HOST` points the client at an emulator.
    """

    _block_type_name = "GCS Source"
    _block_type_slug = "gcs-source"
    _description = (
        "Ingest new objects from a Google Cloud Storage bucket (prefix, date-templated key "
        "pattern, newest or all new, archive/delete after landing)."
    )

    gcp_credentials: GcpCredentials = Field(
        default_factory=GcpCredentials,
        title="GCP credentials",
        description=(
            "prefect-gcp credentials block (service account, or the worker's application "
            "default credentials when empty) and its project."
        ),
    )
    project: str | None = Field(
        default=None,
        description="Project billed for the requests (empty: the credentials block's project).",
    )

    _client: Any = PrivateAttr(default=None)
    _client_lock: Any = PrivateAttr(default_factory=threading.Lock)

    # -- client
    def storage_client(self) -> Any:
        """The google-cloud-storage client prefect-gcp builds, made once per block."""
        with self._client_lock:
            if self._client is None:
                with self._errors("creating the storage client"):
                    self._client = self.gcp_credentials.get_cloud_storage_client(
                        project=self.project
                    )
            return self._client

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn Google errors into messages naming the block field (never a secret)."""
        try:
            yield
        except gexc.NotFound as exc:
            if "/o/" in str(getattr(exc, "message", "")) or "/o/" in str(exc):
                raise  # an object, not the bucket: the caller decides
            raise ConfigError(
                "GcsSource.bucket", f"bucket {self.bucket!r} does not exist ({doing})"
            ) from None
        except (gexc.Unauthorized, gexc.Forbidden) as exc:
            raise CredentialsError(
                "GcsSource.gcp_credentials",
                f"GCS refused the credentials while {doing} in bucket {self.bucket!r}: "
                f"{exc.code} {type(exc).__name__}",
            ) from None
        except (auth_exc.RefreshError, auth_exc.DefaultCredentialsError) as exc:
            # exc.args[0] is the token endpoint's error code and text, no key material
            first = str(exc.args[0]) if exc.args else type(exc).__name__
            raise CredentialsError(
                "GcsSource.gcp_credentials",
                f"could not get a Google access token while {doing}: {first}",
            ) from None
        except gexc.GoogleAPIError as exc:
            raise IngestError(
                f"GCS error while {doing}: {exc}", retryable=is_retryable(exc)
            ) from exc

    # -- listing
    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        with self._errors(f"listing prefix {prefix!r}"):
            blobs = self.storage_client().list_blobs(
                self.bucket, prefix=prefix or None, page_size=self.page_size
            )
            for blob in blobs:  # the iterator follows nextPageToken page by page
                yield StoredObject(
                    key=blob.name,
                    size=int(blob.size or 0),
                    mtime=blob.updated,
                    version=f"{blob.generation}:{blob.md5_hash or blob.crc32c}",
                    ref=blob.generation,
                )

    def stat_object(self, key: str) -> StoredObject | None:
        """Get the object's metadata: the same key, size, time and generation fingerprint
        as a listing."""
        with self._errors(f"reading the metadata of {key!r}"):
            blob = self.storage_client().bucket(self.bucket).get_blob(key)
        if blob is None:
            return None
        return StoredObject(
            key=blob.name,
            size=int(blob.size or 0),
            mtime=blob.updated,
            version=f"{blob.generation}:{blob.md5_hash or blob.crc32c}",
            ref=blob.generation,
        )

    def test_connection(self) -> dict[str, Any]:
        """Check credentials, bucket and prefix with one tiny listing call.

        Returns what it saw; raises ConfigError naming the field that is wrong.
        """
        self.preflight()
        prefix, _ = self.rendered(self.today())
        with self._errors("testing the connection"):
            blobs = self.storage_client().list_blobs(
                self.bucket, prefix=prefix or None, max_results=1
            )
            sample = [b.name for b in islice(blobs, 1)]  # some servers ignore maxResults
        return {
            "ok": True,
            "source_id": self.source_id,
            "bucket": self.bucket,
            "prefix": prefix,
            "sample": sample,
        }

    # -- fetch
    def _blob(self, candidate: Candidate) -> Any:
        return (
            self.storage_client().bucket(self.bucket).blob(candidate.name, generation=candidate.ref)
        )

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        try:
            with self._errors(f"reading {candidate.name!r}"):
                # streamed in chunks into `out`; md5/crc32c checked by the client
                self._blob(candidate).download_to_file(out)
        except gexc.NotFound:
            raise ItemGone("changed or deleted since it was listed; the next run sees it") from None
        return None

    # -- after landing
    def copy_object(self, candidate: Candidate, new_key: str) -> None:
        with self._errors(f"copying {candidate.name!r} to {new_key!r}"):
            bucket = self.storage_client().bucket(self.bucket)
            target = bucket.blob(new_key)
            token, _, _ = target.rewrite(self._blob(candidate))
            while token is not None:  # large objects are rewritten in several calls
                token, _, _ = target.rewrite(self._blob(candidate), token=token)

    def delete_object(self, candidate: Candidate) -> None:
        with self._errors(f"deleting {candidate.name!r}"):
            try:
                self._blob(candidate).delete(if_generation_match=candidate.ref)
            except (gexc.NotFound, gexc.PreconditionFailed):
                raise IngestError(
                    f"{candidate.name}: not deleted, it changed or went away after it was landed"
                ) from None
