"""Child process of a parallel SFTP download: its own connection, one byte range of one file.

Started by `blocks/sftp/parallel.py` (`main()` in a fresh `python -I`); reads its job as
one JSON line on stdin (the login with its secrets never appears in argv or the environment),
writes its range straight into the staging file at the right offsets, and reports on
stdout, one line each:

    P <bytes written so far>      at least every 8 MiB, after the bytes are in the file
    OK <bytes written> <peak RSS kB>   at the end (VmHWM: exec resets it, unlike ru_maxrss)
    ERR <message>                 on failure (exit status 3); the message names no secret

paramiko decrypts and parses every SSH packet in Python under the GIL, so threads in one
process cannot share the work; separate processes (one connection each) can.
"""

from __future__ import annotations

import json
import os
import sys
import threading

_REPORT_EVERY = 8 * 1024 * 1024


class _RangeFile:
    """Writes a range into the staging file at its own offsets and reports progress."""

    def __init__(self, fd: int, start: int) -> None:
        self._fd = fd
        self._pos = start
        self.written = 0
        self._reported = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self._pos)
            self._pos += n
            self.written += n
            view = view[n:]
        if self.written - self._reported >= _REPORT_EVERY:
            self._reported = self.written
            _say(f"P {self.written}")
        return len(data)


_say_lock = threading.Lock()


def _say(line: str) -> None:
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _run(job: dict) -> int:
    from blocks.core.write_behind import ThreadedSink
    from blocks.sftp.connection import SftpConnection, SftpLogin
    from blocks.sftp.fast_read import pipelined_download, ranged_readv

    start, end = int(job["start"]), int(job["end"])
    conn = SftpConnection(SftpLogin(**job["login"]))
    try:
        fd = os.open(job["staging"], os.O_WRONLY)
        try:
            target = _RangeFile(fd, start)
            sink = ThreadedSink(target, depth=16)
            try:
                with conn.sftp.open(job["path"], "rb") as fh:
                    if conn.transport.remote_version.startswith("SSH-2.0-OpenSSH"):
                        pipelined_download(
                            conn.sftp, fh.handle, end, sink,
                            int(job["read_size"]), int(job["in_flight"]), start=start,
                        )  # fmt: skip
                    else:
                        ranged_readv(fh, start, end, sink)
            finally:
                sink.close()
            return target.written
        finally:
            os.close(fd)
    finally:
        conn.close()


def _peak_rss_kb() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    try:
        job = json.loads(sys.stdin.readline())
        written = _run(job)
    except BaseException as exc:  # reported to the parent, which decides to retry
        text = str(exc).replace("\n", " ") or type(exc).__name__
        _say(f"ERR {type(exc).__name__}: {text}")
        sys.exit(3)
    _say(f"OK {written} {_peak_rss_kb()}")


if __name__ == "__main__":
    main()
