"""Errors the pipeline tells apart, and the one rule for which of them are retried.

Retryability is a property of the error. Our own errors carry it (`IngestError.retryable`,
set per class, overridable per instance); a third-party exception met at a source's
boundary is classified by `classify` / `is_retryable`, the one table every source and the
pipeline use:

- never retried: refused credentials (wrong password or key, HTTP 401/403, MySQL 1045,
  PostgreSQL `password authentication failed`), a host key mismatch, configuration
  (unknown database/table/bucket, bad SQL), a request the server refuses for good (other
  HTTP 4xx), a ledger failure (fails the run fast), a checksum mismatch, an unsafe name;
- retried: the network (refused, reset, timed out, closed), throttling (HTTP 408/425/429),
  server errors (5xx), a database that is gone, busy or deadlocked;
- anything not in the table is retried, as before: an unknown error may pass.
"""

from __future__ import annotations

import ssl
from typing import Any


class IngestError(Exception):
    """Base of this product's errors. `retryable` says whether another attempt may pass."""

    retryable: bool = True

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable  # kept in __dict__: survives pickling


class ConfigError(IngestError, ValueError):
    """A block field or flow parameter is wrong. The message names the field."""

    retryable = False

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles as cls(*args); args hold the joined text, not (where, message)
        return (_rebuild, (type(self), self.where, str(self)), self.__dict__)


def _rebuild(cls: type[ConfigError], where: str, text: str) -> ConfigError:
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    err.where = where
    return err


class CredentialsError(ConfigError):
    """The source refused the login or the credentials (wrong password, key or token,
    HTTP 401/403). Never retried: partner servers lock accounts after a few bad logins."""


class HostKeyError(ConfigError):
    """The server's host key is unknown or does not match the configured one. Never
    retried: it may be a man-in-the-middle, and asking again changes nothing."""


class PermanentError(IngestError):
    """The source answered and will answer the same again (HTTP 404, bad SQL)."""

    retryable = False


class TransientError(IngestError):
    """A failure that may pass: throttling, a deadlock, a busy server. Retried."""

    retryable = True


class SourceUnavailable(TransientError):
    """The source cannot be reached now (connection refused or reset, timeout, 5xx)."""


class LedgerError(IngestError):
    """The ledger database cannot be reached or written. Fails the run fast."""

    retryable = False


class UnsafeNameError(IngestError, ValueError):
    """A remote name would escape its landing folder or is not a usable file name."""

    retryable = False


class ChecksumMismatch(IngestError):
    """Fetched content does not match the checksum the source announced."""

    retryable = False


