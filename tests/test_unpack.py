"""Unpack and decrypt on landing (blocks/core/unpack.py, pipeline/unpack_landing.py).

Local folder flows on the Prefect test API (SQLite ledger; gzip also on PostgreSQL), one S3
flow on moto, real gpg keys made per module, and a run killed between two zip members.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from sqlalchemy import select

from blocks import IngestionQueue, Ledger, LocalFolderSource, QueueConsumer
from blocks.core import ledger_schema as t
from blocks.core.errors import ConfigError
from blocks.core.unpack import RATIO_FLOOR
from flows.local_folder import ingest_local_folder
from pipeline.engine import landed_files
from tests.landed_rows import run_flow
from tests.prefect_events import source_events
from tests.test_unpack_archives import zip_bytes

pytest_plugins = ["tests.objstore_servers"]  # moto_endpoint, s3_bucket
pytestmark = pytest.mark.usefixtures("prefect_api")
ROOT = Path(__file__).resolve().parents[1]


def run(save_block, ledger, queue, source, **params):
    return run_flow(ingest_local_folder, save_block, ledger, queue, source, **params)


def counts(state) -> dict:
    return state.result(raise_on_failure=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def items(ledger: Ledger, source: str) -> list[dict]:
    i = t.items.c
    stmt = (
        select(i.name, i.status, i.sha256, i.size, i.delivered_sha256, i.delivered_size, i.error)
        .where(i.source == source)
        .order_by(i.id)
    )
    with ledger.transaction() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def messages(ledger: Ledger, source: str) -> list[dict]:
    with ledger.transaction() as conn:
        rows = conn.execute(select(t.queue.c.payload).where(t.queue.c.source == source))
        return [json.loads(r.payload) if isinstance(r.payload, str) else r.payload for r in rows]


def landed_rel(queue: IngestionQueue) -> list[str]:
    if not queue.landing_root.exists():
        return []
    return [
        "/".join(p.relative_to(queue.landing_root).parts[4:])
        for p in landed_files(queue.landing_root)
    ]


# ----------------------------------------------------------------------------- flows
def test_gzip_lands_unpacked_with_both_checksums(save_block, ledger, queue, inbox) -> None:
    """gunzip on SQLite and PostgreSQL: the unpacked file lands once, its row keeps the
    delivered (gzip) checksum and size; a rerun fetches nothing."""
    plain = b"id,v\n" + b"1,abc\n" * 5000
    packed = gzip.compress(plain)
    (inbox / "data.csv.gz").write_bytes(packed)
    source = LocalFolderSource(source_id="gz", directory=str(inbox), unpack="gunzip")
    first = counts(run(save_block, ledger, queue, source))
    assert (first["listed"], first["landed"], first["failed"]) == (1, 1, 0), first
    assert first["landed_names"] == ["data.csv"] and first["bytes"] == len(plain)
    assert landed_rel(queue) == ["data.csv"]
    (path,) = landed_files(queue.landing_root)
    assert path.read_bytes() == plain
    rows = items(ledger, "gz")
    assert [(r["name"], r["status"]) for r in rows] == [
        ("data.csv", "landed"),
        ("data.csv.gz", "unpacked"),
    ]
    assert rows[0]["sha256"] == sha(plain) and rows[0]["size"] == len(plain)
    assert (rows[0]["delivered_sha256"], rows[0]["delivered_size"]) == (sha(packed), len(packed))
    (msg,) = messages(ledger, "gz")
    assert (msg["name"], msg["delivered_name"], msg["delivered_sha256"]) == (
        "data.csv",
        "data.csv.gz",
        sha(packed),
    )
    again = counts(run(save_block, ledger, queue, source))
    assert (again["listed"], again["landed"], again["skipped"]) == (1, 0, 1)
    assert QueueConsumer(ledger, "c").pending_count("gz") == 1
    assert not list(queue.staging_root.rglob("*.part"))


def test_zip_members_are_items_each_once(save_block, sqlite_ledger, queue, inbox) -> None:
    ledger = sqlite_ledger
    archive = zip_bytes({"a.csv": b"a\n", "sub/b.csv": b"b\n"}, dirs=("sub/",))
    (inbox / "drop.zip").write_bytes(archive)
    source = LocalFolderSource(source_id="zp", directory=str(inbox), unpack="zip")
    first = counts(run(save_block, ledger, queue, source))
    assert (first["listed"], first["landed"], first["failed"]) == (1, 2, 0), first
    assert sorted(first["landed_names"]) == ["drop.zip/a.csv", "drop.zip/sub/b.csv"]
    assert sorted(landed_rel(queue)) == ["drop.zip/a.csv", "drop.zip/sub/b.csv"]
    msgs = messages(ledger, "zp")
    assert sorted(m["name"] for m in msgs) == ["drop.zip/a.csv", "drop.zip/sub/b.csv"]
    assert {m["delivered_sha256"] for m in msgs} == {sha(archive)}

    # the same archive again, and under another name: skipped as a whole, nothing fetched
    # twice, no message
    shutil.copy(inbox / "drop.zip", inbox / "copy.zip")
    again = counts(run(save_block, ledger, queue, source))
    assert (again["listed"], again["landed"], again["skipped"], again["failed"]) == (2, 0, 2, 0)
    statuses = {r["name"]: r["status"] for r in items(ledger, "zp")}
    assert statuses["copy.zip"] == "duplicate" and statuses["drop.zip"] == "unpacked"

    # a new version of the archive with one member changed: only that member lands
    (inbox / "copy.zip").unlink()
    (inbox / "drop.zip").write_bytes(zip_bytes({"a.csv": b"a\n", "sub/b.csv": b"b2\n"}))
    third = counts(run(save_block, ledger, queue, source))
    assert (third["landed"], third["skipped"]) == (1, 1), third
    assert third["landed_names"] == ["drop.zip/sub/b.csv"]
    assert len(messages(ledger, "zp")) == 3


@pytest.mark.parametrize("event_per", ["batch", "item"])
def test_an_archives_members_are_announced_by_one_batch_event(
    save_block, sqlite_ledger, tmp_path, inbox, event_per
) -> None:
    """`event_per: batch` (the default): one ingest.items.landed for all of a zip's landed
    members, each member's payload in it; `item`: one ingest.item.landed per member."""
    members = {f"m{i:02d}.csv": f"{i}\n".encode() for i in range(12)}
    (inbox / "many.zip").write_bytes(zip_bytes(members))
    sid = f"zev-{event_per}"
    queue = IngestionQueue(landing_dir=str(tmp_path / "landing"), fsync=False, event_per=event_per)
    source = LocalFolderSource(source_id=sid, directory=str(inbox), unpack="zip")
    first = counts(run(save_block, sqlite_ledger, queue, source))
    assert (first["landed"], first["failed"]) == (12, 0), first
    names = sorted(f"many.zip/{name}" for name in members)
    if event_per == "batch":
        (event,) = source_events("ingest.items.landed", sid)
        assert event["payload"]["count"] == 12
        assert sorted(i["name"] for i in event["payload"]["items"]) == names
        assert {i["delivered_name"] for i in event["payload"]["items"]} == {"many.zip"}
        assert source_events("ingest.item.landed", sid, timeout=2) == []
    else:
        deadline = time.monotonic() + 30
        while len(found := source_events("ingest.item.landed", sid)) < 12:
            assert time.monotonic() < deadline, len(found)
            time.sleep(0.5)
        assert sorted(e["payload"]["name"] for e in found) == names
        assert source_events("ingest.items.landed", sid, timeout=2) == []


