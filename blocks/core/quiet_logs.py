"""Keep routine library chatter out of run logs and CLI output.

prefect-sqlalchemy's connector logs "Created a new engine." at INFO each time a block
builds its engine: on every flow run (the ledger, a SQL source) and every CLI call that
reads the ledger. The message is demoted to DEBUG, so it shows only when a logger is set to
DEBUG. Standard `logging` filters only; nothing of Prefect's is patched.
"""

from __future__ import annotations

import logging

_ROUTINE = frozenset({"Created a new engine.", "Created a new connection."})
# get_run_logger() logs on these inside a run; outside a run the blocks log on
# prefect.<ClassName>.
_LOGGERS = (
    "prefect.flow_runs",
    "prefect.task_runs",
    "prefect.SqlAlchemyConnector",
    "prefect.AsyncSqlAlchemyConnector",
)


class _DemoteRoutine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.msg not in _ROUTINE:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER = _DemoteRoutine()


def install() -> None:
    """Attach the filter (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
