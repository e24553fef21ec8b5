"""Unpack and decrypt a delivered file before it lands: gunzip, zip members, PGP.

Partner drops often arrive gzipped, zipped or PGP-encrypted. A file source (`FileSourceBlock`)
says per source what to do with `unpack`:

- `none` (default): land the delivered bytes as they are.
- `gunzip`: land the decompressed file; the name loses `.gz` (`data.csv.gz` -> `data.csv`).
- `zip`: every file in the archive is its own item, named `<archive name>/<member path>`
  (`drop.zip` holding `a.csv` and `sub/b.csv` -> `drop.zip/a.csv`, `drop.zip/sub/b.csv`).
  Member names are checked like any remote name (`blocks.core.naming.safe_relative_name`):
  an absolute or `..` member (zip-slip), a symlink, an encrypted member, a name twice or a
  file that is also a folder refuses the whole archive.
- `pgp`: decrypt with the private key held in a Prefect Secret block
  (`pgp_private_key_block`, passphrase in `pgp_passphrase_block`); the name loses
  `.pgp`/`.gpg`/`.asc`. Uses the `gpg` binary (Debian package `gnupg`) in a throwaway home
  folder per file; key and passphrase go to gpg over a pipe, never to disk or logs.
- `auto`: look at the first bytes: PGP is decrypted, then gzip is unpacked, then a zip is
  split into members (so `x.zip.pgp` becomes `x.zip/<members>`); anything else lands as is.

Everything streams through the staging folder with bounded memory (1 MiB buffers). An archive
is unpacked completely into staging files before anything lands, so a bad archive (corrupt,
wrong key, unsafe member, too big) lands nothing: the item fails naming the file and the
block field, is never retried within the run (`UnpackError` is not retryable) and stays at
the source for the next run. Bombs: the unpacked bytes of one delivery may not exceed
`unpack_max_bytes`, nor `unpack_max_ratio` times the delivered size (below 1 MiB unpacked the
ratio is not checked: tiny files compress absurdly well); counted on the real output, not
on what the archive declares.

The landing of the unpacked items (one ledger row, one message per item, the delivered
checksum kept) is `pipeline/unpack_landing.py`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from blocks.core.errors import ConfigError, IngestError, UnsafeNameError
from blocks.core.naming import safe_relative_name
from blocks.core.source import SourceBlock

UnpackMode = Literal["none", "auto", "gunzip", "zip", "pgp"]
CHUNK = 1024 * 1024
RATIO_FLOOR = 1024 * 1024  # below this many unpacked bytes the ratio is not checked
GPG_TIMEOUT = 3600.0
_GZIP_SUFFIXES = (".gz", ".gzip")
_PGP_SUFFIXES = (".pgp", ".gpg", ".asc")


class UnpackError(IngestError):
    """A delivered file cannot be unpacked or decrypted (bad archive, wrong key, unsafe
    member, bomb). The item fails; nothing of it lands. Not retried: the same bytes fail
    the same way."""

    retryable = False


class FileSourceBlock(SourceBlock):
    """A source of files (local folder, SFTP, S3, GCS, SharePoint): adds unpacking."""

    unpack: UnpackMode = Field(
        default="none",
        description=(
            "Unpack or decrypt each delivered file before landing: 'gunzip', 'zip' (every "
            "member is its own item, named '<archive>/<member>'), 'pgp' (needs "
            "pgp_private_key_block), 'auto' (by the file's first bytes; other files land "
            "as they are) or 'none'."
        ),
    )
    unpack_max_bytes: int = Field(
        default=10 * 1024**3,
        ge=1,
        description="Most bytes one delivered file may unpack to (zip/gzip bombs).",
    )
    unpack_max_ratio: float = Field(
        default=200,
        ge=1,
        description=(
            "Most unpacked bytes per delivered byte (checked once more than 1 MiB is unpacked)."
        ),
    )
    pgp_private_key_block: str | None = Field(
        default=None,
        description=(
            "Name of the Prefect Secret block holding the ASCII-armored OpenPGP private "
            "key that decrypts this source's files (unpack 'pgp' or 'auto')."
        ),
    )
    pgp_passphrase_block: str | None = Field(
        default=None,
        description="Name of the Prefect Secret block holding that key's passphrase, if any.",
    )

    # On the block form, after the source's own fields, with the shared tuning fields.
    _tuning_fields: ClassVar[tuple[str, ...]] = (
        *SourceBlock._tuning_fields,
        "unpack",
        "pgp_private_key_block",
        "pgp_passphrase_block",
        "unpack_max_bytes",
        "unpack_max_ratio",
    )


# ----------------------------------------------------------------------------- config
def unpack_mode(source: Any) -> str:
    """The source's unpack mode ('none' for sources that do not unpack)."""
    return getattr(source, "unpack", "none") or "none"


