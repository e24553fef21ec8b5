"""S3 source end to end: real boto3 (through prefect-aws) against moto's standalone server."""

from __future__ import annotations

import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks.core.errors import ConfigError
from blocks.core.source import Candidate
from blocks.object_store.base import CHUNK_BYTES
from blocks.object_store.s3 import S3Source
from flows.s3 import ingest_s3
from pipeline.engine import landed_files
from tests.landed_rows import run_flow
from tests.objstore_servers import aws_credentials

pytest_plugins = ["tests.objstore_servers"]  # moto_endpoint, s3_bucket
pytestmark = pytest.mark.usefixtures("prefect_api")


def run(save_block, ledger, queue, source: S3Source, **params):
    return run_flow(ingest_s3, save_block, ledger, queue, source, **params)


def counts(state) -> dict:
    return state.result(raise_on_failure=False)


def landed(queue) -> list[str]:
    return [str(p.relative_to(queue.landing_root)) for p in landed_files(queue.landing_root)]


def keys(client, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def as_candidate(obj) -> Candidate:
    return Candidate(obj.key, obj.size, obj.mtime, obj.version, ref=obj.ref)


def source(endpoint: str, bucket: str, **fields) -> S3Source:
    fields.setdefault("source_id", "s3src")
    return S3Source(aws_credentials=aws_credentials(endpoint), bucket=bucket, **fields)


def test_pages_past_1000_objects_and_rerun_lands_nothing(
    save_block, sqlite_ledger, queue, s3_bucket, moto_endpoint
) -> None:
    client, bucket = s3_bucket
    for i in range(1050):  # ListObjectsV2 returns at most 1,000 per page
        client.put_object(Bucket=bucket, Key=f"bulk/f{i:04d}.csv", Body=f"{i}\n".encode())
    src = source(moto_endpoint, bucket, prefix="bulk/", max_parallel=16, retries=0)

    first = counts(run(save_block, sqlite_ledger, queue, src, date=date(2024, 5, 1)))
    assert (first["listed"], first["landed"], first["failed"]) == (1050, 1050, 0)
    files = landed(queue)
    assert len(files) == 1050 and "s3src/2024/05/01/bulk/f1049.csv" in files
    assert (queue.landing_root / "s3src/2024/05/01/bulk/f0007.csv").read_text() == "7\n"

    again = counts(run(save_block, sqlite_ledger, queue, src, date=date(2024, 5, 1)))
    assert (again["listed"], again["landed"], again["skipped"]) == (1050, 0, 1050)
    assert len(landed(queue)) == 1050


def test_date_templated_prefix_and_pattern_pick_the_run_day(
    save_block, ledger, queue, s3_bucket
) -> None:
    client, bucket = s3_bucket
    for key in (
        "exports/2024/03/01/AXIS_20240301_a.csv",
        "exports/2024/03/01/AXIS_20240301_a.txt",
        "exports/2024/03/01/OTHER_20240301.csv",
        "exports/2024/03/02/AXIS_20240302_b.csv",
        "exports/2024/03/02/AXIS_20240301_late.csv",
    ):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    # the endpoint comes from the source's own field here (S3-compatible store set-up)
    src = S3Source(
        source_id="axis",
        aws_credentials=aws_credentials(None),
        endpoint_url=client.meta.endpoint_url,
        bucket=bucket,
        prefix="exports/{date:%Y/%m/%d}/",
        pattern="AXIS_{date:%Y%m%d}*.csv",
    )
    first = counts(run(save_block, ledger, queue, src, date=date(2024, 3, 1)))
    assert (first["listed"], first["landed"]) == (1, 1)
    second = counts(run(save_block, ledger, queue, src, date=date(2024, 3, 2)))
    assert (second["listed"], second["landed"]) == (1, 1)
    assert landed(queue) == [
        "axis/2024/03/01/exports/2024/03/01/AXIS_20240301_a.csv",
        "axis/2024/03/02/exports/2024/03/02/AXIS_20240302_b.csv",
    ]


def test_newest_mode_takes_only_the_newest_object(
    save_block, sqlite_ledger, queue, s3_bucket, moto_endpoint
) -> None:
    client, bucket = s3_bucket
    # the newest has the smallest key, so a key-order pick would get it wrong
    client.put_object(Bucket=bucket, Key="in/z_old.csv", Body=b"old")
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    client.put_object(Bucket=bucket, Key="in/a_new.csv", Body=b"new")
    src = source(moto_endpoint, bucket, prefix="in/", mode="newest")

    first = counts(run(save_block, sqlite_ledger, queue, src))
    assert (first["listed"], first["landed"]) == (1, 1)
    assert [Path(p).name for p in landed(queue)] == ["a_new.csv"]
    assert counts(run(save_block, sqlite_ledger, queue, src))["landed"] == 0

    time.sleep(1.1)
    client.put_object(Bucket=bucket, Key="in/m_newer.csv", Body=b"newer")
    assert counts(run(save_block, sqlite_ledger, queue, src))["landed"] == 1
    assert sorted(Path(p).name for p in landed(queue)) == ["a_new.csv", "m_newer.csv"]


def test_same_key_with_new_content_lands_again(
    save_block, ledger, queue, s3_bucket, moto_endpoint
) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="daily.csv", Body=b"v1\n")
    src = source(moto_endpoint, bucket)
    day = date(2024, 6, 1)
    assert counts(run(save_block, ledger, queue, src, date=day))["landed"] == 1

    client.put_object(Bucket=bucket, Key="daily.csv", Body=b"version two\n")
    second = counts(run(save_block, ledger, queue, src, date=day))
    assert (second["landed"], second["skipped"]) == (1, 0)
    contents = sorted((queue.landing_root / p).read_bytes() for p in landed(queue))
    assert contents == [b"v1\n", b"version two\n"]

    # rewritten with the same bytes: same ETag and size, not even fetched
    client.put_object(Bucket=bucket, Key="daily.csv", Body=b"version two\n")
    third = counts(run(save_block, ledger, queue, src, date=day))
    assert (third["landed"], third["skipped"]) == (0, 1)
    assert len(landed(queue)) == 2


