"""IANA time zone names, validated once for every block and flow that takes one."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

from blocks.core.errors import ConfigError


def check_timezone(value: str) -> str:
    """Return `value` if it names an IANA time zone, else raise ValueError saying so."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


# A str field that must name an IANA time zone (pydantic: a ValueError naming the field).
TimezoneName = Annotated[str, AfterValidator(check_timezone)]


# No place on Earth is further ahead of UTC than this (Pacific/Kiritimati, UTC+14).
_MAX_UTC_OFFSET = timedelta(hours=14)


def check_run_date(day: date | None, timezone: str | None = None) -> None:
    """Refuse a run's logical `date` later than tomorrow in `timezone`.

    A far-future date would land files under a future day folder and skew the ledger's
    days; it is almost always a typo. Without `timezone` (before the source block is
    loaded) the bound is tomorrow where it is latest on Earth, so only no-I/O callers
    need it. Raises ConfigError naming the `date` parameter.
    """
    if day is None:
        return
    if isinstance(day, datetime):
        day = day.date()
    if timezone:
        tomorrow = datetime.now(ZoneInfo(timezone)).date() + timedelta(days=1)
        where = f"in {timezone}"
    else:
        tomorrow = (datetime.now(UTC) + _MAX_UTC_OFFSET).date() + timedelta(days=1)
        where = "anywhere"
    if day > tomorrow:
        raise ConfigError("date", f"{day} is later than tomorrow ({tomorrow} {where})")
