"""Safe names: a remote name can never write outside its landing folder."""

from __future__ import annotations

import functools
import os
import re
from datetime import date
from pathlib import Path, PurePosixPath

from blocks.core.errors import UnsafeNameError

SOURCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_SOURCE_ID = re.compile(SOURCE_ID_PATTERN)
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DOT_PARTS = frozenset(("", ".", ".."))


def check_source_id(value: str) -> str:
    if not _SOURCE_ID.match(value or ""):
        raise ValueError(
            f"{value!r} is not a valid source id: use letters, digits, '_', '.', '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    return value


def safe_relative_name(name: str) -> PurePosixPath:
    """The name as a relative POSIX path, or UnsafeNameError.

    Refused: empty names, NUL and other control characters, absolute paths (`/x`,
    `C:x`, `\\\\server`), and any `..` or `.` part. Backslashes count as separators, so
    `..\\x` is refused too. Sub-folders (`a/b.csv`) are kept.
    """
    return PurePosixPath(*check_safe_name(name))


def check_safe_name(name: str) -> list[str]:
    """`safe_relative_name`'s checks alone (no path object: a listing checks every name);
    returns the name's parts."""
    if not isinstance(name, str) or not name:
        raise UnsafeNameError("empty file name")
    if not name.isprintable() and _CONTROL.search(name):
        raise UnsafeNameError(f"file name {name!r} contains NUL or control characters")
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or _DRIVE.match(normalised):
        raise UnsafeNameError(f"file name {name!r} is an absolute path")
    parts = normalised.split("/")
    for part in parts:
        if part in _DOT_PARTS:
            raise UnsafeNameError(f"file name {name!r} has an empty, '.' or '..' path part")
        # 63 characters encode to at most 252 bytes: only longer parts are encoded
        if len(part) > 63 and len(part.encode()) > 255:
            raise UnsafeNameError(f"file name {name!r} has a part longer than 255 bytes")
    return parts


def landing_path(root: Path, source_id: str, day: date, name: str) -> Path:
    """`{root}/{source}/{YYYY}/{MM}/{DD}/{name}`, checked to stay under that folder."""
    check_source_id(source_id)
    rel = safe_relative_name(name)
    folder = _day_folder(str(root), source_id, day)
    target = folder / rel
    # safe_relative_name keeps the path lexically inside; only a symlink already in the
    # landing tree could lead out. A plain name needs one lstat, not a walk of the path.
    if len(rel.parts) > 1 or os.path.islink(target):
        target = target.resolve()
        if folder not in target.parents:
            raise UnsafeNameError(f"file name {name!r} resolves outside {folder}")
    return target


@functools.lru_cache(maxsize=256)
def _day_folder(root: str, source_id: str, day: date) -> Path:
    """The resolved day folder (resolving walks every part: once per day, not per item)."""
    return (Path(root) / source_id / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}").resolve()


def versioned_name(path: Path, sha256: str) -> Path:
    """`report.csv` -> `report~<sha12>.csv`: where a changed file lands when the base path
    already holds other content."""
    suffix = "".join(path.suffixes[-1:])
    stem = path.name[: -len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}~{sha256[:12]}{suffix}")
