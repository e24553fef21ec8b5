"""SFTP connections for the SFTP source: host-key check, login, fast-transfer tuning.

Kept apart from the block so the block stays about configuration. Every error text here
names the host and user, never the password or key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
from dataclasses import dataclass

import paramiko

from blocks.core.errors import (
    ConfigError,
    CredentialsError,
    HostKeyError,
    IngestError,
    SourceUnavailable,
)
from blocks.sftp.chunk_pipe import open_sftp_channel
from blocks.sftp.paramiko_compat import check_supported

# Large SSH windows and packets let many SFTP read requests be in flight at once; with
# paramiko's defaults (2 MB window, 32 KB packet) a single stream is window-bound.
_WINDOW = 64 * 1024 * 1024
_MAX_PACKET = 256 * 1024 - 1024


class SftpAuthError(CredentialsError):
    """Login refused (wrong password or key). Never retried: servers lock accounts."""


class SftpHostKeyError(HostKeyError):
    """The server's host key is unknown or does not match the configured one."""


@dataclass(frozen=True)
class SftpLogin:
    host: str
    port: int
    username: str
    password: str | None
    private_key: str | None
    passphrase: str | None
    host_key: str | None
    accept_unknown_host_key: bool
    connect_timeout: float
    operation_timeout: float


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:...` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _check_host_key(login: SftpLogin, key: paramiko.PKey) -> None:
    where = f"{login.host}:{login.port}"
    if not login.host_key:
        if login.accept_unknown_host_key:
            return
        raise SftpHostKeyError(
            "SftpSource.host_key",
            f"SFTP host {where}: host key {key.get_name()} {fingerprint(key)} is not trusted; "
            "set SftpSource.host_key to it (or accept_unknown_host_key=True to opt out)",
        )
    expected = login.host_key.strip()
    if expected.startswith("SHA256:"):
        ok = expected.rstrip("=") == fingerprint(key)
    else:
        parts = expected.split()
        # accept 'ssh-ed25519 AAAA...' or a known_hosts line 'host ssh-ed25519 AAAA...'
        blob = parts[-1] if len(parts) < 3 else parts[2]
        if len(parts) >= 2 and parts[0].startswith(("ssh-", "ecdsa-")):
            blob = parts[1]
        ok = blob == key.get_base64()
    if not ok:
        raise SftpHostKeyError(
            "SftpSource.host_key",
            f"SFTP host {where}: host key {key.get_name()} {fingerprint(key)} does not match "
            "SftpSource.host_key (possible man-in-the-middle); refusing to connect",
        )


def _load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(type(exc).__name__)
    raise ConfigError(
        "SftpSource.private_key",
        "not a readable OpenSSH/PEM private key (or wrong private_key_passphrase)",
    )


class SftpConnection:
    """One SSH transport with one SFTP channel (used by one thread at a time)."""

    def __init__(self, login: SftpLogin) -> None:
        self.login = login
        where = f"{login.host}:{login.port}"
        try:
            sock = socket.create_connection((login.host, login.port), login.connect_timeout)
        except OSError as exc:
            raise SourceUnavailable(
                f"SFTP host {where}: cannot connect ({exc.strerror or exc})"
            ) from None
        transport = paramiko.Transport(
            sock, default_window_size=_WINDOW, default_max_packet_size=_MAX_PACKET
        )
        self.transport = transport
        # AES-GCM first: it authenticates while decrypting, where CTR + HMAC costs paramiko a
        # separate Python-driven HMAC per packet (~15% of its receive thread here). Other
        # ciphers stay as fallbacks for servers without GCM.
        options = transport.get_security_options()
        gcm = tuple(c for c in options.ciphers if c.endswith("-gcm@openssh.com"))
        options.ciphers = gcm + tuple(c for c in options.ciphers if c not in gcm)
        try:
            transport.banner_timeout = login.connect_timeout
            transport.auth_timeout = login.connect_timeout
            transport.start_client(timeout=login.connect_timeout)
            _check_host_key(login, transport.get_remote_server_key())
            self._authenticate()
            channel = open_sftp_channel(transport, _WINDOW, _MAX_PACKET)
            channel.settimeout(login.operation_timeout)
            self.sftp = paramiko.SFTPClient(channel)
            check_supported(self.sftp)  # the internals only an instance shows
        except IngestError:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise SourceUnavailable(f"SFTP host {where}: SSH handshake failed ({exc})") from None

    def _authenticate(self) -> None:
        login = self.login
        who = f"{login.username}@{login.host}:{login.port}"
        tried = []
        if login.private_key:
            key = _load_private_key(login.private_key, login.passphrase)
            try:
                self.transport.auth_publickey(login.username, key)
                return
            except paramiko.AuthenticationException:
                tried.append("private key")
        if login.password is not None:
            try:
                self.transport.auth_password(login.username, login.password)
                return
            except paramiko.AuthenticationException:
                tried.append("password")
        if not tried:
            raise ConfigError("SftpSource.password", f"SFTP {who}: set a password or private_key")
        # `from None`: paramiko's exception carries no secret, but keep the chain short.
        field = "SftpSource.password" if "password" in tried else "SftpSource.private_key"
        raise SftpAuthError(field, f"SFTP {who}: login refused ({' and '.join(tried)} rejected)")

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:  # noqa: BLE001 (closing a dead link must not raise)
            pass
        self.transport.close()
