"""The logger a block method should use: the Prefect run's logger inside a run, else a
standard one (block methods are also called from `test_connection`, the CLI and tests)."""

from __future__ import annotations

import logging


def run_logger(fallback: str) -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger when called inside a flow or task run, else `logging.getLogger`."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # no run context
        return logging.getLogger(fallback)
