"""blocks/sftp/paramiko_compat.py: each use of a paramiko internal works against a real
OpenSSH sshd (tests/sftp_server.py), and `check_supported()` refuses a paramiko without
one, naming its version."""

from __future__ import annotations

import io
import os
import runpy
import threading

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe

import blocks.sftp.connection as connection
from blocks.core.errors import IngestError
from blocks.sftp import paramiko_compat as compat
from blocks.sftp.chunk_pipe import ChunkPipe
from blocks.sftp.connection import SftpConnection, SftpLogin
from blocks.sftp.fast_read import pipelined_download
from tests import sftp_server


@pytest.fixture(scope="module")
def sshd():
    with sftp_server.running_sshd() as server:
        yield server


@pytest.fixture
def remote(sshd, request):
    return sshd.folder(request.node.name.replace("[", "_").replace("]", "_"))


def login(sshd) -> SftpLogin:
    fields = sftp_server.login_fields(sshd, "/")
    return SftpLogin(
        host=fields["host"],
        port=fields["port"],
        username=fields["username"],
        password=fields["password"],
        private_key=None,
        passphrase=None,
        host_key=fields["host_key"],
        accept_unknown_host_key=False,
        connect_timeout=10,
        operation_timeout=20,
    )


@pytest.fixture
def conn(sshd):
    c = SftpConnection(login(sshd))
    yield c
    c.close()


def test_next_request_id_shares_the_sequence_with_paramikos_requests(conn, remote):
    sftp = conn.sftp
    first = compat.next_request_id(sftp)
    assert compat.next_request_id(sftp) == first + 1
    sftp.stat(str(remote))  # paramiko's own request takes the next id...
    assert compat.next_request_id(sftp) == first + 3  # ...so ours skips it
    ids: list[int] = []

    def take() -> None:
        got = [compat.next_request_id(sftp) for _ in range(2000)]
        ids.extend(got)  # list.extend of a whole list is atomic

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(first + 4, first + 4 + 8000))  # none twice
    assert sftp.stat(str(remote)).st_size is not None  # the client still works


def test_give_back_window_keeps_a_small_window_flowing(sshd, remote, monkeypatch):
    """3 MiB through a 128 KiB channel window: the server stops sending after 128 KiB
    unless the pipelined reader credits what it took (`give_back_window`)."""
    monkeypatch.setattr(connection, "_WINDOW", 128 * 1024)
    monkeypatch.setattr(connection, "_MAX_PACKET", 32 * 1024)
    data = os.urandom(3 * 1024 * 1024 + 7)
    sshd.put(remote, "f.bin", data)
    c = SftpConnection(login(sshd))
    try:
        c.sftp.get_channel().settimeout(10)
        with c.sftp.open(str(remote / "f.bin"), "rb") as fh:
            out = io.BytesIO()
            assert pipelined_download(c.sftp, fh.handle, len(data), out, 32 * 1024, 8) == len(data)
        assert out.getvalue() == data
    finally:
        c.close()


def test_give_back_window_batches_credits(conn):
    """Below paramiko's threshold nothing is sent; past it the whole sum is credited once."""
    chan = conn.sftp.get_channel()
    sent: list[paramiko.Message] = []
    real_send = chan.transport._send_user_message  # the narrow boundary: count the sends
    chan.transport._send_user_message = lambda m: (sent.append(m), real_send(m))[1]
    try:
        compat.give_back_window(chan, 1)
        assert sent == []
        compat.give_back_window(chan, connection._WINDOW)  # past any threshold
        assert len(sent) == 1
        msg = paramiko.Message(sent[0].asbytes())
        assert msg.get_byte() == paramiko.common.cMSG_CHANNEL_WINDOW_ADJUST
        assert msg.get_int() == chan.remote_chanid
        assert msg.get_int() >= connection._WINDOW + 1  # plus what paramiko's recv counted
        compat.give_back_window(chan, 1)
        assert len(sent) == 1  # the count started again
    finally:
        del chan.transport._send_user_message


def test_install_channel_buffer(conn):
    chan = conn.sftp.get_channel()
    assert isinstance(compat.channel_buffer(chan), ChunkPipe)  # installed at connect
    with pytest.raises(TypeError, match="feed"):
        compat.install_channel_buffer(chan, object())  # type: ignore[arg-type]
    assert isinstance(compat.channel_buffer(chan), ChunkPipe)  # refused, left alone


def test_mark_handle_closed_sends_no_second_close(sshd, conn, remote):
    """After a pipelined download closed the handle, paramiko must not close it again:
    the server would answer with an error, or close a handle it has handed out again."""
    data = os.urandom(100_000)
    sshd_file = str(remote / "f.bin")
    sshd.put(remote, "f.bin", data)
    sftp = conn.sftp
    fh = sftp.open(sshd_file, "rb")
    pipelined_download(sftp, fh.handle, len(data), io.BytesIO(), 255 * 1024, 4, finish=True)
    compat.mark_handle_closed(fh)
    before = compat.next_request_id(sftp)
    fh.close()
    assert compat.next_request_id(sftp) == before + 1  # no CLOSE request went out

    fh = sftp.open(sshd_file, "rb")  # unmarked: paramiko sends a second CLOSE (and
    pipelined_download(sftp, fh.handle, len(data), io.BytesIO(), 255 * 1024, 4, finish=True)
    before = compat.next_request_id(sftp)
    fh.close()  # swallows the server's refusal)
    assert compat.next_request_id(sftp) == before + 2
    assert sftp.stat(sshd_file).st_size == len(data)  # the client still works


def test_check_supported_passes_on_a_live_client(conn):
    compat.check_supported()
    compat.check_supported(conn.sftp)


@pytest.mark.parametrize(
    ("owner", "attr"),
    [
        (paramiko.Channel, "_check_add_window"),
        (paramiko.Transport, "_send_user_message"),
        (BufferedPipe, "feed"),
    ],
)
def test_check_supported_fails_at_import_naming_the_version(monkeypatch, owner, attr):
    monkeypatch.delattr(owner, attr)
    with pytest.raises(IngestError, match=f"paramiko {paramiko.__version__} .*{attr}"):
        compat.check_supported()
    # the module runs the check when imported (run fresh, leaving sys.modules alone)
    with pytest.raises(IngestError, match=f"paramiko {paramiko.__version__} .*{attr}"):
        runpy.run_path(compat.__file__)


def test_check_supported_fails_at_connect_naming_the_version(sshd, monkeypatch):
    """An internal only an instance shows (here `request_number`) is checked on connect;
    the connection is refused with a non-retryable error, and the transport closed."""
    real_init = paramiko.SFTPClient.__init__
    clients: list[paramiko.SFTPClient] = []

    def without_request_number(self, sock):  # type: ignore[no-untyped-def]
        real_init(self, sock)
        del self.request_number
        clients.append(self)

    monkeypatch.setattr(paramiko.SFTPClient, "__init__", without_request_number)
    with pytest.raises(compat.UnsupportedParamiko, match="request_number") as caught:
        SftpConnection(login(sshd))
    assert f"paramiko {paramiko.__version__}" in str(caught.value)
    assert caught.value.retryable is False
    assert clients and not clients[0].get_channel().get_transport().is_active()
