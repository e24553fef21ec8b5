"""GCS source end to end: the google-cloud-storage client prefect-gcp builds, against
gcp-storage-emulator (see tests/objstore_servers.py for how the client reaches it)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest

from blocks.core.errors import ConfigError
from blocks.object_store.gcs import GcsSource
from flows.gcs import ingest_gcs
from pipeline.engine import landed_files
from tests.landed_rows import run_flow
from tests.objstore_servers import ACCESS_TOKEN, gcp_credentials

pytest_plugins = ["tests.objstore_servers"]  # gcs_emulator, gcp_env, gcs_bucket, ...
pytestmark = pytest.mark.usefixtures("prefect_api")


def run(save_block, ledger, queue, source: GcsSource, **params):
    return run_flow(ingest_gcs, save_block, ledger, queue, source, **params)


def counts(state) -> dict:
    return state.result(raise_on_failure=False)


def landed(queue) -> list[str]:
    return [str(p.relative_to(queue.landing_root)) for p in landed_files(queue.landing_root)]


def put(client, bucket: str, key: str, data: bytes) -> None:
    client.bucket(bucket).blob(key).upload_from_string(data)


def keys(client, bucket: str) -> list[str]:
    return sorted(b.name for b in client.list_blobs(bucket))


def source(bucket: str, **fields) -> GcsSource:
    fields.setdefault("source_id", "gcssrc")
    return GcsSource(gcp_credentials=gcp_credentials(), bucket=bucket, **fields)


def test_lands_new_objects_once_and_rerun_lands_nothing(
    save_block, ledger, queue, gcs_bucket
) -> None:
    client, bucket = gcs_bucket
    for i in range(30):
        put(client, bucket, f"in/f{i:02d}.csv", f"{i}\n".encode())
    put(client, bucket, "elsewhere/x.csv", b"x")
    src = source(bucket, prefix="in/", page_size=7)
    assert src.test_connection()["sample"] == ["in/f00.csv"]

    first = counts(run(save_block, ledger, queue, src, date=date(2024, 5, 1)))
    assert (first["listed"], first["landed"], first["failed"]) == (30, 30, 0)
    assert (queue.landing_root / "gcssrc/2024/05/01/in/f07.csv").read_text() == "7\n"
    again = counts(run(save_block, ledger, queue, src, date=date(2024, 5, 1)))
    assert (again["listed"], again["landed"], again["skipped"]) == (30, 0, 30)


def test_date_pattern_and_newest_mode(save_block, sqlite_ledger, queue, gcs_bucket) -> None:
    client, bucket = gcs_bucket
    put(client, bucket, "drop/AXIS_20240301_z.csv", b"old")
    time.sleep(0.05)
    put(client, bucket, "drop/AXIS_20240301_a.csv", b"newest of the day")
    put(client, bucket, "drop/AXIS_20240229_late.csv", b"another day")
    put(client, bucket, "drop/OTHER_20240301.csv", b"other pattern")
    src = source(bucket, prefix="drop/", pattern="AXIS_{date:%Y%m%d}_*.csv", mode="newest")
    first = counts(run(save_block, sqlite_ledger, queue, src, date=date(2024, 3, 1)))
    assert (first["listed"], first["landed"]) == (1, 1)
    assert landed(queue) == ["gcssrc/2024/03/01/drop/AXIS_20240301_a.csv"]
    assert counts(run(save_block, sqlite_ledger, queue, src, date=date(2024, 3, 1)))["landed"] == 0
    prev = counts(run(save_block, sqlite_ledger, queue, src, date=date(2024, 2, 29)))
    assert prev["landed"] == 1


def test_same_key_with_new_content_lands_again(save_block, ledger, queue, gcs_bucket) -> None:
    client, bucket = gcs_bucket
    put(client, bucket, "daily.csv", b"v1\n")
    src = source(bucket)
    day = date(2024, 6, 1)
    assert counts(run(save_block, ledger, queue, src, date=day))["landed"] == 1
    put(client, bucket, "daily.csv", b"version two\n")  # a new generation
    assert counts(run(save_block, ledger, queue, src, date=day))["landed"] == 1
    contents = sorted((queue.landing_root / p).read_bytes() for p in landed(queue))
    assert contents == [b"v1\n", b"version two\n"]
    # same bytes again: a new generation, so fetched, but the content hash drops it
    put(client, bucket, "daily.csv", b"version two\n")
    third = counts(run(save_block, ledger, queue, src, date=day))
    assert (third["landed"], third["skipped"]) == (0, 1)


@pytest.mark.parametrize(
    ("action", "left_in_place", "archived"),
    [("delete", False, False), ("copy_to_archive", True, True), ("move_to_archive", False, True)],
)
def test_after_landing_actions(
    save_block, sqlite_ledger, queue, gcs_bucket, action, left_in_place, archived
) -> None:
    client, bucket = gcs_bucket
    put(client, bucket, "in/a.csv", b"a\n")
    put(client, bucket, "in/sub/b.csv", b"b\n")
    src = source(bucket, after_landing_action=action, archive_prefix="done/" if archived else None)
    assert counts(run(save_block, sqlite_ledger, queue, src))["landed"] == 2
    expected = []
    if left_in_place:
        expected += ["in/a.csv", "in/sub/b.csv"]
    if archived:
        expected += ["done/in/a.csv", "done/in/sub/b.csv"]
    assert keys(client, bucket) == sorted(expected)
    if archived:
        assert client.bucket(bucket).blob("done/in/sub/b.csv").download_as_bytes() == b"b\n"
    again = counts(run(save_block, sqlite_ledger, queue, src))
    assert again["landed"] == 0 and again["listed"] == (2 if left_in_place else 0)


def test_missing_bucket_is_a_clear_error(save_block, sqlite_ledger, queue, gcp_env) -> None:
    src = source("no-such-bucket-here")
    with pytest.raises(ConfigError, match=r"GcsSource\.bucket: bucket 'no-such-bucket-here' does"):
        src.test_connection()
    state = run(save_block, sqlite_ledger, queue, src)
    assert state.is_failed()
    assert "GcsSource.bucket" in state.message and "does not exist" in state.message


def test_credentials_without_access_are_a_clear_error_without_the_token(
    save_block, sqlite_ledger, queue, gcp_env, gcs_rejecting_endpoint, monkeypatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_rejecting_endpoint)
    src = source("some-bucket")
    with pytest.raises(ConfigError, match=r"GcsSource\.gcp_credentials: GCS refused") as err:
        src.test_connection()
    assert ACCESS_TOKEN not in str(err.value)
    state = run(save_block, sqlite_ledger, queue, src)
    assert state.is_failed() and "GcsSource.gcp_credentials" in state.message
    assert ACCESS_TOKEN not in state.message


def test_missing_credentials_are_a_clear_error(gcp_env, tmp_path: Path, monkeypatch) -> None:
    from prefect_gcp import GcpCredentials

    creds = GcpCredentials(project="test-project")  # built while the ADC file exists
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "gone.json"))
    src = GcsSource(source_id="g", bucket="b", gcp_credentials=creds)
    with pytest.raises(ConfigError, match=r"GcsSource\.gcp_credentials: could not get"):
        src.test_connection()
