"""SFTP small files read in one pipeline (`SftpSource.prefetch`, blocks/sftp/batch_read.py)
and sidecars read the same way while listing, against the real OpenSSH sshd of
tests/sftp_server.py."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

import paramiko
import pytest

import blocks.sftp.batch_read as batch_read
import blocks.sftp.block as sftp_block
from blocks.core.errors import IngestError
from blocks.core.source import DiscoverContext, ItemGone
from blocks.sftp.block import SftpSource
from tests import sftp_server
from tests.test_sftp import make, run  # noqa: F401 (shared helpers)

DAY = date(2025, 1, 10)
OLD = time.time() - 3600


@pytest.fixture(scope="module")
def sshd():
    with sftp_server.running_sshd() as server:
        yield server


@pytest.fixture
def remote(sshd, request) -> Path:
    return sshd.folder(request.node.name.replace("[", "_").replace("]", "_"))


@pytest.fixture
def opens(monkeypatch) -> list[str]:
    """Paths opened by paramiko's own OPEN (the one-file-at-a-time path)."""
    seen: list[str] = []
    real = paramiko.SFTPClient.open

    def counting(self, filename, *args, **kwargs):
        seen.append(str(filename))
        return real(self, filename, *args, **kwargs)

    monkeypatch.setattr(paramiko.SFTPClient, "open", counting)
    return seen


@pytest.fixture
def batches(monkeypatch) -> list[list[str]]:
    """The paths of each `read_small_files` call the block made."""
    seen: list[list[str]] = []
    real = sftp_block.read_small_files

    def recording(sftp, reads, *args, **kwargs):
        seen.append([r.path for r in reads])
        return real(sftp, reads, *args, **kwargs)

    monkeypatch.setattr(sftp_block, "read_small_files", recording)
    return seen


# make() and run() are test_sftp's: the same login fields and flow call


def landed(queue) -> dict[str, bytes]:
    root = Path(queue.landing_dir)
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_many(sshd, remote: Path, n: int) -> dict[str, bytes]:
    """`n` files, each its own content (equal ones would be skipped as duplicates), of
    mixed small sizes: empty, one byte, 2 KiB, over one 255 KiB read, exactly 1 MiB (the
    largest small item), then a few KiB each."""
    sizes = [0, 1, 2048, 300_000, 1024 * 1024]
    files = {}
    for i in range(n):
        size = sizes[i] if i < len(sizes) else 2048 + i
        files[f"f{i:04d}.csv"] = os.urandom(size)
    for name, data in files.items():
        sshd.put(remote, name, data, OLD)
    return files


def test_a_batch_of_small_files_lands_byte_exact_through_one_pipeline(
    sshd, remote, save_block, sqlite_ledger, queue, opens, batches
):
    files = put_many(sshd, remote, 120)
    source = make(sshd, remote, max_parallel=2, small_item_batch=50)
    counts = run(save_block, source, sqlite_ledger, queue)
    assert (counts["listed"], counts["landed"], counts["failed"]) == (120, 120, 0), counts
    assert landed(queue) == files
    assert opens == [], "a small file went the one-by-one way"
    read = Counter(Path(p).name for batch in batches for p in batch)
    assert read == Counter(list(files)), "every file read once, in a batch"
    assert max(len(b) for b in batches) == 50


def test_prefetch_costs_two_sends_and_fetch_serves_from_memory(sshd, remote, opens, monkeypatch):
    files = put_many(sshd, remote, 30)
    source = make(sshd, remote)
    cands = list(source.discover(DiscoverContext(DAY)))
    conn = source._conn()
    chan = conn.sftp.get_channel()
    sends = []
    real_sendall = chan.sendall
    chan.sendall = lambda payload: (sends.append(len(payload)), real_sendall(payload))[1]
    source.prefetch(cands)
    assert len(sends) == 2  # every OPEN, then every READ and CLOSE
    for cand in cands:
        out = io.BytesIO()
        assert source.fetch(cand, out) is None
        assert out.getvalue() == files[cand.name]
    assert len(sends) == 2 and opens == []
    assert source._local.prefetched == {}  # each served once, then forgotten
    assert source._local.conn is conn and conn.sftp.listdir(str(remote))  # replies all read

    # beyond the byte budget the rest go the usual way, one OPEN each
    monkeypatch.setattr(sftp_block, "_PREFETCH_BUDGET", 8 * 1024)
    small = [c for c in cands if c.size is not None and c.size < 4000]
    source.prefetch(small)
    kept = {key[0] for key in source._local.prefetched}
    assert 2 <= len(kept) < len(small)
    for cand in small:
        out = io.BytesIO()
        source.fetch(cand, out)
        assert out.getvalue() == files[cand.name]
    assert sorted(Path(p).name for p in opens) == sorted(
        c.name for c in small if c.name not in kept
    )
    source.close()


