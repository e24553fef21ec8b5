"""Local (or mounted) folder source: the watched-folder connector."""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

from pydantic import Field, model_validator

from blocks.core.date_templates import render_date_template
from blocks.core.errors import ConfigError, IngestError
from blocks.core.naming import safe_relative_name
from blocks.core.source import (
    Candidate,
    DiscoverContext,
    ItemGone,
    NamedItem,
    NotTaken,
    glob_key,
)
from blocks.core.unpack import FileSourceBlock

_CHUNK = 1024 * 1024


def _fingerprint(st: os.stat_result) -> str:
    """The change fingerprint of a listed file (`Candidate.version`): size and mtime (ns)."""
    return f"{st.st_size}:{st.st_mtime_ns}"


class LocalFolderSource(FileSourceBlock):
    """Watched local folder: takes files matching a glob, once each.

    `pattern` may hold date templates (`DATA_{date:%Y%m%d}*.csv`), rendered for the run's
    logical day like every file source's; `mode='newest'` takes only the most recently
    modified matching file.

    Half-written files are left alone through `min_age_seconds` and/or
    `stability_seconds`. After a file is landed and recorded it is kept, deleted, or moved
    to `archive_dir`, as `after_landing` says. Hidden files, `*.part` files and symlinks
    are ignored.
    """

    _block_type_name = "Local Folder Source"
    _block_type_slug = "local-folder-source"
    _description = "Ingest files from a local or mounted folder (glob, recursive, archive)."

    directory: str = Field(
        ...,
        description="Folder to watch (absolute, or relative to the worker's working directory).",
    )
    pattern: str = Field(
        default="*",
        **glob_key("file_pattern"),
        description=(
            "Glob on the file name, e.g. '*.csv'. Date templates as in every file source: "
            "'DATA_{date:%Y%m%d}*.csv' takes the run day's files, {date-1:FMT} the day before."
        ),
    )
    recursive: bool = Field(
        default=False, description="Also look in sub-folders (names keep the relative path)."
    )
    mode: Literal["all_new", "newest"] = Field(
        default="all_new",
        description=(
            "'all_new': every matching file not yet ingested. 'newest': only the most "
            "recently modified matching file (landed once)."
        ),
    )
    after_landing_action: Literal["keep", "delete", "archive"] = Field(
        default="keep",
        description="What to do with the source file once it is landed and recorded.",
    )
    archive_dir: str | None = Field(
        default=None, description="Where 'archive' moves files (required for 'archive')."
    )

    @model_validator(mode="after")
    def _archive_needs_folder(self) -> LocalFolderSource:
        if self.after_landing_action == "archive" and not self.archive_dir:
            raise ValueError("archive_dir: required when after_landing_action is 'archive'")
        return self

    @property
    def root(self) -> Path:
        return Path(self.directory).expanduser().absolute()

    def preflight(self) -> None:
        try:
            render_date_template(self.pattern, date.today())
        except ValueError as exc:
            raise ConfigError("LocalFolderSource.pattern", str(exc)) from None
        if not self.root.is_dir():
            raise ConfigError(
                "LocalFolderSource.directory", f"folder {str(self.root)!r} does not exist"
            )
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise ConfigError(
                "LocalFolderSource.directory", f"folder {str(self.root)!r} is not readable"
            )
        if self.after_landing_action != "keep" and not os.access(self.root, os.W_OK):
            raise ConfigError(
                "LocalFolderSource.after_landing_action",
                f"'{self.after_landing_action}' needs write access to {str(self.root)!r}",
            )
        if self.archive_dir:
            archive = Path(self.archive_dir).expanduser().absolute()
            if archive == self.root or (self.recursive and self.root in archive.parents):
                raise ConfigError(
                    "LocalFolderSource.archive_dir", "must not be the watched folder or inside it"
                )

    def discover(self, ctx: DiscoverContext) -> Iterator[Candidate]:
        pattern = render_date_template(self.pattern, ctx.partition_date)
        newest: tuple[int, str, Candidate] | None = None
        for entry, rel in self._walk(self.root, "", pattern):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between listing and stat
            cand = Candidate(
                name=rel,
                size=st.st_size,
                mtime=datetime.fromtimestamp(st.st_mtime, tz=UTC),
                version=_fingerprint(st),
                ref=entry.path,
            )
            if self.mode == "all_new":
                yield cand
            # as the object stores: newest by modification time, then name (O(1) memory)
            elif newest is None or (st.st_mtime_ns, rel) > newest[:2]:
                newest = (st.st_mtime_ns, rel, cand)
        if newest is not None:
            yield newest[2]

    takes_named_items: ClassVar[bool] = True

    def candidates_for(
        self, items: Sequence[NamedItem], ctx: DiscoverContext
    ) -> Iterator[Candidate | NotTaken]:
        """Stat each named file (a path relative to `directory`) that the listing would
        offer: a regular file, not hidden, not `*.part`, not a symlink, matching the run
        day's pattern, in a sub-folder only when `recursive`. `mode` is for listings."""
        pattern = render_date_template(self.pattern, ctx.partition_date)
        for item in items:
            if item.bucket is not None:
                yield NotTaken(item.name, f"{item.where}: names bucket {item.bucket!r}")
                continue
            parts = item.name.split("/")
            base = parts[-1]
            if len(parts) > 1 and not self.recursive:
                why = "in a sub-folder, and the source is not recursive"
            elif any(p.startswith(".") for p in parts) or base.endswith(".part"):
                why = "a hidden or *.part file, never listed"
            elif not fnmatch.fnmatchcase(base, pattern):
                why = f"does not match the file pattern {pattern!r}"
            else:
                why = None
            if why is not None:
                yield NotTaken(item.name, f"{item.where}: {why}")
                continue
            path = self.root.joinpath(*parts)
            try:
                st = path.stat(follow_symlinks=False)
                # no symlinked folder on the way either: only what a walk would reach
                linked = any(p.is_symlink() for p in path.parents if self.root in p.parents)
            except (FileNotFoundError, NotADirectoryError):
                yield NotTaken(item.name, f"{item.where}: no such file in {str(self.root)!r}")
                continue
            if not stat.S_ISREG(st.st_mode) or linked:
                yield NotTaken(item.name, f"{item.where}: not a regular file (or a symlink)")
                continue
            yield Candidate(
                name=item.name,
                size=st.st_size,
                mtime=datetime.fromtimestamp(st.st_mtime, tz=UTC),
                version=_fingerprint(st),
                ref=str(path),
            )

    def _walk(
        self, folder: Path | str, prefix: str, pattern: str
    ) -> Iterator[tuple[os.DirEntry[str], str]]:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith(".") or entry.is_symlink():
                    continue
                rel = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive:
                        yield from self._walk(entry.path, rel + "/", pattern)
                elif (
                    entry.is_file(follow_symlinks=False)
                    and not entry.name.endswith(".part")
                    and fnmatch.fnmatchcase(entry.name, pattern)
                ):
                    yield entry, rel

    def fetch(self, candidate: Candidate, out: BinaryIO) -> Mapping[str, Any] | None:
        path = Path(candidate.ref)
        try:
            fh = open(path, "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            raise ItemGone() from None
        with fh:
            before = os.fstat(fh.fileno())
            while chunk := fh.read(_CHUNK):
                out.write(chunk)
            after = os.fstat(fh.fileno())
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or (
            candidate.version and candidate.version != _fingerprint(after)
        ):
            raise IngestError(f"{candidate.name}: file changed while it was read; will retry")
        return None

    def after_landing(self, candidate: Candidate) -> None:
        path = Path(candidate.ref)
        if self.after_landing_action == "keep":
            return
        # Only what was landed may leave the folder: a file rewritten since it was read
        # stays for the next run, which lands its new content.
        try:
            st = path.stat(follow_symlinks=False)
        except FileNotFoundError:
            return
        if candidate.version and candidate.version != _fingerprint(st):
            raise IngestError(
                f"{candidate.name}: changed since it was landed; not "
                f"{self.after_landing_action}d, the next run takes the new content"
            )
        if self.after_landing_action == "delete":
            path.unlink(missing_ok=True)
        elif self.after_landing_action == "archive":
            target = Path(self.archive_dir).expanduser().absolute() / safe_relative_name(
                candidate.name
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                target = target.with_name(f"{target.name}.{stamp}")
            shutil.move(str(path), str(target))
