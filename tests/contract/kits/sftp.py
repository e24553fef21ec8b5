"""Contract kit: SFTP (the real OpenSSH sshd of tests/sftp_server.py)."""

from __future__ import annotations

from typing import Any

from blocks.core.source import SourceBlock
from tests.contract.kits.base import FS_UNSAFE, SourceKit, file_items, register, uid


@register
class SftpKit(SourceKit):
    name = "sftp"

    def start(self) -> None:
        self.server = self.request.getfixturevalue("contract_sshd")
        self.folder = self.server.folder(f"c-{uid()}")

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SftpSource
        from tests import sftp_server

        fields = dict(
            source_id=self.source_id,
            **sftp_server.login_fields(self.server, self.folder),
            retries=0,
            retry_delay_seconds=0,
        )
        return SftpSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = file_items(n, uid())
        for name, data in items.items():
            self.server.put(self.folder, name, data)
        return items

    def put_unsafe(self) -> list[str]:
        for name in FS_UNSAFE:
            self.server.put(self.folder, name, b"evil\n")
        return list(FS_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(host_key=None), "SftpSource.host_key"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-sftp-pw-{uid()}"
        return self.block(password=secret), secret

    def open_connections(self) -> int:
        return len(self.server.session_pids())

    def requests_seen(self) -> int:
        return self.server.log().count("Connection from")

    def good_secret(self) -> str:
        from tests import sftp_server

        return sftp_server.PASSWORD
