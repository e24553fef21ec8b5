"""Landing into a bucket (Ingestion Queue `landing_bucket`): the local-folder flow end to
end into moto's S3 server and the GCS emulator, through saved prefect-aws `S3Bucket` and
prefect-gcp `GcsBucket` blocks.

The GCS emulator ignores `ifGenerationMatch`; `gcs_preconditions` teaches its rewrite
handler the one GCS rule we rely on (`ifGenerationMatch=0`: 412 when the key exists), so
the test proves our client sends the precondition and handles the refusal.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from pydantic import ValidationError

from blocks import IngestionQueue, Ledger, QueueConsumer
from blocks.core.errors import ConfigError, CredentialsError
from blocks.local_folder.block import LocalFolderSource
from flows.local_folder import ingest_local_folder
from pipeline.engine import clean_stale_staging
from tests.landed_rows import landed, run_flow
from tests.objstore_servers import aws_credentials, gcp_credentials

pytest_plugins = ["tests.objstore_servers"]
pytestmark = pytest.mark.usefixtures("prefect_api")
ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 3, 4)
FOLDER = "landing"
BIG = 17 * 1024 * 1024  # three 8 MiB parts: a multipart upload on S3, resumable on GCS


# ----------------------------------------------------------------------------- stores
class Bucket:
    """One fresh bucket on a test server, its saved bucket block, and a raw view of it."""

    def __init__(self, kind: str, client, name: str, ref: str) -> None:
        self.kind, self.client, self.name, self.ref = kind, client, name, ref
        self.scheme = "s3" if kind == "s3" else "gs"

    def list_keys(self) -> list[str]:
        if self.kind == "s3":
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))
        return sorted(b.name for b in self.client.list_blobs(self.name))

    def read(self, key: str) -> bytes:
        if self.kind == "s3":
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return self.client.bucket(self.name).blob(key).download_as_bytes()

    def sha_metadata(self, key: str) -> str | None:
        """The `ingest-sha256` user metadata the landing wrote on the object."""
        if self.kind == "s3":
            return self.client.head_object(Bucket=self.name, Key=key)["Metadata"].get(
                "ingest-sha256"
            )
        return (self.client.bucket(self.name).get_blob(key).metadata or {}).get("ingest-sha256")

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "s3":
            self.client.put_object(Bucket=self.name, Key=key, Body=data)
        else:
            self.client.bucket(self.name).blob(key).upload_from_string(data)

    def pending_uploads(self) -> int:
        """Incomplete S3 multipart uploads (GCS: 0, its staging objects are keys)."""
        if self.kind != "s3":
            return 0
        return len(self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", ()))


@pytest.fixture
def gcs_preconditions(gcs_emulator):
    """Make the emulator's rewrite honour `ifGenerationMatch=0` as GCS does (412)."""
    from gcp_storage_emulator import server as emu
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def rewrite(request, response, storage, *args, **kwargs):
        if request.query.get("ifGenerationMatch") == ["0"]:
            try:
                storage.get_file_obj(
                    request.params["dest_bucket_name"], request.params["dest_object_id"]
                )
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "conditionNotMet"}})
                return None
        return objects.rewrite(request, response, storage, *args, **kwargs)

    patched = [h for _, h in emu.HANDLERS if h.get("POST") is objects.rewrite]
    assert patched, "the emulator's rewrite route moved"
    for handlers in patched:
        handlers["POST"] = rewrite
    yield
    for handlers in patched:
        handlers["POST"] = objects.rewrite


@pytest.fixture(params=["s3", "gcs"])
def bucket(request, save_block) -> Bucket:
    if request.param == "s3":
        from prefect_aws.s3 import S3Bucket

        endpoint = request.getfixturevalue("moto_endpoint")
        client, name = request.getfixturevalue("s3_bucket")
        block = S3Bucket(
            bucket_name=name, credentials=aws_credentials(endpoint), bucket_folder=FOLDER
        )
        return Bucket("s3", client, name, f"s3-bucket/{save_block(block, 'land')}")
    from prefect_gcp.cloud_storage import GcsBucket

    request.getfixturevalue("gcs_preconditions")
    client, name = request.getfixturevalue("gcs_bucket")
    block = GcsBucket(bucket=name, gcp_credentials=gcp_credentials(), bucket_folder=FOLDER)
    return Bucket("gcs", client, name, f"gcs-bucket/{save_block(block, 'land')}")


