"""Many small remote files read in one pipeline, for OpenSSH servers.

Read one by one, a small file costs a round trip for its OPEN and one for its READ and
CLOSE (pipelined behind each other by `fast_read.pipelined_download`), one file after the
other. `read_small_files` sends the SSH_FXP_OPEN of every file at once, takes the handles,
then sends every file's READs and its CLOSE at once: two round trips for up to
`max_open` files. Answers are taken off the channel's `ChunkPipe` as `fast_read` takes
them, and kept in memory: the caller bounds the bytes asked for.

Like `fast_read`, it relies on what OpenSSH's sftp-server does: answers in request order,
reads of up to 255 KiB answered in full except at the end of the file. A file's refusal
(no such file, permission denied, a failed read or close) is that file's `error`, as
paramiko would raise it, and the others go on; anything else (a reply out of order or of
an unexpected type, the channel closing, a timeout) raises, and the connection is then in
an unknown state: the caller must discard it.
"""

from __future__ import annotations

import errno
import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import paramiko

from blocks.sftp.chunk_pipe import recv_chunks
from blocks.sftp.fast_read import _HEADER, SftpReadError, _ChannelReader, _handle
from blocks.sftp.paramiko_compat import next_request_id

_FXP_OPEN = 3
_FXP_CLOSE = 4
_FXP_READ = 5
_FXP_STATUS = 101
_FXP_HANDLE = 102
_FXP_DATA = 103
_FLAG_READ = 1  # SSH_FXF_READ
_STATUS_OK = 0
_STATUS_EOF = 1
_STATUS_NO_SUCH_FILE = 2
_STATUS_PERMISSION_DENIED = 3
_MAX_OPEN = 128  # handles one round holds open on the server (its fd limit is ~1024)
_CLOSE = -1  # marker of a CLOSE among the pending READs (a read's length is positive)


@dataclass(eq=False)
class SmallRead:
    """One remote file to read from its start: at most `length` bytes.

    After `read_small_files`, either `error` is the server's refusal of the file's OPEN,
    READ or CLOSE (`FileNotFoundError`, `PermissionError` or `OSError`, as paramiko raises
    them), or `data` holds the bytes read: all `length` of them, or fewer when the file
    ends before (the bytes up to the first read answered short or with end-of-file).
    """

    path: str
    length: int
    data: bytes | None = None
    error: OSError | None = None
    _parts: list[bytes] = field(default_factory=list, repr=False)
    _ended: bool = field(default=False, repr=False)


def read_small_files(
    sftp: paramiko.SFTPClient,
    reads: Sequence[SmallRead],
    read_size: int,
    max_open: int = _MAX_OPEN,
) -> None:
    """Read every file of `reads` over `sftp`'s channel, `max_open` files per round: all
    their OPENs in one send, then all their READs (`read_size` each) and CLOSEs in one.

    Fills in each `SmallRead`'s `data` or `error`. Raises `SftpReadError`, `EOFError`,
    `TimeoutError` or `OSError` when the link or the protocol broke; replies may then be
    in flight and the connection must be dropped.
    """
    chan = sftp.get_channel()
    assert chan is not None
    reader = _ChannelReader(functools.partial(recv_chunks, chan))
    for start in range(0, len(reads), max_open):
        _round(sftp, chan, reader, reads[start : start + max_open], read_size)
    if reader.buffered:
        raise SftpReadError(f"{reader.buffered} unexpected bytes after the last answer")