def test_a_file_deleted_between_listing_and_batch_is_skipped_with_a_warning(
    sshd, remote, save_block, sqlite_ledger, queue, opens, batches, monkeypatch, caplog
):
    files = put_many(sshd, remote, 12)
    listing = SftpSource.discover

    def list_then_delete(self, ctx):
        found = list(listing(self, ctx))
        (remote / "f0003.csv").unlink()
        return found

    monkeypatch.setattr(SftpSource, "discover", list_then_delete)
    caplog.set_level(logging.INFO, logger="prefect")
    counts = run(save_block, make(sshd, remote, max_parallel=1), sqlite_ledger, queue)
    assert (counts["listed"], counts["landed"], counts["skipped"], counts["failed"]) == (
        12,
        11,
        1,
        0,
    ), counts
    del files["f0003.csv"]
    assert landed(queue) == files
    assert batches and opens == []  # ItemGone came from the batch's OPEN, no second look
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("f0003.csv: deleted or renamed since it was listed" in m for m in warnings)


def test_a_file_that_changed_size_after_listing_is_refused_not_truncated(sshd, remote):
    files = put_many(sshd, remote, 6)
    source = make(sshd, remote)
    cands = {c.name: c for c in source.discover(DiscoverContext(DAY))}
    with open(remote / "f0002.csv", "ab") as fh:  # 2048 bytes listed
        fh.write(b"one more line\n")
    with open(remote / "f0003.csv", "r+b") as fh:  # 300000 listed: two reads
        fh.truncate(299_000)
    os.chmod(remote / "f0004.csv", 0)
    (remote / "f0001.csv").unlink()
    conn = source._conn()
    source.prefetch(list(cands.values()))
    with pytest.raises(ItemGone):
        source.fetch(cands["f0001.csv"], io.BytesIO())
    with pytest.raises(IngestError, match=r"f0002.csv: size changed .*more than 2048 now") as grew:
        source.fetch(cands["f0002.csv"], io.BytesIO())
    assert grew.value.retryable
    with pytest.raises(IngestError, match=r"f0003.csv: size changed .*299000 now"):
        source.fetch(cands["f0003.csv"], io.BytesIO())
    # unreadable: the batch leaves it to the usual path, which reports it as it always did
    with pytest.raises(IngestError, match="f0004.csv: SFTP download failed"):
        source.fetch(cands["f0004.csv"], io.BytesIO())
    out = io.BytesIO()
    source.fetch(cands["f0000.csv"], out)
    assert out.getvalue() == files["f0000.csv"]
    assert source._local.conn is None or source._local.conn is not conn  # the usual path
    source.close()

    # the connection stays usable after a refused file when nothing else failed
    source = make(sshd, remote)
    os.chmod(remote / "f0004.csv", 0o644)
    conn = source._conn()
    source.prefetch([cands["f0002.csv"], cands["f0005.csv"]])
    with pytest.raises(IngestError, match="size changed"):
        source.fetch(cands["f0002.csv"], io.BytesIO())
    assert source._local.conn is conn and conn.alive
    source.close()


def test_a_grown_file_in_a_batch_fails_retried_and_lands_later_whole(
    sshd, remote, save_block, sqlite_ledger, queue, batches, monkeypatch
):
    files = put_many(sshd, remote, 8)
    listing = SftpSource.discover

    def list_then_grow(self, ctx):
        found = list(listing(self, ctx))
        with open(remote / "f0002.csv", "ab") as fh:
            fh.write(b"appended")
        return found

    monkeypatch.setattr(SftpSource, "discover", list_then_grow)
    source = make(sshd, remote, max_parallel=1)
    counts = run(save_block, source, sqlite_ledger, queue)
    assert (counts["landed"], counts["failed"]) == (7, 1), counts
    assert "f0002.csv" not in landed(queue)  # never landed cut to the listed size
    [failure] = [i for i in sqlite_ledger.recent_items("partner") if i["status"] == "failed"]
    assert failure["name"] == "f0002.csv"
    assert "grew" in str(failure) or "size changed" in str(failure)
    assert batches
    monkeypatch.setattr(SftpSource, "discover", listing)
    again = run(save_block, source, sqlite_ledger, queue)
    assert again["landed"] == 1
    assert landed(queue)["f0002.csv"] == files["f0002.csv"] + b"appended"