def test_bad_archives_fail_clearly_and_land_nothing(
    save_block, sqlite_ledger, queue, inbox
) -> None:
    """unpack='auto': a zip-slip member, a bomb, a corrupt zip and a truncated gzip each
    fail naming the file and the field; the plain file beside them lands; the run fails."""
    ledger = sqlite_ledger
    (inbox / "plain.csv").write_bytes(b"fine\n")
    (inbox / "slip.zip").write_bytes(zip_bytes({"ok.csv": b"1", "../../etc/evil": b"x"}))
    (inbox / "bomb.zip").write_bytes(zip_bytes({"zeros.bin": bytes(2 * RATIO_FLOOR)}))
    (inbox / "corrupt.zip").write_bytes(zip_bytes({"a.csv": b"a" * 1000})[:60] + b"junk" * 50)
    (inbox / "cut.csv.gz").write_bytes(gzip.compress(os.urandom(5000))[:-100])
    source = LocalFolderSource(source_id="bad", directory=str(inbox), unpack="auto", retries=0)
    state = run(save_block, ledger, queue, source)
    assert state.is_failed()
    with pytest.raises(Exception, match="4 of 5 item"):
        state.result()
    errors = {r["name"]: r["error"] for r in items(ledger, "bad") if r["status"] == "failed"}
    assert set(errors) == {"slip.zip", "bomb.zip", "corrupt.zip", "cut.csv.gz"}
    assert "slip.zip: unpack='zip': unsafe member" in errors["slip.zip"]
    assert "unpack_max_ratio=200" in errors["bomb.zip"]
    assert "corrupt.zip: unpack='zip': not a valid zip archive" in errors["corrupt.zip"]
    assert "cut.csv.gz: unpack='gunzip': not a valid gzip file" in errors["cut.csv.gz"]
    assert all("nothing landed" in e and "UnpackError" in e for e in errors.values())
    assert landed_rel(queue) == ["plain.csv"]
    assert QueueConsumer(ledger, "c").pending_count("bad") == 1
    assert not list(queue.staging_root.rglob("*.part"))
    assert sorted(p.name for p in inbox.iterdir()) == sorted(
        ["plain.csv", "slip.zip", "bomb.zip", "corrupt.zip", "cut.csv.gz"]
    )  # lose nothing: every delivery is still at the source for the next run

    # a bigger cap lets the bomb through on the next run (failed items are retried)
    roomy = source.model_copy(update={"unpack_max_ratio": 10_000.0})
    after = counts(run(save_block, ledger, queue, roomy, fail_on_item_error=False))
    assert after["landed_names"] == ["bomb.zip/zeros.bin"] and after["failed"] == 3


