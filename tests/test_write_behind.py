"""WriteBehind: order kept, memory bounded, writer errors raised in the caller's thread."""

from __future__ import annotations

import threading
import time

import pytest

from blocks.write_behind import WriteBehind


class SlowSink:
    def __init__(self, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.delay = delay
        self.fail_at = fail_at
        self.gate = threading.Event()
        self.gate.set()

    def write(self, chunk: bytes) -> int:
        self.gate.wait()
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise OSError(28, "No space left on device")
        time.sleep(self.delay)
        self.chunks.append(chunk)
        return len(chunk)


def test_chunks_arrive_in_order():
    sink = SlowSink(delay=0.001)
    with WriteBehind(sink, depth=4) as wb:
        for i in range(200):
            wb.write(i.to_bytes(2, "big"))
    assert [int.from_bytes(c, "big") for c in sink.chunks] == list(range(200))


def test_queue_is_bounded_by_depth():
    sink = SlowSink()
    sink.gate.clear()  # the writer blocks on its first chunk
    written = []

    def produce():
        with WriteBehind(sink, depth=3) as wb:
            for i in range(50):
                wb.write(b"x")
                written.append(i)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.3)
    # one chunk held by the blocked writer + `depth` queued; the producer waits
    assert len(written) == 4
    sink.gate.set()
    t.join(5)
    assert len(sink.chunks) == 50


def test_writer_error_is_raised_to_the_caller():
    sink = SlowSink(fail_at=5)
    with pytest.raises(OSError, match="No space left"), WriteBehind(sink, depth=2) as wb:
        for _ in range(1000):
            wb.write(b"y")
    assert len(sink.chunks) == 5


def test_callers_error_wins_and_the_writer_stops():
    sink = SlowSink(delay=0.01)
    with pytest.raises(ValueError, match="boom"), WriteBehind(sink, depth=8) as wb:
        for _ in range(8):
            wb.write(b"z")
        raise ValueError("boom")
    assert len(sink.chunks) < 8
