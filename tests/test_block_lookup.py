"""Loading a saved block in a fresh process imports only what that block needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from blocks.sql.block import SqlSource
from tests.conftest import sqlite_connector

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["boto3", "google.cloud.storage", "google.cloud.bigquery", "snowflake.connector"]

CHILD = r"""
import json, resource, sys
from pipeline.block_loading import load_named_block
from blocks.sql.block import SqlSource
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


SLUG_CHILD = r"""
import json, sys
import blocks  # test-connection imports it (blocks.core.source) before Block.load
from prefect.blocks.core import Block
lookup = Block.get_block_class_from_key
print(json.dumps({s: lookup(s).get_block_type_slug() for s in sys.argv[1:]}))
"""


def _all_source_slugs() -> list[str]:
    import importlib

    import blocks
    from blocks.core.block_lookup import SOURCE_MODULES

    slugs = []
    for class_name, (module, _extra) in blocks._OPTIONAL_SOURCES.items():
        cls = getattr(importlib.import_module(module), class_name)
        assert SOURCE_MODULES[cls.get_block_type_slug()] == module, class_name
        slugs.append(cls.get_block_type_slug())
    assert sorted(slugs) == sorted(SOURCE_MODULES)
    return [*slugs, "local-folder-source", "ingest-ledger", "ingestion-queue"]


def test_every_source_type_slug_resolves_in_a_fresh_process():
    slugs = _all_source_slugs()
    assert len(slugs) == 11
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", SLUG_CHILD, *slugs],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {s: s for s in slugs}


def test_cli_test_connection_loads_a_lazily_imported_source(save_block):
    """`ingest-ops test-connection sql-source/NAME` in a fresh process: the class is found."""
    from sqlalchemy import create_engine, text

    from tests.conftest import PG_HOST, PG_PORT, PG_USER, pg_connector, throwaway_database

    with throwaway_database("postgres", "lookup") as db:
        engine = create_engine(f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
        engine.dispose()
        name = save_block(SqlSource(source_id="lookup", database=pg_connector(db), table="t"))
        env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
        out = subprocess.run(
            [sys.executable, "-m", "ops.cli", "--json", "test-connection", f"sql-source/{name}"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["block"] == f"sql-source/{name}"