def bucket_queue(tmp_path: Path, ref: str) -> IngestionQueue:
    return IngestionQueue(landing_dir=str(tmp_path / "landing"), landing_bucket=ref, fsync=False)


def run(save_block, ledger: Ledger, queue: IngestionQueue, inbox: Path, sid: str = "partner"):
    source = LocalFolderSource(source_id=sid, directory=str(inbox), recursive=True, retries=0)
    return run_flow(ingest_local_folder, save_block, ledger, queue, source, date=DAY)


def final_key(sid: str, name: str) -> str:
    return f"{FOLDER}/{sid}/{DAY:%Y/%m/%d}/{name}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- tests
def test_lands_each_item_once_into_the_bucket_and_rerun_lands_nothing(
    save_block, sqlite_ledger, bucket, inbox, tmp_path
) -> None:
    files = {"a.csv": b"1,2\n", "sub/b.csv": b"3,4\n", "big.bin": os.urandom(BIG)}
    for name, data in files.items():
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(data)
    queue = bucket_queue(tmp_path, bucket.ref)

    state = run(save_block, sqlite_ledger, queue, inbox)
    assert state.is_completed(), state.message
    assert state.result()["landed"] == 3
    expected = sorted(final_key("partner", n) for n in files)
    assert bucket.list_keys() == expected  # no staging object left, nothing else
    assert bucket.pending_uploads() == 0
    for name, data in files.items():
        assert bucket.read(final_key("partner", name)) == data
        assert bucket.sha_metadata(final_key("partner", name)) == sha(data)

    rows = landed(sqlite_ledger, "partner")
    uris = {r["name"]: r["landed_path"] for r in rows}
    assert uris == {n: f"{bucket.scheme}://{bucket.name}/{final_key('partner', n)}" for n in files}
    messages = QueueConsumer(sqlite_ledger, "c").claim(10, "partner")
    assert sorted(m.landed_path for m in messages) == sorted(uris.values())
    for m in messages:  # a consumer opens the object through the queue block
        assert m.payload["landed_path"] == m.landed_path
        with queue.open_landed(m.landed_path) as reader:
            assert sha(reader.read()) == m.sha256 == sha(files[m.item_name])

    again = run(save_block, sqlite_ledger, queue, inbox)
    assert again.result()["landed"] == 0
    assert bucket.list_keys() == expected
    assert len(landed(sqlite_ledger, "partner")) == 3


def test_other_content_at_the_key_is_never_overwritten(
    save_block, sqlite_ledger, bucket, inbox, tmp_path
) -> None:
    theirs = b"someone else's file\n"
    bucket.put(final_key("partner", "a.csv"), theirs)
    ours = b"our new content\n"
    (inbox / "a.csv").write_bytes(ours)
    queue = bucket_queue(tmp_path, bucket.ref)

    state = run(save_block, sqlite_ledger, queue, inbox)
    assert state.result()["landed"] == 1
    beside = final_key("partner", f"a~{sha(ours)[:12]}.csv")
    assert bucket.list_keys() == sorted([final_key("partner", "a.csv"), beside])
    assert bucket.read(final_key("partner", "a.csv")) == theirs
    assert bucket.read(beside) == ours
    (row,) = landed(sqlite_ledger, "partner")
    assert row["landed_path"].endswith(beside)


def test_a_key_created_after_the_check_is_not_overwritten(bucket, tmp_path) -> None:
    """The race: a run's HEAD saw no object, another writer created it before our write.
    The conditional write itself refuses (S3 If-None-Match on PutObject and on
    CompleteMultipartUpload; GCS ifGenerationMatch=0 on the rewrite)."""
    store = bucket_queue(tmp_path, bucket.ref).landing_store()
    for size in (10, BIG):
        key = f"{FOLDER}/race/{size}.bin"
        bucket.put(key, b"first writer")
        staged = tmp_path / f"{size}.part"
        staged.write_bytes(os.urandom(size))
        assert store.create_if_absent(staged, key, sha(staged.read_bytes()), size) is False
        assert bucket.read(key) == b"first writer"
    assert bucket.pending_uploads() == 0  # a refused multipart upload is aborted
    assert [k for k in bucket.list_keys() if "/.staging/" in k] == []