# ----------------------------------------------------------------------------- PGP
def _gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", *args],
        input=data,
        capture_output=True,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def pgp_keys(tmp_path_factory) -> Iterator[dict[str, bytes | str]]:
    """Two real key pairs: 'right' (passphrase protected) and 'wrong'; public keys
    imported in one keyring that encrypts test files."""
    if shutil.which("gpg") is None:
        pytest.fail("gpg is missing (Debian package gnupg, installed by .ci/run)")
    base = tmp_path_factory.mktemp("gpg")
    found: dict[str, bytes | str] = {}
    for who, passphrase in (("right", "correct horse"), ("wrong", "")):
        home = base / who
        home.mkdir(mode=0o700)
        _gpg(
            home,
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            f"{who} <{who}@example.test>",
            "future-default",
            "default",
            "never",
        )
        found[who] = _gpg(
            home, "--passphrase", passphrase, "--armor", "--export-secret-keys"
        ).decode()
        found[f"{who}-public"] = _gpg(home, "--armor", "--export")
    enc = base / "enc"
    enc.mkdir(mode=0o700)
    _gpg(enc, "--import", data=found["right-public"])  # type: ignore[arg-type]
    found["home"] = str(enc)
    yield found
    for home in base.iterdir():
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def encrypt(keys, data: bytes, armor: bool = False) -> bytes:
    args = ["--trust-model", "always", "-r", "right@example.test", "--encrypt"]
    return _gpg(Path(keys["home"]), *(["--armor"] if armor else []), *args, data=data)


def test_pgp_right_key_decrypts_wrong_key_fails_clearly(
    save_block, sqlite_ledger, queue, inbox, pgp_keys, caplog
) -> None:
    ledger = sqlite_ledger
    plain = b"id,secret\n1,42\n"
    (inbox / "data.csv.gz.pgp").write_bytes(encrypt(pgp_keys, gzip.compress(plain)))
    (inbox / "notes.txt.asc").write_bytes(encrypt(pgp_keys, b"armored\n", armor=True))
    key_block = save_block(Secret(value=pgp_keys["right"]), "pgp-key")
    pass_block = save_block(Secret(value="correct horse"), "pgp-pass")
    wrong_block = save_block(Secret(value=pgp_keys["wrong"]), "pgp-wrong")

    # wrong key: both fail naming the file and the block field; nothing lands
    wrong = LocalFolderSource(
        source_id="pgp",
        directory=str(inbox),
        unpack="auto",
        pgp_private_key_block=wrong_block,
        retries=0,
    )
    state = run(save_block, ledger, queue, wrong)
    assert state.is_failed()
    errors = {r["name"]: r["error"] for r in items(ledger, "pgp") if r["status"] == "failed"}
    assert set(errors) == {"data.csv.gz.pgp", "notes.txt.asc"}
    assert (
        f"the key in pgp_private_key_block {wrong_block!r} cannot decrypt it (wrong key)"
        in (errors["data.csv.gz.pgp"])
    )
    assert landed_rel(queue) == []

    # right key, wrong passphrase
    bad_pass = save_block(Secret(value="not it"), "pgp-pass")
    state = run(
        save_block,
        ledger,
        queue,
        wrong.model_copy(
            update={"pgp_private_key_block": key_block, "pgp_passphrase_block": bad_pass}
        ),
    )
    assert state.is_failed()
    last = [r["error"] for r in items(ledger, "pgp") if r["status"] == "failed"][-1]
    assert "wrong passphrase (pgp_passphrase_block)" in last

    # right key and passphrase: decrypted, gunzipped (auto peels both), landed once
    right = wrong.model_copy(
        update={"pgp_private_key_block": key_block, "pgp_passphrase_block": pass_block}
    )
    ok = counts(run(save_block, ledger, queue, right))
    assert sorted(ok["landed_names"]) == ["data.csv", "notes.txt"], ok
    assert sorted(landed_rel(queue)) == ["data.csv", "notes.txt"]
    landed = {p.name: p.read_bytes() for p in landed_files(queue.landing_root)}
    assert landed == {"data.csv": plain, "notes.txt": b"armored\n"}
    row = next(r for r in items(ledger, "pgp") if r["name"] == "data.csv")
    assert row["delivered_sha256"] == sha((inbox / "data.csv.gz.pgp").read_bytes())
    assert counts(run(save_block, ledger, queue, right))["landed"] == 0

    # secrets never reach errors or logs
    text = caplog.text + json.dumps(items(ledger, "pgp"))
    for secret in ("correct horse", "PRIVATE KEY BLOCK", pgp_keys["right"][100:140]):
        assert secret not in text
    assert not list(Path("/tmp").glob("ingest-gpg-*")), "gpg home folders must be removed"


