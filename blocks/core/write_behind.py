"""Write-behind: hand a download's blocks to a writer thread so receiving and writing overlap.

The pipeline's writer hashes (sha256) and writes each block to the staging file; both
release the GIL. A source that receives in Python (paramiko's SFTP, psycopg2's COPY)
would otherwise stall its connection while it writes; on a second thread the two run on
separate cores. At most `depth` blocks wait (bounded memory, the receiving side slows to
disk speed); order is kept.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import BinaryIO


class ThreadedSink(io.RawIOBase):
    """A file-like sink whose `write` enqueues; one background thread writes into `out`.

    `flush()` waits until everything queued is written and re-raises a writer error;
    `close()` does the same and stops the thread. After a writer error, further writes
    raise it at once and queued blocks are dropped.
    """

    def __init__(self, out: BinaryIO, depth: int = 8) -> None:
        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            try:
                if block is None:
                    return
                if self._error is None:
                    self._out.write(block)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc
            finally:
                self._queue.task_done()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._raise()
        block = bytes(data)  # the caller's buffer is only borrowed (no copy for bytes)
        self._queue.put(block)
        return len(block)

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def close(self) -> None:
        if not self.closed and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        super().close()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
