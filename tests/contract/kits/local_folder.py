"""Contract kit: Local folder."""

from __future__ import annotations

from typing import Any

from blocks.core.source import SourceBlock
from tests.contract.kits.base import FS_UNSAFE, SourceKit, file_items, register, uid


@register
class LocalFolderKit(SourceKit):
    name = "local_folder"

    def start(self) -> None:
        factory = self.request.getfixturevalue("tmp_path_factory")
        self.folder = factory.mktemp("contract-local")  # outside the test's tmp_path

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import LocalFolderSource

        fields = dict(
            source_id=self.source_id,
            directory=str(self.folder),
            retries=0,
            retry_delay_seconds=0,
        )
        return LocalFolderSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = file_items(n, uid())
        for name, data in items.items():
            (self.folder / name).write_bytes(data)
        return items

    def put_unsafe(self) -> list[str]:
        for name in FS_UNSAFE:
            (self.folder / name).write_bytes(b"evil\n")
        return list(FS_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(pattern="x_{date:%Y"), "LocalFolderSource.pattern"

    def unreachable(self) -> SourceBlock:
        return self.block(directory=str(self.folder / "no-such-folder"))