def test_pgp_needs_its_key_block_before_any_io(save_block, sqlite_ledger, queue, inbox) -> None:
    (inbox / "x.pgp").write_bytes(b"\x85\x01")
    source = LocalFolderSource(source_id="nokey", directory=str(inbox), unpack="pgp")
    state = run(save_block, sqlite_ledger, queue, source)
    with pytest.raises(ConfigError, match="pgp_private_key_block: required when unpack is 'pgp'"):
        state.result()
    missing = source.model_copy(update={"pgp_private_key_block": "no-such-secret-block"})
    state = run(save_block, sqlite_ledger, queue, missing)
    with pytest.raises(ConfigError, match="cannot load the Secret block 'no-such-secret-block'"):
        state.result()
    assert items(sqlite_ledger, "nokey") == []


# ----------------------------------------------------------------------------- S3
def test_zip_from_s3_is_unpacked_the_same_way(save_block, sqlite_ledger, queue, s3_bucket) -> None:
    from blocks.object_store.s3 import S3Source
    from flows.s3 import ingest_s3
    from tests.objstore_servers import aws_credentials

    client, bucket = s3_bucket
    archive = zip_bytes({"a.csv": b"a\n", "b.csv": b"b\n"})
    client.put_object(Bucket=bucket, Key="in/drop.zip", Body=archive)
    client.put_object(Bucket=bucket, Key="in/one.csv.gz", Body=gzip.compress(b"one\n"))
    endpoint = client.meta.endpoint_url
    source = S3Source(
        source_id="s3zip",
        aws_credentials=aws_credentials(endpoint),
        bucket=bucket,
        prefix="in/",
        unpack="auto",
    )
    first = run_flow(ingest_s3, save_block, sqlite_ledger, queue, source).result()
    assert sorted(first["landed_names"]) == ["in/drop.zip/a.csv", "in/drop.zip/b.csv", "in/one.csv"]
    again = run_flow(ingest_s3, save_block, sqlite_ledger, queue, source).result()
    assert (again["landed"], again["skipped"]) == (0, 2)
    assert QueueConsumer(sqlite_ledger, "c").pending_count("s3zip") == 3


# ----------------------------------------------------------------------------- crash
def test_run_killed_between_zip_members_lands_each_member_once(
    save_block, ledger, queue, inbox
) -> None:
    """SIGKILL after the first of five members is recorded; the rerun lands the other
    four; every member has exactly one ledger row, one message and one file."""
    members = {f"m{i}.csv": f"member {i}\n".encode() * 100 for i in range(5)}
    (inbox / "five.zip").write_bytes(zip_bytes(members))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    from prefect.settings import PREFECT_API_URL

    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    url = ledger.engine.url.render_as_string(hide_password=False)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/unpack_subprocess.py"),
            url,
            str(queue.landing_root),
            str(inbox),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    signal_file = inbox.parent / "one-member-recorded"
    try:
        deadline = time.time() + 120
        while not signal_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the subprocess never recorded a member"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(items(ledger, "killed")) == 1  # one member recorded, no archive row yet

    source = LocalFolderSource(source_id="killed", directory=str(inbox), unpack="zip")
    rerun = counts(run(save_block, ledger, queue, source))
    assert (rerun["landed"], rerun["skipped"], rerun["failed"]) == (4, 1, 0), rerun
    rows = items(ledger, "killed")
    names = sorted(r["name"] for r in rows if r["status"] == "landed")
    assert names == [f"five.zip/m{i}.csv" for i in range(5)]
    assert [r["status"] for r in rows].count("unpacked") == 1
    assert sorted(m["name"] for m in messages(ledger, "killed")) == names
    assert sorted(landed_rel(queue)) == names
    for path in landed_files(queue.landing_root):
        assert path.read_bytes() == members[path.name]
    assert counts(run(save_block, ledger, queue, source))["landed"] == 0