# ----------------------------------------------------------------------------- classification
def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: ours say so themselves, others by `classify`."""
    if isinstance(exc, IngestError):
        return bool(exc.retryable)
    return classify(exc).retryable


def status_retryable(status: int) -> bool:
    """HTTP statuses worth another attempt: timeouts, throttling, server errors."""
    return status in (408, 425, 429) or status >= 500


def status_kind(status: int) -> type[IngestError]:
    """Error class for an HTTP error status."""
    if status in (401, 403):
        return CredentialsError
    if status in (408, 425, 429):
        return TransientError
    if status >= 500:
        return SourceUnavailable
    return PermanentError


def classify(exc: BaseException) -> type[IngestError]:
    """The class of error `exc` is: CredentialsError, HostKeyError, ConfigError,
    PermanentError (never retried), TransientError/SourceUnavailable (retried), or
    IngestError when it is not in the table (retried: an unknown error may pass)."""
    if isinstance(exc, IngestError):
        return type(exc)
    for rule in (_paramiko, _http, _sql, _boto, _google, _snowflake):
        kind = rule(exc)
        if kind is not None:
            return kind
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConfigError  # the certificate will not verify next time either
    if isinstance(exc, (OSError, EOFError)):
        return SourceUnavailable  # ConnectionError, reset, timeout, closed link
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and cause is not exc:
        return classify(cause)  # a wrapper says nothing itself: what it wraps decides
    return IngestError


def boundary_error(exc: BaseException, where: str, message: str) -> IngestError:
    """Our error for `exc`, met at a source's boundary: of `classify`'s class, naming
    `where` (the block field, e.g. 'SqlSource.database'). `message` must hold no secret."""
    kind = classify(exc)
    if issubclass(kind, ConfigError):
        return kind(where, message)
    return kind(f"{where}: {message}")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from (libraries wrap the socket's error)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _mro_names(exc: BaseException) -> set[str]:
    return {f"{c.__module__.split('.')[0]}.{c.__name__}" for c in type(exc).__mro__}


def _paramiko(exc: BaseException) -> type[IngestError] | None:
    names = _mro_names(exc)
    if "paramiko.BadHostKeyException" in names:
        return HostKeyError
    if "paramiko.AuthenticationException" in names:
        return CredentialsError
    if "paramiko.SSHException" in names:
        return SourceUnavailable  # negotiation failed or the link dropped
    return None


def _http(exc: BaseException) -> type[IngestError] | None:
    names = _mro_names(exc)
    if "httpx.HTTPStatusError" in names or "requests.HTTPError" in names:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status_kind(status) if isinstance(status, int) else SourceUnavailable
    if names & {
        "httpx.UnsupportedProtocol",
        "httpx.InvalidURL",
        "requests.InvalidURL",
        "requests.MissingSchema",
        "requests.InvalidSchema",
        "requests.URLRequired",
    }:
        return ConfigError
    if "httpx.TransportError" in names or "requests.RequestException" in names:
        if any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc)):
            return ConfigError  # TLS verification failed: fix verify_tls or the CA bundle
        return SourceUnavailable
    return None


# PostgreSQL SQLSTATE classes that may pass: connection (08), resources (53), operator
# intervention / shutdown (57), system (58), rollback: serialization, deadlock (40).
_PG_TRANSIENT = ("08", "53", "57", "58", "40")
# MySQL/MariaDB server error numbers
_MY_CREDENTIALS = {1045, 1044, 1698, 1862, 1820}  # access denied, password expired
_MY_CONFIG = {1049, 1046, 1146, 1142, 1143, 1227}  # unknown db/table, no privilege
_MY_TRANSIENT = {1040, 1053, 1205, 1213, 1927, 4031, 1158, 1159, 1160, 1161}
# Words libpq / the drivers put in login and setup refusals (no SQLSTATE at connect time)
_SQL_CREDENTIALS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "access denied",
    "authentication failed",
    "password is required",
    "no password supplied",
)
_SQL_CONFIG = ("does not exist", "unknown database", "permission denied")


def _sql(exc: BaseException) -> type[IngestError] | None:
    names = _mro_names(exc)
    if "sqlalchemy.SQLAlchemyError" not in names:
        return _dbapi(exc)
    if getattr(exc, "connection_invalidated", False):
        return SourceUnavailable
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        kind = _dbapi(orig)
        if kind is not None:
            return kind
    if names & {"sqlalchemy.DisconnectionError", "sqlalchemy.TimeoutError"}:
        return SourceUnavailable  # link lost; no pooled connection came in time
    if "sqlalchemy.OperationalError" in names:
        return SourceUnavailable
    return PermanentError  # compile, argument, reflection, integrity: the same next time


def _dbapi(exc: BaseException) -> type[IngestError] | None:
    """A DB-API driver's error (psycopg2, pymysql, ...), from SQLAlchemy's `.orig` or raw."""
    names = {n.split(".", 1)[1] for n in _mro_names(exc)}
    if not names & {"OperationalError", "InterfaceError", "DatabaseError", "ProgrammingError"}:
        return None
    root = type(exc).__module__.split(".")[0]
    if root not in ("psycopg2", "psycopg", "pymysql", "MySQLdb", "mysql", "pg8000", "sqlite3"):
        return None
    code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    if isinstance(code, str) and len(code) == 5:
        if code.startswith("28"):
            return CredentialsError
        if code.startswith(("3D", "3F", "42")):
            return ConfigError
        return SourceUnavailable if code.startswith(_PG_TRANSIENT) else PermanentError
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):  # MySQL: (errno, text)
        errno = args[0]
        if errno in _MY_CREDENTIALS:
            return CredentialsError
        if errno in _MY_CONFIG:
            return ConfigError
        if errno in _MY_TRANSIENT or 2000 <= errno < 3000:  # 2xxx: client/link errors
            return SourceUnavailable
        return PermanentError
    text = str(exc).lower()
    if any(words in text for words in _SQL_CREDENTIALS):
        return CredentialsError
    if any(words in text for words in _SQL_CONFIG):
        return ConfigError
    if names & {"OperationalError", "InterfaceError"}:
        return SourceUnavailable  # refused, reset, server closed the connection, timeout
    return PermanentError


_AWS_CREDENTIALS = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "UnrecognizedClientException",
    "AuthorizationHeaderMalformed",
}
_AWS_TRANSIENT = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
    "TooManyRequestsException",
}


def _boto(exc: BaseException) -> type[IngestError] | None:
    names = _mro_names(exc)
    if "botocore.ClientError" in names:
        response = getattr(exc, "response", {}) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _AWS_CREDENTIALS:
            return CredentialsError
        if code in _AWS_TRANSIENT:
            return TransientError
        if code in ("NoSuchBucket", "InvalidBucketName"):
            return ConfigError
        return status_kind(status) if isinstance(status, int) else PermanentError
    if names & {"botocore.NoCredentialsError", "botocore.PartialCredentialsError"}:
        return CredentialsError
    if names & {"botocore.NoRegionError", "botocore.ParamValidationError"}:
        return ConfigError
    if names & {"botocore.HTTPClientError", "botocore.ConnectionError"}:
        return SourceUnavailable  # endpoint refused, connect/read timeout, closed
    return None


def _google(exc: BaseException) -> type[IngestError] | None:
    names = _mro_names(exc)
    if "google.RetryError" in names:
        return SourceUnavailable  # the client's own retries ran out
    if "google.GoogleAPICallError" in names:
        code = getattr(exc, "code", None)
        return status_kind(code) if isinstance(code, int) else SourceUnavailable
    if "google.RefreshError" in names:  # google-auth says itself whether it may pass
        return TransientError if getattr(exc, "retryable", False) else CredentialsError
    if "google.DefaultCredentialsError" in names:
        return CredentialsError
    if "google.TransportError" in names:
        return SourceUnavailable
    return None


# Snowflake: login refusals (wrong password, key, MFA, locked user) and connect failures
_SNOWFLAKE_LOGIN = {390100, 390101, 390102, 390103, 390104, 390144, 390186, 390189, 390318, 394304}
_SNOWFLAKE_CONNECT = {250001, 250002, 250003, 251005, 251006}


def _snowflake(exc: BaseException) -> type[IngestError] | None:
    if type(exc).__module__.split(".")[0] != "snowflake":
        return None
    errno = getattr(exc, "errno", None)
    names = {n.split(".", 1)[1] for n in _mro_names(exc)}
    if errno in _SNOWFLAKE_LOGIN:
        return CredentialsError
    if errno in _SNOWFLAKE_CONNECT or names & {"OperationalError", "InterfaceError"}:
        return SourceUnavailable
    if "ProgrammingError" in names:
        return ConfigError
    return None
