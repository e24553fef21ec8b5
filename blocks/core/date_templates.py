"""Date templates in file patterns: `AXIS_RECON_{date:%Y%m%d}*.csv`.

`{date:FMT}` is the run's logical day formatted with strftime; `{date-N:FMT}` and
`{date+N:FMT}` shift it by N days (files named after the previous business day, say).
The rest of the pattern is left as it is (a glob, usually). Shared by every file source.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

_TOKEN = re.compile(r"\{date(?:(?P<sign>[+-])(?P<days>\d{1,4}))?(?::(?P<fmt>[^{}]*))?\}")


def has_date_template(pattern: str) -> bool:
    return bool(_TOKEN.search(pattern))


def render_date_template(pattern: str, day: date) -> str:
    """Replace every `{date...}` token in `pattern` for `day`.

    Raises ValueError naming the token when it is malformed (e.g. an unclosed brace).
    """

    def _sub(match: re.Match[str]) -> str:
        offset = int(match["days"] or 0) * (-1 if match["sign"] == "-" else 1)
        fmt = match["fmt"] or "%Y-%m-%d"
        return (day + timedelta(days=offset)).strftime(fmt)

    rendered = _TOKEN.sub(_sub, pattern)
    if "{date" in rendered:
        raise ValueError(f"malformed date template in {pattern!r}: use {{date:%Y%m%d}}")
    return rendered
