"""SFTP source against a real OpenSSH sshd started by the tests (tests/sftp_server.py)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from blocks.core.errors import ConfigError
from blocks.core.source import DiscoverContext
from blocks.sftp.block import SftpSource
from blocks.sftp.connection import SftpAuthError, SftpHostKeyError
from flows.sftp import ingest_sftp
from tests import sftp_server

DAY = date(2025, 1, 10)
OLD = time.time() - 3600


@pytest.fixture(scope="module")
def sshd():
    with sftp_server.running_sshd() as server:
        yield server


@pytest.fixture
def remote(sshd, request) -> Path:
    return sshd.folder(request.node.name.replace("[", "_").replace("]", "_"))


def make(sshd, remote: Path, **kw) -> SftpSource:
    fields = dict(
        source_id="partner",
        **sftp_server.login_fields(sshd, remote),
        retries=1,
        retry_delay_seconds=0,
    )
    fields.update(kw)
    return SftpSource(**fields)


def run(save_block, source, ledger, queue, **kw):
    return ingest_sftp(
        source_block=save_block(source),
        ledger_block=save_block(ledger),
        queue_block=save_block(queue),
        fail_on_item_error=False,
        **kw,
    )


def landed_names(queue) -> list[str]:
    root = Path(queue.landing_dir)
    return sorted(p.name for p in root.rglob("*") if p.is_file() and not p.name.endswith(".part"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_to(source: SftpSource, cand, staged: Path):
    """Fetch into a staging file through the pipeline's writer; returns the writer."""
    from pipeline.engine import HashingWriter

    with open(staged, "wb") as fh:
        writer = HashingWriter(fh, staged)
        source.fetch(cand, writer)
        writer.close()
    return writer


def test_date_pattern_sidecars_and_rerun(sshd, remote, save_block, sqlite_ledger, queue):
    good = b"id,amount\n1,10\n"
    bad = b"id,amount\n2,20\n"
    missing = b"id,amount\n3,30\n"
    sshd.put(remote, "AXIS_RECON_20250110.csv", good, OLD)
    sshd.put(
        remote, "AXIS_RECON_20250110.csv.sha256", f"{sha(good)}  AXIS_RECON_20250110.csv\n".encode()
    )
    sshd.put(remote, "AXIS_RECON_20250110_b.csv", bad, OLD)
    sshd.put(remote, "AXIS_RECON_20250110_b.csv.sha256", (sha(b"other") + "\n").encode())
    sshd.put(remote, "AXIS_RECON_20250110_c.csv", missing, OLD)
    sshd.put(remote, "AXIS_RECON_20250109.csv", b"yesterday", OLD)
    sshd.put(remote, "OTHER_20250110.csv", b"not ours", OLD)
    source = make(
        sshd, remote, pattern="AXIS_RECON_{date:%Y%m%d}*.csv", checksum_extension=".sha256"
    )

    counts = run(save_block, source, sqlite_ledger, queue, date=DAY)
    assert counts["listed"] == 3
    assert counts["landed"] == 2  # good + missing sidecar (landed unverified)
    assert counts["failed"] == 1
    assert landed_names(queue) == ["AXIS_RECON_20250110.csv", "AXIS_RECON_20250110_c.csv"]
    failed = [i for i in sqlite_ledger.recent_items("partner") if i["status"] == "failed"]
    assert [i["name"] for i in failed] == ["AXIS_RECON_20250110_b.csv"]
    assert "sha256" in str(failed[0]).lower() or "checksum" in str(failed[0]).lower()
    quarantined = [p.name for p in queue.quarantine_root.rglob("*") if p.is_file()]
    assert any("AXIS_RECON_20250110_b.csv" in n for n in quarantined)

    again = run(save_block, source, sqlite_ledger, queue, date=DAY)
    assert again["landed"] == 0 and again["skipped"] == 2

    yesterday = run(save_block, source, sqlite_ledger, queue, date=date(2025, 1, 9))
    assert yesterday["landed"] == 1


