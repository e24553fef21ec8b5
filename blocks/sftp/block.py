"""SFTP source: partner drop folders with date-templated names and SHA256 sidecars."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, BinaryIO, ClassVar, Literal

import paramiko
from pydantic import Field, PrivateAttr, SecretStr, model_validator

from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError, IngestError
from blocks.core.run_logger import run_logger
from blocks.core.source import (
    Candidate,
    DiscoverContext,
    ItemGone,
    NamedItem,
    NotTaken,
    glob_key,
)
from blocks.core.unpack import FileSourceBlock
from blocks.core.write_behind import ThreadedSink
from blocks.sftp.batch_read import SmallRead, read_small_files
from blocks.sftp.connection import SftpConnection, SftpLogin, fingerprint
from blocks.sftp.fast_read import SftpReadError, pipelined_download, ranged_readv
from blocks.sftp.parallel import RangedDownloadError, parallel_download
from blocks.sftp.paramiko_compat import mark_handle_closed

# OpenSSH answers reads of up to 255 KiB (limits@openssh.com), in order and in full;
# streaming them off the channel beats paramiko's readv by ~1.5x here.
_FAST_IN_FLIGHT = 24  # outstanding 255 KiB reads per file on OpenSSH (measured best of 8-64)
_READ_SIZE = 255 * 1024
_WRITE_BEHIND_MIN = 4 * _READ_SIZE  # smaller files are written without a writer thread
_SHA256 = re.compile(r"\b([0-9a-fA-F]{64})\b")
# Small files of a land-batch are read in one pipeline before they are fetched
# (`SftpSource.prefetch`): at most this many bytes a batch, files up to this size.
_PREFETCH_BUDGET = 8 * 1024 * 1024
_PREFETCH_MAX_FILE = 1024 * 1024
_SIDECAR_BYTES = 4096  # a sidecar's first bytes hold its checksum
_SIDECAR_ROUND = 256  # sidecars read in one pipeline while listing (a round keeps them open)
# Errors that mean the link is gone: drop the thread's connection, let the pipeline retry.
_LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)


def _openssh(conn: SftpConnection) -> bool:
    """Whether the server is OpenSSH: the pipelined paths (`fast_read`, `batch_read`) rely
    on its sftp-server answering in request order and reads of up to 255 KiB in full
    except at the end of a file, so a short answer means the end. Other servers may answer
    short anywhere or out of order: they get paramiko's own requests, one file at a time.
    """
    return conn.transport.remote_version.startswith("SSH-2.0-OpenSSH")


def _sidecar_sum(sidecar: str, data: bytes) -> str:
    """The hex SHA256 in a sidecar's first bytes ('HEX', or sha256sum's 'HEX  name')."""
    match = _SHA256.search(data.decode("utf-8", "replace"))
    if not match:
        # An unreadable sidecar must not let the file through unverified: use a value
        # that can never match so the item is quarantined with a clear reason.
        return "invalid-sidecar-" + sidecar
    return match.group(1).lower()


def _prefetch_key(candidate: Candidate) -> tuple[str, int | None, str | None]:
    return candidate.name, candidate.size, candidate.version


def _fingerprint(attrs: paramiko.SFTPAttributes) -> str:
    """The change fingerprint of a listed file (`Candidate.version`): size and mtime, which
    SFTP gives in whole seconds."""
    return f"{attrs.st_size}:{attrs.st_mtime}"


class SftpSource(FileSourceBlock):
    """Files from an SFTP server, once each, downloaded fast and verified.

    `pattern` is a glob on file names in `remote_dir`, with date templates resolved for the
    run's logical day (`AXIS_RECON_{date:%Y%m%d}*.csv`). With `checksum_extension` set
    (e.g. `.sha256`), a sidecar `NAME.sha256` holding the hex SHA256 is read and the pipeline
    verifies the download against it (a mismatch is quarantined and recorded as failed).
    A missing sidecar: the file is landed unverified with a warning, or, with
    `require_checksum`, left on the server for a later run (the sidecar may still come).

    The server's host key must match `host_key` (an OpenSSH public key line or a
    `SHA256:...` fingerprint) unless `accept_unknown_host_key` is set. Each download thread
    keeps one SFTP connection and reuses it; reads are pipelined so a single file streams at
    several hundred MB/s. With `connections_per_file` above 1, files of at least
    `parallel_min_mb` are split into that many byte ranges fetched at once over separate
    connections, one process each; if the server refuses the extra logins, one connection
    is used. Dropped links are reconnected on the item's retry. On OpenSSH servers the small
    files of a land-batch are read in one pipeline (every OPEN at once, then every READ and
    CLOSE) before they are fetched, and sidecars are read the same way while listing.
    """

    _block_type_name = "SFTP Source"
    _block_type_slug = "sftp-source"
    _description = "Ingest files from an SFTP server (date templates, SHA256 sidecars)."

    host: str = Field(..., description="SFTP server host name or IP.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    username: str = Field(..., description="Login user.")
    password: SecretStr | None = Field(default=None, description="Password (or use a key).")
    private_key: SecretStr | None = Field(
        default=None, description="Private key text (OpenSSH or PEM; ed25519, ECDSA or RSA)."
    )
    private_key_passphrase: SecretStr | None = Field(
        default=None, description="Passphrase of the private key, if it has one."
    )
    host_key: str | None = Field(
        default=None,
        description=(
            "Trusted server host key: 'ssh-ed25519 AAAA...' (a known_hosts line works) or "
            "a 'SHA256:...' fingerprint. Unknown hosts are refused unless opted in below."
        ),
    )
    accept_unknown_host_key: bool = Field(
        default=False,
        description="Accept any host key when host_key is empty (insecure; for tests only).",
    )
    remote_dir: str = Field(default=".", description="Remote folder to list.")
    pattern: str = Field(
        default="*",
        **glob_key("file_pattern"),
        description=(
            "Glob on file names; {date:%Y%m%d} is the run's day, e.g. 'AXIS_{date:%Y%m%d}*.csv'."
        ),
    )
    checksum_extension: str | None = Field(
        default=None,
        description="Sidecar suffix holding the hex SHA256 of the file, e.g. '.sha256'.",
    )
    require_checksum: bool = Field(
        default=False,
        description="With a sidecar suffix: leave files whose sidecar is missing for a later run.",
    )
    connect_timeout_seconds: float = Field(default=15, gt=0, description="Connect/login timeout.")
    operation_timeout_seconds: float = Field(
        default=60, gt=0, description="Timeout of one SFTP request (a stalled read fails)."
    )
    after_landing_action: Literal["keep", "delete", "archive"] = Field(
        default="keep",
        description="What to do on the server once a file is landed and recorded.",
    )
    archive_dir: str | None = Field(
        default=None, description="Remote folder 'archive' moves files (and sidecars) to."
    )

    connections_per_file: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Files of at least parallel_min_mb are downloaded in byte ranges over this many "
            "connections at once, each in its own process (1: one connection per file). "
            "Worth 2-4 on long-latency links or when one connection is CPU-bound on a "
            "many-core worker; if the server refuses the extra logins, one connection is used."
        ),
    )
    parallel_min_mb: int = Field(
        default=256, ge=1, description="Smallest file (MiB) split over connections_per_file."
    )

    _local: threading.local = PrivateAttr(default_factory=threading.local)
    _all: list = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _archive_needs_folder(self) -> SftpSource:
        if self.after_landing_action == "archive" and not self.archive_dir:
            raise ValueError("archive_dir: required when after_landing_action is 'archive'")
        return self

    # ------------------------------------------------------------------ connections
    def _login(self) -> SftpLogin:
        def reveal(s: SecretStr | None) -> str | None:
            return s.get_secret_value() if s is not None else None

        return SftpLogin(
            host=self.host,
            port=self.port,
            username=self.username,
            password=reveal(self.password),
            private_key=reveal(self.private_key),
            passphrase=reveal(self.private_key_passphrase),
            host_key=self.host_key,
            accept_unknown_host_key=self.accept_unknown_host_key,
            connect_timeout=self.connect_timeout_seconds,
            operation_timeout=self.operation_timeout_seconds,
        )

    def _conn(self) -> SftpConnection:
        """This thread's connection, (re)opened when missing or dead."""
        conn: SftpConnection | None = getattr(self._local, "conn", None)
        if conn is None or not conn.alive:
            if conn is not None:
                conn.close()
            conn = SftpConnection(self._login())
            self._local.conn = conn
            with self._lock:
                self._all = [c for c in self._all if c.alive]
                self._all.append(conn)
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        """Close every connection this block opened."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def _path(self, name: str) -> str:
        return posixpath.join(self.remote_dir, name)

    # ------------------------------------------------------------------ interface
    def preflight(self) -> None:
        if self.password is None and self.private_key is None:
            raise ConfigError("SftpSource.password", "set a password or a private_key")
        if not self.host_key and not self.accept_unknown_host_key:
            raise ConfigError(
                "SftpSource.host_key",
                "no trusted host key: set host_key (or accept_unknown_host_key=True)",
            )
        try:
            render_date_template(self.pattern, date(2000, 1, 1))
        except ValueError as exc:
            raise ConfigError("SftpSource.pattern", str(exc)) from None
        if self.checksum_extension is not None and not self.checksum_extension.strip():
            raise ConfigError("SftpSource.checksum_extension", "must not be blank")
        if self.archive_dir and posixpath.normpath(self.archive_dir) == posixpath.normpath(
            self.remote_dir
        ):
            raise ConfigError("SftpSource.archive_dir", "must not be the remote_dir itself")

    def _listdir(self) -> list[paramiko.SFTPAttributes]:
        try:
            return self._conn().sftp.listdir_attr(self.remote_dir)
        except FileNotFoundError:
            raise ConfigError(
                "SftpSource.remote_dir", f"remote folder {self.remote_dir!r} does not exist"
            ) from None
        except PermissionError:
            raise ConfigError(
                "SftpSource.remote_dir", f"remote folder {self.remote_dir!r} is not readable"
            ) from None
        except _LINK_ERRORS as exc:
            self._drop_conn()
            raise IngestError(f"SFTP listing of {self.remote_dir!r} failed: {exc}") from None

    def discover(self, ctx: DiscoverContext) -> Iterator[Candidate]:
        pattern = render_date_template(self.pattern, ctx.partition_date)
        entries = self._listdir()
        names = {e.filename for e in entries if e.st_mode and stat.S_ISREG(e.st_mode)}
        ext = self.checksum_extension
        taken: list[tuple[paramiko.SFTPAttributes, str | None]] = []  # (file, its sidecar)
        for entry in sorted(entries, key=lambda e: e.filename):
            name = entry.filename
            if not (entry.st_mode and stat.S_ISREG(entry.st_mode)):
                continue  # folders, symlinks, devices
            if name.endswith(".part") or (ext and name.endswith(ext)):
                continue
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            sidecar = None
            if ext:
                if name + ext in names:
                    sidecar = name + ext
                elif self.require_checksum:
                    continue  # sidecar not there yet: leave the file for a later run
            taken.append((entry, sidecar))
        for start in range(0, len(taken), _SIDECAR_ROUND):
            chunk = taken[start : start + _SIDECAR_ROUND]
            sums = self._read_sidecars([sidecar for _, sidecar in chunk if sidecar])
            for entry, sidecar in chunk:
                mtime = datetime.fromtimestamp(entry.st_mtime or 0, tz=UTC)
                # the name goes through unchanged: the pipeline refuses unsafe names itself
                yield Candidate(
                    name=entry.filename,
                    size=entry.st_size,
                    mtime=mtime,
                    version=_fingerprint(entry),
                    expected_sha256=sums[sidecar] if sidecar else None,
                )

    takes_named_items: ClassVar[bool] = True

    def candidates_for(
        self, items: Sequence[NamedItem], ctx: DiscoverContext
    ) -> Iterator[Candidate | NotTaken]:
        """Stat each named file in `remote_dir` (one `lstat` each, no listing) that the
        listing would offer: a regular file matching the run day's pattern, not `*.part`
        nor a sidecar; its sidecar checksum is read as the listing reads it."""
        pattern = render_date_template(self.pattern, ctx.partition_date)
        ext = self.checksum_extension
        for item in items:
            name = item.name
            why = None
            if item.bucket is not None:
                why = f"names bucket {item.bucket!r}"
            elif "/" in name:
                why = (
                    f"not a file name in remote_dir {self.remote_dir!r} (sub-folders are not read)"
                )
            elif name.endswith(".part") or (ext and name.endswith(ext)):
                why = "a *.part or sidecar file, never listed"
            elif not fnmatch.fnmatchcase(name, pattern):
                why = f"does not match the file pattern {pattern!r}"
            if why is not None:
                yield NotTaken(name, f"{item.where}: {why}")
                continue
            entry = self._lstat(name)
            if entry is None:
                yield NotTaken(name, f"{item.where}: no such file in {self.remote_dir!r}")
                continue
            if not (entry.st_mode and stat.S_ISREG(entry.st_mode)):
                yield NotTaken(name, f"{item.where}: not a regular file")
                continue
            expected = None
            if ext:
                if self._lstat(name + ext) is not None:
                    expected = self._read_sidecar(name + ext)
                elif self.require_checksum:
                    yield NotTaken(name, f"{item.where}: its {ext} sidecar is not there yet")
                    continue
            yield Candidate(
                name=name,
                size=entry.st_size,
                mtime=datetime.fromtimestamp(entry.st_mtime or 0, tz=UTC),
                version=_fingerprint(entry),
                expected_sha256=expected,
            )

    def _lstat(self, name: str) -> paramiko.SFTPAttributes | None:
        try:
            return self._conn().sftp.lstat(self._path(name))
        except FileNotFoundError:
            return None
        except _LINK_ERRORS as exc:
            self._drop_conn()
            raise IngestError(f"SFTP: cannot stat {name!r}: {exc}") from None

    def _read_sidecars(self, sidecars: list[str]) -> dict[str, str]:
        """The hex SHA256 in each sidecar, read in one pipeline on OpenSSH (every OPEN at
        once, then every READ and CLOSE), one by one elsewhere. As one by one, a sidecar
        that cannot be opened or read fails the listing, and one without a checksum gets
        a value that never matches."""
        if len(sidecars) < 2:
            return {s: self._read_sidecar(s) for s in sidecars}
        conn = self._conn()
        if not _openssh(conn):
            return {s: self._read_sidecar(s) for s in sidecars}
        reads = [SmallRead(self._path(s), _SIDECAR_BYTES) for s in sidecars]
        try:
            read_small_files(conn.sftp, reads, _READ_SIZE)
        except (*_LINK_ERRORS, SftpReadError) as exc:
            self._drop_conn()  # replies may still be in flight
            raise IngestError(
                f"SFTP: cannot read sidecars {sidecars[0]!r}..{sidecars[-1]!r}: {exc}"
            ) from None
        sums = {}
        for sidecar, read in zip(sidecars, reads, strict=True):
            if read.error is not None or read.data is None:
                # every reply was read: the connection stays usable
                raise IngestError(f"SFTP: cannot read sidecar {sidecar!r}: {read.error}")
            sums[sidecar] = _sidecar_sum(sidecar, read.data)
        return sums

    def _read_sidecar(self, sidecar: str) -> str:
        """The hex SHA256 in a sidecar ('HEX', or sha256sum's 'HEX  name')."""
        try:
            with self._conn().sftp.open(self._path(sidecar), "rb") as fh:
                data = fh.read(_SIDECAR_BYTES)
        except _LINK_ERRORS as exc:
            self._drop_conn()
            raise IngestError(f"SFTP: cannot read sidecar {sidecar!r}: {exc}") from None
        return _sidecar_sum(sidecar, data)

    def _ranged(self, size: int | None, out: BinaryIO) -> bool:
        return (
            self.connections_per_file > 1
            and size is not None
            and size >= self.parallel_min_mb * 1024 * 1024
            and getattr(out, "path", None) is not None
            and hasattr(out, "hash_written")
        )

    def prefetch(self, candidates: list[Candidate]) -> None:
        """Read the small files of a land-batch in one pipeline on this thread's connection
        (OpenSSH only, see `_openssh`): every OPEN at once, then for each handle a READ of
        one byte more than the listed size (more reads above 255 KiB) and its CLOSE, all
        at once. Files up to 1 MiB, at most 8 MiB a batch, are kept in memory for `fetch`
        to serve; the others are fetched as usual.

        Never raises: on a broken link the connection is dropped (replies may be in
        flight) and every file of the batch is fetched the usual way, which reconnects.
        """
        store: dict[tuple[str, int | None, str | None], SmallRead] = {}
        self._local.prefetched = store  # what an earlier batch left on this thread goes
        picked: list[Candidate] = []
        budget = _PREFETCH_BUDGET
        for cand in candidates:
            if cand.size is not None and cand.size <= min(_PREFETCH_MAX_FILE, budget):
                picked.append(cand)
                budget -= cand.size
        if len(picked) < 2:
            return  # one file: fetch's own pipeline costs as many round trips
        try:
            conn = self._conn()
        except Exception:  # noqa: BLE001 (fetch meets the same error and reports it)
            return
        if not _openssh(conn):
            return
        # one byte more than listed: the answer then also says the file did not grow
        reads = [SmallRead(self._path(c.name), (c.size or 0) + 1) for c in picked]
        try:
            read_small_files(conn.sftp, reads, _READ_SIZE)
        except Exception as exc:  # noqa: BLE001 (only a shortcut: fetch goes the usual way)
            self._drop_conn()  # answers may still be in flight: the link is not trusted
            run_logger("ingest.sftp").warning(
                "reading %d small files at once failed (%s); fetching them one by one",
                len(picked),
                exc,
            )
            return
        for cand, read in zip(picked, reads, strict=True):
            store[_prefetch_key(cand)] = read

    def _serve_prefetched(self, candidate: Candidate, out: BinaryIO) -> bool:
        """Write the item from what `prefetch` read (and forget it); False when it has
        nothing for it, or met an error the usual path must meet and report itself."""
        store = getattr(self._local, "prefetched", None)
        read = store.pop(_prefetch_key(candidate), None) if store else None
        if read is None:
            return False
        if isinstance(read.error, FileNotFoundError):
            raise ItemGone()
        if read.error is not None or read.data is None:
            return False  # e.g. permission denied: as the usual path says it
        size, got = candidate.size or 0, len(read.data)
        if got != size:  # it asked for one byte more: `got > size` means it grew
            now = f"more than {size}" if got > size else str(got)
            raise IngestError(
                f"{candidate.name}: size changed since the listing ({size} listed, "
                f"{now} now); will retry"
            )
        out.write(read.data)
        return True

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        if self._serve_prefetched(candidate, out):
            return None
        path = self._path(candidate.name)
        try:
            conn = self._conn()
            if self._ranged(candidate.size, out):
                size = conn.sftp.stat(path).st_size
                if size != candidate.size:
                    raise IngestError(
                        f"{candidate.name}: size changed since the listing "
                        f"({candidate.size} listed, {size} now); will retry"
                    )
                try:
                    ranged = parallel_download(
                        self._login(), path, size, out,  # type: ignore[arg-type]
                        parts=self.connections_per_file,
                        read_size=_READ_SIZE,
                        in_flight=_FAST_IN_FLIGHT,
                        stall_seconds=self.operation_timeout_seconds,
                    )  # fmt: skip
                except RangedDownloadError as exc:
                    if exc.started or getattr(out, "size", 0):
                        raise
                    # e.g. the server caps logins per user: one stream still works
                    run_logger("ingest.sftp").warning(
                        "%s: %s; downloading over one connection instead", candidate.name, exc
                    )
                    os.truncate(out.path, 0)  # type: ignore[attr-defined]
                else:
                    run_logger("ingest.sftp").info(
                        "%s: %d bytes over %d connections (worker peak RSS %s MB)",
                        candidate.name,
                        ranged.bytes,
                        len(ranged.worker_peak_rss_kb),
                        "/".join(str(kb // 1024) for kb in ranged.worker_peak_rss_kb),
                    )
                    return None
            fh = conn.sftp.open(path, "rb")
            finished = False
            try:
                fast = _openssh(conn)
                # With the listed size, the fast path checks it with an end-of-file probe
                # pipelined behind the reads, and closes the handle in the same pipeline.
                known = fast and candidate.size is not None
                size = candidate.size if known else fh.stat().st_size
                # Writing and hashing run on a writer thread, overlapping the receive; a
                # file of a few reads is written as it comes (a thread each cost more).
                threaded = size > _WRITE_BEHIND_MIN
                sink = ThreadedSink(out, depth=16) if threaded else out
                try:
                    if fast:
                        done = pipelined_download(
                            conn.sftp, fh.handle, size, sink, _READ_SIZE, _FAST_IN_FLIGHT,
                            finish=known,
                        )  # fmt: skip
                        if known:
                            mark_handle_closed(fh)  # its CLOSE went out with the reads
                    else:
                        done = ranged_readv(fh, 0, size, sink)
                finally:
                    if threaded:
                        sink.close()  # waits for the writes; raises a writer error
                finished = True
            finally:
                if finished:
                    fh.close()
                else:
                    # Answers to reads in flight may still be queued on the channel:
                    # closing the handle would read them as garbage. Drop the link.
                    self._drop_conn()
            if done != size or (candidate.size is not None and size != candidate.size):
                raise IngestError(
                    f"{candidate.name}: size changed while downloading "
                    f"({candidate.size} listed, {done} read); will retry"
                )
        except FileNotFoundError:
            raise ItemGone() from None
        except IngestError as exc:
            if isinstance(exc, SftpReadError):
                raise IngestError(
                    f"{candidate.name}: SFTP download failed ({exc}); will retry"
                ) from None
            raise
        except _LINK_ERRORS as exc:
            self._drop_conn()  # the next attempt of this item reconnects
            raise IngestError(
                f"{candidate.name}: SFTP download failed ({exc}); will retry"
            ) from None
        return None

    def after_landing(self, candidate: Candidate) -> None:
        if self.after_landing_action == "keep":
            return
        sftp = self._conn().sftp
        # Only what was landed may leave the folder: a file rewritten since it was listed
        # stays for the next run (a rewrite within the same second at the same size cannot
        # be told apart: SFTP gives whole-second mtimes).
        st = sftp.stat(self._path(candidate.name))
        if candidate.version and candidate.version != _fingerprint(st):
            raise IngestError(
                f"{candidate.name}: changed on the server since it was listed; not "
                f"{'deleted' if self.after_landing_action == 'delete' else 'archived'}, "
                "the next run takes the new content"
            )
        names = [candidate.name]
        if self.checksum_extension and candidate.expected_sha256:
            names.append(candidate.name + self.checksum_extension)
        for name in names:
            if self.after_landing_action == "delete":
                sftp.remove(self._path(name))
            else:
                target = posixpath.join(self.archive_dir or "", name)
                try:
                    sftp.stat(target)
                    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                    target = f"{target}.{stamp}"
                except FileNotFoundError:
                    pass
                sftp.posix_rename(self._path(name), target)

    # ------------------------------------------------------------------ diagnostics
    def test_connection(self, day: date | None = None) -> dict[str, Any]:
        """Connect, list `remote_dir`, and report what the pattern would take today.

        Returns `ok`, the host key fingerprint, counts of entries and matches, and up to 20
        matching names (with whether a sidecar is present). Raises a clear error on failure.
        """
        self.preflight()
        try:
            conn = self._conn()
            entries = self._listdir()
            day = day or self.today()
            pattern = render_date_template(self.pattern, day)
            files = {e.filename for e in entries if e.st_mode and stat.S_ISREG(e.st_mode)}
            ext = self.checksum_extension
            matches = sorted(
                n
                for n in files
                if fnmatch.fnmatchcase(n, pattern) and not (ext and n.endswith(ext))
            )
            return {
                "ok": True,  # the key every source's test_connection answers with
                "source_id": self.source_id,
                "host": f"{self.host}:{self.port}",
                "host_key": fingerprint(conn.transport.get_remote_server_key()),
                "remote_dir": self.remote_dir,
                "pattern": pattern,
                "entries": len(entries),
                "matching_files": len(matches),
                "sample": [
                    {"name": n, "sidecar": bool(ext and (n + ext) in files)} for n in matches[:20]
                ],
            }
        finally:
            self.close()
