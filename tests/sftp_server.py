"""A real OpenSSH sshd on 127.0.0.1 for the SFTP tests (and the benchmark).

Needs root (to create the system user) and Debian's `openssh-server`. It runs with its
own config, host key, pid file and port; the user logs in by password or key and gets
`internal-sftp` only. Files live under a world-traversable temp folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER = "ingestsftp"
PASSWORD = "S3cret-pw-Only4Tests"
SSHD = "/usr/sbin/sshd"


@dataclass
class SshServer:
    port: int
    base: Path
    host_key_line: str  # 'ssh-ed25519 AAAA...'
    client_key: str  # private key text
    proc: subprocess.Popen
    uid: int
    gid: int

    def folder(self, name: str) -> Path:
        """A fresh folder owned by the SFTP user."""
        path = self.base / name
        path.mkdir(parents=True)
        os.chown(path, self.uid, self.gid)
        return path

    def put(self, folder: Path, name: str, data: bytes, mtime: float | None = None) -> Path:
        path = folder / name
        path.write_bytes(data)
        os.chown(path, self.uid, self.gid)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (privileged monitor and the user's child)."""
        found: list[int] = []
        todo = [self.proc.pid]
        while todo:
            out = subprocess.run(
                ["pgrep", "-P", str(todo.pop())], capture_output=True, text=True
            ).stdout
            kids = [int(p) for p in out.split()]
            found += kids
            todo += kids
        return found

    def log(self) -> str:
        """sshd's log so far (LogLevel VERBOSE: a 'Connection from' line per TCP connection,
        a 'Failed password for' line per refused password login)."""
        return (self.base / "etc" / "sshd.log").read_text(errors="replace")

    def drop_sessions(self) -> int:
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def why_not_available() -> str | None:
    if not os.path.exists(SSHD):
        return "openssh-server is not installed (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "needs root to create the SFTP test user"
    return None


def _ensure_user() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)
        pw = pwd.getpwnam(USER)
    subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}\n", text=True, check=True)
    return pw.pw_uid, pw.pw_gid


def start_server() -> SshServer:
    uid, gid = _ensure_user()
    base = Path(tempfile.mkdtemp(prefix="ingest-sftp-"))
    os.chmod(base, 0o755)
    etc = base / "etc"
    etc.mkdir()
    os.chmod(etc, 0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "host_key")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "client_key")], check=True
    )
    # sshd reads authorized_keys as the user: keep it outside the root-only etc folder
    (base / "authorized_keys").write_text((etc / "client_key.pub").read_text())
    os.chmod(base / "authorized_keys", 0o644)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = etc / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {etc / "host_key"}
PidFile {etc / "sshd.pid"}
AuthorizedKeysFile {base / "authorized_keys"}
StrictModes no
UsePAM no
LogLevel VERBOSE
PasswordAuthentication yes
PubkeyAuthentication yes
KbdInteractiveAuthentication no
AllowUsers {USER}
MaxStartups 100:30:200
MaxSessions 64
Subsystem sftp internal-sftp
ForceCommand internal-sftp
"""
    )
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(etc / "sshd.log", "wb"),  # noqa: SIM115 (lives as long as sshd)
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((etc / "sshd.log").read_text()) from None
            time.sleep(0.05)
    host_pub = (etc / "host_key.pub").read_text().split()
    return SshServer(
        port=port,
        base=base,
        host_key_line=f"{host_pub[0]} {host_pub[1]}",
        client_key=(etc / "client_key").read_text(),
        proc=proc,
        uid=uid,
        gid=gid,
    )


@contextmanager
def running_sshd() -> Iterator[SshServer]:
    """A started sshd for a fixture; a machine without one skips locally and fails in CI
    (`server_missing`)."""
    from tests.conftest import server_missing  # late: conftest is pytest's to import first

    why = why_not_available()
    if why:
        server_missing("OpenSSH sshd", why)
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


def login_fields(server: SshServer, remote_dir: Path | str) -> dict[str, Any]:
    """The SftpSource fields that reach `server` as the test user, by password."""
    return dict(
        host="127.0.0.1",
        port=server.port,
        username=USER,
        password=PASSWORD,
        host_key=server.host_key_line,
        remote_dir=str(remote_dir),
    )


def stop_server(server: SshServer) -> None:
    server.drop_sessions()
    server.proc.terminate()
    try:
        server.proc.wait(5)
    except subprocess.TimeoutExpired:
        server.proc.kill()
    shutil.rmtree(server.base, ignore_errors=True)
