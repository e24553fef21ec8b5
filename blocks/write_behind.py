"""Write-behind: hand a download's chunks to a writer thread so receiving and writing overlap.

A source that decrypts or parses in Python (paramiko's SFTP) spends its thread receiving;
writing the same thread's chunks to disk and hashing them (both release the GIL) then
runs on another core instead of in series. The queue is bounded, so memory stays at
`depth` chunks whatever the file size, and the receiving side slows down to disk speed.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

_DONE = object()


class WriteBehind:
    """Context manager: `write()` enqueues, a thread writes to `out` in order.

    On leaving the block the queue is drained and any error the writer hit is raised in
    the caller's thread. If the block raises, queued chunks are dropped and the writer is
    stopped; the caller's exception wins.
    """

    def __init__(self, out: BinaryIO, depth: int = 16) -> None:
        self._out = out
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def write(self, chunk: bytes) -> int:
        if self._failed.is_set():
            self._raise()
        self._queue.put(chunk)
        return len(chunk)

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is _DONE:
                return
            if self._failed.is_set():
                continue  # keep draining so a blocked producer wakes up
            try:
                self._out.write(chunk)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
                self._error = exc
                self._failed.set()

    def _raise(self) -> None:
        assert self._error is not None
        raise self._error

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._failed.set()  # drop what is queued: the caller is failing anyway
        self._queue.put(_DONE)
        self._thread.join()
        if exc_type is None and self._error is not None:
            self._raise()