def test_require_checksum_leaves_file_without_sidecar(
    sshd, remote, save_block, sqlite_ledger, queue
):
    sshd.put(remote, "a.csv", b"a", OLD)
    source = make(sshd, remote, checksum_extension=".sha256", require_checksum=True)
    assert run(save_block, source, sqlite_ledger, queue)["listed"] == 0
    sshd.put(remote, "a.csv.sha256", sha(b"a").encode())
    assert run(save_block, source, sqlite_ledger, queue)["landed"] == 1


def test_force_redownloads(sshd, remote, save_block, sqlite_ledger, queue):
    sshd.put(remote, "f.csv", b"x", OLD)
    source = make(sshd, remote)
    assert run(save_block, source, sqlite_ledger, queue)["landed"] == 1
    forced = run(save_block, source, sqlite_ledger, queue, force=True)
    assert forced["skipped"] == 0 and forced["listed"] == 1


def test_growing_file_skipped_then_taken(sshd, remote, save_block, sqlite_ledger, queue):
    path = sshd.put(remote, "growing.csv", b"start\n")
    stop = threading.Event()

    def grow() -> None:
        while not stop.is_set():
            with open(path, "ab") as fh:
                fh.write(b"more\n")
            time.sleep(0.05)

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    source = make(sshd, remote, stability_seconds=0.5)
    try:
        first = run(save_block, source, sqlite_ledger, queue)
    finally:
        stop.set()
        writer.join()
    assert first["landed"] == 0
    second = run(save_block, source, sqlite_ledger, queue)
    assert second["landed"] == 1
    assert (next(Path(queue.landing_dir).rglob("growing.csv"))).read_bytes() == path.read_bytes()


def test_min_age_leaves_fresh_files(sshd, remote, save_block, sqlite_ledger, queue):
    path = sshd.put(remote, "fresh.csv", b"x")
    source = make(sshd, remote, min_age_seconds=600)
    assert run(save_block, source, sqlite_ledger, queue)["landed"] == 0
    os.utime(path, (OLD, OLD))
    assert run(save_block, source, sqlite_ledger, queue)["landed"] == 1


@pytest.mark.parametrize("action", ["delete", "archive"])
def test_after_landing(sshd, remote, save_block, sqlite_ledger, queue, action):
    data = b"payload"
    sshd.put(remote, "d.csv", data, OLD)
    sshd.put(remote, "d.csv.sha256", sha(data).encode())
    archive = sshd.folder(remote.name + "_archive")
    source = make(
        sshd,
        remote,
        checksum_extension=".sha256",
        after_landing_action=action,
        archive_dir=str(archive) if action == "archive" else None,
    )
    assert run(save_block, source, sqlite_ledger, queue)["landed"] == 1
    assert sorted(os.listdir(remote)) == []
    expected = ["d.csv", "d.csv.sha256"] if action == "archive" else []
    assert sorted(os.listdir(archive)) == expected


def test_key_login_spaces_unicode_and_escaping_names(
    sshd, remote, save_block, sqlite_ledger, queue
):
    sshd.put(remote, "report 2025 Q1.csv", b"spaces", OLD)
    sshd.put(remote, "zahlungseingänge_日本.csv", b"unicode", OLD)
    sshd.put(remote, "..\\escape.csv", b"evil", OLD)  # a backslash is legal in a Linux name
    source = make(sshd, remote, password=None, private_key=sshd.client_key)
    counts = run(save_block, source, sqlite_ledger, queue)
    assert counts["landed"] == 2 and counts["failed"] == 1
    assert landed_names(queue) == ["report 2025 Q1.csv", "zahlungseingänge_日本.csv"]
    failed = [i for i in sqlite_ledger.recent_items("partner") if i["status"] == "failed"]
    assert [i["name"] for i in failed] == ["..\\escape.csv"]
    assert not any("escape" in p.name for p in Path(queue.landing_dir).parent.rglob("*"))


def test_one_failed_file_does_not_fail_the_others(sshd, remote, save_block, sqlite_ledger, queue):
    sshd.put(remote, "ok1.csv", b"1", OLD)
    locked = sshd.put(remote, "locked.csv", b"2", OLD)
    sshd.put(remote, "ok2.csv", b"3", OLD)
    os.chmod(locked, 0)
    counts = run(save_block, make(sshd, remote), sqlite_ledger, queue)
    assert counts["landed"] == 2 and counts["failed"] == 1


