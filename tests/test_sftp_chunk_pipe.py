"""ChunkPipe: the SFTP channel's input buffer behaves like paramiko's BufferedPipe, keeps
the packets it is fed, and wakes a `take` only once enough bytes have arrived."""

from __future__ import annotations

import random
import threading
import time

import pytest
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from blocks.sftp.chunk_pipe import ChunkPipe


def test_reads_match_paramikos_buffered_pipe():
    """Same feeds, same reads, same answers: ordinary SFTP requests see no difference."""
    rng = random.Random(7)
    ours, theirs = ChunkPipe(), BufferedPipe()
    for _ in range(2000):
        if rng.random() < 0.4:
            chunk = rng.randbytes(rng.choice([1, 3, 13, 100, 4096, 32768]))
            ours.feed(chunk)
            theirs.feed(chunk)
        elif len(theirs):
            n = rng.choice([1, 4, 5, 9, 77, 4000, 40000])
            assert ours.read(n) == theirs.read(n)
        assert len(ours) == len(theirs)
        assert ours.read_ready() == theirs.read_ready()
    assert ours.empty() == theirs.empty() and len(ours) == 0


def test_read_keeps_whole_packets_uncopied_and_splits_the_rest():
    pipe = ChunkPipe()
    packet = bytes(range(200)) * 10
    pipe.feed(packet)
    assert pipe.read(len(packet)) is packet
    pipe.feed(b"abc")
    pipe.feed(b"defg")
    assert pipe.read(2) == b"ab"
    assert pipe.read(100) == b"cdefg"


def test_take_waits_for_min_bytes_then_hands_over_everything():
    pipe = ChunkPipe()
    pipe.feed(b"x" * 50)
    with pytest.raises(PipeTimeout):
        pipe.take(100, timeout=0.2)  # 50 of 100: keeps waiting
    assert len(pipe) == 50  # nothing lost by the timeout

    def feed_slowly():
        for i in range(10):
            time.sleep(0.01)
            pipe.feed(bytes([i]) * 10)

    feeder = threading.Thread(target=feed_slowly)
    feeder.start()
    chunks = pipe.take(120, timeout=5)
    got = b"".join(bytes(c) for c in chunks)
    assert len(got) >= 120 and got.startswith(b"x" * 50 + b"\0" * 10 + b"\1" * 10)
    feeder.join()
    rest = b"".join(bytes(c) for c in pipe.take(1, timeout=1))
    assert got + rest == b"x" * 50 + b"".join(bytes([i]) * 10 for i in range(10))


def test_take_after_a_partial_read_starts_mid_packet():
    pipe = ChunkPipe()
    pipe.feed(b"0123456789")
    pipe.feed(b"abc")
    assert pipe.read(4) == b"0123"
    chunks = pipe.take(1, timeout=1)
    assert isinstance(chunks[0], memoryview)
    assert [bytes(c) for c in chunks] == [b"456789", b"abc"] and len(pipe) == 0


def test_closed_pipe_gives_what_is_left_then_nothing():
    pipe = ChunkPipe()
    pipe.feed(b"tail")
    pipe.close()
    assert [bytes(c) for c in pipe.take(100, timeout=1)] == [b"tail"]  # fewer than asked
    assert pipe.take(100, timeout=1) == []
    assert pipe.read(10) == b""


def test_closing_wakes_a_waiting_take():
    pipe = ChunkPipe()
    threading.Timer(0.1, pipe.close).start()
    started = time.monotonic()
    assert pipe.take(10, timeout=5) == []
    assert time.monotonic() - started < 2


def test_read_timeout_and_event_follow_buffered_pipe():
    pipe = ChunkPipe()
    with pytest.raises(PipeTimeout):
        pipe.read(1, timeout=0.05)
    with pytest.raises(PipeTimeout):
        pipe.read(1, timeout=0.0)
    event = threading.Event()
    pipe.set_event(event)
    assert not event.is_set()
    pipe.feed(b"ab")
    assert event.is_set()
    pipe.read(1)
    assert event.is_set()  # one byte left
    pipe.take(1, timeout=1)
    assert not event.is_set()
    pipe.close()
    assert event.is_set()
