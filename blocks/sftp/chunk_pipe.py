"""A channel input buffer for paramiko that keeps the packets it is fed instead of copying.

paramiko's `BufferedPipe` (a channel's input buffer) copies every SSH packet into an array
(`frombytes`, growing and reallocating it while megabytes of answers queue) and every
read out of it twice (`array[:n].tobytes()`), and it wakes a waiting reader for each
32 KiB packet. In a `py-spy --gil` profile of a 1 GiB download those copies were 37% of
the GIL time.

`ChunkPipe` keeps the packets' own bytes objects in a deque. `take` hands all of them
over at once and sleeps until at least `min_bytes` have arrived, so a reader that needs
a 255 KiB answer wakes once, not eight times. Everything else paramiko asks of a channel
buffer (`read`, `read_ready`, `empty`, `len`, `set_event`, `close`) behaves as before, so
the ordinary SFTP requests (open, stat, listdir, rename) run unchanged on top of it.
`ChunkPipe` keeps its own state; it shares only that interface with `BufferedPipe`, and
installing it and crediting the window go through `paramiko_compat`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import paramiko

from blocks.sftp.paramiko_compat import (
    PipeTimeout,
    channel_buffer,
    give_back_window,
    install_channel_buffer,
)


class ChunkQueue:
    """Bytes kept as the chunks they came in, read off the front without copying chunks
    that are taken whole."""

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._offset = 0  # bytes of the first chunk already read
        self.size = 0  # bytes queued

    def extend(self, chunks: list[bytes | memoryview], total: int) -> None:
        self._chunks.extend(chunks)
        self.size += total

    def pop(self, n: int) -> bytes:
        """The first `n` (at most `size`) bytes: a chunk taken whole comes back as it is,
        anything else is joined once."""
        parts: list[bytes | memoryview] = []
        self.size -= n
        while n:
            first = self._chunks[0]
            take = min(len(first) - self._offset, n)
            if take == len(first):
                parts.append(first)
            else:
                parts.append(memoryview(first)[self._offset : self._offset + take])
            n -= take
            self._offset += take
            if self._offset == len(first):
                self._chunks.popleft()
                self._offset = 0
        return b"".join(parts)

    def pop_all(self) -> list[bytes | memoryview]:
        """Every chunk; the first is a view of its unread rest if it was partly read."""
        chunks = list(self._chunks)
        if self._offset:
            chunks[0] = memoryview(chunks[0])[self._offset :]
        self._chunks.clear()
        self._offset = self.size = 0
        return chunks


class ChunkPipe:
    """A channel input buffer behaving like paramiko's `BufferedPipe` (same methods, same
    results, `PipeTimeout` on timeout), holding the fed bytes objects uncopied."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._event: threading.Event | None = None
        self._closed = False
        self._queue = ChunkQueue()
        self._want = 1  # a waiting reader is woken once this many bytes are buffered

    # -- fed by paramiko's transport thread
    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            self._queue.extend([data], len(data))  # fresh bytes from paramiko, never changed
            if self._queue.size >= self._want:
                self._cv.notify_all()

    # -- read by the channel's user
    def take(self, min_bytes: int, timeout: float | None) -> list[bytes | memoryview]:
        """Everything buffered, once at least `min_bytes` are (or the pipe is closed:
        then possibly less, or nothing). Raises `PipeTimeout` after `timeout` seconds."""
        with self._lock:
            self._wait(min_bytes, timeout)
            chunks = self._queue.pop_all()
            self._cleared()
            return chunks

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._queue.size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                self._wait(1, timeout)
            out = self._queue.pop(min(nbytes, self._queue.size))
            if not self._queue.size:
                self._cleared()
            return out

    def read_ready(self) -> bool:
        with self._lock:
            return self._queue.size > 0

    def empty(self) -> bytes:
        with self._lock:
            out = self._queue.pop(self._queue.size)
            self._cleared()
            return out

    def set_event(self, event) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self._event = event
            if self._closed or self._queue.size:
                event.set()
            else:
                event.clear()

    def __len__(self) -> int:
        with self._lock:
            return self._queue.size

    def close(self) -> None:
        """No more data will come (the channel closed): wake every waiting reader."""
        with self._lock:
            self._closed = True
            self._cv.notify_all()
            if self._event is not None:
                self._event.set()

    # -- helpers; the caller holds the lock
    def _wait(self, min_bytes: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._want = min_bytes
        try:
            while self._queue.size < min_bytes and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PipeTimeout()
                self._cv.wait(left)
        finally:
            self._want = 1

    def _cleared(self) -> None:
        if self._event is not None and not self._closed:
            self._event.clear()


def open_sftp_channel(
    transport: paramiko.Transport, window_size: int, max_packet_size: int
) -> paramiko.Channel:
    """A session channel with a `ChunkPipe`, running the sftp subsystem.

    What `SFTPClient.from_transport` does, with the pipe swapped in before the subsystem
    starts, so no byte can have gone into paramiko's own buffer.
    """
    chan = transport.open_session(window_size=window_size, max_packet_size=max_packet_size)
    install_channel_buffer(chan, ChunkPipe())
    chan.invoke_subsystem("sftp")
    return chan


def recv_chunks(chan: paramiko.Channel, min_bytes: int) -> tuple[list[bytes | memoryview], int]:
    """`Channel.recv` for a `ChunkPipe` channel: everything buffered once `min_bytes` have
    arrived, as the packets' own bytes (and their total). An empty result means the
    channel closed; `TimeoutError` (`socket.timeout`) after the channel's timeout, as
    `recv` raises.

    Like `recv`, it gives the bytes taken back to the server's window.
    """
    pipe = channel_buffer(chan)
    assert isinstance(pipe, ChunkPipe), "channel not opened by open_sftp_channel"
    try:
        chunks = pipe.take(min_bytes, chan.timeout)
    except PipeTimeout:
        raise TimeoutError(f"no SFTP answer within {chan.timeout} s") from None
    got = sum(len(c) for c in chunks)
    give_back_window(chan, got)
    return chunks, got