def test_sidecars_read_in_one_pipeline_still_verify_and_quarantine(
    sshd, remote, save_block, sqlite_ledger, queue, opens, batches
):
    files = {f"d{i}.csv": os.urandom(100 + i) for i in range(8)}
    for name, data in files.items():
        sshd.put(remote, name, data, OLD)
    for name in ["d0.csv", "d1.csv", "d2.csv"]:
        sshd.put(remote, name + ".sha256", sha(files[name]).upper().encode(), OLD)
    for name in ["d3.csv", "d4.csv"]:
        sshd.put(remote, name + ".sha256", f"{sha(files[name])}  {name}\n".encode(), OLD)
    sshd.put(remote, "d5.csv.sha256", f"{sha(b'other')}  d5.csv\n".encode(), OLD)
    sshd.put(remote, "d6.csv.sha256", b"not a checksum\n", OLD)
    # d7.csv: no sidecar

    source = make(sshd, remote, checksum_extension=".sha256")
    cands = {c.name: c for c in source.discover(DiscoverContext(DAY))}
    one_by_one = {n: source._read_sidecar(n + ".sha256") for n in cands if n != "d7.csv"}
    assert {n: c.expected_sha256 for n, c in cands.items() if n != "d7.csv"} == one_by_one
    assert cands["d7.csv"].expected_sha256 is None
    assert one_by_one["d6.csv"].startswith("invalid-sidecar-")
    source.close()
    opens.clear()
    batches.clear()

    counts = run(save_block, source, sqlite_ledger, queue)
    assert (counts["listed"], counts["landed"], counts["failed"]) == (8, 6, 2), counts
    assert opens == [], "a sidecar or file was opened one by one"
    assert [Path(p).name for p in batches[0]] == [f"d{i}.csv.sha256" for i in range(7)]
    failed = sorted(
        i["name"] for i in sqlite_ledger.recent_items("partner") if i["status"] == "failed"
    )
    assert failed == ["d5.csv", "d6.csv"]
    quarantined = [p.name for p in queue.quarantine_root.rglob("*") if p.is_file()]
    assert any("d5.csv" in n for n in quarantined) and any("d6.csv" in n for n in quarantined)
    assert landed(queue) == {n: d for n, d in files.items() if n not in ("d5.csv", "d6.csv")}

    require = make(sshd, remote, checksum_extension=".sha256", require_checksum=True)
    assert sorted(c.name for c in require.discover(DiscoverContext(DAY))) == [
        f"d{i}.csv" for i in range(7)
    ]
    # a sidecar the server will not let us read fails the listing, as one by one
    os.chmod(remote / "d3.csv.sha256", 0)
    with pytest.raises(IngestError, match=r"cannot read sidecar 'd3.csv.sha256'.*ermission"):
        list(require.discover(DiscoverContext(DAY)))
    assert require._local.conn.alive  # every answer was read: the link stays usable
    require.close()


def test_a_connection_killed_mid_prefetch_lands_everything_once(
    sshd, remote, save_block, sqlite_ledger, queue, monkeypatch, caplog
):
    """The sessions are killed while a batch waits for its OPEN answers (the batch falls
    back to one file at a time), then again under the first file fetched that way (the
    run retries it): every file lands once, byte-exact."""
    files = put_many(sshd, remote, 60)
    real = batch_read.recv_chunks
    real_open = paramiko.SFTPClient.open
    lock = threading.Lock()
    killed: dict[str, int] = {}

    def kill_once(chan, min_bytes):
        with lock:  # the OPENs are out, their answers not yet taken
            if "prefetch" not in killed:
                killed["prefetch"] = sshd.drop_sessions()
        return real(chan, min_bytes)

    def kill_again(self, *args, **kwargs):
        with lock:  # the first file fetched the usual way after it: retried
            if "prefetch" in killed and "fetch" not in killed:
                killed["fetch"] = sshd.drop_sessions()
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(batch_read, "recv_chunks", kill_once)
    monkeypatch.setattr(paramiko.SFTPClient, "open", kill_again)
    caplog.set_level(logging.INFO, logger="prefect")
    source = make(sshd, remote, max_parallel=2, operation_timeout_seconds=10, retries=2)
    counts = run(save_block, source, sqlite_ledger, queue)
    assert killed["prefetch"] >= 1 and killed["fetch"] >= 1
    assert (counts["landed"], counts["failed"]) == (60, 0), counts
    assert landed(queue) == files
    rows = [i for i in sqlite_ledger.recent_items("partner", limit=1000) if i["status"] == "landed"]
    assert sorted(r["name"] for r in rows) == sorted(files)  # each exactly once
    messages = [r.getMessage() for r in caplog.records]
    assert any("small files at once failed" in m for m in messages)
    assert any("download failed" in m and "retrying" in m for m in messages), messages
    again = run(save_block, source, sqlite_ledger, queue)
    assert again["landed"] == 0 and again["skipped"] == 60
