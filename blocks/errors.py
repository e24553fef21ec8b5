"""Errors the pipeline tells apart: configuration, ledger, and per-item failures."""

from __future__ import annotations


class IngestError(Exception):
    """Base of this product's errors."""


class ConfigError(IngestError, ValueError):
    """A block field or flow parameter is wrong. The message names the field."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


class LedgerError(IngestError):
    """The ledger database cannot be reached or written. Fails the run fast."""


class UnsafeNameError(IngestError, ValueError):
    """A remote name would escape its landing folder or is not a usable file name."""


class ChecksumMismatch(IngestError):
    """Fetched content does not match the checksum the source announced."""