def test_wrong_password_is_clear_and_does_not_leak(sshd, remote, save_block, sqlite_ledger, queue):
    secret = "Wrong-Pw-Must-Not-Leak-42"
    source = make(sshd, remote, password=secret)
    with pytest.raises(SftpAuthError) as info:
        source.test_connection()
    assert "login refused" in str(info.value) and sftp_server.USER in str(info.value)
    assert secret not in str(info.value) and secret not in repr(source)
    with pytest.raises(Exception) as flow_info:
        run(save_block, source, sqlite_ledger, queue)
    assert secret not in str(flow_info.value)


def test_unknown_or_wrong_host_key_refused(sshd, remote):
    unknown = make(sshd, remote, host_key=None)
    with pytest.raises(ConfigError, match="host_key"):
        unknown.test_connection()
    wrong = make(sshd, remote, host_key="SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(SftpHostKeyError, match="does not match"):
        wrong.test_connection()
    # the opt-in accepts, and a fingerprint works as host_key
    report = make(sshd, remote, host_key=None, accept_unknown_host_key=True).test_connection()
    assert make(sshd, remote, host_key=report["host_key"]).test_connection()["entries"] == 0


def test_test_connection_reports(sshd, remote):
    sshd.put(remote, "AXIS_20250110.csv", b"x")
    sshd.put(remote, "AXIS_20250110.csv.sha256", sha(b"x").encode())
    sshd.put(remote, "AXIS_20250109.csv", b"x")
    report = make(
        sshd, remote, pattern="AXIS_{date:%Y%m%d}.csv", checksum_extension=".sha256"
    ).test_connection(DAY)
    assert report["entries"] == 3 and report["matching_files"] == 1
    assert report["sample"] == [{"name": "AXIS_20250110.csv", "sidecar": True}]


def test_bad_config_names_the_field(sshd, remote):
    with pytest.raises(ConfigError, match="SftpSource.remote_dir"):
        make(sshd, remote / "nope").test_connection()
    with pytest.raises(ConfigError, match="SftpSource.password"):
        make(sshd, remote, password=None).preflight()
    with pytest.raises(ConfigError, match="SftpSource.pattern"):
        make(sshd, remote, pattern="A_{date:%Y").preflight()


def test_dropped_connection_mid_transfer_then_reconnect(sshd, remote):
    """Kill the session's sshd child after the first MB; the next attempt reconnects."""
    data = os.urandom(1024 * 1024) * 80  # bigger than one read segment
    sshd.put(remote, "big.bin", data, OLD)
    source = make(sshd, remote, operation_timeout_seconds=10)
    [cand] = list(source.discover(DiscoverContext(DAY)))

    class Killer(io.BytesIO):
        def write(self, b):  # type: ignore[override]
            if self.tell() == 0:
                assert sshd.drop_sessions() >= 1
            return super().write(b)

    with pytest.raises(Exception, match="download failed|size changed"):
        source.fetch(cand, Killer())
    out = io.BytesIO()
    source.fetch(cand, out)
    assert sha(out.getvalue()) == sha(data)
    source.close()


def test_connections_closed_when_the_run_ends(sshd, remote, save_block, sqlite_ledger, queue):
    for i in range(6):
        sshd.put(remote, f"f{i}.csv", os.urandom(300_000), OLD)
    before = len(sshd.session_pids())
    source = make(sshd, remote, max_parallel=3)
    assert run(save_block, source, sqlite_ledger, queue)["landed"] == 6
    deadline = time.monotonic() + 10
    while len(sshd.session_pids()) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(sshd.session_pids()) <= before, "the flow left SSH sessions open"


def test_pipelined_read_refuses_short_reads_and_error_replies(sshd, remote):
    from blocks.sftp.fast_read import SftpReadError, pipelined_download

    data = os.urandom(600_000)
    sshd.put(remote, "f.bin", data, OLD)
    source = make(sshd, remote)
    conn = source._conn()
    with conn.sftp.open(str(remote / "f.bin"), "rb") as fh:
        out = io.BytesIO()
        assert pipelined_download(conn.sftp, fh.handle, len(data), out, 255 * 1024, 4) == len(data)
        assert out.getvalue() == data
    source._drop_conn()
    conn = source._conn()
    fh = conn.sftp.open(str(remote / "f.bin"), "rb")
    with pytest.raises(SftpReadError, match="short read"):  # the file is shorter than asked
        pipelined_download(conn.sftp, fh.handle, len(data) + 10, io.BytesIO(), 255 * 1024, 4)
    source._drop_conn()
    conn = source._conn()
    with pytest.raises(SftpReadError, match="SFTP status"):  # not an open handle
        pipelined_download(conn.sftp, b"no-such-handle", 1000, io.BytesIO(), 255 * 1024, 4)
    source.close()


def test_split_ranges_cover_the_file_once():
    from blocks.sftp.parallel import split_ranges

    for size, parts, align in [(10, 3, 4), (1, 4, 4), (0, 4, 4), (1000, 1, 7), (10**9, 3, 261120)]:
        ranges = split_ranges(size, parts, align)
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        assert all(start % align == 0 for start, _ in ranges)
        assert len(ranges) <= max(1, parts)


def test_big_file_over_several_connections(
    sshd, remote, save_block, sqlite_ledger, queue, monkeypatch
):
    """Files over the threshold are fetched in byte ranges by worker processes."""
    import blocks.sftp.block as sftp_module

    big = os.urandom(5 * 1024 * 1024 + 12_345)  # not a multiple of the read size
    small = os.urandom(300_000)
    sshd.put(remote, "big.bin", big, OLD)
    sshd.put(remote, "big.bin.sha256", f"{sha(big)}  big.bin\n".encode(), OLD)
    sshd.put(remote, "small.bin", small, OLD)
    calls = []
    real = sftp_module.parallel_download

    def counting(login, path, size, out, **kw):
        calls.append((path, kw["parts"]))
        return real(login, path, size, out, **kw)

    monkeypatch.setattr(sftp_module, "parallel_download", counting)
    source = make(
        sshd, remote, connections_per_file=3, parallel_min_mb=1, checksum_extension=".sha256"
    )
    counts = run(save_block, source, sqlite_ledger, queue)
    assert counts["landed"] == 2 and counts["failed"] == 0, counts
    assert calls == [(str(remote / "big.bin"), 3)]  # the small file took one connection
    landed = {p.name: p.read_bytes() for p in Path(queue.landing_dir).rglob("*.bin")}
    assert sha(landed["big.bin"]) == sha(big) and landed["small.bin"] == small
    assert sqlite_ledger.landed_by_sha("partner", sha(big)).name == "big.bin"


def test_ranged_download_fails_cleanly_when_a_link_drops_then_retries(sshd, remote, tmp_path):
    """Killing the sessions mid-download raises a retryable error; a new attempt is whole."""
    from blocks.core.errors import IngestError
    from pipeline.engine import HashingWriter

    # 120 MB per connection: the kill (after the first 8 MiB) must land well before the end
    data = os.urandom(1024 * 1024) * 240
    sshd.put(remote, "big.bin", data, OLD)
    source = make(sshd, remote, connections_per_file=2, parallel_min_mb=1)
    [cand] = list(source.discover(DiscoverContext(DAY)))

    staged = tmp_path / "first.part"
    with open(staged, "wb") as fh:
        writer = HashingWriter(fh, staged)
        real_hash = writer.hash_written
        dropped = []

        def drop_on_first_progress(upto: int) -> None:
            if upto > 0 and not dropped:
                dropped.append(sshd.drop_sessions())
            real_hash(upto)

        writer.hash_written = drop_on_first_progress  # type: ignore[method-assign]
        with pytest.raises(IngestError, match="ranged download"):
            source.fetch(cand, writer)
        writer.close()
    assert dropped and dropped[0] >= 3  # the block's own session and the two workers'
    assert writer.size < len(data)
    source._drop_conn()  # its session was killed too (the pipeline's retry would reconnect)

    staged = tmp_path / "second.part"
    writer = fetch_to(source, cand, staged)
    assert writer.size == len(data) and writer.hexdigest() == sha(data)
    assert sha(staged.read_bytes()) == sha(data)
    source.close()


def test_ranged_download_refuses_a_file_that_changed_since_listing(sshd, remote, tmp_path):
    from blocks.core.errors import IngestError
    from pipeline.engine import HashingWriter

    sshd.put(remote, "big.bin", os.urandom(2 * 1024 * 1024), OLD)
    source = make(sshd, remote, connections_per_file=2, parallel_min_mb=1)
    [cand] = list(source.discover(DiscoverContext(DAY)))
    sshd.put(remote, "big.bin", os.urandom(3 * 1024 * 1024), OLD)
    staged = tmp_path / "x.part"
    with open(staged, "wb") as fh, pytest.raises(IngestError, match="size changed"):
        source.fetch(cand, HashingWriter(fh, staged))
    source.close()


def test_listed_size_is_checked_by_an_end_of_file_probe(sshd, remote):
    """The fast path reads the listed size, probes for end-of-file and closes the handle in
    one pipeline: a file that grew since the listing is refused, the link stays usable."""
    from blocks.sftp.fast_read import SftpReadError, pipelined_download

    data = os.urandom(700_000)
    sshd.put(remote, "f.bin", data, OLD)
    source = make(sshd, remote)
    conn = source._conn()
    fh = conn.sftp.open(str(remote / "f.bin"), "rb")
    out = io.BytesIO()
    assert pipelined_download(conn.sftp, fh.handle, len(data), out, 255 * 1024, 4, finish=True)
    assert out.getvalue() == data
    with pytest.raises(SftpReadError, match="status"):  # the handle was closed already
        pipelined_download(conn.sftp, fh.handle, 10, io.BytesIO(), 255 * 1024, 4)
    source._drop_conn()

    conn = source._conn()
    fh = conn.sftp.open(str(remote / "f.bin"), "rb")
    with pytest.raises(SftpReadError, match="grew past the expected 600000 bytes"):
        pipelined_download(conn.sftp, fh.handle, 600_000, io.BytesIO(), 255 * 1024, 4, finish=True)
    source._drop_conn()

    conn = source._conn()
    sshd.put(remote, "empty.bin", b"", OLD)
    fh = conn.sftp.open(str(remote / "empty.bin"), "rb")
    assert (
        pipelined_download(conn.sftp, fh.handle, 0, io.BytesIO(), 255 * 1024, 4, finish=True) == 0
    )
    assert "f.bin" in conn.sftp.listdir(str(remote))  # replies were all consumed in order

    [cand] = [c for c in source.discover(DiscoverContext(DAY)) if c.name == "f.bin"]
    sshd.put(remote, "f.bin", data + b"more", OLD)
    with pytest.raises(Exception, match="grew past"):
        source.fetch(cand, io.BytesIO())
    source.close()


def test_channel_reader_splits_and_joins_chunks_exactly():
    """Answers straddle the packets the channel hands over (the first of a batch may be a
    view of a partly read packet); every byte comes out once, in order, and each wait asks
    for just what the answer still lacks."""
    from blocks.sftp.fast_read import _ChannelReader

    data = os.urandom(10_000)
    batches = [
        [data[0:1], data[1:7]],
        [memoryview(data[0:4096])[7:]],  # the rest of a packet whose head was read
        [data[4096:4100], data[4100:9000]],
        [data[9000:10_000]],
    ]
    assert b"".join(bytes(c) for b in batches for c in b) == data
    asked = []

    def receive(min_bytes):
        asked.append(min_bytes)
        chunks = batches.pop(0) if batches else []
        return chunks, sum(len(c) for c in chunks)

    reader = _ChannelReader(receive)
    sizes = [1, 3, 3, 4089, 4, 1, 4899, 999]
    out = [reader.read(n) for n in sizes]
    assert all(type(x) is bytes for x in out)
    assert [len(x) for x in out] == sizes and b"".join(out) == data[: sum(sizes)]
    assert asked == [1, 4089, 4, 999]  # a wait only when the buffered bytes run short
    assert reader.buffered == 10_000 - sum(sizes)
    assert reader.read(reader.buffered) == data[sum(sizes) :]
    with pytest.raises(EOFError):
        reader.read(1)


def test_window_is_given_back_as_the_download_is_read(sshd, remote, monkeypatch):
    """The chunk pipe's reader returns the bytes it takes to the server's window: with a
    1 MiB window a 6 MB download would stall after the first MiB otherwise."""
    import blocks.sftp.connection as connection
    from blocks.sftp.fast_read import pipelined_download

    monkeypatch.setattr(connection, "_WINDOW", 1024 * 1024)
    data = os.urandom(6_000_000)
    sshd.put(remote, "f.bin", data, OLD)
    source = make(sshd, remote, operation_timeout_seconds=5)
    conn = source._conn()
    assert conn.sftp.get_channel().in_window_size == 1024 * 1024
    with conn.sftp.open(str(remote / "f.bin"), "rb") as fh:
        out = io.BytesIO()
        assert pipelined_download(conn.sftp, fh.handle, len(data), out, 255 * 1024, 3) == len(data)
    assert out.getvalue() == data
    assert "f.bin" in conn.sftp.listdir(str(remote))  # plain requests still work on the pipe
    source.close()


def test_read_requests_go_out_several_to_a_packet(sshd, remote):
    """With 8 reads in flight, requests are topped up two at a time in one channel send,
    not one send per answer (each send is an SSH packet paramiko builds and encrypts)."""
    from blocks.sftp.fast_read import pipelined_download

    data = os.urandom(40 * 255 * 1024 + 5)
    sshd.put(remote, "f.bin", data, OLD)
    source = make(sshd, remote)
    conn = source._conn()
    chan = conn.sftp.get_channel()
    sends = []
    real_sendall = chan.sendall
    chan.sendall = lambda payload: (sends.append(payload), real_sendall(payload))[1]
    with conn.sftp.open(str(remote / "f.bin"), "rb") as fh:
        out = io.BytesIO()
        assert pipelined_download(conn.sftp, fh.handle, len(data), out, 255 * 1024, 8) == len(data)
    assert out.getvalue() == data
    assert len(sends) == 1 + -(-(41 - 8) // 2)  # 41 reads: the first 8, then pairs
    assert all(len(p) > 0 for p in sends)
    source.close()


def test_refused_extra_logins_fall_back_to_one_connection(sshd, remote, tmp_path, monkeypatch):
    """Range workers the server will not let in (here: workers that report a refused login)
    make the file come over the block's own connection; the login reached them on stdin
    only, never in their argv or environment."""
    import blocks.sftp.parallel as parallel

    seen = tmp_path / "seen"
    refusing = tmp_path / "refusing_worker.py"
    refusing.write_text(
        "import json, os, sys\n"
        f"open({str(seen)!r}, 'a').write(json.dumps({{'argv': sys.argv, "
        "'env': dict(os.environ), 'stdin': sys.stdin.readline()}) + '\\n')\n"
        "print('ERR SftpAuthError: login refused (too many sessions)', flush=True)\n"
        "sys.exit(3)\n"
    )
    monkeypatch.setattr(parallel, "_WORKER_COMMAND", [sys.executable, str(refusing)])
    data = os.urandom(3 * 1024 * 1024 + 5)
    sshd.put(remote, "big.bin", data, OLD)
    source = make(sshd, remote, connections_per_file=3, parallel_min_mb=1)
    [cand] = list(source.discover(DiscoverContext(DAY)))
    staged = tmp_path / "x.part"
    writer = fetch_to(source, cand, staged)
    assert writer.hexdigest() == sha(data) and sha(staged.read_bytes()) == sha(data)
    source.close()
    import json

    workers = [json.loads(line) for line in seen.read_text().splitlines()]
    assert workers, "the ranged path was not tried"
    for worker in workers:
        assert sftp_server.PASSWORD not in " ".join(worker["argv"])
        assert sftp_server.PASSWORD not in json.dumps(worker["env"])
        assert sftp_server.PASSWORD in worker["stdin"]
