"""Loading a saved block in a fresh process imports only what that block needs."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import subprocess
import sys
import tomllib
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

    from blocks.core import block_lookup

    block_lookup.install()

    # a slug no imported class has: Prefect's own method runs and raises its usual error
    with pytest.raises(UnknownBlockType, match="no-such-block-type-xyz"):
        Block.get_block_class_from_key("no-such-block-type-xyz")


SLUG_CHILD = r"""
import json, sys
import blocks, flows.sftp  # importing blocks and flows leaves Prefect's lookup alone
from prefect.blocks.core import Block
from blocks.core import block_lookup
before = block_lookup.installed()
from ops.cli import main
main(json_output=False)  # the CLI's startup, before any command's Block.load
lookup = Block.get_block_class_from_key
print(json.dumps({
    "installed_by_import": before,
    "slugs": {s: lookup(s).get_block_type_slug() for s in sys.argv[1:]},
}))
"""


def _all_source_slugs() -> list[str]:
    from blocks.core.block_lookup import SOURCE_MODULES
    from blocks.registry import SOURCES

    slugs = []
    for source in SOURCES:
        cls = getattr(importlib.import_module(source.module), source.class_name)
        assert SOURCE_MODULES[cls.get_block_type_slug()] == source.module, source
        slugs.append(cls.get_block_type_slug())
    assert sorted(slugs) == sorted(SOURCE_MODULES)
    return [*slugs, "ingest-ledger", "ingestion-queue"]


def test_every_source_type_slug_resolves_in_a_fresh_process():
    """The CLI's startup installs the lookup; `import blocks` (or a flow) alone does not."""
    slugs = _all_source_slugs()
    assert len(slugs) == 11
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", SLUG_CHILD, *slugs],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["installed_by_import"] is False
    assert result["slugs"] == {s: s for s in slugs}


# -- blocks/registry.py: each line checked against the class, extra and flow it names


def _source_block_classes() -> dict[str, type]:
    """Every concrete source block class defined under blocks/ (each module imported)."""
    import blocks
    from blocks.core.source import SourceBlock

    found = {}
    for info in pkgutil.walk_packages(blocks.__path__, "blocks."):
        module = importlib.import_module(info.name)
        for name, cls in vars(module).items():
            if (
                isinstance(cls, type)
                and issubclass(cls, SourceBlock)
                and cls.__module__ == module.__name__
                and "_block_type_slug" in vars(cls)
            ):
                found[name] = cls
    return found


def test_registry_names_every_source_class_with_its_slug():
    import blocks
    from blocks.registry import BY_CLASS, BY_SLUG, SOURCES

    classes = _source_block_classes()
    assert sorted(classes) == sorted(BY_CLASS), "a source class without its registry line?"
    assert len(BY_SLUG) == len(BY_CLASS) == len(SOURCES)  # no class or slug twice
    for source in SOURCES:
        cls = classes[source.class_name]
        assert cls.__module__ == source.module, source
        assert cls.get_block_type_slug() == source.slug, source
        assert getattr(blocks, source.class_name) is cls  # `from blocks import XSource`


def test_registry_flow_runs_the_registered_class():
    from prefect import Flow

    from blocks.registry import SOURCES

    for source in SOURCES:
        module, function = source.flow.split(":")
        flow = getattr(importlib.import_module(module), function)
        assert isinstance(flow, Flow), source
        built_for = inspect.getclosurevars(flow.fn).nonlocals["block_cls"]
        assert built_for.__name__ == source.class_name, source


def _declared_extras() -> dict[str, set[str]]:
    """pyproject's extras -> canonical names of the distributions each declares."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        extra: {canonicalize_name(Requirement(r).name) for r in requirements}
        for extra, requirements in project["optional-dependencies"].items()
        if extra not in ("all", "test")
    }


def _third_party_imports(module: str, family: str, seen: set[str]) -> set[str]:
    """Top-level names `module` imports (at module level or inside functions, lazy
    imports included), following imports within its own family package."""
    if module in seen:
        return set()
    seen.add(module)
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.startswith(family + "."):
                found |= _third_party_imports(name, family, seen)
            elif name.split(".")[0] not in ("blocks", "pipeline", "flows", "ops"):
                found.add(name.split(".")[0])
    return found


def test_registry_extra_provides_what_the_source_imports():
    """Of the packages any extra declares, a source imports only its own extra's, and at
    least one of them (none for a core source). tests/tools/check_extras.sh proves the
    same by installing each extra alone."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    from blocks.registry import SOURCES

    declared = _declared_extras()
    all_declared = set().union(*declared.values())
    distributions = packages_distributions()
    assert all(s.extra is None or s.extra in declared for s in SOURCES)
    for source in SOURCES:
        family = ".".join(source.module.split(".")[:2])
        names = _third_party_imports(source.module, family, set())
        dists = {canonicalize_name(d) for n in names for d in distributions.get(n, [])}
        own = declared.get(source.extra, set()) if source.extra else set()
        assert dists & all_declared <= own, (source, sorted(dists & all_declared))
        assert bool(dists & own) == (source.extra is not None), (source, sorted(dists))


def test_prefect_block_register_finds_every_block(prefect_api):
    """`prefect block register -m blocks` registers every source class of the registry
    (the lazy attributes are listed by `dir(blocks)` and imported by getmembers)."""
    from blocks.registry import SOURCES

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "block", "register", "-m", "blocks"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    registered = " ".join(out.stdout.split())
    for source in SOURCES:
        cls = getattr(importlib.import_module(source.module), source.class_name)
        assert cls.get_block_type_name() in registered, source


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