def _round(
    sftp: paramiko.SFTPClient,
    chan: paramiko.Channel,
    reader: _ChannelReader,
    reads: Sequence[SmallRead],
    read_size: int,
) -> None:
    # 1. every OPEN at once
    requests: list[bytes] = []
    ids: list[int] = []
    for item in reads:
        body = _string(item.path.encode("utf-8")) + struct.pack(">II", _FLAG_READ, 0)
        ids.append(next_request_id(sftp))
        requests.append(_packet(_FXP_OPEN, ids[-1], body))
    chan.sendall(b"".join(requests))
    opened: list[tuple[SmallRead, bytes]] = []
    for item, req_id in zip(reads, ids, strict=True):
        kind, payload = _reply(reader, req_id)
        if kind == _FXP_HANDLE:
            (n,) = struct.unpack_from(">I", payload)
            opened.append((item, payload[4 : 4 + n]))
        elif kind == _FXP_STATUS:
            error = _status_error(payload, "open")
            if error is None:
                raise SftpReadError("an OPEN answered with status OK")
            item.error = error
        else:
            raise SftpReadError(f"unexpected SFTP reply type {kind} to an OPEN")
    if not opened:
        return

    # 2. every file's READs and its CLOSE at once, answered in that order
    requests = []
    pending: list[tuple[int, SmallRead, int]] = []  # (request id, file, asked length | _CLOSE)
    for item, handle in opened:
        for offset in range(0, item.length, read_size):
            length = min(read_size, item.length - offset)
            req_id = next_request_id(sftp)
            body = _handle(handle) + struct.pack(">QI", offset, length)
            requests.append(_packet(_FXP_READ, req_id, body))
            pending.append((req_id, item, length))
        req_id = next_request_id(sftp)
        requests.append(_packet(_FXP_CLOSE, req_id, _handle(handle)))
        pending.append((req_id, item, _CLOSE))
    chan.sendall(b"".join(requests))
    for req_id, item, length in pending:
        packet_len, kind, got_id = _HEADER.unpack(reader.read(_HEADER.size))
        if got_id != req_id:
            raise SftpReadError(f"reply to request {got_id} while waiting for {req_id}")
        if kind == _FXP_DATA and length != _CLOSE:
            (n,) = struct.unpack(">I", reader.read(4))
            if n > length or packet_len != 9 + n:
                raise SftpReadError(f"a read of {length} bytes answered with {n}")
            data = reader.read(n)
            if not item._ended:  # bytes after a short answer: the file changed meanwhile
                item._parts.append(data)
                item._ended = n < length
        elif kind == _FXP_STATUS:
            payload = reader.read(packet_len - 5)
            (code,) = struct.unpack_from(">I", payload)
            if length != _CLOSE and code == _STATUS_EOF:
                item._ended = True
            elif code != _STATUS_OK and item.error is None:
                item.error = _status_error(payload, "close" if length == _CLOSE else "read")
            elif code == _STATUS_OK and length != _CLOSE:
                raise SftpReadError("a READ answered with status OK")
        else:
            raise SftpReadError(f"unexpected SFTP reply type {kind}")
    for item, _ in opened:
        if item.error is None:
            item.data = b"".join(item._parts)
        item._parts = []


def _reply(reader: _ChannelReader, req_id: int) -> tuple[int, bytes]:
    """The next reply, which must answer `req_id`: its type and payload after the id."""
    packet_len, kind, got_id = _HEADER.unpack(reader.read(_HEADER.size))
    if got_id != req_id:
        raise SftpReadError(f"reply to request {got_id} while waiting for {req_id}")
    return kind, reader.read(packet_len - 5)


def _status_error(payload: bytes, what: str) -> OSError | None:
    """A STATUS payload (code, message, language) as the OSError paramiko's
    `_convert_status` raises for it (None for OK)."""
    (code,) = struct.unpack_from(">I", payload)
    if code == _STATUS_OK:
        return None
    text = f"{what} failed with SFTP status {code}"
    if len(payload) >= 8:
        (n,) = struct.unpack_from(">I", payload, 4)
        text = payload[8 : 8 + n].decode("utf-8", "replace") or text
    if code == _STATUS_NO_SUCH_FILE:
        return FileNotFoundError(errno.ENOENT, text)
    if code == _STATUS_PERMISSION_DENIED:
        return PermissionError(errno.EACCES, text)
    return OSError(text)


def _packet(kind: int, req_id: int, body: bytes) -> bytes:
    return struct.pack(">IBI", len(body) + 5, kind, req_id) + body


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value
