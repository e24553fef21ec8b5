"""What every source kit shares: the `SourceKit` interface the contract suite drives,
`register` (adds a kit to `KITS`), and helpers (unique names, server-side polling,
client-side connection counts, sample items, unsafe names).

A kit reaches its real local server through the existing fixtures and helpers (never its
own start-up code), makes a fresh place per test (folder, bucket, table, ...), builds a
valid block, puts items at the source, and says what it cannot do (no unsafe names, no
secret, connections not observable). One module per source in this package, each
registering its kit(s) with `@register`; `tests/contract/kits/__init__.py` imports them
all, and every contract test in `test_source_contract.py` then runs against each kit.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from blocks.core.source import SourceBlock

KITS: dict[str, type[SourceKit]] = {}


def register(cls: type[SourceKit]) -> type[SourceKit]:
    """Add a kit to the registry every contract test is parametrised over."""
    KITS[cls.name] = cls
    return cls


def uid() -> str:
    """A short unique suffix for names made per test."""
    return uuid.uuid4().hex[:10]


def wait_for(count: Callable[[], int | None], want: int = 0, seconds: float = 5.0) -> int | None:
    """Poll a server-side count until it reaches `want` (servers end sessions
    asynchronously after the client closed them); return the last value."""
    deadline = time.monotonic() + seconds
    value = count()
    while value is not None and value != want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = count()
    return value


def client_connections(port: int) -> int:
    """TCP connections this test process holds open to 127.0.0.1:`port` (client side),
    read from /proc: for servers that keep no session list of their own (HTTP APIs),
    what a block did not release is still visible at the client end."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            # state 01: ESTABLISHED; a socket of this process whose far end is the server
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


class SourceKit:
    """One source type's adapter to the contract suite (see the module docstring)."""

    name: ClassVar[str]
    # "files": each item is a landed file (name -> bytes); "rows": items are records of a
    # window file the block names itself (id -> value of `columns[1]`)
    kind: ClassVar[Literal["files", "rows"]] = "files"
    columns: ClassVar[tuple[str, str]] = ("id", "note")
    # why the source cannot hold an item with an unsafe name (None: it can)
    no_unsafe_names: ClassVar[str | None] = None

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.source_id = f"{self.name}-{uid()}"

    # -- life cycle
    def start(self) -> None:
        """Reach the server (fixtures) and make a fresh place for this test."""

    def stop(self) -> None:
        """Undo `start` where a fixture does not."""

    # -- blocks
    def block(self, **overrides: Any) -> SourceBlock:
        """A valid block on this test's place (retries off: the suite wants fast failures)."""
        raise NotImplementedError

    def bad_config(self) -> tuple[SourceBlock, str]:
        """A block with one bad configuration value and the field `preflight` must name
        ('ClassName.field')."""
        raise NotImplementedError

    def wrong_secret(self) -> tuple[SourceBlock, str] | None:
        """A block whose secret the server refuses, and the secret string; None: the
        source has no secret."""
        return None

    def good_secret(self) -> str | None:
        """The secret the valid block holds (None: it holds none)."""
        return None

    def unreachable(self) -> SourceBlock:
        """A block `test_connection` must reject (default: the wrong-secret block)."""
        found = self.wrong_secret()
        assert found is not None, f"{self.name}: override unreachable()"
        return found[0]

    # -- items
    def put(self, n: int) -> dict[Any, Any]:
        """Put n new items at the source: files {name: bytes}, rows {id: value}."""
        raise NotImplementedError

    def put_unsafe(self) -> list[str]:
        """Put items whose names are unsafe; returns the names as the source lists them."""
        raise NotImplementedError

    # -- observation
    def server_port(self) -> int | None:
        """Port of the local server the block talks to (for `client_connections`)."""
        return None

    def open_connections(self) -> int | None:
        """Connections open at the server for this test (None: not observable). Default:
        the connections this process holds to `server_port()`."""
        port = self.server_port()
        return None if port is None else client_connections(port)

    def requests_seen(self) -> int | None:
        """Requests (or connections) the server has seen so far (None: not observable)."""
        return None


def file_items(n: int, salt: str) -> dict[str, bytes]:
    """n CSV files {name: bytes}."""
    # distinct contents: same bytes under two names would be dropped as a duplicate
    return {f"f{i:02d}.csv": f"{i},{salt}\n".encode() for i in range(n)}


# Names a POSIX folder can hold that must still never be landed as they are: Windows-style
# parent references and a control character (`/` cannot be in a file name; names starting
# with '.' are hidden files, not listed at all).
FS_UNSAFE = ["a\\..\\..\\evil.csv", "bad\nname.csv"]
# Names an object store can hold.
KEY_UNSAFE = ["../evil.csv", "a//b.csv"]
