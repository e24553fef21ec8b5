"""Resolve nested blocks among the block classes already imported before importing more.

When a saved block holds another block (an `SqlAlchemyConnector` inside the ledger, an
`AwsCredentials` inside an S3 source), Prefect resolves the nested type with
`Block.get_block_class_from_key`, which first imports every installed Prefect collection
(prefect-aws with boto3, prefect-gcp with the Google clients, prefect-snowflake with its
connector): ~170 MB of RSS in a flow run that needs none of them. Our block modules
import the classes they nest, so the lookup almost always succeeds without that import;
when it does not (a type from a module not yet imported) Prefect's own method runs.

Our optional sources are imported lazily (see `blocks/__init__.py`), so a generic
`Block.load("sftp-source/name")` (as in `ingest-ops test-connection`) would find no class
for the slug: Prefect's fallback imports installed collections, never our modules. So the
lookup first imports the module of one of our own slugs, named in `SOURCE_MODULES`.
"""

from __future__ import annotations

import importlib

from prefect.blocks.core import Block
from prefect.utilities.dispatch import lookup_type

# Block type slug -> module defining it, for our blocks not imported by `import blocks`.
# tests/test_block_lookup.py checks it against every class's `_block_type_slug`.
SOURCE_MODULES: dict[str, str] = {
    "gcs-source": "blocks.object_store.gcs",
    "rest-api-source": "blocks.http.rest_api",
    "s3-source": "blocks.object_store.s3",
    "sftp-source": "blocks.sftp.block",
    "sharepoint-source": "blocks.sharepoint.block",
    "sql-source": "blocks.sql.block",
    "snowflake-query-source": "blocks.warehouse.snowflake",
    "bigquery-query-source": "blocks.warehouse.bigquery",
}

_prefects_lookup = Block.get_block_class_from_key.__func__  # type: ignore[attr-defined]


def _imported_first(cls: type[Block], key: str) -> type[Block]:
    try:
        return lookup_type(cls, key)
    except KeyError:
        pass
    module = SOURCE_MODULES.get(key)
    if module is not None:
        # A missing extra (e.g. no boto3) raises ModuleNotFoundError naming the package.
        importlib.import_module(module)
        return lookup_type(cls, key)
    return _prefects_lookup(cls, key)


def install() -> None:
    """Idempotent; the result of a lookup is the same class either way."""
    Block.get_block_class_from_key = classmethod(_imported_first)  # type: ignore[method-assign]