def test_same_content_already_at_the_key_is_recorded_once(
    save_block, sqlite_ledger, bucket, inbox, tmp_path
) -> None:
    """A crash after the upload but before the ledger record: the next run finds its
    own content at the key (no sha256 metadata here: it is hashed by streaming)."""
    data = b"landed before the crash\n"
    bucket.put(final_key("partner", "a.csv"), data)
    (inbox / "a.csv").write_bytes(data)
    queue = bucket_queue(tmp_path, bucket.ref)

    assert run(save_block, sqlite_ledger, queue, inbox).result()["landed"] == 1
    assert bucket.list_keys() == [final_key("partner", "a.csv")]
    assert len(landed(sqlite_ledger, "partner")) == 1
    assert QueueConsumer(sqlite_ledger, "c").pending_count("partner") == 1


def test_killed_during_upload_leaves_no_object_and_rerun_lands_once(
    save_block, sqlite_ledger, bucket, inbox, tmp_path
) -> None:
    data = os.urandom(BIG)
    (inbox / "big.bin").write_bytes(data)
    queue = bucket_queue(tmp_path, bucket.ref)
    signal_file = tmp_path / "uploading"
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/landing_bucket_subprocess.py"),
            sqlite_ledger.engine.url.render_as_string(hide_password=False),
            queue.landing_dir,
            str(inbox),
            bucket.ref,
            str(signal_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 180
        while not signal_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the subprocess never started uploading"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    # nothing visible at any final key, nothing recorded; the upload's leftovers are
    # invisible (S3: an incomplete multipart upload) or under .staging/ (GCS)
    assert [k for k in bucket.list_keys() if "/.staging/" not in k] == []
    leftovers = bucket.pending_uploads() + len([k for k in bucket.list_keys() if "/.staging/" in k])
    assert leftovers == 1
    assert landed(sqlite_ledger, "killed") == []
    assert QueueConsumer(sqlite_ledger, "c").pending_count("killed") == 0

    assert run(save_block, sqlite_ledger, queue, inbox, "killed").result()["landed"] == 1
    assert run(save_block, sqlite_ledger, queue, inbox, "killed").result()["landed"] == 0
    finals = [k for k in bucket.list_keys() if "/.staging/" not in k]
    assert finals == [final_key("killed", "big.bin")]
    assert bucket.read(finals[0]) == data
    assert len(landed(sqlite_ledger, "killed")) == 1
    assert QueueConsumer(sqlite_ledger, "c").pending_count("killed") == 1

    # a later run removes the leftovers once old enough (here: at once): the upload's
    # and the local *.part the killed run left (moto dates every multipart upload 2010,
    # so on S3 the rerun's own start-of-run cleanup already aborted it)
    assert clean_stale_staging(queue, "killed", older_than=0) >= 1
    assert list(queue.staging_root.rglob("*.part")) == []
    assert bucket.pending_uploads() == 0
    assert bucket.list_keys() == finals


def test_missing_bucket_fails_before_any_io_naming_the_field(
    save_block, sqlite_ledger, bucket, inbox, tmp_path
) -> None:
    (inbox / "a.csv").write_bytes(b"x")
    if bucket.kind == "s3":
        from prefect_aws.s3 import S3Bucket

        block = S3Bucket.load(bucket.ref.split("/", 1)[1])
        block.bucket_name = f"missing-{uuid.uuid4().hex[:8]}"
    else:
        from prefect_gcp.cloud_storage import GcsBucket

        block = GcsBucket.load(bucket.ref.split("/", 1)[1])
        block.bucket = f"missing-{uuid.uuid4().hex[:8]}"
    ref = f"{bucket.ref.split('/')[0]}/{save_block(block, 'gone')}"
    queue = bucket_queue(tmp_path, ref)

    with pytest.raises(ConfigError, match=r"IngestionQueue\.landing_bucket .*does not exist"):
        queue.preflight()
    state = run(save_block, sqlite_ledger, queue, inbox)
    assert state.is_failed()
    assert "IngestionQueue.landing_bucket" in state.message and "missing-" in state.message
    assert (inbox / "a.csv").exists()  # nothing lost: the next good run takes it
    assert sqlite_ledger.recent_items("partner", 10) == []


def test_unknown_block_or_bad_reference_is_a_clear_error(save_block, tmp_path) -> None:
    with pytest.raises(ValidationError, match=r"landing_bucket.*'s3-bucket/<name>'"):
        IngestionQueue(landing_bucket="my-bucket")
    queue = bucket_queue(tmp_path, "s3-bucket/no-such-block-saved")
    with pytest.raises(ConfigError, match=r"IngestionQueue\.landing_bucket.*no saved S3 Bucket"):
        queue.preflight()


@pytest.fixture
def moto_auth(moto_endpoint):
    """Turn on moto's IAM authentication (a process-wide switch) for one test."""

    def switch(count: str) -> None:
        request = urllib.request.Request(
            f"{moto_endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    yield switch
    switch("inf")


def test_wrong_s3_credentials_are_a_clear_error_without_the_secret(
    save_block, sqlite_ledger, s3_bucket, moto_endpoint, moto_auth, inbox, tmp_path
) -> None:
    from prefect_aws.s3 import S3Bucket

    _, name = s3_bucket
    secret = "wrong-secret-0123456789-DO-NOT-LEAK"
    block = S3Bucket(
        bucket_name=name, credentials=aws_credentials(moto_endpoint, "AKIAUNKNOWN0000", secret)
    )
    queue = bucket_queue(tmp_path, f"s3-bucket/{save_block(block, 'bad')}")
    (inbox / "a.csv").write_bytes(b"x")
    moto_auth("0")
    with pytest.raises(CredentialsError, match=r"IngestionQueue\.landing_bucket") as err:
        queue.preflight()
    assert secret not in str(err.value)
    state = run(save_block, sqlite_ledger, queue, inbox)
    assert state.is_failed() and "S3 refused the credentials" in state.message
    assert secret not in state.message
    assert (inbox / "a.csv").exists()


def test_gcs_credentials_without_access_are_a_clear_error(
    save_block, sqlite_ledger, gcp_env, gcs_rejecting_endpoint, monkeypatch, inbox, tmp_path
) -> None:
    from prefect_gcp.cloud_storage import GcsBucket

    block = GcsBucket(bucket="some-bucket", gcp_credentials=gcp_credentials())
    queue = bucket_queue(tmp_path, f"gcs-bucket/{save_block(block, 'bad')}")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_rejecting_endpoint)
    with pytest.raises(CredentialsError, match=r"IngestionQueue\.landing_bucket.*GCS refused"):
        queue.preflight()
    (inbox / "a.csv").write_bytes(b"x")
    state = run(save_block, sqlite_ledger, queue, inbox)
    assert state.is_failed() and "IngestionQueue.landing_bucket" in state.message


def test_retention_deletes_landed_objects_only_under_the_queues_bucket_folder(
    save_block, sqlite_ledger, bucket, inbox, tmp_path
) -> None:
    from blocks.core.ledger import LandedRecord
    from flows.retention import prune_source

    (inbox / "a.csv").write_bytes(b"old\n")
    queue = bucket_queue(tmp_path, bucket.ref)
    assert run(save_block, sqlite_ledger, queue, inbox).result()["landed"] == 1
    consumer = QueueConsumer(sqlite_ledger, "c")
    consumer.ack([m.message_id for m in consumer.claim(10, "partner")])
    foreign = f"{bucket.scheme}://{bucket.name}/elsewhere/a.csv"
    bucket.put("elsewhere/a.csv", b"not ours to delete")
    sqlite_ledger.record_landed(LandedRecord("partner", "b.csv", sha(b"b"), 1, foreign, None))
    later = datetime.now(UTC) + timedelta(days=40)
    store = queue.landing_store()

    dry = prune_source(sqlite_ledger, queue.landing_root, "partner", 30, later, True, store=store)
    assert (dry.files, dry.refused) == (1, 1)
    assert len(bucket.list_keys()) == 2
    done = prune_source(sqlite_ledger, queue.landing_root, "partner", 30, later, False, store=store)
    assert (done.files, done.refused) == (1, 1) and foreign in done.problems[0]
    assert bucket.list_keys() == ["elsewhere/a.csv"]  # ours deleted, the foreign one kept
    assert len(landed(sqlite_ledger, "partner")) == 2  # dedupe rows stay
