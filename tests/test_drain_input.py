"""`ingest-ops drain` input checks that need no Prefect API (the e2e module has the rest)."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from blocks.core.errors import ConfigError
from ops.cli import app
from ops.drain import MAX_TIMEOUT, check_timeout


def test_check_timeout_bounds():
    assert check_timeout(0) == 0.0 and check_timeout(MAX_TIMEOUT) == MAX_TIMEOUT
    for bad in (-1, math.nan, math.inf, MAX_TIMEOUT + 1, "10"):
        with pytest.raises(ConfigError, match="between 0 and 604800") as info:
            check_timeout(bad)  # type: ignore[arg-type]
        assert info.value.where == "--timeout"


def test_cli_refuses_nan_timeout_before_any_api_call(monkeypatch):
    # An unreachable API: the refusal must come first, naming the option.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    out = CliRunner().invoke(app, ["drain", "--pool", "p", "--timeout", "nan"])
    assert out.exit_code == 2 and "--timeout" in out.output  # click's range check
