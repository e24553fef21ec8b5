"""After-landing delete/archive only removes what was landed.

A partner that rewrites a file between our read and the after-landing action must not lose
the new content: the file stays where it is and the next run lands it. Real folder, real
sshd (tests/sftp_server.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prefect import flow

from blocks import IngestionQueue, Ledger, LocalFolderSource
from blocks.sftp.block import SftpSource
from pipeline.engine import landed_files, run_source
from tests import sftp_server

pytestmark = pytest.mark.usefixtures("prefect_api")
OLD = time.time() - 3600


class RewrittenLocalFolder(LocalFolderSource):
    """Rewrites each file right after reading it, as a partner re-upload would."""

    _block_type_slug = "test-rewritten-local-folder"  # never replaces the real block type

    def fetch(self, candidate, out):
        result = super().fetch(candidate, out)
        if not candidate.name.startswith("v2-"):
            Path(candidate.ref).write_bytes(b"second version, longer\n")
        return result


class RewrittenSftp(SftpSource):
    """Rewrites each remote file right after downloading it (through the server's disk)."""

    _block_type_slug = "test-rewritten-sftp"

    local_dir: str = ""

    def fetch(self, candidate, out):
        result = super().fetch(candidate, out)
        (Path(self.local_dir) / candidate.name).write_bytes(b"second version, longer\n")
        return result


@flow
def _run(source, ledger: Ledger, queue: IngestionQueue) -> dict:
    return run_source(source, ledger, queue, fail_on_item_error=False).counts()


def _landed_contents(queue: IngestionQueue) -> list[bytes]:
    return sorted(p.read_bytes() for p in landed_files(queue.landing_root))


@pytest.mark.parametrize("action", ["delete", "archive"])
def test_local_file_rewritten_after_read_is_kept_and_landed_next_run(
    tmp_path: Path, sqlite_ledger: Ledger, queue: IngestionQueue, action: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_bytes(b"first\n")
    os.utime(inbox / "a.csv", (OLD, OLD))
    archive = tmp_path / "archive"
    fields = dict(
        source_id="partner",
        directory=str(inbox),
        after_landing_action=action,
        archive_dir=str(archive) if action == "archive" else None,
    )
    first = _run(RewrittenLocalFolder(**fields), sqlite_ledger, queue)
    assert first["landed"] == 1
    # the new content is still in the folder, not deleted or archived with the old name
    assert (inbox / "a.csv").read_bytes() == b"second version, longer\n"
    assert not archive.exists() or not list(archive.iterdir())

    second = _run(LocalFolderSource(**fields), sqlite_ledger, queue)
    assert second["landed"] == 1
    assert _landed_contents(queue) == [b"first\n", b"second version, longer\n"]
    assert not (inbox / "a.csv").exists()


def test_local_unchanged_file_is_still_deleted(
    tmp_path: Path, sqlite_ledger: Ledger, queue: IngestionQueue
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "v2-a.csv").write_bytes(b"only\n")
    source = RewrittenLocalFolder(
        source_id="partner", directory=str(inbox), after_landing_action="delete"
    )
    assert _run(source, sqlite_ledger, queue)["landed"] == 1
    assert not (inbox / "v2-a.csv").exists()


@pytest.fixture(scope="module")
def sshd():
    with sftp_server.running_sshd() as server:
        yield server


def test_sftp_file_rewritten_after_download_is_not_deleted(
    sshd, sqlite_ledger: Ledger, queue: IngestionQueue
) -> None:
    remote = sshd.folder("rewritten_after_download")
    sshd.put(remote, "a.csv", b"first\n", OLD)
    fields = dict(
        source_id="partner",
        **sftp_server.login_fields(sshd, remote),
        after_landing_action="delete",
        retries=0,
    )
    first = _run(RewrittenSftp(local_dir=str(remote), **fields), sqlite_ledger, queue)
    assert first["landed"] == 1
    assert (remote / "a.csv").read_bytes() == b"second version, longer\n"

    second = _run(SftpSource(**fields), sqlite_ledger, queue)
    assert second["landed"] == 1
    assert _landed_contents(queue) == [b"first\n", b"second version, longer\n"]
    assert not (remote / "a.csv").exists()
