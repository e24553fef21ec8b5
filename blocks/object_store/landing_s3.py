"""Landing into S3 (or an S3-compatible store) through a saved prefect-aws `S3Bucket`.

The final key is created in one conditional request that S3 refuses when the key exists:
PutObject with `If-None-Match: *` up to `PART_BYTES`, above it a multipart upload whose
parts nobody can read and whose CompleteMultipartUpload carries `If-None-Match: *`. A
killed upload leaves an incomplete multipart upload (no object, invisible to readers),
aborted by a later run after 6 h; a bucket lifecycle rule `AbortIncompleteMultipartUpload`
does the same on the store's side. The bytes go part by part from the staging file
(memory: one part, `max(8 MiB, size / 10,000)`).

Why not "upload to a staging key, then CopyObject": the multipart upload already is the
invisible staging area, a copy would write every byte twice (and needs a multipart copy
above 5 GB), and moto ignores `If-None-Match` on CopyObject, so the never-overwrite rule
could not be tested there; PutObject and CompleteMultipartUpload honour it in moto and AWS.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from prefect_aws.s3 import S3Bucket

from blocks.core.errors import (
    ConfigError,
    CredentialsError,
    IngestError,
    classify,
    is_retryable,
)
from blocks.core.landing_store import (
    FIELD,
    PART_BYTES,
    SHA_METADATA,
    LandingStore,
    sha256_stream,
)

_MAX_PARTS = 10_000
_EXISTS = ("PreconditionFailed", "412")


def store_for(name: str) -> S3LandingStore:
    """The landing store of the saved S3 Bucket block `name`."""
    try:
        block = S3Bucket.load(name)
    except ValueError as exc:
        raise ConfigError(FIELD, f"no saved S3 Bucket block named {name!r}: {exc}") from None
    return S3LandingStore(block, name)


class S3LandingStore(LandingStore):
    scheme = "s3"

    def __init__(self, block: S3Bucket, name: str | None = None) -> None:
        super().__init__(
            f"s3-bucket/{name or getattr(block, '_block_document_name', None) or '?'}",
            block.bucket_name,
            block.bucket_folder,
        )
        self._client = block.credentials.get_s3_client()  # endpoint, TLS, keys: the block's

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """botocore errors as ours, naming the field and the block (never a secret)."""
        where = f"{FIELD} ({self.block_ref})"
        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (code == "404" and doing == "checking the bucket"):
                raise ConfigError(
                    where, f"bucket {self.bucket!r} does not exist ({doing})"
                ) from None
            if classify(exc) is CredentialsError or status in (401, 403):
                raise CredentialsError(
                    where,
                    f"S3 refused the credentials while {doing} in bucket {self.bucket!r}: "
                    f"{code or status}",
                ) from None
            raise IngestError(
                f"{where}: S3 error while {doing}: {code or status}: {err.get('Message', '')}",
                retryable=is_retryable(exc),
            ) from exc
        except NoCredentialsError:
            raise CredentialsError(where, "no AWS credentials found on the block") from None
        except BotoCoreError as exc:
            raise IngestError(
                f"{where}: S3 error while {doing}: {exc}", retryable=is_retryable(exc)
            ) from exc

    def check(self) -> None:
        with self._errors("checking the bucket"):
            self._client.head_bucket(Bucket=self.bucket)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return False
            with self._errors(f"looking at {key!r}"):
                raise

    def create_if_absent(self, staged: Path, key: str, sha256: str, size: int) -> bool:
        meta = {SHA_METADATA: sha256}
        with self._errors(f"uploading {key!r}"):
            try:
                if size <= PART_BYTES:
                    with open(staged, "rb") as fh:
                        self._client.put_object(
                            Bucket=self.bucket, Key=key, Body=fh, Metadata=meta, IfNoneMatch="*"
                        )
                else:
                    self._multipart(staged, key, size, meta)
            except ClientError as exc:
                if _code(exc) in _EXISTS:
                    return False  # created by someone else since our HEAD: not overwritten
                raise
        return True

    def _multipart(self, staged: Path, key: str, size: int, meta: dict[str, str]) -> None:
        part_bytes = max(PART_BYTES, math.ceil(size / _MAX_PARTS))
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=meta)
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(staged, "rb") as fh:
                number = 1
                while chunk := fh.read(part_bytes):
                    done = self._client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
                    number += 1
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",  # the object appears whole, and only where none is
            )
        except BaseException:
            try:  # parts cost storage until aborted; a kill leaves them to clean_stale
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:
                pass
            raise

    def stored_sha256(self, key: str) -> str:
        with self._errors(f"reading {key!r}"):
            head = self._client.head_object(Bucket=self.bucket, Key=key)
            known = (head.get("Metadata") or {}).get(SHA_METADATA)
            if known:
                return known
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return sha256_stream(body)
            finally:
                body.close()

    def clean_stale(self, source_id: str, older_than: float) -> int:
        """Abort this source's multipart uploads started more than `older_than` s ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        prefix = self.key(f"{source_id}/")
        removed = 0
        with self._errors("cleaning stale uploads"):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for up in page.get("Uploads", ()):
                    if up["Initiated"] < cutoff:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                        )
                        removed += 1
        return removed

    def open(self, key: str) -> BinaryIO:
        with self._errors(f"reading {key!r}"):
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def delete(self, key: str) -> bool:
        if not self.exists(key):
            return False
        with self._errors(f"deleting {key!r}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)
        return True


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
