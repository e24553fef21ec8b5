"""Loading a saved block in a fresh process imports only what that block needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from blocks.sql_source import SqlSource
from tests.conftest import sqlite_connector

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["boto3", "google.cloud.storage", "google.cloud.bigquery", "snowflake.connector"]

CHILD = r"""
import json, resource, sys
from flows.block_loading import load_named_block
from blocks.sql_source import SqlSource
source = load_named_block(SqlSource, sys.argv[1], "source_block")
print(json.dumps({
    "nested": type(source.database).__name__,
    "heavy": [m for m in sys.argv[2:] if m in sys.modules],
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def test_loading_a_sql_source_imports_no_other_integration(save_block, tmp_path):
    name = save_block(
        SqlSource(source_id="lookup", database=sqlite_connector(tmp_path / "db.sqlite"), table="t")
    )
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, *HEAVY],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nested"] == "SqlAlchemyConnector"
    assert result["heavy"] == []  # Prefect's lookup would have imported all four


def test_unknown_nested_type_still_falls_back_to_prefects_lookup():
    from prefect.blocks.core import Block, UnknownBlockType

    import blocks  # noqa: F401 (installs the lookup)

    # a slug no imported class has: Prefect's own method runs and raises its usual error
    with pytest.raises(UnknownBlockType, match="no-such-block-type-xyz"):
        Block.get_block_class_from_key("no-such-block-type-xyz")
