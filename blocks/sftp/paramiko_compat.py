"""Every use of paramiko's internals by the SFTP transport, in one place.

The fast download path (`chunk_pipe`, `fast_read`) runs its own SFTP pipeline on the
channel of a `paramiko.SFTPClient`, so it needs a few things paramiko does not publish.
Each is one small function here, with the paramiko code it mirrors; no other module
touches a private paramiko attribute. They were written against paramiko 5.1.0 (line
numbers below are from that release) and are checked by `check_supported()`: at import
for what the classes show, and on every new connection for what only an instance shows,
so a paramiko that moved one of them fails with a clear message instead of corrupting a
download. pyproject.toml bounds the `sftp` extra to the versions tests ran on.
"""

from __future__ import annotations

import threading
from typing import Protocol

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.file import BufferedFile
from paramiko.message import Message

from blocks.core.errors import IngestError

__all__ = [
    "PipeTimeout",
    "UnsupportedParamiko",
    "check_supported",
    "give_back_window",
    "install_channel_buffer",
    "mark_handle_closed",
    "next_request_id",
]

PARAMIKO_VERSION: str = getattr(paramiko, "__version__", "unknown")

# What paramiko's Channel calls on its `in_buffer` (channel.py: 155 len, 681 read_ready,
# 697 read, 938 set_event, 1045 feed, 1168/1229 close; `empty` for the stderr twin, 577).
CHANNEL_BUFFER_METHODS = ("feed", "read", "read_ready", "empty", "set_event", "close", "__len__")


class UnsupportedParamiko(IngestError):
    """The installed paramiko lacks an internal the SFTP fast path relies on. Not retried:
    another attempt meets the same paramiko."""

    retryable = False


class ChannelBuffer(Protocol):
    """The input buffer interface `paramiko.Channel` uses (`BufferedPipe`'s methods)."""

    def feed(self, data: bytes) -> None: ...
    def read(self, nbytes: int, timeout: float | None = None) -> bytes: ...
    def read_ready(self) -> bool: ...
    def empty(self) -> bytes: ...
    def set_event(self, event: threading.Event) -> None: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...


def _fail(what: str) -> UnsupportedParamiko:
    return UnsupportedParamiko(
        f"paramiko {PARAMIKO_VERSION} is not supported by the SFTP source: {what} "
        "(written against paramiko 5.1; install the version pyproject.toml's sftp extra "
        "names)"
    )


def check_supported(sftp: paramiko.SFTPClient | None = None) -> None:
    """Raise `UnsupportedParamiko` naming the paramiko version if an internal used here
    is missing. Without `sftp`: what the classes show (run at import). With an SFTP client
    on a connected channel: also the attributes paramiko sets per instance."""
    for cls, attr in (
        (paramiko.Channel, "_check_add_window"),
        (paramiko.Transport, "_send_user_message"),
        (paramiko.SFTPClient, "get_channel"),
    ):
        if not callable(getattr(cls, attr, None)):
            raise _fail(f"{cls.__name__}.{attr} is gone")
    missing = [m for m in CHANNEL_BUFFER_METHODS if not callable(getattr(BufferedPipe, m, None))]
    if missing:
        raise _fail(f"BufferedPipe has no {', '.join(missing)} (the channel buffer interface)")
    if "_closed" not in vars(BufferedFile()):
        raise _fail("BufferedFile no longer keeps _closed")
    if sftp is None:
        return
    if not isinstance(getattr(sftp, "request_number", None), int):
        raise _fail("SFTPClient.request_number is gone")
    if not hasattr(getattr(sftp, "_lock", None), "__enter__"):
        raise _fail("SFTPClient._lock is gone")
    chan = sftp.get_channel()
    for attr in ("in_buffer", "remote_chanid", "transport"):
        if not hasattr(chan, attr):
            raise _fail(f"Channel.{attr} is gone")


def next_request_id(sftp: paramiko.SFTPClient) -> int:
    """Take the next SFTP request id of `sftp`, as `SFTPClient._async_request` does
    (sftp_client.py 860-878: `request_number` read and incremented under `_lock`), so a
    pipelined download and paramiko's own requests on the same client never share an id.
    """
    with sftp._lock:
        num = sftp.request_number
        sftp.request_number = num + 1
        return num


def give_back_window(chan: paramiko.Channel, n: int) -> None:
    """Credit `n` consumed bytes to the server's send window, as `Channel.recv` does after
    reading (channel.py 701-708): `_check_add_window` batches the credit, and a
    WINDOW_ADJUST goes out through `Transport._send_user_message` once it is due."""
    ack = chan._check_add_window(n)
    if ack > 0:
        m = Message()
        m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        m.add_int(chan.remote_chanid)
        m.add_int(ack)
        chan.transport._send_user_message(m)


def install_channel_buffer(chan: paramiko.Channel, buffer: ChannelBuffer) -> None:
    """Replace the channel's input buffer (`Channel.in_buffer`, a `BufferedPipe` set in
    `Channel.__init__`, channel.py 112). Call before any byte can arrive (before the
    subsystem starts): paramiko feeds every data packet to it (channel.py 1045)."""
    missing = [m for m in CHANNEL_BUFFER_METHODS if not callable(getattr(buffer, m, None))]
    if missing:
        raise TypeError(f"channel buffer lacks {', '.join(missing)}")
    chan.in_buffer = buffer


def channel_buffer(chan: paramiko.Channel) -> ChannelBuffer:
    """The channel's input buffer (`Channel.in_buffer`)."""
    return chan.in_buffer


def mark_handle_closed(fh: paramiko.SFTPFile) -> None:
    """Record that `fh`'s CLOSE already went out (pipelined behind its reads), so paramiko
    sends no second one: `SFTPFile._close` returns early on `_closed` (sftp_file.py 92),
    and a second CLOSE could close a handle the server has handed out again since."""
    fh._closed = True


check_supported()