@pytest.mark.parametrize(
    ("action", "left_in_place", "archived"),
    [
        ("keep", True, False),
        ("delete", False, False),
        ("copy_to_archive", True, True),
        ("move_to_archive", False, True),
    ],
)
def test_after_landing_actions(
    save_block, sqlite_ledger, queue, s3_bucket, moto_endpoint, action, left_in_place, archived
) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="in/a.csv", Body=b"a\n")
    client.put_object(Bucket=bucket, Key="in/sub/b.csv", Body=b"b\n")
    src = source(
        moto_endpoint,
        bucket,
        after_landing_action=action,
        archive_prefix="done/" if archived else None,
    )
    assert counts(run(save_block, sqlite_ledger, queue, src))["landed"] == 2

    expected = []
    if left_in_place:
        expected += ["in/a.csv", "in/sub/b.csv"]
    if archived:
        expected += ["done/in/a.csv", "done/in/sub/b.csv"]
    assert keys(client, bucket) == sorted(expected)
    if archived:
        body = client.get_object(Bucket=bucket, Key="done/in/sub/b.csv")["Body"].read()
        assert body == b"b\n"
    # the archive sits inside the listed prefix ("" = whole bucket) and is never re-listed
    again = counts(run(save_block, sqlite_ledger, queue, src))
    assert again["landed"] == 0
    assert again["listed"] == (2 if left_in_place else 0)


def test_delete_leaves_an_object_that_changed_after_landing(s3_bucket, moto_endpoint) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="a.csv", Body=b"old")
    src = source(moto_endpoint, bucket, after_landing_action="delete")
    (cand,) = list(src.select(src.list_objects(""), "", "*"))
    client.put_object(Bucket=bucket, Key="a.csv", Body=b"rewritten meanwhile")
    with pytest.raises(Exception, match="not deleted"):
        src.after_landing(as_candidate(cand))
    assert keys(client, bucket) == ["a.csv"]


