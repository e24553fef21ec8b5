"""ThreadedSink: order kept, memory bounded, writer errors raised in the caller's thread."""

from __future__ import annotations

import threading
import time

import pytest

from blocks.core.write_behind import ThreadedSink


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


def test_chunks_arrive_in_order_and_flush_waits():
    sink = SlowSink(delay=0.001)
    threaded = ThreadedSink(sink, depth=4)
    for i in range(200):
        threaded.write(i.to_bytes(2, "big"))
    threaded.flush()
    assert [int.from_bytes(c, "big") for c in sink.chunks] == list(range(200))
    threaded.close()


def test_queue_is_bounded_by_depth():
    sink = SlowSink()
    sink.gate.clear()  # the writer blocks on its first chunk
    written = []
    threaded = ThreadedSink(sink, depth=3)

    def produce():
        for i in range(50):
            threaded.write(b"x")
            written.append(i)
        threaded.close()

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
    threaded = ThreadedSink(sink, depth=2)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(1000):
            threaded.write(b"y")
        threaded.close()
    assert len(sink.chunks) == 5
    with pytest.raises(OSError, match="No space left"):
        threaded.close()  # still reported, never swallowed
