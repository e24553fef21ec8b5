"""Amazon S3 (and S3-compatible) source, on prefect-aws's `AwsCredentials` client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.core.errors import ConfigError, CredentialsError, IngestError, is_retryable
from blocks.core.source import Candidate, ItemGone, SkipItem, write_stream
from blocks.object_store.base import CHUNK_BYTES, ObjectStoreSource, StoredObject

# S3 error codes that mean "the credentials are wrong", not "try again".
_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}
_MISSING_BUCKET = {"NoSuchBucket"}


class S3Source(ObjectStoreSource):
    """Objects from an S3 bucket (or any S3-compatible store), each new one landed once.

    Lists `prefix` page by page (ListObjectsV2 continuation), keeps keys matching
    `pattern` (date templates allowed), in 'newest' mode only the newest of them, and
    streams each new object into the pipeline with `If-Match` on the listed ETag. The
    ledger remembers key + ETag + size, so an unchanged object is never fetched again and
    the same key with new content is. Credentials, region, endpoint and TLS settings come
    from the nested prefect-aws `AwsCredentials` block; `endpoint_url` here overrides its
    `aws_client_parameters.endpoint_url` for S3-compatible stores.
    """

    _block_type_name = "S3 Source"
    _block_type_slug = "s3-source"
    _description = (
        "Ingest new objects from an S3 bucket or S3-compatible store (prefix, date-templated "
        "key pattern, newest or all new, archive/delete after landing)."
    )

    aws_credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        title="AWS credentials",
        description=(
            "prefect-aws credentials block (keys, profile or role, region, client "
            "parameters). Empty: the worker's default AWS credential chain."
        ),
    )
    endpoint_url: str | None = Field(
        default=None,
        description=(
            "S3-compatible endpoint, e.g. 'https://minio.example:9000' (overrides the "
            "credentials block's aws_client_parameters.endpoint_url)."
        ),
    )

    def preflight(self) -> None:
        """Also refuses an endpoint that is not an http(s) URL, naming the field that holds
        it (botocore would fail later with "Invalid endpoint", or resolve it as a host)."""
        super().preflight()
        params = self.aws_credentials.aws_client_parameters
        for where, url in (
            ("S3Source.endpoint_url", self.endpoint_url),
            ("S3Source.aws_credentials.aws_client_parameters.endpoint_url", params.endpoint_url),
        ):
            if url is not None and not _is_http_url(str(url)):
                raise ConfigError(
                    where, f"{url!r} is not an http(s) URL (e.g. 'https://host:9000')"
                )
            if self.endpoint_url:
                break  # ours overrides the credentials block's

    # -- client
    def s3_client(self) -> Any:
        """The boto3 S3 client prefect-aws builds (cached by it per credentials)."""
        creds = self.aws_credentials
        if self.endpoint_url:
            params = creds.aws_client_parameters.model_copy(
                update={"endpoint_url": self.endpoint_url}
            )
            creds = creds.model_copy(update={"aws_client_parameters": params})
        return creds.get_s3_client()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn botocore errors into messages naming the block field (never a secret)."""
        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING_BUCKET:
                raise ConfigError(
                    "S3Source.bucket", f"bucket {self.bucket!r} does not exist ({doing})"
                ) from None
            if code in _AUTH_CODES or status in (401, 403):
                raise CredentialsError(
                    "S3Source.aws_credentials",
                    f"S3 refused the credentials while {doing} in bucket {self.bucket!r}: "
                    f"{code or status} ({err.get('Message', '')})",
                ) from None
            raise IngestError(
                f"S3 error while {doing}: {code or status}: {exc}", retryable=is_retryable(exc)
            ) from exc
        except NoCredentialsError:
            raise CredentialsError(
                "S3Source.aws_credentials",
                "no AWS credentials found (set keys, a profile or a role on the block)",
            ) from None
        except BotoCoreError as exc:
            raise IngestError(
                f"S3 error while {doing}: {exc}", retryable=is_retryable(exc)
            ) from exc

    # -- listing
    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        client = self.s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
        )
        with self._errors(f"listing prefix {prefix!r}"):
            for page in pages:
                for item in page.get("Contents", ()):
                    etag = str(item.get("ETag", ""))
                    yield StoredObject(
                        key=item["Key"],
                        size=int(item["Size"]),
                        mtime=item.get("LastModified"),
                        version=f"{etag.strip(chr(34))}:{item['Size']}",
                        ref=etag,  # as S3 sent it (quoted): what If-Match compares
                    )

    def stat_object(self, key: str) -> StoredObject | None:
        """HEAD the object: the same key, size, time and ETag fingerprint as a listing."""
        client = self.s3_client()
        with self._errors(f"reading the metadata of {key!r}"):
            try:
                head = client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                # HEAD answers a bare 404 for a missing key (and for a missing bucket)
                if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                    return None
                raise
        etag = str(head.get("ETag", ""))
        size = int(head["ContentLength"])
        return StoredObject(
            key=key,
            size=size,
            mtime=head.get("LastModified"),
            version=f"{etag.strip(chr(34))}:{size}",
            ref=etag,
        )

    def test_connection(self) -> dict[str, Any]:
        """Check credentials, bucket and prefix with one tiny listing call.

        Returns what it saw; raises ConfigError naming the field that is wrong.
        """
        self.preflight()
        prefix, _ = self.rendered(self.today())
        with self._errors("testing the connection"):
            page = self.s3_client().list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return {
            "ok": True,
            "source_id": self.source_id,
            "bucket": self.bucket,
            "prefix": prefix,
            "sample": [o["Key"] for o in page.get("Contents", ())],
        }

    # -- fetch
    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": candidate.name}
        if candidate.ref:
            kwargs["IfMatch"] = candidate.ref  # exactly the listed version, or nothing
        client = self.s3_client()
        try:
            response = client.get_object(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                raise ItemGone() from None
            if code in ("PreconditionFailed", "412"):
                raise SkipItem("changed since it was listed; the next run takes it") from None
            with self._errors(f"reading {candidate.name!r}"):
                raise
        body = response["Body"]
        with self._errors(f"reading {candidate.name!r}"):
            write_stream(body.iter_chunks(CHUNK_BYTES), out, body.close)
        return None

    # -- after landing
    def _still_listed_version(self, candidate: Candidate) -> bool:
        client = self.s3_client()
        try:
            head = client.head_object(Bucket=self.bucket, Key=candidate.name)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return False
            raise
        return not candidate.ref or str(head.get("ETag", "")) == candidate.ref

    def copy_object(self, candidate: Candidate, new_key: str) -> None:
        extra = {"CopySourceIfMatch": candidate.ref} if candidate.ref else None
        with self._errors(f"copying {candidate.name!r} to {new_key!r}"):
            # managed copy: multipart for objects over 5 GB
            self.s3_client().copy(
                {"Bucket": self.bucket, "Key": candidate.name}, self.bucket, new_key, extra
            )

    def delete_object(self, candidate: Candidate) -> None:
        with self._errors(f"deleting {candidate.name!r}"):
            if not self._still_listed_version(candidate):
                raise IngestError(
                    f"{candidate.name}: not deleted, it changed or went away after it was landed"
                )
            self.s3_client().delete_object(Bucket=self.bucket, Key=candidate.name)


def _is_http_url(url: str) -> bool:
    """True for 'http(s)://host[:port][/path]' with a valid port and no spaces."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url