def check_unpack_config(source: Any) -> None:
    """Before any I/O: a PGP mode needs its key block (which must load) and the gpg binary."""
    mode = unpack_mode(source)
    if mode == "none":
        return
    key_block = getattr(source, "pgp_private_key_block", None)
    if mode == "pgp" and not key_block:
        raise ConfigError("pgp_private_key_block", "required when unpack is 'pgp'")
    if key_block:
        if shutil.which("gpg") is None:
            raise ConfigError(
                "unpack", "PGP decryption needs the gpg binary (Debian package gnupg)"
            )
        load_pgp_key(source)


def load_pgp_key(source: Any) -> tuple[str, str | None]:
    """(private key, passphrase) from the source's Secret blocks; ConfigError naming the
    field when a block is missing or empty. The values are never logged."""
    key = _secret_value(source, "pgp_private_key_block")
    if key is None:
        raise ConfigError("pgp_private_key_block", "no Secret block named; cannot decrypt")
    return key, _secret_value(source, "pgp_passphrase_block")


def _secret_value(source: Any, field: str) -> str | None:
    name = getattr(source, field, None)
    if not name:
        return None
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except Exception as exc:  # not found, wrong type, API down
        raise ConfigError(
            field, f"cannot load the Secret block {name!r}: {type(exc).__name__}"
        ) from None
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"the Secret block {name!r} holds no text")
    return value