def test_missing_bucket_is_a_clear_error(save_block, sqlite_ledger, queue, moto_endpoint) -> None:
    src = source(moto_endpoint, "no-such-bucket-here")
    with pytest.raises(ConfigError, match=r"S3Source\.bucket: bucket 'no-such-bucket-here' does"):
        src.test_connection()
    state = run(save_block, sqlite_ledger, queue, src)
    assert state.is_failed()
    assert "S3Source.bucket" in state.message and "does not exist" in state.message


@pytest.fixture
def moto_auth(moto_endpoint):
    """Turn on moto's IAM authentication (a process-wide switch) for one test."""

    def switch(count: str) -> None:
        request = urllib.request.Request(
            f"{moto_endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},  # else werkzeug reads it as a form
        )
        urllib.request.urlopen(request, timeout=10).read()

    yield switch
    switch("inf")


def test_bad_credentials_are_a_clear_error_without_the_secret(
    save_block, sqlite_ledger, queue, s3_bucket, moto_endpoint, moto_auth
) -> None:
    import boto3

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="a.csv", Body=b"a")
    iam = boto3.client(
        "iam",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
    )
    user = f"ingest-{bucket}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":"s3:*","Resource":"*"}]}',
    )
    real = iam.create_access_key(UserName=user)["AccessKey"]
    moto_auth("0")  # from now on every request is authenticated

    good = source(moto_endpoint, bucket)
    good.aws_credentials = aws_credentials(
        moto_endpoint, real["AccessKeyId"], real["SecretAccessKey"]
    )
    assert good.test_connection()["sample"] == ["a.csv"]

    wrong_secret = "wrong-secret-0123456789-DO-NOT-LEAK"
    for creds in (
        aws_credentials(moto_endpoint, real["AccessKeyId"], wrong_secret),
        aws_credentials(moto_endpoint, "AKIAUNKNOWNKEY000000", wrong_secret),
    ):
        bad = source(moto_endpoint, bucket)
        bad.aws_credentials = creds
        with pytest.raises(ConfigError, match=r"S3Source\.aws_credentials") as err:
            bad.test_connection()
        assert wrong_secret not in str(err.value)
        state = run(save_block, sqlite_ledger, queue, bad)
        assert state.is_failed() and "S3Source.aws_credentials" in state.message
        assert wrong_secret not in state.message
    assert "SignatureDoesNotMatch" in str(err.value) or "InvalidAccessKeyId" in str(err.value)


def test_fetch_streams_in_bounded_chunks(s3_bucket, moto_endpoint) -> None:
    client, bucket = s3_bucket
    payload = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 17)
    client.put_object(Bucket=bucket, Key="big.bin", Body=payload)
    src = source(moto_endpoint, bucket)
    (obj,) = list(src.list_objects(""))

    class Recorder:
        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.data = bytearray()

        def write(self, chunk: bytes) -> int:
            self.sizes.append(len(chunk))
            self.data += chunk
            return len(chunk)

    out = Recorder()
    src.fetch(as_candidate(obj), out)
    assert bytes(out.data) == payload
    assert len(out.sizes) >= 4 and max(out.sizes) <= CHUNK_BYTES


def test_fetch_of_an_object_replaced_after_listing_is_skipped(s3_bucket, moto_endpoint) -> None:
    from blocks.core.source import SkipItem

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="a.csv", Body=b"listed")
    src = source(moto_endpoint, bucket)
    (obj,) = list(src.list_objects(""))
    client.put_object(Bucket=bucket, Key="a.csv", Body=b"replaced before the fetch")
    with pytest.raises(SkipItem, match="changed since it was listed"):
        src.fetch(as_candidate(obj), _Sink())


class _Sink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="archive_prefix"):
        S3Source(source_id="x", bucket="b", after_landing_action="move_to_archive")
    with pytest.raises(ValidationError, match="bare bucket name"):
        S3Source(source_id="x", bucket="s3://b")
    with pytest.raises(ConfigError, match=r"S3Source\.pattern: malformed date template"):
        S3Source(source_id="x", bucket="b", pattern="AXIS_{date:%Y*.csv").preflight()
    with pytest.raises(ConfigError, match=r"S3Source\.archive_prefix"):
        S3Source(
            source_id="x",
            bucket="b",
            prefix="done/in/",
            after_landing_action="copy_to_archive",
            archive_prefix="done/",
        ).preflight()