# ----------------------------------------------------------------------------- detect
def detect(path: Path) -> str | None:
    """'pgp', 'gunzip', 'zip' from a file's first bytes, or None (not packed)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"\x1f\x8b"):
        return "gunzip"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.lstrip().startswith(b"-----BEGIN PGP MESSAGE-----"):
        return "pgp"
    # binary OpenPGP: a message starts with a public- or symmetric-key encrypted session
    # key packet (tag 1 or 3), old (0x84-0x87, 0x8c-0x8f) or new format (0xc1, 0xc3)
    if head and (head[0] & 0xFC in (0x84, 0x8C) or head[0] in (0xC1, 0xC3)):
        return "pgp"
    return None


def strip_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    """`data.csv.gz` -> `data.csv`; a name without the suffix (or only the suffix) stays."""
    base = name.rsplit("/", 1)[-1]
    for suffix in suffixes:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return name[: -len(suffix)]
    return name


# ----------------------------------------------------------------------------- unpack
@dataclass(frozen=True)
class Unpacked:
    """One unpacked item, complete in a staging file."""

    name: str
    path: Path
    sha256: str
    size: int


class _Budget:
    """Counts unpacked bytes of one delivery against the bomb limits."""

    def __init__(self, source: Any, delivered_name: str, delivered_size: int) -> None:
        self.max_bytes = int(getattr(source, "unpack_max_bytes", 10 * 1024**3))
        self.max_ratio = float(getattr(source, "unpack_max_ratio", 200))
        self.name = delivered_name
        self.delivered = max(1, delivered_size)

    def check(self, total: int) -> None:
        if total > self.max_bytes:
            raise UnpackError(
                f"{self.name}: unpacks to more than unpack_max_bytes={self.max_bytes} bytes "
                "(a zip/gzip bomb?); nothing landed"
            )
        if total > RATIO_FLOOR and total > self.max_ratio * self.delivered:
            raise UnpackError(
                f"{self.name}: unpacks to more than unpack_max_ratio={self.max_ratio:g} "
                f"times its {self.delivered} delivered bytes (a zip/gzip bomb?); nothing landed"
            )


class _Sink:
    """Writes one staging file while hashing it and counting against the budget."""

    def __init__(self, path: Path, budget: _Budget, counted: int, fsync: bool) -> None:
        self.path = path
        self.budget = budget
        self.base = counted
        self.size = 0
        self.fsync = fsync
        self.digest = hashlib.sha256()
        self.fh = open(path, "wb")  # noqa: SIM115 (closed in finish/abort)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self.budget.check(self.base + self.size)
        self.fh.write(data)
        self.digest.update(data)

    def finish(self, name: str) -> Unpacked:
        self.fh.flush()
        if self.fsync:
            os.fsync(self.fh.fileno())
        self.fh.close()
        return Unpacked(name, self.path, self.digest.hexdigest(), self.size)

    def abort(self) -> None:
        self.fh.close()


def expand(
    source: Any,
    path: Path,
    name: str,
    delivered_size: int,
    new_file: Callable[[], Path],
    fsync: bool = False,
) -> list[Unpacked] | None:
    """Unpack the staged delivery `path` (item `name`) as the source's `unpack` says.

    Returns the unpacked items, complete in staging files from `new_file()` (the caller
    lands them and removes the files), or None when `auto` finds a plain file. Raises
    UnpackError (or ConfigError for a PGP key problem) having removed its own files.
    """
    mode = unpack_mode(source)
    budget = _Budget(source, name, delivered_size)
    made: list[Path] = []

    def fresh() -> Path:
        made.append(new_file())
        return made[-1]

    try:
        if mode == "auto":
            if detect(path) is None:
                return None
            return _run_auto(source, path, name, budget, fresh, fsync)
        if mode == "gunzip":
            return [_gunzip(path, name, budget, fresh(), fsync)]
        if mode == "zip":
            return _unzip(path, name, budget, fresh, fsync)
        if mode == "pgp":
            return [_decrypt(source, path, name, budget, fresh(), fsync)]
        raise ConfigError("unpack", f"unknown mode {mode!r}")
    except BaseException:
        for made_path in made:
            made_path.unlink(missing_ok=True)
        raise


def _run_auto(
    source: Any,
    path: Path,
    name: str,
    budget: _Budget,
    fresh: Callable[[], Path],
    fsync: bool,
) -> list[Unpacked] | None:
    """Peel PGP, then gzip, then zip, each at most once, as the first bytes say."""
    current: Unpacked | None = None  # the last layer's output, if any
    kind = detect(path)
    if kind == "pgp":
        current = _decrypt(source, path, name, budget, fresh(), fsync)
        kind = detect(current.path)
    if kind == "gunzip":
        inner = _gunzip(
            current.path if current else path,
            current.name if current else name,
            budget,
            fresh(),
            fsync,
        )
        if current is not None:
            current.path.unlink()  # an intermediate layer, done with
        current, kind = inner, detect(inner.path)
    if kind == "zip":
        members = _unzip(
            current.path if current else path,
            current.name if current else name,
            budget,
            fresh,
            fsync,
        )
        if current is not None:
            current.path.unlink()
        return members
    return [current] if current is not None else None


def _gunzip(path: Path, name: str, budget: _Budget, out: Path, fsync: bool) -> Unpacked:
    sink = _Sink(out, budget, 0, fsync)
    try:
        with gzip.open(path, "rb") as gz:
            while chunk := gz.read(CHUNK):
                sink.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        sink.abort()
        raise UnpackError(
            f"{name}: unpack='gunzip': not a valid gzip file ({_short(exc)}); nothing landed"
        ) from None
    except BaseException:
        sink.abort()
        raise
    return sink.finish(strip_suffix(name, _GZIP_SUFFIXES))


def zip_members(zf: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    """The archive's files, each checked: safe relative name (no zip-slip), no symlink,
    not encrypted, no name twice, no file that is also a folder. UnpackError otherwise."""
    members: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnpackError(
                f"{name}: unpack='zip': member {info.filename!r} is a symlink; nothing landed"
            )
        if info.flag_bits & 0x1:
            raise UnpackError(
                f"{name}: unpack='zip': member {info.filename!r} is encrypted (zip "
                "passwords are not supported; use PGP); nothing landed"
            )
        try:
            rel = safe_relative_name(info.filename.rstrip("/") if info.is_dir() else info.filename)
        except UnsafeNameError as exc:
            raise UnpackError(
                f"{name}: unpack='zip': unsafe member: {exc}; nothing landed"
            ) from None
        if info.is_dir():
            continue
        key = str(rel)
        if key in seen:
            raise UnpackError(
                f"{name}: unpack='zip': member {key!r} is in the archive twice; nothing landed"
            )
        seen.add(key)
        members.append(info)
    folders = {str(parent) for key in seen for parent in Path(key).parents}
    clash = sorted(seen & folders)
    if clash:
        raise UnpackError(
            f"{name}: unpack='zip': member {clash[0]!r} is both a file and a folder; nothing landed"
        )
    return members


def _unzip(
    path: Path, name: str, budget: _Budget, fresh: Callable[[], Path], fsync: bool
) -> list[Unpacked]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnpackError(
            f"{name}: unpack='zip': not a valid zip archive ({_short(exc)}); nothing landed"
        ) from None
    out: list[Unpacked] = []
    with zf:
        members = zip_members(zf, name)
        budget.check(sum(info.file_size for info in members))  # what it declares, first
        total = 0
        for info in members:
            sink = _Sink(fresh(), budget, total, fsync)
            try:
                with zf.open(info) as member:
                    while chunk := member.read(CHUNK):
                        sink.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
                sink.abort()
                raise UnpackError(
                    f"{name}: unpack='zip': member {info.filename!r} cannot be read "
                    f"({_short(exc)}); nothing landed"
                ) from None
            except BaseException:
                sink.abort()
                raise
            total += sink.size
            out.append(sink.finish(f"{name}/{safe_relative_name(info.filename)}"))
    return out


# ----------------------------------------------------------------------------- PGP
def _decrypt(
    source: Any, path: Path, name: str, budget: _Budget, out: Path, fsync: bool
) -> Unpacked:
    """Decrypt with gpg in a throwaway home folder, streaming its output into `out`.

    gpg checks the message's integrity (MDC/AEAD) at the end and exits non-zero if it
    fails: the output is then dropped, never landed."""
    key, passphrase = load_pgp_key(source)
    block = getattr(source, "pgp_private_key_block", None)
    home = tempfile.mkdtemp(prefix="ingest-gpg-")  # mode 0700
    try:
        base = ["gpg", "--homedir", home, "--batch", "--no-tty", "--no-options"]
        imported = subprocess.run(
            [*base, "--status-fd", "1", "--import"],
            input=key.encode(),
            capture_output=True,
            timeout=120,
        )
        if b"IMPORT_OK" not in imported.stdout or b"sec" not in _secret_keys(base):
            raise ConfigError(
                "pgp_private_key_block",
                f"the Secret block {block!r} holds no usable OpenPGP private key",
            )
        sink = _Sink(out, budget, 0, fsync)
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, (passphrase or "").encode() + b"\n")
        finally:
            os.close(write_fd)
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(
                    [
                        *base,
                        "--pinentry-mode",
                        "loopback",
                        "--passphrase-fd",
                        str(read_fd),
                        "--output",
                        "-",
                        "--decrypt",
                        str(path),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    pass_fds=(read_fd,),
                )
            finally:
                os.close(read_fd)
            try:
                assert proc.stdout is not None
                while chunk := proc.stdout.read(CHUNK):
                    sink.write(chunk)
                code = proc.wait(timeout=GPG_TIMEOUT)
            except BaseException:
                proc.kill()
                proc.wait()
                sink.abort()
                raise
            errors.seek(0)
            said = errors.read(4000).decode(errors="replace")
        if code != 0:
            sink.abort()
            raise UnpackError(_gpg_failure(name, block, said))
        return sink.finish(strip_suffix(name, _PGP_SUFFIXES))
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, timeout=30
        )
        shutil.rmtree(home, ignore_errors=True)


def _secret_keys(base: list[str]) -> bytes:
    listed = subprocess.run(
        [*base, "--with-colons", "--list-secret-keys"], capture_output=True, timeout=60
    )
    return listed.stdout


def _gpg_failure(name: str, block: str | None, said: str) -> str:
    """A clear message from gpg's stderr (which never holds the key or passphrase)."""
    lines = [ln.removeprefix("gpg: ").strip() for ln in said.splitlines() if ln.strip()]
    detail = "; ".join(lines)[-400:] or "gpg failed"
    low = said.lower()
    if "bad passphrase" in low:  # gpg then also says 'No secret key': test this first
        why = f"wrong passphrase (pgp_passphrase_block) for the key in {block!r}"
    elif "no secret key" in low:
        why = f"the key in pgp_private_key_block {block!r} cannot decrypt it (wrong key)"
    elif "no valid openpgp data" in low or "invalid packet" in low or "packet" in low:
        why = "not a valid PGP message (corrupt or not encrypted)"
    elif "integrity" in low or "mdc" in low:
        why = "the message failed its integrity check (corrupt or tampered)"
    else:
        why = "decryption failed"
    return f"{name}: unpack='pgp': {why}; gpg said: {detail}; nothing landed"


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
